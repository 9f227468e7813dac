"""`flipsync check`, `fields`, `status` and `explain`: parse, ask `flipsync.checks`, render.

These only read (check also sends a few read requests); the work is in
`flipsync.checks` and `flipsync.tasks`.
"""

from __future__ import annotations

import click

from flipsync import checks, discovery, status_report, tasks
from flipsync.cli_common import Context, exit_with, handle_errors, pass_ctx
from flipsync.clients import build_client
from flipsync.errors import ExitCode
from flipsync.report import render_history
from flipsync.safe_text import for_terminal, json_for_terminal


@click.command()
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON.")
@pass_ctx
@handle_errors
def explain(ctx: Context, email: str, as_json: bool) -> None:
    """Show every decision flipsync made for one email, with its reason."""
    found = tasks.explain(ctx.settings, email)
    if as_json:
        click.echo(json_for_terminal(found.as_dict()))
        return
    click.echo(render_history(email, found.outcomes))
    mirror = found.mirror
    if mirror is not None:
        state_text = "deleted" if mirror.deleted else mirror.permission
        click.echo(
            for_terminal(f"last known in Constant Contact: {state_text} (as of {mirror.seen_at})")
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option(
    "--check",
    is_flag=True,
    help="For monitors: list problems (failing runs, stale inbox, expiring login) and exit "
    f"{int(ExitCode.UNHEALTHY)} if there are any.",
)
@pass_ctx
@handle_errors
def status(ctx: Context, as_json: bool, check: bool) -> None:
    """Where this organization stands: checkpoint, inbox, pending imports, recent runs."""
    info = checks.status(ctx.settings)
    found = info["problems"]
    if as_json:
        click.echo(json_for_terminal(info))
    elif check:
        click.echo(for_terminal("\n".join(status_report.check_lines(found))))
    else:
        click.echo(for_terminal(status_report.render(info)))
    if check and found:
        exit_with(ExitCode.UNHEALTHY)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_ctx
@handle_errors
def fields(ctx: Context, as_json: bool) -> None:
    """For go-live: which configured Flipcause fields the stored payloads carry (counts only)."""
    report = checks.field_report(ctx.settings)
    click.echo(json_for_terminal(report.as_dict()) if as_json else discovery.render_text(report))


@click.command()
@click.option(
    "--offline", is_flag=True, help="Check the config only; no request to Constant Contact."
)
@pass_ctx
@handle_errors
def check(ctx: Context, offline: bool) -> None:
    """Check the config, then the account: token works, lists and custom fields exist."""
    clock = ctx.clock
    for line in checks.check(
        ctx.settings, lambda settings: build_client(settings, clock=clock), offline=offline
    ):
        click.echo(line)
