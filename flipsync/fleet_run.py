"""`flipsync fleet run`: one cycle over the fleet's organizations, in one process.

A cycle surveys every organization from its state DB alone (no client, no request),
runs those whose slot is due and who have work on a few threads, applies the retention
once a day per organization (as `run && prune` does in the single-organization cron
line), and records what happened in ``fleet-state.json``. All runs draw on the key's one request budget
(flipsync.ctct.budget: a file shared by every flipsync process of the key), so the
threads together stay under the key's 4 requests/s, and each organization's daily cap
for the cycle is its share by the rule in flipsync.fleet_plan.

An organization's failure (a broken config, a revoked login, a spent share, a bug) is
caught, logged, counted and reported; it never stops the others. On SIGTERM no new
organization starts; the ones in flight finish their run (whose journal makes a run
safe to stop anyway).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from flipsync import fleet_plan, logs
from flipsync.ctct.budget import KeyBudget
from flipsync.errors import (
    ConfigError,
    FlipsyncError,
    LockHeld,
    QuotaExceeded,
    ReauthRequired,
    with_config,
)
from flipsync.fleet import ORG_CONFIG, FleetOrg, FleetSettings, clashes, load_org, org_names
from flipsync.report import report_level, run_summary
from flipsync.state import StateDB, iso, utcnow
from flipsync.tasks import ClientFactory, has_work, run_organization

log = structlog.get_logger(__name__)

GOOD = ("ok", "idle", "partial", "waiting")
# Deferred, not failed: the organization's share of the day is spent, or another process
# (a backfill, a manual run) holds its lock. Reported and counted, never a problem by itself;
# records left waiting too long show up as the stale-inbox problem.
DEFERRED = ("quota", "locked")


# -- the scheduler's memory -------------------------------------------------------------------


def load_fleet_state(path: Path) -> dict[str, Any]:
    """``fleet-state.json``; an unreadable file only costs the history (every org runs once)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, OSError):
        return {"orgs": {}}
    if not isinstance(data, dict) or not isinstance(data.get("orgs"), dict):
        return {"orgs": {}}
    return data


def save_fleet_state(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically and privately (0600): a crash leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def key_budget(fleet: FleetSettings, organization: str = "-fleet-") -> KeyBudget:
    """The key's one budget file, as every organization's client uses it."""
    return KeyBudget(
        fleet.key_budget_file,
        organization=organization,
        rate_per_second=fleet.requests_per_second,
        daily_limit=fleet.daily_request_budget,
        organization_daily_limit=None,
    )


# -- survey -----------------------------------------------------------------------------------


@dataclass
class Survey:
    """One organization as seen from its state DB, before any decision to run it."""

    name: str
    org: FleetOrg | None = None
    problem: str | None = None
    problem_kind: str = "config"  # or "state": the state DB cannot be read
    backlog: int = 0
    work: bool = False


def survey(fleet: FleetSettings, name: str, now: datetime) -> Survey:
    """Load the config and read the backlog; a broken config is a result, not an exception."""
    found = Survey(name)
    try:
        found.org = load_org(fleet, name)
    except ConfigError as exc:
        found.problem = "; ".join(exc.problems)
        return found
    except FlipsyncError as exc:
        found.problem = str(exc)
        return found
    path = found.org.settings.state_file
    if not path.exists():
        return found
    try:
        with StateDB.open(path, create=False) as state:
            found.backlog = state.inbox_pending_count()
            found.work = has_work(state, now)
    except FlipsyncError as exc:
        found.problem, found.problem_kind = str(exc), "state"
    return found


# -- one cycle --------------------------------------------------------------------------------


@dataclass
class OrgResult:
    """What the cycle did for one organization."""

    name: str
    status: str  # ok, idle, partial, waiting, not_due, error, config, reauth, quota, locked, ...
    message: str | None = None
    records: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    backlog: int = 0
    cadence_minutes: int = 15
    share: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {
            "organization": self.name,
            "status": self.status,
            "message": self.message,
            "records": self.records,
            "requests": sum(self.requests.values()),
            "requests_by_kind": dict(self.requests),
            "outcomes": self.outcomes,
            "seconds": round(self.seconds, 3),
            "backlog": self.backlog,
            "cadence_minutes": self.cadence_minutes,
            "share": self.share,
        }


@dataclass
class CycleReport:
    """One `fleet run`: a result per organization and the key's totals."""

    started_at: str
    finished_at: str = ""
    results: list[OrgResult] = field(default_factory=list)
    forecast: fleet_plan.Forecast | None = None
    interrupted: bool = False

    @property
    def failures(self) -> list[OrgResult]:
        """Results that are problems (not ok, idle, waiting or not due)."""
        return [
            r for r in self.results if r.status not in (*GOOD, *DEFERRED, "not_due", "not_started")
        ]

    def counts(self) -> dict[str, int]:
        """Organizations per result."""
        return dict(Counter(r.status for r in self.results))

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        fc = self.forecast
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "interrupted": self.interrupted,
            "counts": self.counts(),
            "requests": sum(sum(r.requests.values()) for r in self.results),
            "forecast": None
            if fc is None
            else {"used": fc.used, "budget": fc.budget, "projected": fc.projected},
            "organizations": [r.as_dict() for r in self.results if r.status != "not_due"],
        }


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return "config"
    if isinstance(exc, ReauthRequired):
        return "reauth"
    if isinstance(exc, QuotaExceeded):
        return "quota"
    if isinstance(exc, LockHeld):
        return "locked"
    return "error"


class FleetRunner:
    """Runs cycles of one fleet. Build one per process; `cycle()` does one `fleet run`."""

    def __init__(
        self,
        fleet: FleetSettings,
        client_factory: ClientFactory,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        stop: threading.Event | None = None,
    ) -> None:
        self.fleet = fleet
        self.client_factory = client_factory
        self.clock = clock
        self.sleep = sleep
        self.stop = stop or threading.Event()

    def plan(
        self, surveys: list[Survey], now: datetime
    ) -> tuple[dict[str, int], dict[str, int], fleet_plan.Forecast]:
        """Cadences (stretched when the day's budget is short) and today's share per org."""
        budget = key_budget(self.fleet)
        key_used = budget.usage().key_total
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        fc = fleet_plan.forecast(
            key_used, self.fleet.daily_request_budget, (now - midnight).total_seconds()
        )
        backlog = {s.name: s.backlog for s in surveys}
        cadences = fleet_plan.stretched_cadences(
            {s.name: self.fleet.cadence_for(s.name) for s in surveys}, backlog, fc
        )
        used_by_org = budget.by_organization()
        used = {s.name: used_by_org.get(s.name, 0) for s in surveys}
        share = fleet_plan.shares(
            remaining=self.fleet.daily_request_budget - key_used,
            used=used,
            backlog=backlog,
            minimum=self.fleet.minimum_daily_requests_per_org,
        )
        caps = {name: used[name] + share[name] for name in share}
        return cadences, caps, fc

    def cycle(self, names: list[str] | None = None) -> CycleReport:
        """Survey, pick the due organizations, run them on threads, record the results.

        Cycles may overlap (a long backfill keeps one going while cron starts the next):
        each organization's own lock keeps its runs apart (the later one reports it
        ``locked`` and leaves it due), and the memory is merged under a short lock at the end.
        """
        now = self.clock()
        report = CycleReport(started_at=iso(now))
        memory: dict[str, Any] = load_fleet_state(self.fleet.state_path)["orgs"]
        every = org_names(self.fleet)
        surveys = [survey(self.fleet, n, now) for n in (names or every)]
        mixed = clashes({s.name: s.org.settings for s in surveys if s.org is not None})
        for s in surveys:
            if s.name in mixed:
                s.problem, s.problem_kind = "; ".join(mixed[s.name]), "config"
        cadences, caps, report.forecast = self.plan(surveys, now)
        epoch = now.timestamp()
        todo: list[tuple[Survey, OrgResult]] = []
        slots: dict[str, tuple[int, int]] = {}
        for s in surveys:
            cadence = cadences[s.name]
            result = OrgResult(s.name, "not_due", backlog=s.backlog, cadence_minutes=cadence)
            result.share = caps.get(s.name)
            report.results.append(result)
            if not _due(s.name, cadence, epoch, memory.get(s.name) or {}, now):
                continue
            if s.problem is not None:
                result.status, result.message = s.problem_kind, s.problem
            elif not s.work:
                result.status = "idle"
            else:
                todo.append((s, result))
                continue
            slots[s.name] = (fleet_plan.slot(s.name, cadence * 60, epoch), cadence)
        todo.sort(key=lambda pair: -pair[0].backlog)
        day = now.strftime("%Y-%m-%d")
        prune = [
            s
            for s in surveys
            if s.org is not None
            and s.problem is None
            and s.org.settings.state_file.exists()
            and (memory.get(s.name) or {}).get("pruned_day") != day
        ]
        with ThreadPoolExecutor(
            max_workers=self.fleet.max_concurrent_orgs, thread_name_prefix="flipsync-org"
        ) as pool:
            for _ in pool.map(lambda pair: self._run_one(pair[0], pair[1], caps), todo):
                pass
            done = list(pool.map(self._prune_one, prune))
        pruned = {s.name for s, ok in zip(prune, done, strict=True) if ok}
        report.interrupted = self.stop.is_set()
        for s, result in todo:
            if result.status not in ("not_started", "locked"):
                slot = fleet_plan.slot(s.name, result.cadence_minutes * 60, epoch)
                slots[s.name] = (slot, result.cadence_minutes)
        self._record(report, surveys, cadences, slots, pruned, every, now)
        report.finished_at = iso(self.clock())
        return report

    def _record(
        self,
        report: CycleReport,
        surveys: list[Survey],
        cadences: Mapping[str, int],
        slots: Mapping[str, tuple[int, int]],
        pruned: set[str],
        every: list[str],
        now: datetime,
    ) -> None:
        """Merge this cycle into ``fleet-state.json`` (re-read under its lock: cycles overlap)."""
        from flipsync.lock import hold_lock

        lock = self.fleet.state_path.with_name(self.fleet.state_path.name + ".lock")
        with hold_lock(lock, "fleet state update", wait_seconds=60):
            state = load_fleet_state(self.fleet.state_path)
            memory: dict[str, Any] = state["orgs"]
            for s in surveys:
                mine = memory.setdefault(s.name, {})
                # Why the cadence is what it is: the configured one it was planned from, and
                # whether the budget stretched it (fleet status reports only such a stretch).
                base = self.fleet.cadence_for(s.name)
                mine["cadence_minutes"] = cadences[s.name]
                mine["base_cadence_minutes"] = base
                mine["cadence_stretched"] = cadences[s.name] > base
                mine["backlog"] = s.backlog
                if s.name in slots:
                    mine["slot"], mine["slot_cadence"] = slots[s.name]
                if s.name in pruned:
                    mine["pruned_day"] = now.strftime("%Y-%m-%d")
            for result in report.results:
                if result.status not in ("not_due", "not_started"):
                    remember(memory.setdefault(result.name, {}), result, now)
            for gone in set(memory) - set(every):  # removed from the fleet
                del memory[gone]
            state["updated_at"] = iso(self.clock())
            save_fleet_state(self.fleet.state_path, state)

    def _prune_one(self, s: Survey) -> bool:
        """Once a day per organization, what `flipsync prune` after `run` does in cron.

        Never a failure of the organization's run: a problem is logged and retried next cycle.
        """
        from flipsync.lock import hold_lock
        from flipsync.retention import prune

        if self.stop.is_set() or s.org is None:
            return False
        settings = s.org.settings
        try:
            with (
                hold_lock(settings.lock_file, "prune"),
                StateDB.open(settings.state_file, create=False) as state,
            ):
                prune(state, days=settings.run.retention_days, now=self.clock())
        except FlipsyncError as exc:
            log.warning("fleet_prune_failed", organization=s.name, message=str(exc))
            return False
        return True

    def _run_one(self, s: Survey, result: OrgResult, caps: Mapping[str, int]) -> None:
        if self.stop.is_set():
            result.status = "not_started"
            return
        assert s.org is not None
        settings = s.org.settings
        cap = caps.get(s.name)
        own = settings.constant_contact.organization_daily_request_budget
        if cap is not None:
            limit = cap if own is None else min(own, cap)
            settings = replace(
                settings,
                constant_contact=replace(
                    settings.constant_contact, organization_daily_request_budget=limit
                ),
            )
        started = time.monotonic()
        bound = structlog.contextvars.bound_contextvars(organization=s.name)
        try:
            with bound:
                run = run_organization(
                    settings,
                    self.client_factory,
                    skip_when_idle=True,
                    clock=self.clock,
                    sleep=self.sleep,
                )
                if run.run_id and logs.reports_as_events():  # the cron log, as `run` writes it
                    logs.emit("run_finished", level=report_level(run), **run_summary(run))
            result.status = run.status
            result.message = run.message
            result.records = run.records_read
            result.requests = Counter(run.requests)
            result.outcomes = run.counts()
        except Exception as exc:  # one organization's failure never stops the rest
            result.status = _status_of(exc)
            result.message = with_config(str(exc), self.fleet.org_dir(s.name) / ORG_CONFIG)
            result.message = result.message or type(exc).__name__
            if isinstance(exc, FlipsyncError):
                log.warning(
                    "fleet_org_failed",
                    organization=s.name,
                    result=result.status,
                    message=result.message,
                )
            else:
                log.exception("fleet_org_bug", organization=s.name)
        finally:
            result.seconds = time.monotonic() - started


def _due(name: str, cadence: int, epoch: float, mine: Mapping[str, Any], now: datetime) -> bool:
    """Due in this slot; after a cadence change, due once the new cadence passed since the last run."""
    if mine.get("slot_cadence") == cadence:
        return fleet_plan.is_due(name, cadence * 60, epoch, mine.get("slot"))
    since = seconds_since(mine.get("last_run_at"), now)
    return since is None or since >= cadence * 60


def remember(mine: dict[str, Any], result: OrgResult, now: datetime) -> None:
    """Fold one result into the organization's memory: last result and counters."""
    runs = mine.setdefault("runs", {})
    runs[result.status] = runs.get(result.status, 0) + 1
    if result.status == "locked":
        return  # it did not run here (another process had it): not its last run
    mine["last_run_at"] = iso(now)
    mine["last_status"] = result.status
    mine["last_message"] = result.message
    if result.status in GOOD:
        mine["last_good_at"] = iso(now)
        mine["consecutive_failures"] = 0
    elif result.status not in DEFERRED:
        mine["consecutive_failures"] = int(mine.get("consecutive_failures", 0)) + 1
    for bucket, values in (("records", result.outcomes), ("requests", result.requests)):
        counts = mine.setdefault(bucket, {})
        for key, value in values.items():
            if value:
                counts[key] = counts.get(key, 0) + int(value)


def seconds_since(moment: str | None, now: datetime) -> float | None:
    """Seconds from an ISO time to now (None when never)."""
    if not moment:
        return None
    then = datetime.fromisoformat(moment)
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (now - then).total_seconds()
