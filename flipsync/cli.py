"""The click CLI of one organization: parse the options, make one call, render the result.

The work itself lives in the application layer (`flipsync.tasks`, `flipsync.checks`,
`flipsync.login`, `flipsync.clients`); this module and its siblings (`cli_state`,
`cli_status`, `cli_auth`, `cli_sandbox`, `cli_common`, `fleet_cli`) are the only importers
of click. Reports go to
stdout, logs to stderr.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from flipsync import __version__, logs, tasks
from flipsync.cli_auth import auth
from flipsync.cli_common import (
    JSON_OPTION,
    OUTPUT_OPTION,
    Context,
    email_patterns,
    exit_with,
    handle_errors,
    pass_ctx,
    print_report,
)
from flipsync.cli_sandbox import sandbox
from flipsync.cli_state import ingest, init, prune, serve
from flipsync.cli_status import check, explain, fields, status
from flipsync.cli_support import hoist_global_options
from flipsync.clients import build_client, key_budget
from flipsync.clock import SYSTEM_CLOCK, SystemClock, VirtualClock
from flipsync.errors import ExitCode
from flipsync.fleet_cli import fleet
from flipsync.progress import for_people
from flipsync.safe_text import json_for_terminal
from flipsync.settings import CONFIG_ENV

__all__ = ["build_client", "cli", "handle_errors", "key_budget", "main"]


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
@click.option(
    "--dry-run",
    is_flag=True,
    help="Decide and show the plan: nothing is written to Constant Contact and the checkpoint "
    "stays (what is read of the account is kept in the local mirror for the live run).",
)
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
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show what the backfill would do: nothing is written to Constant Contact (reads are "
    "kept in the local mirror).",
)
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


for command in (ingest, serve, prune, init, explain, status, fields, check, auth, sandbox, fleet):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="flipsync")
