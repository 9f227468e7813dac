"""The click CLI of one organization: parse the options, make one call, render the result.

The work itself lives in the application layer (`flipsync.tasks`, `flipsync.checks`,
`flipsync.login`, `flipsync.clients`); this module and its siblings (`cli_status`,
`cli_auth`, `cli_sandbox`, `fleet_cli`) are the only importers of click. Reports go to
stdout, logs to stderr.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from flipsync import __version__, logs, tasks
from flipsync.cli_auth import auth
from flipsync.cli_common import (
    Context,
    email_patterns,
    exit_with,
    handle_errors,
    pass_ctx,
    print_report,
)
from flipsync.cli_sandbox import sandbox
from flipsync.cli_status import check, explain, fields, status
from flipsync.cli_support import hoist_global_options
from flipsync.clients import build_client, key_budget
from flipsync.clock import SYSTEM_CLOCK, SystemClock, VirtualClock
from flipsync.errors import ExitCode
from flipsync.fleet_cli import fleet
from flipsync.progress import for_people
from flipsync.report import render_ingest
from flipsync.safe_text import json_for_terminal
from flipsync.settings import CONFIG_ENV
from flipsync.state import utcnow

__all__ = ["build_client", "cli", "handle_errors", "key_budget", "main"]

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
OUTPUT_OPTION = click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every decision to FILE (.csv for CSV, else JSON).",
)


class FlipsyncGroup(click.Group):
    """The top-level group: its options work before or after the subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args, list(self.commands)))


@click.group(cls=FlipsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    envvar=CONFIG_ENV,
    type=click.Path(dir_okay=False),
    help=f"The organization's config file (or ${CONFIG_ENV}).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="How much to log to stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="JSON lines (for cron and log shippers) or console; auto picks by terminal.",
)
@click.version_option(__version__, prog_name="flipsync")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str, log_format: str) -> None:
    """Keep a Constant Contact account in step with Flipcause, with consent rules you can read."""
    logs.configure(log_level, log_format)
    given = ctx.obj
    ctx.obj = Context(
        config_path, given if isinstance(given, SystemClock | VirtualClock) else SYSTEM_CLOCK
    )


@cli.command()
@click.option("--dry-run", is_flag=True, help="Decide and show the plan; write nothing anywhere.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@OUTPUT_OPTION
@click.option("--max-batches", type=click.IntRange(min=1), help="Stop after N batches.")
@pass_ctx
@handle_errors
def run(
    ctx: Context, dry_run: bool, as_json: bool, output: Path | None, max_batches: int | None
) -> None:
    """Sync the inbox records after the checkpoint to Constant Contact (what cron runs)."""
    clock = ctx.clock
    report, forecast = tasks.run(
        ctx.settings,
        lambda settings: build_client(settings, clock=clock),
        dry_run=dry_run,
        max_batches=max_batches,
        on_failure=lambda partial: print_report(partial, as_json=as_json, output=output),
        clock=clock,
        progress=for_people(as_json),
    )
    print_report(report, as_json=as_json, output=output, forecast=forecast)


@cli.command()
@click.option(
    "--since",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="First day (Flipcause transaction date, else the day it reached the inbox).",
)
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), help="Last day (included).")
@click.option("--dry-run", is_flag=True, help="Show what the backfill would do; write nothing.")
@click.option(
    "--estimate",
    is_flag=True,
    help="Forecast the requests from local data alone: no request, nothing written.",
)
@JSON_OPTION
@OUTPUT_OPTION
@pass_ctx
@handle_errors
def backfill(
    ctx: Context,
    since: datetime,
    until: datetime | None,
    dry_run: bool,
    estimate: bool,
    as_json: bool,
    output: Path | None,
) -> None:
    """Process the inbox records of a date window again, without moving the live checkpoint.

    Safe beside cron: each batch takes the organization's lock, so scheduled runs go on
    between batches. Interrupted, it resumes where it stopped when run again with the
    same window.
    """
    if until is not None and until < since:
        raise click.BadParameter(
            f"{until:%Y-%m-%d} is before --since {since:%Y-%m-%d}; the window would be empty",
            param_hint="--until",
        )
    clock = ctx.clock
    report, forecast = tasks.backfill(
        ctx.settings,
        lambda settings: build_client(settings, clock=clock),
        since.date(),
        until.date() if until else None,
        dry_run=dry_run,
        estimate=estimate,
        clock=clock,
        progress=for_people(as_json),
    )
    print_report(report, as_json=as_json, output=output, forecast=forecast)


@cli.command("cleanup-test-contacts")
@click.option(
    "--apply",
    is_flag=True,
    help="Delete the contacts listed as delete, record outcomes, and mark the test records.",
)
@click.option(
    "--email",
    "patterns",
    multiple=True,
    callback=email_patterns,
    metavar="PATTERN",
    help="Also count records whose email matches this glob as tests (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@pass_ctx
@handle_errors
def cleanup_test_contacts(
    ctx: Context, apply: bool, patterns: tuple[str, ...], as_json: bool
) -> None:
    """List (and with --apply delete) the contacts flipsync created from test records.

    Without --apply only reads: the inbox, flipsync's outcomes and one lookup per contact
    it could delete. Contacts that existed before flipsync, that someone changed since,
    or that a real record shares are never deleted; the list says why.
    """
    from flipsync.report import render_cleanup

    clock = ctx.clock
    report = tasks.cleanup_test_contacts(
        ctx.settings,
        lambda settings: build_client(settings, clock=clock),
        apply=apply,
        patterns=patterns,
        clock=clock,
    )
    click.echo(json_for_terminal(report.as_dict()) if as_json else render_cleanup(report))
    if report.status != "ok":
        exit_with(ExitCode.TRANSIENT)


@cli.command()
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


@cli.command()
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
    click.echo(json_for_terminal(report.as_dict()) if as_json else report.render())


@cli.command()
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


@cli.command()
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


for command in (explain, status, fields, check, auth, sandbox, fleet):  # their own modules
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="flipsync")
