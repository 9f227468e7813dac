"""The `flipsync fleet` commands: parse, wire, call the fleet modules, print. Nothing else.

Kept beside flipsync.cli (which registers this group) so the single-organization CLI
stays as it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from flipsync import logs
from flipsync.cli_common import handle_errors
from flipsync.errors import ExitCode
from flipsync.fleet import FleetSettings, load_fleet

FLEET_ENV = "FLIPSYNC_FLEET"


@click.group()
@click.option(
    "--fleet",
    "fleet_dir",
    envvar=FLEET_ENV,
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help=f"The fleet directory, with fleet.yaml and orgs/ (or ${FLEET_ENV}).",
)
@click.pass_context
def fleet(ctx: click.Context, fleet_dir: Path) -> None:
    """Many organizations of one application key: one scheduler, one receiver, one status."""
    ctx.obj = fleet_dir


def _load(ctx: click.Context) -> FleetSettings:
    return load_fleet(ctx.find_object(Path) or Path())


def _known_orgs(settings: FleetSettings, names: tuple[str, ...]) -> None:
    """Refuse (exit 2) a name given with --org that is no organization of this fleet."""
    import difflib

    from flipsync.errors import InputError
    from flipsync.fleet import ORG_CONFIG, org_names

    known = org_names(settings)
    for name in dict.fromkeys(names):
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=3)
        if close:
            hint = "did you mean " + " or ".join(repr(n) for n in close) + "?"
        elif known:
            hint = "the fleet's organizations are: " + ", ".join(known) + "."
        else:
            hint = "the fleet has no organization yet."
        raise InputError(
            f"--org {name!r}: there is no organization of that name in "
            f"{settings.orgs_dir}/ (no {name}/{ORG_CONFIG} there); {hint} "
            f"To add it: flipsync fleet --fleet {settings.root} add {name}"
        )


@fleet.command("check")
@click.pass_context
@handle_errors
def fleet_check(ctx: click.Context) -> None:
    """Validate fleet.yaml and every organization at once, naming the organization each time."""
    from flipsync.fleet import FLEET_FILE, check_fleet, fleet_problems, org_names

    settings = _load(ctx)
    names = org_names(settings)
    found = check_fleet(settings)
    own = fleet_problems(settings)
    for problem in own:
        click.echo(f"{FLEET_FILE}: {problem}")
    for name in names:
        if name in found:
            for problem in found[name]:
                click.echo(f"{name}: {problem}")
        else:
            click.echo(f"{name}: ok")
    click.echo(f"{len(names)} organization(s), {len(found)} with problems")
    if found or own:
        sys.exit(int(ExitCode.CONFIG))


@fleet.command("add")
@click.argument("name")
@click.option(
    "--template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The config to start from (default: config.example.yaml).",
)
@click.pass_context
@handle_errors
def fleet_add(ctx: click.Context, name: str, template: Path | None) -> None:
    """Scaffold orgs/NAME: its config, a fresh webhook secret (0600), and its webhook URL."""
    from flipsync.fleet import ORG_CONFIG, add_org, example_template

    settings = _load(ctx)
    text = template.read_text(encoding="utf-8") if template else example_template()
    url = add_org(settings, name, text)
    click.echo(f"created {settings.org_dir(name) / ORG_CONFIG} (edit its policy and lists)")
    click.echo(f"webhook URL for Flipcause (keep it private): {url}")
    click.echo(
        f"next: flipsync -c {settings.org_dir(name) / ORG_CONFIG} auth login; "
        "then `flipsync fleet check`, and SIGHUP the fleet receiver"
    )


@fleet.command("run")
@click.option("--json", "as_json", is_flag=True, help="Print the cycle report as JSON.")
@click.option("--org", "only", multiple=True, help="Only these organizations (repeatable).")
@click.pass_context
@handle_errors
def fleet_run(ctx: click.Context, as_json: bool, only: tuple[str, ...]) -> None:
    """Run the organizations that are due, several at once under the key's one budget (cron)."""
    from flipsync.clients import build_client
    from flipsync.tasks import fleet_cycle

    settings = _load(ctx)
    _known_orgs(settings, only)
    report = fleet_cycle(settings, build_client, only)
    data = report.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif logs.reports_as_events():  # cron, JSON logs: one machine-readable line
        logs.emit(
            "fleet_run_finished",
            level="error" if report.failures else "info",
            counts=data["counts"],
            requests=data["requests"],
            failed={r.name: r.status for r in report.failures},
        )
    else:
        click.echo(_render_cycle(data))
    if report.interrupted:
        sys.exit(int(ExitCode.INTERRUPTED))


def _render_cycle(data: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(data["counts"].items()))
    lines = [f"fleet run {data['started_at']}: {counts or 'no organizations'}"]
    for row in data["organizations"]:
        if row["status"] == "idle":
            continue
        lines.append(
            f"  {row['organization']}: {row['status']}, {row['records']} record(s), "
            f"{row['requests']} request(s), {row['seconds']} s"
            + (f" -- {row['message']}" if row["message"] else "")
        )
    lines.append(f"requests this cycle: {data['requests']}")
    return "\n".join(lines)


@fleet.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option(
    "--check",
    is_flag=True,
    help=f"For monitors: exit {int(ExitCode.UNHEALTHY)} when any organization has a problem.",
)
@click.pass_context
@handle_errors
def fleet_status_cmd(ctx: click.Context, as_json: bool, check: bool) -> None:
    """One row per organization, and the key's requests today against its budget."""
    from flipsync.fleet_status import fleet_status
    from flipsync.state import utcnow

    settings = _load(ctx)
    status = fleet_status(settings, utcnow())
    if check and not as_json:  # for monitors, like `status --check`: the problems, or ok
        for row in status.unhealthy:
            for problem in row.problems:
                click.echo(f"problem: {row.name}: {problem}")
        if not status.unhealthy:
            click.echo(
                f"ok: {len(status.rows)} organization(s); application key, {status.day}: "
                f"{status.key_requests_today} of {status.key_budget} requests"
            )
    elif as_json:
        click.echo(json.dumps(status.as_dict(), indent=2))
    else:
        now = utcnow()
        click.echo(
            f"{'organization':24} {'last run':20} {'result':11} {'backlog':>7} {'oldest':>7} "
            f"{'req today':>9} {'login days':>10} problems"
        )
        for row in status.rows:
            days = "-" if row.login_expires_in_days is None else f"{row.login_expires_in_days:g}"
            click.echo(
                f"{row.name:24} {(row.last_run_at or 'never')[:19]:20} "
                f"{row.last_result or '-':11} {row.backlog if row.backlog is not None else '-':>7} "
                f"{_age(row.oldest_waiting, now):>7} "
                f"{row.requests_today:>9} {days:>10} {len(row.problems)}"
            )
        click.echo(
            f"application key, {status.day}: {status.key_requests_today} of "
            f"{status.key_budget} requests"
        )
        for row in status.unhealthy:
            for problem in row.problems:
                click.echo(f"problem: {row.name}: {problem}")
        for row in status.rows:
            for note in row.notes:
                click.echo(f"note: {row.name}: {note}")
    if check and status.unhealthy:
        sys.exit(int(ExitCode.UNHEALTHY))


def _age(moment: str | None, now: Any) -> str:
    """How long ago, short (``-`` for nothing waiting)."""
    from flipsync.fleet_run import seconds_since

    seconds = seconds_since(moment, now)
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h" if seconds < 86400 else f"{seconds / 86400:.1f}d"


@fleet.command("serve")
@click.option("--host", help="Address to bind (default: receiver.host of fleet.yaml).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port (default: receiver.port; 0 picks one)."
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="Request threads, shared by every organization.",
)
@click.pass_context
@handle_errors
def fleet_serve(ctx: click.Context, host: str | None, port: int | None, threads: int) -> None:
    """Receive every organization's webhooks on POST /<org>/flipcause/<secret>; SIGHUP reloads."""
    from flipsync.fleet_receiver import serve_fleet
    from flipsync.metrics import CachedMetrics, render

    settings = _load(ctx)

    def say(text: str) -> None:
        click.echo(text)
        sys.stdout.flush()

    serve_fleet(
        settings,
        host=host or settings.receiver.host,
        port=settings.receiver.port if port is None else port,
        threads=threads,
        announce=say,
        metrics=CachedMetrics(lambda: render(settings)),
    )
