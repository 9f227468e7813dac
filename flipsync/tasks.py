"""What each command of one organization does, between the CLI and the core.

The CLI parses options, calls one function here, and renders what it returns; the
functions take settings, open the state DB, take the organization's lock and wire the
core, so the same work is the same code whether the CLI, the fleet or a test asks.

`flipsync run` and `flipsync fleet run` share `run_organization`, so an organization
behaves the same whether cron starts it alone or the fleet runs it with hundreds of
others: the same lock, the same state DB, the same Syncer. Clients are built by a
factory the caller passes (`flipsync.clients.build_client` in production), and only
when there is work: an idle organization is recognised from its state DB alone.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from flipsync import logs
from flipsync.clock import SYSTEM_CLOCK, Clock
from flipsync.emails import normalize_email
from flipsync.errors import InputError
from flipsync.intake import IngestReport, ingest_stream
from flipsync.lock import hold_lock
from flipsync.outcomes import RunReport
from flipsync.ports import ConstantContactAPI, SyncState
from flipsync.progress import Progress, no_progress
from flipsync.settings import Settings
from flipsync.state import MirrorEntry, OutcomeRecord, StateDB, iso, utcnow

if TYPE_CHECKING:
    from flipsync.cleanup import CleanupReport
    from flipsync.fleet import FleetSettings
    from flipsync.fleet_run import CycleReport
    from flipsync.forecast import Forecast
    from flipsync.retention import PruneReport

ClientFactory = Callable[[Settings], ConstantContactAPI]


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


def has_work(state: SyncState, now: datetime) -> bool:
    """True when a live run would do anything: new records, retries, open batches, checks due.

    Mirrors what Syncer.run looks at, read-only and without a client, so an idle
    organization in a fleet costs a few SQLite reads and not one request.
    """
    from flipsync.sync import VERIFY_AFTER

    if state.open_journals("live") or state.retry_seqs():
        return True
    if state.inbox_after(state.checkpoint, 1):
        return True
    oldest = state.oldest_expectation_at()
    return oldest is not None and now - datetime.fromisoformat(oldest) >= VERIFY_AFTER


def idle_report(now: datetime) -> RunReport:
    """The report of a run that found nothing to do (not kept in the run history)."""
    report = RunReport(run_id="", kind="live", dry_run=False, started_at=iso(now))
    report.status = "idle"
    report.finished_at = iso(now)
    return report


def run_organization(
    settings: Settings,
    client_factory: ClientFactory,
    *,
    dry_run: bool = False,
    max_batches: int | None = None,
    skip_when_idle: bool = False,
    on_failure: Callable[[RunReport], None] | None = None,
    clock: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] = time.sleep,
    progress: Progress = no_progress,
) -> RunReport:
    """Run one organization under its lock; the report (``on_failure`` sees a failed one).

    With ``skip_when_idle`` an organization with nothing to do returns an idle report
    without taking its lock, building a client or recording a run (the fleet's fast path).
    """
    from flipsync.sync import Syncer

    if skip_when_idle and not dry_run and settings.state_file.exists():
        with StateDB.open(settings.state_file, create=False) as state:
            if not has_work(state, clock()):
                return idle_report(clock())
    elif skip_when_idle and not settings.state_file.exists():
        return idle_report(clock())
    with (
        hold_lock(settings.lock_file, "dry run" if dry_run else "run"),
        StateDB.open(settings.state_file) as state,
    ):
        syncer = Syncer(
            settings,
            state,
            client_factory(settings),
            clock=clock,
            sleep=sleep,
            progress=progress,
        )
        logs.bind(run_id=syncer.run_id)
        try:
            return syncer.run(dry_run=dry_run, max_batches=max_batches)
        finally:
            partial = syncer.report
            if on_failure is not None and partial is not None and partial.status == "error":
                on_failure(partial)


def run(
    settings: Settings,
    client_factory: ClientFactory,
    *,
    dry_run: bool = False,
    max_batches: int | None = None,
    on_failure: Callable[[RunReport], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    progress: Progress = no_progress,
) -> tuple[RunReport, Forecast | None]:
    """`flipsync run`: the organization's run, and for a dry run what the live one would cost."""
    report = run_organization(
        settings,
        client_factory,
        dry_run=dry_run,
        max_batches=max_batches,
        on_failure=on_failure,
        clock=clock.now,
        sleep=clock.sleep,
        progress=progress,
    )
    return report, forecast_for(settings, report, clock)


def backfill(
    settings: Settings,
    client_factory: ClientFactory,
    since: date,
    until: date | None,
    *,
    dry_run: bool = False,
    estimate: bool = False,
    clock: Clock = SYSTEM_CLOCK,
    progress: Progress = no_progress,
) -> tuple[RunReport, Forecast | None]:
    """Process a date window of the inbox again, without moving the live checkpoint.

    Each batch takes the organization's lock (waiting up to 15 minutes for a run), so
    scheduled runs go on between batches. With ``estimate`` nothing is sent or written:
    a dry run on a private copy of the state DB forecasts the requests from local data.
    """
    from flipsync.sync import Syncer

    if estimate:
        from flipsync import forecast

        with open_state(settings, create=False, readonly=True):
            pass  # the same refusals as every command for a missing or broken state file
        return forecast.estimate_backfill(
            settings, since, until, now=clock.now(), usage=_usage(settings, clock)
        )
    with open_state(settings) as state:
        syncer = Syncer(
            settings,
            state,
            client_factory(settings),
            clock=clock.now,
            sleep=clock.sleep,
            progress=progress,
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

        report = syncer.backfill(since, until, dry_run=dry_run, batch_guard=guard)
    return report, forecast_for(settings, report, clock)


def forecast_for(settings: Settings, report: RunReport, clock: Clock) -> Forecast | None:
    """For a dry run: what the live run would cost against today's budget of the key."""
    from flipsync import forecast

    if not report.dry_run:
        return None
    cc = settings.constant_contact
    return forecast.build(
        report.requests,
        report.planned_writes,
        _usage(settings, clock),
        key_budget=cc.daily_request_budget,
        organization_budget=cc.organization_daily_request_budget,
    )


def _usage(settings: Settings, clock: Clock) -> Callable[[], tuple[int, int]]:
    from flipsync.clients import usage_today

    return lambda: usage_today(settings, clock)


def cleanup_test_contacts(
    settings: Settings,
    client_factory: ClientFactory,
    *,
    apply: bool,
    patterns: Sequence[str] = (),
    clock: Clock = SYSTEM_CLOCK,
) -> CleanupReport:
    """The contacts flipsync created from test records; with ``apply``, deleted under the lock."""
    from flipsync.cleanup import Cleanup

    with (
        hold_lock(settings.lock_file, "test-contact clean-up") if apply else nullcontext(),
        open_state(settings, create=False) as state,
    ):
        return Cleanup(
            settings,
            state,
            client_factory(settings),
            extra_patterns=tuple(patterns),
            clock=clock.now,
            sleep=clock.sleep,
        ).run(apply=apply)


def prune(
    settings: Settings, *, days: int | None = None, dry_run: bool = False, now: datetime
) -> PruneReport:
    """Remove what is older than the retention (``days``, else run.retention_days)."""
    from flipsync.retention import prune as apply_retention

    with hold_lock(settings.lock_file, "prune"), open_state(settings, create=False) as state:
        return apply_retention(
            state, days=days or settings.run.retention_days, now=now, dry_run=dry_run
        )


def initialize(settings: Settings, *, start_over: bool, now: datetime) -> str:
    """Create the state DB (or replace an unusable one with ``start_over``); what was done."""
    from flipsync.state_guard import initialize as initialize_state

    with hold_lock(settings.lock_file, "init"):
        return initialize_state(settings.state_file, start_over=start_over, now=now)


def ingest_files(
    settings: Settings,
    names: Sequence[str],
    input_format: str,
    *,
    progress: Progress = no_progress,
) -> IngestReport:
    """Store saved payloads or Flipcause CSV exports (``-`` is stdin) in the inbox.

    ``input_format`` is json, flipcause-csv, or auto (flipcause-csv for *.csv files).
    """
    from flipsync.csv_intake import CSV_FORMAT, ingest_csv_stream

    total = IngestReport()
    with open_state(settings) as state:
        for name in names:
            label = "stdin" if name == "-" else name
            as_csv = input_format == CSV_FORMAT or (
                input_format == "auto" and name.lower().endswith(".csv")
            )
            with open_input(name) as stream:
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
                        progress=progress,
                    )
            total.add(report)
    return total


@contextmanager
def open_input(name: str) -> Iterator[IO[bytes]]:
    """One input file as bytes (``-`` is stdin); InputError says why it cannot be read."""
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


@dataclass(frozen=True)
class Explanation:
    """Every decision flipsync recorded for one email, and what it last saw in the account."""

    email: str
    outcomes: list[OutcomeRecord]
    mirror: MirrorEntry | None

    def as_dict(self) -> dict[str, Any]:
        """The `explain --json` document."""
        mirror = self.mirror
        return {
            "email": self.email,
            "outcomes": [o.to_json() for o in self.outcomes],
            "constant_contact": None
            if mirror is None
            else {
                "permission": mirror.permission,
                "deleted": mirror.deleted,
                "contact_id": mirror.contact_id,
                "as_of": mirror.seen_at,
            },
        }


def explain(settings: Settings, email: str) -> Explanation:
    """The history of one email (any case), read from the state DB only."""
    key = normalize_email(email)
    with open_state(settings, create=False, readonly=True) as state:
        return Explanation(email, state.outcomes_for(key), state.mirror_get([key]).get(key))


def fleet_cycle(
    fleet: FleetSettings, client_factory: ClientFactory, only: Sequence[str] = ()
) -> CycleReport:
    """One `flipsync fleet run`: the due organizations (or ``only``), then the metrics file.

    SIGTERM and SIGINT stop the cycle between organizations (each one that started
    finishes its batch); the previous signal handlers are restored afterwards.
    """
    from flipsync.fleet_run import FleetRunner
    from flipsync.metrics import write_textfile

    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stop.set())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        report = FleetRunner(fleet, client_factory, stop=stop).cycle(list(only) or None)
        if fleet.metrics_textfile is not None:
            write_textfile(fleet, fleet.metrics_textfile)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return report
