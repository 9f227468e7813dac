"""One organization's run, as `flipsync run` and `flipsync fleet run` both do it.

The CLI and the fleet scheduler share this path, so an organization behaves the same
whether cron starts it alone or the fleet runs it with hundreds of others: the same
lock, the same state DB, the same Syncer. The client is built by a factory the caller
passes (the composition root owns the concrete classes), and only when there is work:
an idle organization is recognised from its state DB alone, before any client exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from flipsync import logs
from flipsync.lock import hold_lock
from flipsync.outcomes import RunReport
from flipsync.ports import ConstantContactAPI
from flipsync.progress import Progress, no_progress
from flipsync.settings import Settings
from flipsync.state import StateDB, iso, utcnow

ClientFactory = Callable[[Settings], ConstantContactAPI]


def has_work(state: StateDB, now: datetime) -> bool:
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
