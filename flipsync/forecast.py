"""What a live run would cost, said before anything is spent.

A dry run takes the live run's path up to the plan: its reads (lists, the mirror refresh or
build, opt-out checks, lookups) are the reads a live run makes, and its plan counts the
writes. Each import is followed by a few status polls (``POLLS_PER_IMPORT``, an estimate:
most imports finish by the first or second look). The forecast sets that total against what
is left of today's budget of the application key, which every organization on it shares.

``backfill --estimate`` needs no request at all: it runs the same dry run on a private copy
of the state DB, against ``OfflineAPI``, which answers from local knowledge only (the
mirror; the configured list names) and counts the reads a live run would make. People the
mirror does not know are taken as new, and the estimate says so.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from flipsync.ctct.types import (
    ContactList,
    CustomField,
    RemoteContact,
)

POLLS_PER_IMPORT = 2


@dataclass(frozen=True)
class Forecast:
    """Requests a live run would send, by kind, and today's budget of the key."""

    requests: dict[str, int]
    key_budget: int | None = None
    key_used_today: int | None = None
    organization_budget: int | None = None
    organization_used_today: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def share_of_key_budget(self) -> float | None:
        """The run's part of what is left of today's key budget (None without a budget)."""
        if self.key_budget is None:
            return None
        left = max(0, self.key_budget - (self.key_used_today or 0))
        return float("inf") if left == 0 and self.total else (self.total / left if left else 0.0)

    def lines(self) -> list[str]:
        """The forecast as a few lines for people."""
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.requests.items()) if v)
        out = [f"a live run would send about {self.total} request(s): {kinds or 'none'}"]
        share = self.share_of_key_budget()
        if share is not None and self.key_budget is not None:
            left = max(0, self.key_budget - (self.key_used_today or 0))
            pct = "all" if share == float("inf") else f"{share:.1%}"
            out.append(
                f"that is {pct} of what is left of today's budget of the application key "
                f"({left} of {self.key_budget}, shared by every organization on the key)"
            )
            if self.total > left:
                out.append("it would not fit today: the run would stop at the budget and resume")
        if self.organization_budget is not None:
            left_org = max(0, self.organization_budget - (self.organization_used_today or 0))
            out.append(f"this organization has {left_org} of {self.organization_budget} left today")
        out += list(self.notes)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(sorted(self.requests.items())),
            "total": self.total,
            "key_budget": self.key_budget,
            "key_used_today": self.key_used_today,
            "share_of_key_budget_left": self.share_of_key_budget(),
            "organization_budget": self.organization_budget,
            "organization_used_today": self.organization_used_today,
            "notes": list(self.notes),
        }


def requests_of(reads: Mapping[str, int], planned_writes: Mapping[str, int]) -> dict[str, int]:
    """A live run's requests from a dry run's reads and planned writes (plus import polls)."""
    out: Counter[str] = Counter({k: v for k, v in reads.items() if v})
    out.update(planned_writes)
    imports = planned_writes.get("json_import", 0)
    if imports:
        out["activity"] += POLLS_PER_IMPORT * imports
    return dict(out)


class OfflineAPI:
    """Constant Contact as local knowledge alone: counts the reads, sends nothing.

    Lists are the configured list references, the mirror is taken as current (a refresh is
    counted as one page and returns nothing), lookups find nobody (so people unknown to the
    mirror count as new), and any write is a bug: the estimate is a dry run.
    """

    def __init__(
        self, list_refs: Collection[str], field_names: Collection[str], now: datetime
    ) -> None:
        self._lists = [ContactList(str(uuid.uuid5(uuid.NAMESPACE_URL, r)), r) for r in list_refs]
        self._fields = [
            CustomField(str(uuid.uuid5(uuid.NAMESPACE_URL, n)), n, n, "string") for n in field_names
        ]
        self._now = now
        self.counts: Counter[str] = Counter()

    @property
    def request_counts(self) -> Counter[str]:
        return Counter(self.counts)

    def list_lists(self) -> list[ContactList]:
        self.counts["lists"] += 1
        return list(self._lists)

    def list_custom_fields(self) -> list[CustomField]:
        self.counts["custom_fields"] += 1
        return list(self._fields)

    def lookup_contact(self, email: str) -> RemoteContact | None:
        self.counts["contact_lookup"] += 1
        return None

    def count_contacts(self) -> int:
        self.counts["contact_count"] += 1
        return 0

    def iter_contacts(
        self, updated_after: datetime | None = None, *, optout_after: datetime | None = None
    ) -> Iterator[list[RemoteContact]]:
        self.counts["contacts_page"] += 1
        yield []

    def server_now(self) -> datetime:
        return self._now

    def _no(self, *args: object, **kwargs: object) -> Any:
        raise RuntimeError("an estimate never writes to Constant Contact")

    start_json_import = _no
    get_activity = _no
    recent_activities = _no
    find_import = _no
    sign_up = _no
    create_contact = _no
    start_contact_export = _no
    iter_export_rows = _no
    delete_contacts = _no


@contextmanager
def private_copy(state_file: Path) -> Iterator[Path]:
    """A consistent copy of the state DB in a private temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="flipsync-estimate-"))
    try:
        copy = folder / "state.db"
        source = sqlite3.connect(f"file:{state_file}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def build(
    reads: Mapping[str, int],
    planned_writes: Mapping[str, int],
    usage: Callable[[], tuple[int, int]] | None,
    *,
    key_budget: int | None,
    organization_budget: int | None,
    notes: tuple[str, ...] = (),
) -> Forecast:
    """The forecast, with today's use read from the key's budget file when there is one."""
    key_used = org_used = None
    if usage is not None:
        try:
            key_used, org_used = usage()
        except OSError:
            notes = (*notes, "today's use is unknown (the budget file could not be read)")
    return Forecast(
        requests=requests_of(reads, planned_writes),
        key_budget=key_budget,
        key_used_today=key_used,
        organization_budget=organization_budget,
        organization_used_today=org_used,
        notes=notes,
    )


def estimate_backfill(
    settings: Any,
    since: Any,
    until: Any,
    *,
    now: datetime,
    usage: Callable[[], tuple[int, int]] | None,
) -> tuple[Any, Forecast]:
    """A backfill's dry run on a private copy of the state DB with no request: report, forecast."""
    from flipsync.mirror import ACCOUNT_SIZE, EXPORT_MIN_PAGES, MIRROR_COMPLETE, PAGE_SIZE
    from flipsync.state import StateDB
    from flipsync.sync import Syncer

    cc = settings.constant_contact
    notes: list[str] = ["estimated from local data alone: no request was sent"]
    with private_copy(settings.state_file) as copy, StateDB.open(copy) as state:
        api = OfflineAPI(
            settings.policy.all_list_refs(), settings.flipcause.custom_fields.values(), now
        )
        warm = state.get_meta(MIRROR_COMPLETE) == "1"
        size = state.get_meta(ACCOUNT_SIZE)
        if not warm:
            # Pretend the mirror is there (empty), so the dry run reads nothing more, and
            # count what building it would cost.
            state.set_meta(MIRROR_COMPLETE, "1")
        report = Syncer(settings, state, api, clock=lambda: now, sleep=lambda _s: None).backfill(
            since, until, dry_run=True
        )
    reads = Counter(api.request_counts)
    # The report counts requests sent; the stand-in's are only the forecast's reads.
    report.requests.clear()
    if not warm:
        reads["contacts_page"] = 0
        if size is None:
            reads["contact_count"] += 1
            notes.append(
                "the contact mirror is not built yet: its cost depends on the account's size "
                "(about 8 requests by export for a large account, 1 per 500 contacts otherwise)"
            )
            reads["contact_export"] += 2
            reads["activity"] += 3
            reads["export_file"] += 2
        else:
            pages = max(1, -(-int(size) // PAGE_SIZE))
            if pages > EXPORT_MIN_PAGES:
                reads.update({"contact_export": 2, "activity": 3, "export_file": 2})
            else:
                reads["contacts_page"] += pages
        notes.append(
            "people the mirror does not know are counted as new (a live run knows them exactly)"
        )
    return report, build(
        reads,
        report.planned_writes,
        usage,
        key_budget=cc.daily_request_budget,
        organization_budget=cc.organization_daily_request_budget,
        notes=tuple(notes),
    )
