"""Sending a journaled batch to Constant Contact, confirming it, and committing it.

A batch's plan is journaled before its first request (see flipsync.sync). This module
moves each request forward in the journal (planned -> posting -> posted -> done or
failed), waits for import activities, and commits the batch's final outcomes together
with the checkpoint. A run that dies anywhere leaves the journal, and the next run's
Pusher finishes exactly that work: it polls the recorded activity, finds an import
whose answer was lost instead of posting it again, and looks a person up once more
before a delayed sign-up (someone who unsubscribed meanwhile is not resubscribed).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from flipsync.ctct.types import ActivityStatus
from flipsync.emails import normalize_email
from flipsync.errors import ContactExists, RequestRefused
from flipsync.journal_batch import BatchRecord, OpResult
from flipsync.json_fields import JSON, JSONObject
from flipsync.mirror import entry_from_remote
from flipsync.outcomes import Outcome, RunReport
from flipsync.policy import Action, unchanged_status
from flipsync.ports import BatchStore, ConstantContactAPI
from flipsync.settings import Settings
from flipsync.state import Expectation, Journal, JournalOp, MirrorEntry, iso, utcnow

log: structlog.stdlib.BoundLogger = structlog.get_logger(__name__)

MAX_ATTEMPTS = 5
# Poll schedule for import activities: the first look after about a second per 4,000 rows
# (a small cron import is done in a second; a first load of 40,000 rows takes longer), then
# twice as long each time, at most 30 s apart: a handful of polls per import, whatever its size.
ROWS_PER_FIRST_SECOND = 4000
MAX_POLL_DELAY = 30.0


def poll_delays(rows: int) -> Iterator[float]:
    """Seconds to wait before each look at an import of ``rows`` rows."""
    delay = min(15.0, max(1.0, rows / ROWS_PER_FIRST_SECOND))
    while True:
        yield delay
        delay = min(MAX_POLL_DELAY, delay * 2)


# An import still processing after this long is given up on and its people retried: a stuck
# activity must not hold the checkpoint (and every later Flipcause record) for ever.
STUCK_AFTER = timedelta(hours=6)
# Actions that wrote to Constant Contact: their people are expected there at the next read.
WRITTEN = frozenset({Action.CREATE, Action.UPDATE})
_LINE_RE = re.compile(r"\bline\s+(\d+)\b", re.IGNORECASE)


class Pusher:
    """Finishes journaled batches for one run."""

    def __init__(
        self,
        settings: Settings,
        state: BatchStore,
        api: ConstantContactAPI,
        *,
        run_id: str,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.state = state
        self.api = api
        self.run_id = run_id
        self.clock = clock
        self.sleep = sleep

    def drive(self, journal: Journal, report: RunReport) -> bool:
        """Send what the journal has not sent, wait for imports, commit when all are final.

        A batch left by an earlier run is not sent from its old plan: minutes or days may
        have passed (a crash, the daily quota, a lost login), and a person may have
        unsubscribed or been deleted since. Requests it never sent, and sign-ups or
        creates whose answer was lost, go to the retry queue and are decided again with
        fresh data; an import whose answer was lost is found among recent activities
        (or decided again when it is not there).
        """
        resumed = journal.run_id != self.run_id
        ops = {op.op_id: op for op in journal.ops}
        for op in journal.ops:
            if op.state not in ("planned", "posting"):
                continue
            if not resumed:
                ops[op.op_id] = self._send(op)
            elif op.state == "posting" and op.kind == "json_import":
                ops[op.op_id] = self._adopt_or_defer(op)
            else:
                ops[op.op_id] = self._fail(
                    op, "planned by an earlier run that stopped; decided again with fresh data"
                )
        pending = [op for op in ops.values() if op.state == "posted"]
        if pending:
            finished = self._wait(pending, report)
            ops.update(finished)
        if any(op.state == "posted" for op in ops.values()):
            return False
        self._commit(journal, ops, report)
        return True

    def _send(self, op: JournalOp) -> JournalOp:
        """Send one request of this run's plan and record how far it got."""
        body = op.body
        self.state.update_op(op.op_id, state="posting", posted_at=iso(self.clock()))
        result: OpResult
        try:
            if op.kind == "json_import":
                rows = _import_rows(op)
                activity_id = self.api.start_json_import(
                    rows,
                    [str(i) for i in _list(body.get("list_ids"))],
                    exclude=self.state.known_activity_ids(),
                )
                self.state.update_op(op.op_id, state="posted", activity_id=activity_id)
                log.info("import_started", activity_id=activity_id, contacts=len(rows))
                return replace(op, state="posted", activity_id=activity_id)
            if op.kind == "sign_up_form":
                signed = self.api.sign_up(body)
                result = OpResult(contact_id=signed.contact_id, created=signed.created)
            else:
                result = OpResult(contact_id=self.api.create_contact(body), created=True)
        except ContactExists as exc:
            if exc.after_uncertain_post:
                result = OpResult(
                    contact_id=exc.contact_id, created=True, note="created by an earlier attempt"
                )
            else:
                self._remember(_email_of(body))
                return self._fail(
                    op,
                    "Constant Contact already has this email (added since flipsync's check, or "
                    "deleted there); decided again next run",
                )
        except RequestRefused as exc:
            # A list deleted after the plan (404) may come back; anything else will not.
            return self._fail(op, f"Constant Contact refused it: {exc}", retry=exc.status == 404)
        data = result.to_json()
        self.state.update_op(op.op_id, state="done", result=data)
        return replace(op, state="done", result=data)

    def _adopt_or_defer(self, op: JournalOp) -> JournalOp:
        """An import posted by a run that died before the answer: adopt its activity or defer."""
        adopted = self._find_posted_import(op)
        if adopted is None:
            return self._fail(
                op, "an earlier run's import got no answer; decided again with fresh data"
            )
        self.state.update_op(op.op_id, state="posted", activity_id=adopted)
        return replace(op, state="posted", activity_id=adopted)

    def _fail(self, op: JournalOp, why: str, *, retry: bool = True) -> JournalOp:
        """Close an op unsent (or unconfirmed): its people are deferred, or rejected."""
        result = OpResult.failed(why, retry=retry).to_json()
        self.state.update_op(op.op_id, state="failed", result=result)
        return replace(op, state="failed", result=result)

    def _remember(self, email: str) -> None:
        """Learn what CC has for an email the plan thought was new, for the next decision."""
        contact = self.api.lookup_contact(email)
        entry = entry_from_remote(contact, self.clock()) if contact is not None else None
        if entry is not None:
            self.state.save_mirror([entry])

    def _find_posted_import(self, op: JournalOp) -> str | None:
        """The activity of an import whose POST was journaled but whose answer was lost.

        The client's matching rule applies, with every activity flipsync ever recorded (this
        run's, other batches', committed ones) excluded: adopting an activity that is not this
        op's would mark its people synced when they never were.
        """
        if not op.posted_at:
            return None
        found = self.api.find_import(
            datetime.fromisoformat(op.posted_at),
            len(_import_rows(op)),
            self.state.known_activity_ids(),
        )
        if found is not None:
            log.info("import_adopted", activity_id=found)
        return found

    def _wait(self, pending: list[JournalOp], report: RunReport) -> dict[str, JournalOp]:
        """Poll import activities until they finish or the configured wait is over."""
        budget = self.settings.constant_contact.activity_wait_seconds
        waited = 0.0
        out: dict[str, JournalOp] = {}
        waiting = list(pending)
        delays = poll_delays(max(len(_import_rows(op)) for op in pending))
        while waiting:
            # The schedule, not the wall clock, bounds the polls: a fixed, small number of
            # requests per wait whatever the machine's speed.
            delay = next(delays)
            if waited + delay > budget:
                break
            waited += delay
            self.sleep(delay)
            still = []
            for op in waiting:
                assert op.activity_id is not None
                try:
                    status = self.api.get_activity(op.activity_id)
                except RequestRefused as exc:
                    if exc.status != 404:
                        raise
                    # Constant Contact keeps activities 10 days; re-importing is a harmless upsert.
                    out[op.op_id] = self._give_up(
                        op, "the import activity is no longer known to Constant Contact"
                    )
                    continue
                if status.finished:
                    result = _activity_result(status)
                    new_state = "done" if status.state == "completed" else "failed"
                    if new_state == "failed":
                        result["error"] = f"import activity {status.state} in Constant Contact"
                        result["retry"] = True
                    self.state.update_op(op.op_id, state=new_state, result=result)
                    out[op.op_id] = replace(op, state=new_state, result=result)
                    report.activities.append({"activity_id": op.activity_id, **result})
                else:
                    still.append(op)
            waiting = still
        now = self.clock()
        for op in waiting:
            posted = datetime.fromisoformat(op.posted_at) if op.posted_at else now
            if now - posted > STUCK_AFTER:
                hours = int(STUCK_AFTER.total_seconds() // 3600)
                out[op.op_id] = self._give_up(op, f"the import did not finish within {hours} hours")
            else:
                report.activities.append({"activity_id": op.activity_id, "state": "processing"})
        return out

    def _give_up(self, op: JournalOp, why: str) -> JournalOp:
        """Stop waiting for an activity: its people go to the retry queue, so nothing is lost."""
        log.warning("import_abandoned", activity_id=op.activity_id, reason=why)
        return self._fail(op, f"{why} (activity {op.activity_id}); tried again next run")

    def _commit(self, journal: Journal, ops: Mapping[str, JournalOp], report: RunReport) -> None:
        """Final outcomes from the op results, then one transaction for everything."""
        batch = BatchRecord.from_json(journal.batch)
        attempts = dict(batch.attempts)
        results = {op_id: OpResult.from_json(op.result) for op_id, op in ops.items()}
        outcomes: list[Outcome] = []
        requeue: dict[int, str] = {}
        row_errors = _import_row_errors(ops, results, report)
        for outcome in batch.outcomes:
            op = ops.get(outcome.op_id or "")
            if op is not None:
                outcome = _apply_op_result(outcome, op, results[op.op_id], row_errors)
            if outcome.action is Action.DEFERRED:
                tried = max((attempts.get(s, 0) for s in outcome.seqs), default=0) + 1
                if tried >= MAX_ATTEMPTS:
                    outcome = replace(
                        outcome,
                        action=Action.REJECT,
                        reason=f"{outcome.reason} (gave up after {tried} attempts)",
                    )
                else:
                    requeue.update(dict.fromkeys(outcome.seqs, outcome.reason))
            outcomes.append(outcome)
        transactions = []
        by_email = {o.email_key: o for o in outcomes if o.email_key}
        for email_key, txns in batch.people.items():
            final = by_email.get(email_key)
            created = final is not None and final.action is Action.CREATE
            for txn, signed in txns:
                transactions.append((txn, email_key, signed, created))
        mirror = self._mirror_updates(outcomes)
        expect = self._expectations(outcomes, ops)
        self.state.commit_batch(
            batch_id=journal.batch_id,
            run_id=self.run_id,
            outcomes=outcomes,
            checkpoint=batch.checkpoint,
            done_retry_seqs=list(attempts),
            requeue=requeue,
            attempts=attempts,
            transactions=transactions,
            mirror=mirror,
            meta=_commit_meta(batch),
            expect=expect,
        )
        report.add(outcomes)
        log.info(
            "batch_committed",
            batch=journal.batch_id,
            outcomes=len(outcomes),
            checkpoint=batch.checkpoint,
        )

    def _expectations(
        self, outcomes: Iterable[Outcome], ops: Mapping[str, JournalOp]
    ) -> list[Expectation]:
        """The people recorded as written, with the lists the next read must show them on."""
        now = iso(self.clock())
        out = []
        for o in outcomes:
            op = ops.get(o.op_id or "")
            if (
                op is None
                or op.state != "done"
                or o.action not in WRITTEN
                or not o.email_key
                or not o.list_ids
            ):
                continue
            out.append(
                Expectation(
                    email_key=o.email_key,
                    list_ids=frozenset(o.list_ids),
                    seqs=o.seqs,
                    op_ref=op.activity_id or op.op_id,
                    run_id=self.run_id,
                    written_at=now,
                )
            )
        return out

    def _mirror_updates(self, outcomes: Iterable[Outcome]) -> list[MirrorEntry]:
        """What flipsync now expects Constant Contact to hold, until the next refresh reads it."""
        written = [(o, o.email_key) for o in outcomes if o.action in WRITTEN and o.email_key]
        current = self.state.mirror_get(key for _, key in written)
        now = iso(self.clock())
        entries = []
        for o, key in written:
            before = current.get(key)
            lists = set(before.list_ids if before else ()) | set(o.list_ids)
            entries.append(
                MirrorEntry(
                    email_key=key,
                    contact_id=o.contact_id or (before.contact_id if before else None),
                    permission=o.status_after or (before.permission if before else "implicit"),
                    deleted=False,
                    list_ids=frozenset(lists),
                    updated_at=None,
                    seen_at=now,
                )
            )
        return entries


def _commit_meta(batch: BatchRecord) -> dict[str, str]:
    """Meta written with a batch: a backfill's progress."""
    return {batch.progress[0]: str(batch.progress[1])} if batch.progress else {}


def _activity_result(status: ActivityStatus) -> JSONObject:
    return {
        "state": status.state,
        "person_count": status.person_count,
        "error_count": status.error_count,
        "correctable_count": status.correctable_count,
        "cannot_add_to_list_count": status.cannot_add_to_list_count,
        "errors": list(status.errors),
    }


def _import_row_errors(
    ops: Mapping[str, JournalOp], results: Mapping[str, OpResult], report: RunReport
) -> dict[str, str]:
    """Match import activity errors to people (by email in the message, else by its line).

    Constant Contact reports import errors only as free text. Unmatched errors and
    counts become run warnings so nothing disappears silently.
    """
    matched: dict[str, str] = {}
    for op in ops.values():
        result = results[op.op_id]
        if op.kind != "json_import" or op.state != "done" or not op.result:
            continue
        emails = _import_emails(op)
        for text in result.errors:
            hit = next((e for e in emails if e and e in text.lower()), None)
            if hit is None:
                # Constant Contact counts a header row (items_total_count is rows + 1), so the
                # first contact of the import is line 2.
                line = _LINE_RE.search(text)
                if line and 2 <= int(line.group(1)) <= len(emails) + 1:
                    hit = emails[int(line.group(1)) - 2]
            if hit:
                matched[hit] = text
            else:
                report.warnings.append(f"import {op.activity_id}: {text}")
        counted = result.row_error_count
        if counted > len(result.errors):
            report.warnings.append(
                f"import {op.activity_id}: {counted} row error(s) reported, "
                f"{counted - len(result.errors)} without a message"
            )
        if blocked := result.cannot_add_to_list_count or 0:
            report.warnings.append(
                f"import {op.activity_id}: {blocked} contact(s) were unsubscribed in Constant "
                "Contact by the time the import ran and were not added to lists"
            )
    return matched


def _list(value: JSON) -> list[JSON]:
    return value if isinstance(value, list) else []


def _import_rows(op: JournalOp) -> list[JSONObject]:
    """The contact rows of an import's journaled body, in row order."""
    return [r if isinstance(r, dict) else {} for r in _list(op.body.get("import_data"))]


def _import_emails(op: JournalOp) -> list[str]:
    """The normalised email of each row of an import's body, in row order."""
    return [normalize_email(str(r.get("email") or "")) for r in _import_rows(op)]


def _email_of(body: JSONObject) -> str:
    """The email of a single-contact body (an object with an address, or plain text)."""
    value = body.get("email_address")
    if isinstance(value, dict):
        value = value.get("address")
    return value if isinstance(value, str) else ""


def _apply_op_result(
    outcome: Outcome, op: JournalOp, result: OpResult, row_errors: Mapping[str, str]
) -> Outcome:
    """The outcome once Constant Contact answered: a new value, the planned one untouched."""
    unchanged = unchanged_status(outcome.status_before)
    if op.state != "done":
        action = Action.DEFERRED if result.retry else Action.REJECT
        reason = result.error if result.error is not None else "failed"
        return replace(outcome, action=action, status_after=unchanged, reason=reason)
    if outcome.email_key is not None and outcome.email_key in row_errors:
        return replace(
            outcome,
            action=Action.REJECT,
            status_after=unchanged,
            reason=f"Constant Contact import error: {row_errors[outcome.email_key]}",
        )
    if result.contact_id:
        outcome = replace(outcome, contact_id=result.contact_id)
    if op.kind == "sign_up_form" and outcome.action is Action.CREATE and result.created is False:
        outcome = replace(
            outcome,
            action=Action.UPDATE,
            reason=f"{outcome.reason}; Constant Contact already had this contact",
        )
    return outcome
