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
from typing import Any

import structlog

from flipsync.ctct.types import ActivityStatus
from flipsync.emails import normalize_email
from flipsync.errors import ContactExists, RequestRefused
from flipsync.mirror import entry_from_remote
from flipsync.outcomes import DEFERRED, RunReport
from flipsync.policy import unchanged_status
from flipsync.ports import BatchStore, ConstantContactAPI
from flipsync.settings import Settings
from flipsync.state import Expectation, Journal, JournalOp, MirrorEntry, iso, utcnow

log = structlog.get_logger(__name__)

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
        result: dict[str, Any]
        try:
            if op.kind == "json_import":
                activity_id = self.api.start_json_import(
                    body["import_data"],
                    body["list_ids"],
                    exclude=self.state.known_activity_ids(),
                )
                self.state.update_op(op.op_id, state="posted", activity_id=activity_id)
                log.info(
                    "import_started", activity_id=activity_id, contacts=len(body["import_data"])
                )
                return _op(op, state="posted", activity_id=activity_id)
            if op.kind == "sign_up_form":
                signed = self.api.sign_up(body)
                result = {"contact_id": signed.contact_id, "created": signed.created}
            else:
                result = {"contact_id": self.api.create_contact(body), "created": True}
        except ContactExists as exc:
            if exc.after_uncertain_post:
                result = {
                    "contact_id": exc.contact_id,
                    "created": True,
                    "note": "created by an earlier attempt",
                }
            else:
                self._remember(body["email_address"]["address"])
                return self._fail(
                    op,
                    "Constant Contact already has this email (added since flipsync's check, or "
                    "deleted there); decided again next run",
                )
        except RequestRefused as exc:
            # A list deleted after the plan (404) may come back; anything else will not.
            return self._fail(op, f"Constant Contact refused it: {exc}", retry=exc.status == 404)
        self.state.update_op(op.op_id, state="done", result=result)
        return _op(op, state="done", result=result)

    def _adopt_or_defer(self, op: JournalOp) -> JournalOp:
        """An import posted by a run that died before the answer: adopt its activity or defer."""
        adopted = self._find_posted_import(op)
        if adopted is None:
            return self._fail(
                op, "an earlier run's import got no answer; decided again with fresh data"
            )
        self.state.update_op(op.op_id, state="posted", activity_id=adopted)
        return _op(op, state="posted", activity_id=adopted)

    def _fail(self, op: JournalOp, why: str, *, retry: bool = True) -> JournalOp:
        """Close an op unsent (or unconfirmed): its people are deferred, or rejected."""
        result = {"error": why, "retry": retry}
        self.state.update_op(op.op_id, state="failed", result=result)
        return _op(op, state="failed", result=result)

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
            len(op.body["import_data"]),
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
        delays = poll_delays(max(len(op.body.get("import_data", ())) for op in pending))
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
                    out[op.op_id] = _op(op, state=new_state, result=result)
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
        attempts = {int(k): int(v) for k, v in journal.batch.get("attempts", {}).items()}
        outcomes: list[dict[str, Any]] = []
        requeue: dict[int, str] = {}
        row_errors = _import_row_errors(ops, report)
        for planned in journal.batch["outcomes"]:
            outcome = dict(planned)
            op = ops.get(outcome.get("op_id") or "")
            if op is not None:
                _apply_op_result(outcome, op, row_errors)
            if outcome["action"] == DEFERRED:
                tried = max((attempts.get(s, 0) for s in outcome["seqs"]), default=0) + 1
                if tried >= MAX_ATTEMPTS:
                    outcome["action"] = "reject"
                    outcome["reason"] += f" (gave up after {tried} attempts)"
                else:
                    requeue.update(dict.fromkeys(outcome["seqs"], outcome["reason"]))
            outcomes.append(outcome)
        facts = journal.batch.get("people", {})
        transactions = []
        by_email = {o["email_key"]: o for o in outcomes if o.get("email_key")}
        for email_key, fact in facts.items():
            final = by_email.get(email_key)
            created = bool(final and final["action"] == "create")
            for txn, signed in fact["transactions"]:
                transactions.append((txn, email_key, bool(signed), created))
        mirror = self._mirror_updates(outcomes)
        expect = self._expectations(outcomes, ops)
        self.state.commit_batch(
            batch_id=journal.batch_id,
            run_id=self.run_id,
            outcomes=outcomes,
            checkpoint=journal.batch.get("checkpoint"),
            done_retry_seqs=list(attempts),
            requeue=requeue,
            attempts=attempts,
            transactions=transactions,
            mirror=mirror,
            meta=self._commit_meta(journal),
            expect=expect,
        )
        report.outcomes.extend(outcomes)
        log.info(
            "batch_committed",
            batch=journal.batch_id,
            outcomes=len(outcomes),
            checkpoint=journal.batch.get("checkpoint"),
        )

    def _commit_meta(self, journal: Journal) -> dict[str, str]:
        """Meta written with a batch: a backfill's progress."""
        meta: dict[str, str] = {}
        if progress := journal.batch.get("progress"):
            meta[str(progress[0])] = str(progress[1])
        return meta

    def _expectations(
        self, outcomes: Iterable[Mapping[str, Any]], ops: Mapping[str, JournalOp]
    ) -> list[Expectation]:
        """The people recorded as written, with the lists the next read must show them on."""
        now = iso(self.clock())
        out = []
        for o in outcomes:
            op = ops.get(o.get("op_id") or "")
            if (
                op is None
                or op.state != "done"
                or o["action"] not in ("create", "update")
                or not o.get("email_key")
                or not o.get("list_ids")
            ):
                continue
            out.append(
                Expectation(
                    email_key=o["email_key"],
                    list_ids=frozenset(o["list_ids"]),
                    seqs=tuple(int(s) for s in o["seqs"]),
                    op_ref=op.activity_id or op.op_id,
                    run_id=self.run_id,
                    written_at=now,
                )
            )
        return out

    def _mirror_updates(self, outcomes: Iterable[Mapping[str, Any]]) -> list[MirrorEntry]:
        """What flipsync now expects Constant Contact to hold, until the next refresh reads it."""
        written = [
            o for o in outcomes if o["action"] in ("create", "update") and o.get("email_key")
        ]
        current = self.state.mirror_get(o["email_key"] for o in written)
        now = iso(self.clock())
        entries = []
        for o in written:
            before = current.get(o["email_key"])
            lists = set(before.list_ids if before else ()) | set(o.get("list_ids", []))
            entries.append(
                MirrorEntry(
                    email_key=o["email_key"],
                    contact_id=o.get("contact_id") or (before.contact_id if before else None),
                    permission=o.get("status_after")
                    or (before.permission if before else "implicit"),
                    deleted=False,
                    list_ids=frozenset(lists),
                    updated_at=None,
                    seen_at=now,
                )
            )
        return entries


def _op(op: JournalOp, **changes: Any) -> JournalOp:
    return replace(op, **changes)


def _activity_result(status: ActivityStatus) -> dict[str, Any]:
    return {
        "state": status.state,
        "person_count": status.person_count,
        "error_count": status.error_count,
        "correctable_count": status.correctable_count,
        "cannot_add_to_list_count": status.cannot_add_to_list_count,
        "errors": list(status.errors),
    }


def _import_row_errors(ops: Mapping[str, JournalOp], report: RunReport) -> dict[str, str]:
    """Match import activity errors to people (by email in the message, else by its line).

    Constant Contact reports import errors only as free text. Unmatched errors and
    counts become run warnings so nothing disappears silently.
    """
    matched: dict[str, str] = {}
    for op in ops.values():
        if op.kind != "json_import" or op.state != "done" or not op.result:
            continue
        rows = op.body["import_data"]
        emails = [normalize_email(str(r.get("email", ""))) for r in rows]
        unmatched = 0
        for message in op.result.get("errors", []):
            text = str(message)
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
                unmatched += 1
                report.warnings.append(f"import {op.activity_id}: {text}")
        counted = (op.result.get("error_count") or 0) + (op.result.get("correctable_count") or 0)
        if counted > len(op.result.get("errors", [])):
            report.warnings.append(
                f"import {op.activity_id}: {counted} row error(s) reported, "
                f"{counted - len(op.result.get('errors', []))} without a message"
            )
        blocked = op.result.get("cannot_add_to_list_count") or 0
        if blocked:
            report.warnings.append(
                f"import {op.activity_id}: {blocked} contact(s) were unsubscribed in Constant "
                "Contact by the time the import ran and were not added to lists"
            )
    return matched


def _apply_op_result(outcome: dict[str, Any], op: JournalOp, row_errors: Mapping[str, str]) -> None:
    result: dict[str, Any] = op.result or {}
    if op.state == "done":
        if outcome.get("email_key") in row_errors:
            outcome["action"] = "reject"
            outcome["status_after"] = unchanged_status(outcome["status_before"])
            outcome["reason"] = f"Constant Contact import error: {row_errors[outcome['email_key']]}"
            return
        if result.get("contact_id"):
            outcome["contact_id"] = result["contact_id"]
        if (
            op.kind == "sign_up_form"
            and outcome["action"] == "create"
            and result.get("created") is False
        ):
            outcome["action"] = "update"
            outcome["reason"] += "; Constant Contact already had this contact"
        return
    outcome["action"] = DEFERRED if result.get("retry") else "reject"
    outcome["status_after"] = unchanged_status(outcome["status_before"])
    outcome["reason"] = str(result.get("error", "failed"))
