"""Where every organization of a fleet stands: one row each, and the key's totals.

Read-only and local: the state DBs, token files, the key's budget file and the
scheduler's memory. `fleet status` prints it, `fleet status --check` exits on its
problems, and flipsync.metrics turns the same rows into Prometheus metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flipsync import health
from flipsync.errors import FlipsyncError, with_config
from flipsync.fleet import ORG_CONFIG, FleetSettings, load_org, org_names
from flipsync.fleet_run import key_budget, load_fleet_state, seconds_since
from flipsync.state import StateDB


@dataclass
class OrgStatus:
    """One organization's row."""

    name: str
    last_run_at: str | None = None
    last_result: str | None = None
    last_good_at: str | None = None
    backlog: int | None = None
    oldest_waiting: str | None = None
    requests_today: int = 0
    login_expires_in_days: float | None = None
    cadence_minutes: int | None = None
    stretched: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    state_file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {
            "organization": self.name,
            "last_run_at": self.last_run_at,
            "last_result": self.last_result,
            "last_good_at": self.last_good_at,
            "backlog": self.backlog,
            "oldest_waiting": self.oldest_waiting,
            "requests_today": self.requests_today,
            "login_expires_in_days": self.login_expires_in_days,
            "cadence_minutes": self.cadence_minutes,
            "cadence_stretched": self.stretched,
            "problems": self.problems,
            "notes": self.notes,
        }


@dataclass
class FleetStatus:
    """Every row plus the key's usage today."""

    rows: list[OrgStatus]
    day: str
    key_requests_today: int
    key_budget: int

    @property
    def unhealthy(self) -> list[OrgStatus]:
        """Rows with at least one problem."""
        return [r for r in self.rows if r.problems]

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {
            "day_utc": self.day,
            "application_key_requests_today": self.key_requests_today,
            "application_key_budget": self.key_budget,
            "organizations": [r.as_dict() for r in self.rows],
        }


def org_status(
    fleet: FleetSettings, name: str, memory: Mapping[str, Any], used: int, now: datetime
) -> OrgStatus:
    """One row: the scheduler's memory, the state DB and the token file."""
    from flipsync.ctct.auth import read_token_file, token_status

    row = OrgStatus(name, requests_today=used)
    row.last_run_at = memory.get("last_run_at")
    row.last_result = memory.get("last_status")
    row.last_good_at = memory.get("last_good_at")
    row.counters = {k: dict(memory.get(k) or {}) for k in ("runs", "records", "requests")}
    row.cadence_minutes, row.stretched = remembered_cadence(fleet, name, memory)
    if row.stretched:
        row.notes.append(
            f"cadence stretched to {row.cadence_minutes} min: at today's pace the key's "
            f"{fleet.daily_request_budget} requests will not last the day"
        )
    try:
        org = load_org(fleet, name)
    except FlipsyncError as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]
        row.problems.extend(f"config: {p}" for p in problems)
        return row
    settings = org.settings
    row.state_file = str(settings.state_file)
    token: dict[str, Any] | None = None
    token_error = None
    try:
        token = token_status(read_token_file(settings.constant_contact.token_file), now)
        row.login_expires_in_days = float(token["refresh_token_days_left"])
    except FlipsyncError as exc:
        token_error = str(exc)
    runs: list[dict[str, Any]] = []
    oldest = None
    batches: list[datetime] = []
    if settings.state_file.exists():
        try:
            with StateDB.open(settings.state_file, create=False, readonly=True) as state:
                row.backlog = state.inbox_pending_count()
                row.oldest_waiting = oldest = state.oldest_waiting()
                runs = state.recent_runs(5)
                batches = [datetime.fromisoformat(j.created_at) for j in state.open_journals()]
        except FlipsyncError as exc:
            row.problems.append(f"state: {exc}")
    else:
        row.backlog = 0
    row.problems.extend(
        health.problems(
            now=now,
            runs=runs,
            oldest_waiting=datetime.fromisoformat(oldest) if oldest else None,
            open_batches=batches,
            token=token,
            token_error=token_error,
        )
    )
    failures = int(memory.get("consecutive_failures") or 0)
    if failures and not any(p.startswith("last run failed") for p in row.problems):
        row.problems.append(
            f"last fleet run {row.last_result} ({row.last_run_at}): "
            f"{memory.get('last_message') or 'see the log'}"
        )
    config = fleet.org_dir(name) / ORG_CONFIG
    row.problems = [with_config(p, config) for p in row.problems]
    return row


def remembered_cadence(
    fleet: FleetSettings, name: str, memory: Mapping[str, Any]
) -> tuple[int, bool]:
    """The cadence the scheduler last planned, and whether the budget stretched it.

    Only a plan made from today's configured cadence counts: after `cadence_minutes`
    changed in fleet.yaml (or in memory written before the base was remembered), the
    remembered cadence says nothing, and the next cycle plans again from the new one.
    """
    configured = fleet.cadence_for(name)
    cadence, base = memory.get("cadence_minutes"), memory.get("base_cadence_minutes")
    if cadence is None or base is None or int(base) != configured:
        return configured, False
    stretched = bool(memory.get("cadence_stretched")) and int(cadence) > configured
    return int(cadence), stretched


def fleet_status(fleet: FleetSettings, now: datetime) -> FleetStatus:
    """The rows of every organization and the key's totals for today."""
    memory = load_fleet_state(fleet.state_path)["orgs"]
    budget = key_budget(fleet)
    usage = budget.usage()
    used = budget.by_organization()
    rows = [
        org_status(fleet, name, memory.get(name) or {}, used.get(name, 0), now)
        for name in org_names(fleet)
    ]
    return FleetStatus(rows, usage.day, usage.key_total, fleet.daily_request_budget)


def seconds_since_good(row: OrgStatus, now: datetime) -> float | None:
    """For the metric: seconds since the organization's last good run (None when never)."""
    return seconds_since(row.last_good_at, now)
