"""Test contacts at go-live: which contacts flipsync made from test records, and removing them.

A record is a test when a marker from the config's `test_records` (or a one-off `--email`
glob) matches it. For each email of a test record the verdict is one of:

- delete: flipsync's own outcomes show it created the contact (its first write was a
  create), every write it made there came from test records, no record that is not a
  test has this email, and Constant Contact's `updated_at` (read fresh, right before
  deleting) is not later than flipsync's last write;
- keep: any of that fails (pre-existing contact, changed by someone since, shared with a
  real record); the reason says which;
- gone: the contact is not (or no longer) in Constant Contact;
- not_synced: flipsync never wrote this email.

`--apply` deletes with `POST /activities/contact_delete` (500 ids a request), waits for each
activity, commits a `delete` outcome per deleted contact (and the mirror row as deleted),
and then marks every test record, so that no later run or backfill sends it again
(flipsync.sync skips marked records). Marks are written only when every deletion was
confirmed; a call that stopped early is simply repeated.

This module sees Constant Contact only through `CleanupAPI`, and the state DB through a
few StateDB reads and one commit per activity.
"""

from __future__ import annotations

import fnmatch
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import structlog

from flipsync.ctct.types import ActivityStatus, RemoteContact
from flipsync.emails import normalize_email
from flipsync.errors import ExitCode, FlipsyncError, InputError
from flipsync.mirror import entry_from_remote
from flipsync.outcomes import Outcome
from flipsync.policy import Action, Endpoint
from flipsync.records import FlipcauseRecord, parse_record
from flipsync.settings import FlipcauseSettings, Settings, TestRecordSettings
from flipsync.state import TEST_MARK_PREFIX, InboxRow, StateDB, iso, utcnow

log = structlog.get_logger(__name__)

MAX_IDS_PER_DELETE = 500
INBOX_PAGE = 5000
POLL_SECONDS = 2.0
WRITES = ("create", "update")
# flipsync's write time is when it committed, after Constant Contact confirmed the write, so
# CC's own stamp of that write is earlier; this only absorbs the two clocks disagreeing a
# little. A person changing a test contact within a second of the sync is not a real case.
CLOCK_SKEW = timedelta(seconds=1)


class CleanupAPI(Protocol):
    """The Constant Contact calls the clean-up needs (ConstantContactClient has them)."""

    def lookup_contact(self, email: str) -> RemoteContact | None:
        """One contact by email, deleted ones included."""
        ...

    def delete_contacts(self, contact_ids: Sequence[str]) -> str:
        """POST /activities/contact_delete; returns the activity id."""
        ...

    def get_activity(self, activity_id: str) -> ActivityStatus:
        """The status of a bulk activity."""
        ...


class BatchOpen(FlipsyncError):
    """A journaled batch is unfinished: its outcomes, which the verdicts need, are not in yet."""

    exit_code = ExitCode.TRANSIENT


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
    email_key: str, records: EmailRecords, history: Sequence[Mapping[str, Any]]
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
        if row.get("action") == Verdict.DELETE.value:
            since_delete = list(history[index + 1 :])
            deleted_at = str(row.get("at"))
    writes = [o for o in since_delete if o.get("action") in WRITES and o.get("endpoint") != "none"]
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
    if writes[0]["action"] != "create":
        return keep(
            "the contact existed before flipsync wrote to it (its first write was an update); "
            "pre-existing contacts are never deleted"
        )
    foreign = sorted(
        {k for o in writes for k in _keys(o.get("record_keys")) if k not in records.tests}
    )
    if foreign:
        return keep(
            f"flipsync also wrote it for record(s) that are not tests ({', '.join(foreign[:3])})"
        )
    return _with(
        base,
        verdict=Verdict.DELETE,
        reason="created by flipsync from test records",
        flipsync_wrote_at=max(str(o["at"]) for o in writes),
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


def _keys(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = json.loads(raw)
    return [str(k) for k in raw] if isinstance(raw, list) else []


# -- the command ----------------------------------------------------------------------------------


@dataclass
class CleanupReport:
    """What one `cleanup-test-contacts` call found and did."""

    run_id: str
    apply: bool
    markers: list[str]
    started_at: str
    status: str = "ok"
    message: str | None = None
    test_records: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    not_deleted: list[str] = field(default_factory=list)
    marked: int = 0
    activities: list[dict[str, Any]] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        """How many emails got this verdict."""
        return sum(1 for c in self.candidates if c.verdict is verdict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json and the run history."""
        return {
            "run_id": self.run_id,
            "apply": self.apply,
            "status": self.status,
            "message": self.message,
            "started_at": self.started_at,
            "markers": self.markers,
            "test_records": self.test_records,
            "counts": {v.value: self.count(v) for v in Verdict},
            "contacts": [c.as_dict() for c in self.candidates],
            "deleted": self.deleted,
            "not_deleted": self.not_deleted,
            "marked_records": self.marked,
            "activities": self.activities,
        }


class Cleanup:
    """Lists, and with `apply` removes, the contacts flipsync made from test records."""

    def __init__(
        self,
        settings: Settings,
        state: StateDB,
        api: CleanupAPI,
        *,
        extra_patterns: Sequence[str] = (),
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        run_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.api = api
        self.markers = Markers(settings.test_records, tuple(extra_patterns))
        self.clock = clock
        self.sleep = sleep
        self.run_id = run_id or f"{clock().strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"

    def run(self, *, apply: bool) -> CleanupReport:
        """Find the candidates (reads only); with `apply`, delete, record and mark."""
        report = CleanupReport(
            run_id=self.run_id,
            apply=apply,
            markers=self.markers.describe(),
            started_at=iso(self.clock()),
        )
        if not self.markers.any:
            raise InputError(
                "no test markers: set `test_records` in the config (see config.example.yaml) "
                "or pass --email PATTERN"
            )
        if apply and self.state.open_journals():
            # Its outcomes are not recorded yet: a contact it creates would be missed here.
            raise BatchOpen(
                "a batch sent to Constant Contact is not committed yet (an import may still be "
                "processing); run `flipsync run` until it finishes, then clean up. Nothing was "
                "deleted."
            )
        tests = classify(self._inbox(), self.settings.flipcause, self.markers)
        report.test_records = sum(len(e.tests) for e in tests.values())
        report.candidates = [self._judge(key, records) for key, records in sorted(tests.items())]
        if not apply:
            return report
        self.state.start_run(self.run_id, "cleanup", self.clock())
        try:
            self._apply(report, [k for e in tests.values() for k in e.tests])
        except BaseException as exc:
            report.status, report.message = "error", str(exc)
            raise
        finally:
            self.state.finish_run(self.run_id, report.status, report.as_dict())
        return report

    def _inbox(self) -> Iterator[InboxRow]:
        after = 0
        while rows := self.state.inbox_after(after, INBOX_PAGE):
            yield from rows
            after = rows[-1].seq

    def _judge(self, email_key: str, records: EmailRecords) -> Candidate:
        candidate = judge_history(email_key, records, self.state.outcomes_for(email_key))
        if candidate.verdict is not Verdict.DELETE:
            return candidate
        return judge_contact(candidate, self.api.lookup_contact(candidate.email))

    def _apply(self, report: CleanupReport, test_keys: list[str]) -> None:
        doomed = [c for c in report.candidates if c.verdict is Verdict.DELETE and c.contact_id]
        for start in range(0, len(doomed), MAX_IDS_PER_DELETE):
            chunk = doomed[start : start + MAX_IDS_PER_DELETE]
            if not self._delete(report, chunk):
                report.status = "incomplete"
                report.message = (
                    f"{len(report.not_deleted)} deletion(s) not confirmed; test records were not "
                    "marked. Run the command again: deleted contacts show as gone."
                )
                return
        now = iso(self.clock())
        marks = {
            TEST_MARK_PREFIX + key: json.dumps({"marked_at": now, "run_id": self.run_id})
            for key in test_keys
        }
        self.state.commit_batch(
            batch_id=None, run_id=self.run_id, outcomes=[], checkpoint=None, meta=marks
        )
        report.marked = len(marks)

    def _delete(self, report: CleanupReport, chunk: list[Candidate]) -> bool:
        """One bulk delete: post, wait, confirm, commit outcomes. False if not all confirmed."""
        ids = [c.contact_id for c in chunk if c.contact_id]
        activity_id = self.api.delete_contacts(ids)
        # Owned for good, so no later uncertain import POST can take it for its own.
        self.state.remember_activity(activity_id, "contact_delete")
        status = self._wait(activity_id)
        report.activities.append(
            {
                "activity_id": activity_id,
                "contacts": len(ids),
                "state": status.state,
                "completed": status.items_completed_count,
                "errors": list(status.errors),
            }
        )
        clean = (
            status.state == "completed"
            and not status.errors
            and status.items_completed_count == len(ids)
        )
        confirmed: list[tuple[Candidate, RemoteContact | None]] = []
        for candidate in chunk:
            if clean:
                confirmed.append((candidate, None))
                continue
            if not status.finished:
                report.not_deleted.append(candidate.email)
                continue
            # A partial or failed activity: ask per contact what really happened.
            fresh = self.api.lookup_contact(candidate.email)
            if fresh is not None and fresh.deleted and fresh.contact_id == candidate.contact_id:
                confirmed.append((candidate, fresh))
            else:
                report.not_deleted.append(candidate.email)
        now = self.clock()
        outcomes = [delete_outcome(c) for c, _ in confirmed]
        mirror = [
            e
            for c, fresh in confirmed
            if (e := entry_from_remote(fresh or _deleted_contact(c), now)) is not None
        ]
        self.state.commit_batch(
            batch_id=None, run_id=self.run_id, outcomes=outcomes, checkpoint=None, mirror=mirror
        )
        report.deleted += [c.email for c, _ in confirmed]
        log.info("test_contacts_deleted", activity_id=activity_id, deleted=len(confirmed))
        return len(confirmed) == len(chunk)

    def _wait(self, activity_id: str) -> ActivityStatus:
        """Poll the activity until it finishes or activity_wait_seconds pass."""
        deadline = self.clock().timestamp() + self.settings.constant_contact.activity_wait_seconds
        while True:
            status = self.api.get_activity(activity_id)
            remaining = deadline - self.clock().timestamp()
            if status.finished or remaining <= 0:
                return status
            self.sleep(min(POLL_SECONDS, remaining))


def delete_outcome(candidate: Candidate) -> Outcome:
    """The outcome of one contact the clean-up deleted."""
    return Outcome(
        email=candidate.email,
        email_key=None,
        seqs=(),
        record_keys=tuple(candidate.record_keys),
        flipcause_ids={},
        action=Action.DELETE,
        endpoint=Endpoint.CONTACT_DELETE,
        status_before=candidate.permission,
        status_after="deleted",
        lists=(),
        list_ids=(),
        fields=(),
        reason=(
            "test contact deleted by cleanup-test-contacts (test record: "
            f"{'; '.join(candidate.markers)}): {candidate.reason}"
        ),
        op_id=None,
    )


def _deleted_contact(candidate: Candidate) -> RemoteContact:
    """What Constant Contact now holds for a contact the activity deleted."""
    return RemoteContact(
        contact_id=candidate.contact_id or "",
        email=candidate.email,
        permission=candidate.permission,
        opt_out_source=None,
        deleted=True,
        list_ids=frozenset(),
        created_at=None,
        updated_at=None,
        first_name=None,
        last_name=None,
    )
