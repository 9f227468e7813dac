"""The click CLI: parse, wire, call the core, print, map errors to exit codes. Nothing else.

This is the composition root: the only module that knows every concrete class
and the only importer of click. Reports go to stdout, logs to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import wraps
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ParamSpec, TypeVar

import click
import structlog

from flipsync import __version__, discovery, logs
from flipsync.cli_support import (
    EXIT_CLOSED_STDOUT,
    describe_os_error,
    hoist_global_options,
    silence_stdout,
)
from flipsync.clock import SYSTEM_CLOCK, Clock, SystemClock, VirtualClock
from flipsync.config import (
    CONFIG_ENV,
    Settings,
    load_settings,
    placeholder_problems,
    secret_from_env,
)
from flipsync.emails import normalize_email
from flipsync.errors import ConfigError, ExitCode, FlipsyncError, InputError
from flipsync.intake import IngestReport, ingest_stream
from flipsync.lock import hold_lock
from flipsync.progress import for_people
from flipsync.report import (
    render_history,
    render_ingest,
    render_table,
    render_text,
    report_level,
    run_summary,
    write_outcomes,
)
from flipsync.safe_text import for_terminal, json_for_terminal
from flipsync.state import StateDB, utcnow

if TYPE_CHECKING:  # the HTTP stack is imported only by commands that talk to Constant Contact
    from flipsync.ctct.budget import KeyBudget
    from flipsync.ctct.client import ConstantContactClient
    from flipsync.ctct.http import RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")
log = structlog.get_logger(__name__)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn flipsync errors into one clear message and their exit code; no tracebacks."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except FlipsyncError as exc:
            click.echo(for_terminal(f"flipsync: {exc}"), err=True)
            sys.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("flipsync: interrupted; nothing past the last commit was lost", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:
            silence_stdout()  # the reader left (`| head`): end quietly
            sys.exit(EXIT_CLOSED_STDOUT)
        except OSError as exc:
            click.echo(f"flipsync: {describe_os_error(exc)}", err=True)
            sys.exit(int(ExitCode.CONFIG))
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:
            log.exception("unexpected_error")
            click.echo(
                f"flipsync: unexpected error: {type(exc).__name__}: {exc} "
                "(the log has the traceback; please report it)",
                err=True,
            )
            sys.exit(int(ExitCode.UNEXPECTED))

    return wrapper


class Context:
    """What the group passes to commands: where the config is (loaded on demand), and the clock.

    The clock is the machine's unless the caller handed one in as click's ``obj`` (tests
    pass a VirtualClock, so a run's polls and rate spacing cost them no real time).
    """

    def __init__(self, config_path: str | None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config_path = config_path
        self.clock = clock
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The validated config (every problem reported at once, before any network call)."""
        if self._settings is None:
            self._settings = load_settings(self.config_path)
            logs.bind(organization=self._settings.organization)
        return self._settings


pass_ctx = click.make_pass_decorator(Context)


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


def build_client(
    settings: Settings, *, retry: RetryPolicy | None = None, clock: Clock = SYSTEM_CLOCK
) -> ConstantContactClient:
    """The Constant Contact client for one organization (no request is sent here).

    ``retry`` replaces the default retry policy of API and token requests (tests pass
    ``RetryPolicy.no_wait()`` to run fault scenarios end to end without sleeping). Every
    wait (rate spacing, retries, token expiry, the token lock) reads and sleeps on
    ``clock``; tests pass a ``VirtualClock``.
    """
    from flipsync.ctct.auth import TokenManager
    from flipsync.ctct.client import ConstantContactClient
    from flipsync.ctct.http import RetryPolicy, make_session, process_limiter
    from flipsync.ctct.types import ClientSettings

    cc = settings.constant_contact
    client_settings = ClientSettings(
        api_base_url=cc.api_base_url,
        oauth_base_url=cc.oauth_base_url,
        client_id=cc.client_id,
        client_secret=secret_from_env(cc.client_secret_env),
        token_file=cc.token_file,
        requests_per_second=cc.requests_per_second,
        timeout_seconds=cc.timeout_seconds,
    )
    session = make_session(client_settings.user_agent)
    tokens = TokenManager(
        client_settings,
        session,
        clock=clock.now,
        sleep=clock.sleep,
        limiter=process_limiter(1.0, key="token", clock=clock),
        retry=retry if retry is not None else RetryPolicy(max_attempts=3, sleep=clock.sleep),
    )
    return ConstantContactClient(
        client_settings,
        tokens,
        session=session,
        retry=(
            retry
            if retry is not None
            else RetryPolicy(max_attempts=client_settings.max_attempts, sleep=clock.sleep)
        ),
        limiter=key_budget(settings, clock),
        clock=clock.now,
    )


def key_budget(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> KeyBudget:
    """The machine-wide request budget of this organization's application key."""
    from flipsync.ctct.budget import KeyBudget, default_budget_file

    cc = settings.constant_contact
    return KeyBudget(
        cc.budget_file or default_budget_file(cc.client_id),
        organization=settings.organization,
        rate_per_second=cc.requests_per_second,
        daily_limit=cc.daily_request_budget,
        organization_daily_limit=cc.organization_daily_request_budget,
        wall_clock=clock.time,
        sleep=clock.sleep,
    )


@contextmanager
def open_state(
    settings: Settings, *, create: bool = True, readonly: bool = False
) -> Iterator[StateDB]:
    """The organization's state DB, closed afterwards (`readonly` for commands that only read)."""
    state = StateDB.open(settings.state_file, create=create, readonly=readonly)
    try:
        yield state
    finally:
        state.close()


# -- run ------------------------------------------------------------------------------------


@cli.command()
@click.option("--dry-run", is_flag=True, help="Decide and show the plan; write nothing anywhere.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every decision to FILE (.csv for CSV, else JSON).",
)
@click.option("--max-batches", type=click.IntRange(min=1), help="Stop after N batches.")
@pass_ctx
@handle_errors
def run(
    ctx: Context, dry_run: bool, as_json: bool, output: Path | None, max_batches: int | None
) -> None:
    """Sync the inbox records after the checkpoint to Constant Contact (what cron runs)."""
    from flipsync.tasks import run_organization

    clock = ctx.clock
    report = run_organization(
        ctx.settings,
        lambda settings: build_client(settings, clock=clock),
        dry_run=dry_run,
        max_batches=max_batches,
        on_failure=lambda partial: _print_report(partial, as_json=as_json, output=output),
        clock=clock.now,
        sleep=clock.sleep,
        progress=for_people(as_json),
    )
    _print_report(report, as_json=as_json, output=output, forecast=_forecast(ctx, report))


def _forecast(ctx: Context, report: Any) -> Any:
    """For a dry run: what the live run would cost against today's budget of the key."""
    from flipsync import forecast

    if not report.dry_run:
        return None
    cc = ctx.settings.constant_contact

    def usage() -> tuple[int, int]:
        used = key_budget(ctx.settings, ctx.clock).usage()
        return used.key_total, used.organization

    return forecast.build(
        report.requests,
        report.planned_writes,
        usage,
        key_budget=cc.daily_request_budget,
        organization_budget=cc.organization_daily_request_budget,
    )


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
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every decision to FILE (.csv for CSV, else JSON).",
)
@pass_ctx
@handle_errors
def backfill(
    ctx: Context,
    since: Any,
    until: Any,
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
    from flipsync.sync import Syncer

    if until is not None and until < since:
        raise click.BadParameter(
            f"{until:%Y-%m-%d} is before --since {since:%Y-%m-%d}; the window would be empty",
            param_hint="--until",
        )
    settings = ctx.settings
    clock = ctx.clock
    if estimate:
        from flipsync import forecast

        def usage() -> tuple[int, int]:
            used = key_budget(settings, clock).usage()
            return used.key_total, used.organization

        with open_state(settings, create=False, readonly=True):
            pass  # the same refusals as every command for a missing or broken state file
        report, outlook = forecast.estimate_backfill(
            settings, since.date(), until.date() if until else None, now=clock.now(), usage=usage
        )
        _print_report(report, as_json=as_json, output=output, forecast=outlook)
        return
    with open_state(settings) as state:
        syncer = Syncer(
            settings,
            state,
            build_client(settings, clock=clock),
            clock=clock.now,
            sleep=clock.sleep,
            progress=for_people(as_json),
        )
        logs.bind(run_id=syncer.run_id)

        def guard() -> Any:
            return hold_lock(
                settings.lock_file,
                "backfill",
                wait_seconds=900,
                clock=clock.monotonic,
                sleep=clock.sleep,
            )

        report = syncer.backfill(
            since.date(),
            until.date() if until else None,
            dry_run=dry_run,
            batch_guard=guard,
        )
    _print_report(report, as_json=as_json, output=output, forecast=_forecast(ctx, report))


def _print_report(report: Any, *, as_json: bool, output: Path | None, forecast: Any = None) -> None:
    if output is not None:
        write_outcomes(output, report.outcomes)
    if as_json:
        data = report.as_dict(with_outcomes=report.dry_run)
        if forecast is not None:
            data["forecast"] = forecast.as_dict()
        click.echo(json_for_terminal(data))
        return
    if report.dry_run and report.outcomes:
        click.echo(render_table(report.outcomes))
        click.echo()
    if logs.reports_as_events():  # cron, JSON logs: one machine-readable line, no emails
        extra = {"forecast_requests": forecast.total} if forecast is not None else {}
        logs.emit("run_finished", level=report_level(report), **run_summary(report), **extra)
    else:
        click.echo(render_text(report))
        if forecast is not None:
            click.echo(for_terminal("\n".join(f"  {line}" for line in forecast.lines())))


# -- cleanup-test-contacts ------------------------------------------------------------------


def _email_pattern(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
    from flipsync.config import email_glob

    try:
        return tuple(email_glob(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc) or "an email glob like *@test.example.org") from None


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
    callback=_email_pattern,
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
    from flipsync.cleanup import Cleanup
    from flipsync.report import render_cleanup

    settings = ctx.settings
    with (
        hold_lock(settings.lock_file, "test-contact clean-up") if apply else nullcontext(),
        open_state(settings, create=False) as state,
    ):
        clock = ctx.clock
        report = Cleanup(
            settings,
            state,
            build_client(settings, clock=clock),
            extra_patterns=patterns,
            clock=clock.now,
            sleep=clock.sleep,
        ).run(apply=apply)
    if as_json:
        click.echo(json_for_terminal(report.as_dict()))
    else:
        click.echo(render_cleanup(report))
    if report.status != "ok":
        sys.exit(int(ExitCode.TRANSIENT))


# -- ingest ---------------------------------------------------------------------------------


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
    from flipsync.csv_intake import CSV_FORMAT, ingest_csv_stream

    settings = ctx.settings
    total = IngestReport()
    with open_state(settings) as state:
        for name in files:
            label = "stdin" if name == "-" else name
            as_csv = input_format == CSV_FORMAT or (
                input_format == "auto" and name.lower().endswith(".csv")
            )
            with _open_input(name) as stream:
                if as_csv:
                    report = ingest_csv_stream(
                        state,
                        stream,
                        name=label,
                        source=f"csv:{Path(label).name}",
                        settings=settings.flipcause,
                    )
                else:
                    report = ingest_stream(
                        state,
                        stream,
                        name=label,
                        source=f"file:{Path(label).name}",
                        id_field=settings.flipcause.fields.webhook_record_id,
                        progress=for_people(as_json),
                    )
            total.add(report)
    click.echo(json_for_terminal(total.as_dict()) if as_json else render_ingest(total))
    if total.failed:
        sys.exit(int(ExitCode.CONFIG))


@contextmanager
def _open_input(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = Path(name).open("rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError(f"{name}: file not found") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror})") from None
    with stream:
        yield stream


# -- prune ----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=1),
    help="Retention in days (default: run.retention_days, 365).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
@handle_errors
def prune(ctx: Context, days: int | None, dry_run: bool, as_json: bool) -> None:
    """Remove payloads, outcomes and run reports older than the retention (cron: after run).

    Unfinished work (not yet synced, retries, open batches, unfinished backfills) and the
    consent facts (sign-ups, contacts flipsync created) are kept whatever their age.
    """
    from flipsync.retention import prune as apply_retention

    settings = ctx.settings
    with hold_lock(settings.lock_file, "prune"), open_state(settings, create=False) as state:
        report = apply_retention(
            state, days=days or settings.run.retention_days, now=utcnow(), dry_run=dry_run
        )
    click.echo(json_for_terminal(report.as_dict()) if as_json else report.render())


# -- init -----------------------------------------------------------------------------------


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
    from flipsync.state_guard import initialize

    settings = ctx.settings
    with hold_lock(settings.lock_file, "init"):
        click.echo(initialize(settings.state_file, start_over=start_over, now=utcnow()))


# -- serve ----------------------------------------------------------------------------------


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
    secret = read_webhook_secret(settings)
    serve_forever(
        settings,
        secret,
        host=host or settings.intake.host,
        port=settings.intake.port if port is None else port,
        threads=threads,
        announce=click.echo,
    )


# -- explain and status ---------------------------------------------------------------------


@cli.command()
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON.")
@pass_ctx
@handle_errors
def explain(ctx: Context, email: str, as_json: bool) -> None:
    """Show every decision flipsync made for one email, with its reason."""
    key = normalize_email(email)
    with open_state(ctx.settings, create=False, readonly=True) as state:
        rows = state.outcomes_for(key)
        mirror = state.mirror_get([key]).get(key)
    if as_json:
        click.echo(
            json_for_terminal(
                {
                    "email": email,
                    "outcomes": rows,
                    "constant_contact": None
                    if mirror is None
                    else {
                        "permission": mirror.permission,
                        "deleted": mirror.deleted,
                        "contact_id": mirror.contact_id,
                        "as_of": mirror.seen_at,
                    },
                },
            )
        )
        return
    click.echo(render_history(email, rows))
    if mirror is not None:
        state_text = "deleted" if mirror.deleted else mirror.permission
        click.echo(
            for_terminal(f"last known in Constant Contact: {state_text} (as of {mirror.seen_at})")
        )


@cli.command()
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
    from flipsync import status_report

    settings = ctx.settings
    with open_state(settings, create=False, readonly=True) as state:
        info = status_report.gather(settings, state, lambda: _usage(settings))
    found = info["problems"]
    if as_json:
        click.echo(json_for_terminal(info))
    elif check:
        click.echo(for_terminal("\n".join(status_report.check_lines(found))))
    else:
        click.echo(for_terminal(status_report.render(info)))
    if check and found:
        sys.exit(int(ExitCode.UNHEALTHY))


def _usage(settings: Settings) -> dict[str, Any]:
    usage = key_budget(settings).usage()
    cc = settings.constant_contact
    return {
        "day_utc": usage.day,
        "application_key": usage.key_total,
        "application_key_budget": cc.daily_request_budget,
        "organization": usage.organization,
        "organization_budget": cc.organization_daily_request_budget,
    }


# -- check ----------------------------------------------------------------------------------


def consent_warnings(settings: Settings) -> list[str]:
    """Setups that would make people explicit without a Flipcause sign-up as evidence."""
    policy = settings.policy
    warnings = []
    if policy.setup == "all_contacts_uniform" and policy.new_contact_status == "explicit":
        warnings.append(
            "policy.new_contact_status is explicit: every NEW contact, donors included, is "
            "recorded as having given explicit permission. Only do this if the organization "
            "has its own basis for that consent (for example an opt-in checkbox on every form)."
        )
    if (
        policy.setup == "all_contacts_by_subscription"
        and policy.new_non_subscriber_status == "explicit"
    ):
        warnings.append(
            "policy.new_non_subscriber_status is explicit: new people who did NOT sign up for "
            "the mailing list are recorded as explicit. The organization must have its own "
            "basis for that consent."
        )
    return warnings


def _field_report(settings: Settings) -> discovery.FieldReport | None:
    """Field counts over the stored payloads; None when there is no state file yet."""
    if not settings.state_file.exists():
        return None
    with open_state(settings, create=False, readonly=True) as state:
        return discovery.discover(discovery.stored_payloads(state), settings.flipcause)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_ctx
@handle_errors
def fields(ctx: Context, as_json: bool) -> None:
    """For go-live: which configured Flipcause fields the stored payloads carry (counts only)."""
    settings = ctx.settings
    report = _field_report(settings) or discovery.discover((), settings.flipcause)
    if as_json:
        click.echo(json_for_terminal(report.as_dict()))
    else:
        click.echo(discovery.render_text(report))


@cli.command()
@click.option(
    "--offline", is_flag=True, help="Check the config only; no request to Constant Contact."
)
@pass_ctx
@handle_errors
def check(ctx: Context, offline: bool) -> None:
    """Check the config, then the account: token works, lists and custom fields exist."""
    settings = ctx.settings
    placeholders = placeholder_problems(settings)
    if placeholders:
        raise ConfigError(str(settings.config_path), placeholders)
    click.echo(f"config {settings.config_path}: ok (setup {settings.policy.setup})")
    for warning in consent_warnings(settings):
        click.echo(f"warning: {warning}")
    field_report = _field_report(settings)
    if field_report is None or not field_report.payloads:
        click.echo("stored payloads: none yet (run `flipsync fields` after the first webhooks)")
    else:
        click.echo(f"stored payloads: {field_report.payloads}")
        found = discovery.email_warning(field_report)
        if found:
            click.echo(f"warning: {found}")
    if offline:
        return
    from flipsync.sync import Syncer

    client = build_client(settings, clock=ctx.clock)
    client.check_token()
    click.echo("token: ok")
    # check only reads the state DB; it creates it on a first setup, like ingest and run.
    with open_state(settings, readonly=settings.state_file.exists()) as state:
        catalog = Syncer(settings, state, client).resolve_catalog()
    names = ", ".join(sorted(set(catalog.list_names.values()))) or "none"
    click.echo(for_terminal(f"lists: ok ({names})"))  # names come from the account
    if catalog.field_ids:
        click.echo(for_terminal(f"custom fields: ok ({', '.join(sorted(catalog.field_ids))})"))
    click.echo(f"requests used: {sum(client.request_counts.values())}")


# -- auth -----------------------------------------------------------------------------------


@cli.group()
def auth() -> None:
    """Log in to Constant Contact and inspect the token file."""


@auth.command()
@click.option(
    "--code", help="Authorization code (the authorization-code flow, needs the client secret)."
)
@click.option(
    "--redirect-uri",
    default="https://localhost",
    show_default=True,
    help="Redirect URI registered for the application (with --code).",
)
@click.option("--print-url", is_flag=True, help="Print the authorization URL for --code and exit.")
@pass_ctx
@handle_errors
def login(ctx: Context, code: str | None, redirect_uri: str, print_url: bool) -> None:
    """Authorize flipsync (device flow by default) and write the token file."""
    import secrets

    from flipsync.ctct.auth import authorization_url, device_login, exchange_code, write_token_file
    from flipsync.ctct.http import make_session
    from flipsync.ctct.types import ClientSettings, DevicePrompt

    settings = ctx.settings
    cc = settings.constant_contact
    client_settings = ClientSettings(
        api_base_url=cc.api_base_url,
        oauth_base_url=cc.oauth_base_url,
        client_id=cc.client_id,
        client_secret=secret_from_env(cc.client_secret_env),
        token_file=cc.token_file,
        timeout_seconds=cc.timeout_seconds,
    )
    if print_url:
        click.echo(authorization_url(client_settings, redirect_uri, secrets.token_urlsafe(16)))
        return
    session = make_session(client_settings.user_agent)
    if code:
        token_set = exchange_code(
            client_settings, session, code, redirect_uri, clock=ctx.clock.now, sleep=ctx.clock.sleep
        )
    else:

        def prompt(p: DevicePrompt) -> None:
            click.echo(f"Open {p.verification_uri} and enter the code {p.user_code}")
            if p.verification_uri_complete:
                click.echo(f"(or open {p.verification_uri_complete})")
            click.echo(f"Waiting for approval (the code expires in {p.expires_in // 60} min)...")

        token_set = device_login(
            client_settings,
            session,
            on_prompt=prompt,
            sleep=ctx.clock.sleep,
            clock=ctx.clock.now,
        )
    write_token_file(cc.token_file, token_set)
    click.echo(f"logged in; token set written to {cc.token_file} (mode 0600)")


@auth.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
@handle_errors
def auth_status(ctx: Context, as_json: bool) -> None:
    """Show when the access token expires and how long the refresh token has left."""
    from flipsync.ctct.auth import read_token_file, token_status

    token_set = read_token_file(ctx.settings.constant_contact.token_file)
    info = token_status(token_set, utcnow())
    if as_json:
        click.echo(json_for_terminal(info))
        return
    for key, value in info.items():
        click.echo(f"{key}: {value}")


# -- sandbox --------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--seed",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON or YAML with lists, custom_fields and contacts to start with.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a valid token set for the sandbox here (the documented token-file format).",
)
@click.option(
    "--requests-per-second",
    default=4.0,
    show_default=True,
    type=float,
    help="Throttle like Constant Contact (0 disables).",
)
@click.option("--daily-quota", default=10000, show_default=True, type=int)
@click.option(
    "--activity-seconds",
    default=0.5,
    show_default=True,
    type=float,
    help="How long an import stays processing.",
)
@click.option("--confirmed-opt-in", is_flag=True, help="Sign-ups become pending_confirmation.")
@click.option(
    "--fault-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of API requests that fail (500, 503, dropped connections).",
)
@click.option("--fault-seed", default=0, show_default=True, type=int)
@click.option(
    "--token-lifetime",
    default=86400,
    show_default=True,
    type=int,
    help="Access token lifetime in seconds.",
)
@handle_errors
def sandbox(
    host: str,
    port: int,
    seed: Path | None,
    token_file: Path | None,
    requests_per_second: float,
    daily_quota: int,
    activity_seconds: float,
    confirmed_opt_in: bool,
    fault_rate: float,
    fault_seed: int,
    token_lifetime: int,
) -> None:
    """Run a local stand-in for the Constant Contact V3 API (no account needed)."""
    import yaml

    from flipsync.ctct.auth import token_set_from_response, write_token_file
    from flipsync.sandbox import RunningSandbox, Sandbox, SandboxConfig, serve_forever

    box = Sandbox(
        SandboxConfig(
            requests_per_second=requests_per_second,
            daily_quota=daily_quota,
            activity_seconds=activity_seconds,
            confirmed_opt_in=confirmed_opt_in,
            fault_rate=fault_rate,
            fault_seed=fault_seed,
            token_lifetime_seconds=token_lifetime,
        )
    )
    if seed is not None:
        try:
            box.seed(yaml.safe_load(seed.read_text(encoding="utf-8")) or {})
        except (yaml.YAMLError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{seed}: not a usable sandbox seed ({exc})") from None

    def ready(running: RunningSandbox) -> None:
        if token_file is not None:
            write_token_file(token_file, token_set_from_response(box.issue_tokens(), utcnow()))
        click.echo(f"sandbox listening on {running.base_url}")
        click.echo(f"  api_base_url: {running.api_base_url}")
        click.echo(f"  oauth_base_url: {running.oauth_base_url}")
        sys.stdout.flush()

    serve_forever(box, host, port, on_ready=ready)


def _register_fleet() -> None:
    from flipsync.fleet_cli import fleet

    cli.add_command(fleet)


_register_fleet()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="flipsync")
