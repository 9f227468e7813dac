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

This module runs the clean-up; which records are tests and the verdict rules live in
flipsync.cleanup_verdicts (pure). It sees Constant Contact only through `CleanupAPI`, and
the state DB through a few StateDB reads and one commit per activity.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from flipsync.cleanup_verdicts import Candidate as Candidate
from flipsync.cleanup_verdicts import EmailRecords as EmailRecords
from flipsync.cleanup_verdicts import Markers as Markers
from flipsync.cleanup_verdicts import Verdict as Verdict
from flipsync.cleanup_verdicts import classify as classify
from flipsync.cleanup_verdicts import judge_contact as judge_contact
from flipsync.cleanup_verdicts import judge_history as judge_history
from flipsync.ctct.types import ActivityStatus, RemoteContact
from flipsync.errors import ExitCode, FlipsyncError, InputError
from flipsync.mirror import entry_from_remote
from flipsync.outcomes import Outcome
from flipsync.policy import Action, Endpoint
from flipsync.settings import Settings
from flipsync.state import TEST_MARK_PREFIX, InboxRow, StateDB, iso, utcnow

log = structlog.get_logger(__name__)

MAX_IDS_PER_DELETE = 500
INBOX_PAGE = 5000
POLL_SECONDS = 2.0


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
    already_marked: int = 0  # of test_records, marked by an earlier --apply
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
            "already_marked": self.already_marked,
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
        report.already_marked = len(
            self.state.test_marked(k for e in tests.values() for k in e.tests)
        )
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
