"""The inbox and the state DB: `flipsync ingest`, `serve`, `prune` and `init`.

Each parses its options, makes one call (`flipsync.tasks`, or the receiver for `serve`)
and prints the result.
"""

from __future__ import annotations

import click

from flipsync import logs, tasks
from flipsync.cli_common import JSON_OPTION, Context, exit_with, handle_errors, pass_ctx
from flipsync.errors import ExitCode
from flipsync.progress import for_people
from flipsync.report import render_ingest
from flipsync.safe_text import json_for_terminal
from flipsync.state import utcnow


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the ingest report as JSON.")
@click.option(
    "--format",
    "input_format",
    type=click.Choice(["auto", "json", "flipcause-csv"]),
    default="auto",
    show_default=True,
    help="json: NDJSON or JSON payloads; flipcause-csv: a Flipcause contact or transaction "
    "export; auto: flipcause-csv for *.csv files, else json.",
)
@pass_ctx
@handle_errors
def ingest(ctx: Context, files: tuple[str, ...], as_json: bool, input_format: str) -> None:
    """Store saved Flipcause payloads or CSV exports (- for stdin) in the inbox.

    Exits 2 when a file is refused as not Flipcause data, or nothing was stored but
    something was rejected.
    """
    total = tasks.ingest_files(ctx.settings, files, input_format, progress=for_people(as_json))
    click.echo(json_for_terminal(total.as_dict()) if as_json else render_ingest(total))
    if total.failed:
        exit_with(ExitCode.CONFIG)


@click.command()
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=1),
    help="Retention in days (default: run.retention_days, 365).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
@JSON_OPTION
@pass_ctx
@handle_errors
def prune(ctx: Context, days: int | None, dry_run: bool, as_json: bool) -> None:
    """Remove payloads, outcomes and run reports older than the retention (cron: after run).

    Unfinished work (not yet synced, retries, open batches, unfinished backfills) and the
    consent facts (sign-ups, contacts flipsync created) are kept whatever their age.
    """
    report = tasks.prune(ctx.settings, days=days, dry_run=dry_run, now=utcnow())
    if as_json:
        click.echo(json_for_terminal(report.as_dict()))
    elif logs.reports_as_events():  # cron, JSON logs: one line beside run's run_finished
        logs.emit("prune_finished", **report.as_dict())
    else:
        click.echo(report.render())


@click.command()
@click.option(
    "--start-over",
    is_flag=True,
    help="Move an unusable (empty, truncated, foreign) state file aside and create a new one.",
)
@pass_ctx
@handle_errors
def init(ctx: Context, start_over: bool) -> None:
    """Create the organization's state DB; --start-over replaces an unusable one on purpose."""
    click.echo(tasks.initialize(ctx.settings, start_over=start_over, now=utcnow()))


@click.command()
@click.option("--host", help="Address to bind (default: intake.host, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port (default: intake.port; 0 picks one)."
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="Request threads (requests wait for their commit; more threads, bigger group commits).",
)
@pass_ctx
@handle_errors
def serve(ctx: Context, host: str | None, port: int | None, threads: int) -> None:
    """Receive Flipcause webhooks into the inbox (behind a TLS proxy; stops cleanly on SIGTERM)."""
    from flipsync.receiver import read_webhook_secret, serve_forever

    settings = ctx.settings
    serve_forever(
        settings,
        read_webhook_secret(settings),
        host=host or settings.intake.host,
        port=settings.intake.port if port is None else port,
        threads=threads,
        announce=click.echo,
    )
