"""Which inbox records are tests, and the verdict for each of their emails (pure).

The judgement half of `flipsync cleanup-test-contacts` (flipsync.cleanup runs it): the
markers, the grouping of test records by email, and the rules that turn flipsync's own
outcomes and a fresh Constant Contact lookup into delete, keep, gone or not_synced.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog

from flipsync.ctct.types import RemoteContact
from flipsync.emails import normalize_email
from flipsync.policy import Action, Endpoint
from flipsync.records import FlipcauseRecord, parse_record
from flipsync.settings import FlipcauseSettings, TestRecordSettings
from flipsync.state import InboxRow, OutcomeRecord, iso

log = structlog.get_logger(__name__)

WRITES = frozenset({Action.CREATE, Action.UPDATE})
# flipsync's write time is when it committed, after Constant Contact confirmed the write, so
# CC's own stamp of that write is earlier; this only absorbs the two clocks disagreeing a
# little. A person changing a test contact within a second of the sync is not a real case.
CLOCK_SKEW = timedelta(seconds=1)


class Verdict(StrEnum):
    """What the clean-up does with one email of a test record."""

    DELETE = "delete"
    KEEP = "keep"
    GONE = "gone"
    NOT_SYNCED = "not_synced"


# -- which records are tests (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class Markers:
    """The configured test markers plus this call's `--email` globs."""

    configured: TestRecordSettings
    extra_patterns: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        """True when at least one marker can match."""
        return self.configured.configured or bool(self.extra_patterns)

    def describe(self) -> list[str]:
        """The markers in words, for the report."""
        c = self.configured
        out = [f"email matches {p}" for p in (*c.email_patterns, *self.extra_patterns)]
        out += [f"webhook record id {i}" for i in c.record_ids]
        out += [f"transaction id {i}" for i in c.transaction_ids]
        out += [f"campaign id {i}" for i in c.campaign_ids]
        if c.go_live_date:
            out.append(f"reached the inbox before {c.go_live_date.isoformat()} (go-live)")
        return out

    def match(self, record: FlipcauseRecord, received_at: str) -> str | None:
        """The first marker that makes this record a test, in words; None for a real record."""
        c = self.configured
        for pattern in (*c.email_patterns, *self.extra_patterns):
            if fnmatch.fnmatchcase(record.email_key, normalize_email(pattern)):
                return f"email matches {pattern}"
        if record.webhook_record_id and record.webhook_record_id in c.record_ids:
            return f"webhook record id {record.webhook_record_id}"
        if record.transaction_id and record.transaction_id in c.transaction_ids:
            return f"transaction id {record.transaction_id}"
        if record.campaign_id and record.campaign_id in c.campaign_ids:
            return f"campaign id {record.campaign_id}"
        if c.go_live_date is not None:
            # The inbox arrival, not the transaction date: a CSV export of past years
            # ingested after go-live is history, not a test.
            arrived = datetime.fromisoformat(received_at).date()
            if arrived < c.go_live_date:
                return f"reached the inbox on {arrived.isoformat()}, before go-live"
        return None


@dataclass
class EmailRecords:
    """The inbox records that carry one email, split into tests and the rest."""

    email: str
    tests: dict[str, str] = field(default_factory=dict)  # record key -> marker
    others: list[str] = field(default_factory=list)  # record keys


def classify(
    rows: Iterable[InboxRow], flipcause: FlipcauseSettings, markers: Markers
) -> dict[str, EmailRecords]:
    """Per email key: its test records (with the marker that matched) and its other records.

    Payloads that yield no usable record (no person, bad email) are never sent, so they
    play no part here.
    """
    by_email: dict[str, EmailRecords] = {}
    for row in rows:
        try:
            parsed = parse_record(row.seq, row.record_key, row.payload, flipcause)
        except Exception as exc:  # noqa: BLE001 - a record the run cannot read is never sent
            log.warning("record_unreadable", seq=row.seq, error=type(exc).__name__)
            continue
        if not isinstance(parsed, FlipcauseRecord):
            continue
        entry = by_email.setdefault(parsed.email_key, EmailRecords(email=parsed.email))
        marker = markers.match(parsed, row.received_at)
        if marker is None:
            entry.others.append(row.record_key)
        else:
            entry.tests[row.record_key] = marker
    return {key: entry for key, entry in by_email.items() if entry.tests}


# -- the verdict per email (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One email of a test record and what the clean-up does with its contact."""

    email: str
    email_key: str
    verdict: Verdict
    reason: str
    record_keys: tuple[str, ...]
    markers: tuple[str, ...]
    contact_id: str | None = None
    permission: str | None = None
    flipsync_wrote_at: str | None = None
    updated_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        out = asdict(self)
        out["verdict"] = self.verdict.value
        out["record_keys"] = list(self.record_keys)
        out["markers"] = list(self.markers)
        return out


def judge_history(
    email_key: str, records: EmailRecords, history: Sequence[OutcomeRecord]
) -> Candidate:
    """The verdict from flipsync's own knowledge; DELETE here still needs the fresh lookup.

    `history` is every outcome recorded for the email, oldest first. Only what came after
    the last `delete` outcome counts: a contact deleted before starts a new story.
    """
    base = Candidate(
        email=records.email,
        email_key=email_key,
        verdict=Verdict.KEEP,
        reason="",
        record_keys=tuple(records.tests),
        markers=tuple(dict.fromkeys(records.tests.values())),
    )

    def keep(reason: str) -> Candidate:
        return _with(base, verdict=Verdict.KEEP, reason=reason)

    if records.others:
        return keep(
            f"{len(records.others)} record(s) that are not tests have this email "
            f"(first: {records.others[0]}); a real supporter's contact is never deleted"
        )
    since_delete = list(history)
    deleted_at: str | None = None
    for index, row in enumerate(history):
        if row.action is Action.DELETE:
            since_delete = list(history[index + 1 :])
            deleted_at = row.at
    writes = [o for o in since_delete if o.action in WRITES and o.endpoint is not Endpoint.NONE]
    if not writes and deleted_at is not None:
        return _with(
            base,
            verdict=Verdict.GONE,
            reason=f"deleted by an earlier cleanup-test-contacts --apply ({deleted_at})",
        )
    if not writes:
        return _with(
            base,
            verdict=Verdict.NOT_SYNCED,
            reason="flipsync never wrote this email to Constant Contact",
        )
    if writes[0].action is not Action.CREATE:
        return keep(
            "the contact existed before flipsync wrote to it (its first write was an update); "
            "pre-existing contacts are never deleted"
        )
    foreign = sorted({k for o in writes for k in o.record_keys if k not in records.tests})
    if foreign:
        return keep(
            f"flipsync also wrote it for record(s) that are not tests ({', '.join(foreign[:3])})"
        )
    return _with(
        base,
        verdict=Verdict.DELETE,
        reason="created by flipsync from test records",
        flipsync_wrote_at=max(o.at for o in writes),
    )


def judge_contact(candidate: Candidate, contact: RemoteContact | None) -> Candidate:
    """The final verdict for a DELETE-so-far candidate, from a fresh lookup."""
    if contact is None:
        return _with(candidate, verdict=Verdict.GONE, reason="not in Constant Contact")
    found = _with(
        candidate,
        contact_id=contact.contact_id,
        permission=contact.permission,
        updated_at=iso(contact.updated_at) if contact.updated_at else None,
    )
    if contact.deleted:
        return _with(found, verdict=Verdict.GONE, reason="already deleted in Constant Contact")
    wrote = candidate.flipsync_wrote_at
    if contact.updated_at is None or wrote is None:
        return _with(
            found,
            verdict=Verdict.KEEP,
            reason="Constant Contact gave no updated_at, so an edit since cannot be ruled out",
        )
    if contact.updated_at > datetime.fromisoformat(wrote) + CLOCK_SKEW:
        return _with(
            found,
            verdict=Verdict.KEEP,
            reason=(
                f"changed in Constant Contact after flipsync wrote it (updated_at "
                f"{iso(contact.updated_at)}, flipsync wrote at {wrote})"
            ),
        )
    return _with(
        found,
        verdict=Verdict.DELETE,
        reason="created by flipsync from test records, unchanged since",
    )


def _with(candidate: Candidate, **changes: Any) -> Candidate:
    values = asdict(candidate)
    values.update(changes)
    return Candidate(**values)
