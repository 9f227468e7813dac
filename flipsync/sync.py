"""One run: inbox records after the checkpoint -> decisions -> requests -> committed outcomes.

Orchestration only: parsing, grouping, policy, planning and HTTP live in their own
modules, and this one talks to them through plain objects and the
ConstantContactAPI protocol. The invariants it keeps:

- The checkpoint moves only when Constant Contact confirmed the batch's work;
  outcomes, checkpoint, retries and knowledge commit in one transaction.
- Before the first request of a batch, its plan is journaled. A run that dies
  (or ends while an import is still processing) leaves the journal; the next
  run finishes exactly that work first, without re-deciding or re-posting it.
- A bad record never stops a run; it becomes an outcome with a reason.
- A dry run takes the same path up to the plan and writes nothing to Constant
  Contact, the checkpoint or the outcome history.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import structlog

from flipsync.config import Settings, is_list_id
from flipsync.ctct.types import ActivityStatus
from flipsync.errors import AccountMismatch, ContactExists, RequestRefused
from flipsync.mirror import Knowledge, entry_from_remote
from flipsync.people import Person, group_people
from flipsync.plan import Plan, build_plan
from flipsync.policy import Action, Decision, Known, decide
from flipsync.ports import ConstantContactAPI
from flipsync.records import FlipcauseRecord, Unusable, parse_record
from flipsync.rules import skip_rule_for
from flipsync.state import InboxRow, Journal, JournalOp, MirrorEntry, StateDB, iso, utcnow

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 5
DEFERRED = "deferred"
# Poll schedule for import activities, in seconds: quick first looks, then every 10 s.
POLL_DELAYS = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0)
# An import still processing after this long is given up on and its people retried: a stuck
# activity must not hold the checkpoint (and every later Flipcause record) for ever.
STUCK_AFTER = timedelta(hours=6)
# Resuming a post whose answer was lost: how far before the journaled post time an activity may
# have been created (clock skew between this host and CC), and the meta key keeping the ids of
# recently committed imports, so a resumed post never adopts another batch's activity.
IMPORT_MATCH_SKEW = timedelta(minutes=2)
COMMITTED_IMPORTS = "committed_import_activities"
COMMITTED_IMPORTS_KEPT = 200
_LINE_RE = re.compile(r"\bline\s+(\d+)\b", re.IGNORECASE)


@dataclass
class RunReport:
    """What a run did, for people (text) and monitors (--json)."""

    run_id: str
    kind: str
    dry_run: bool
    started_at: str
    finished_at: str | None = None
    status: str = "ok"
    checkpoint_before: int = 0
    checkpoint_after: int = 0
    records_read: int = 0
    records_retried: int = 0
    people: int = 0
    knowledge: list[str] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    message: str | None = None
    planned_writes: Counter[str] = field(default_factory=Counter)

    def counts(self) -> dict[str, int]:
        """Outcomes per action."""
        counter = Counter(o["action"] for o in self.outcomes)
        return {k: counter.get(k, 0) for k in ("create", "update", "skip", "reject", DEFERRED)}

    def as_dict(self, *, with_outcomes: bool = False) -> dict[str, Any]:
        """Plain data: counts, and every rejected or skipped record with its ids and reason."""
        listed = [
            _public(o)
            for o in self.outcomes
            if with_outcomes or o["action"] in ("skip", "reject", DEFERRED)
        ]
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "dry_run": self.dry_run,
            "status": self.status,
            "message": self.message,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "checkpoint": {"before": self.checkpoint_before, "after": self.checkpoint_after},
            "records": {"read": self.records_read, "retried": self.records_retried},
            "people": self.people,
            "counts": self.counts(),
            "knowledge": self.knowledge,
            "requests": {
                "total": sum(self.requests.values()),
                "by_kind": dict(sorted(self.requests.items())),
            },
            "activities": self.activities,
            "warnings": self.warnings,
            "planned_writes": dict(self.planned_writes) if self.dry_run else None,
            "outcomes" if with_outcomes else "not_synced": listed,
        }


# What a person may see of an outcome (reports, --output files, --json); internal keys stay in.
PUBLIC_OUTCOME_KEYS = (
    "email",
    "action",
    "endpoint",
    "status_before",
    "status_after",
    "lists",
    "fields",
    "reason",
    "flipcause_ids",
    "record_keys",
)


def _public(outcome: Mapping[str, Any]) -> dict[str, Any]:
    return {k: outcome.get(k) for k in PUBLIC_OUTCOME_KEYS}


@dataclass(frozen=True)
class Catalog:
    """The account's lists and custom fields, resolved once per run."""

    list_ids: dict[str, str]
    list_names: dict[str, str]
    field_ids: dict[str, str]


class Syncer:
    """Runs batches for one organization. Build one per run."""

    def __init__(
        self,
        settings: Settings,
        state: StateDB,
        api: ConstantContactAPI,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        run_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.api = api
        self.clock = clock
        self.sleep = sleep
        self.run_id = run_id or f"{clock().strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        self.knowledge = Knowledge(state, api, strategy=settings.run.lookup_strategy, clock=clock)
        self._catalog: Catalog | None = None
        self.report: RunReport | None = None
        self._requests_at_start = Counter(api.request_counts)

    # -- entry points -------------------------------------------------------------------

    def run(self, *, dry_run: bool = False, max_batches: int | None = None) -> RunReport:
        """Finish any journaled work, then process the inbox after the checkpoint."""
        with self._recorded("live", dry_run) as report:
            # Records this run sends to the retry queue wait for the next run, not this one.
            retries = self.state.retry_seqs()
            if dry_run or self._finish_journals("live", report):
                self._process_inbox(report, retries, dry_run=dry_run, max_batches=max_batches)
        return report

    @contextmanager
    def _recorded(self, kind: str, dry_run: bool) -> Iterator[RunReport]:
        """A report for this run, kept in the run history (live work only) however it ends."""
        report = RunReport(
            run_id=self.run_id, kind=kind, dry_run=dry_run, started_at=iso(self.clock())
        )
        report.checkpoint_before = report.checkpoint_after = self.state.checkpoint
        self.report = report
        if not dry_run:
            self.state.start_run(self.run_id, kind, self.clock())
        try:
            yield report
            if report.status == "ok" and report.records_read == 0 and not report.outcomes:
                report.status = "idle"
        except BaseException as exc:
            report.status = "error"
            report.message = str(exc)
            raise
        finally:
            report.checkpoint_after = self.state.checkpoint
            report.finished_at = iso(self.clock())
            report.requests = Counter(self.api.request_counts) - self._requests_at_start
            if not dry_run:
                self.state.finish_run(self.run_id, report.status, report.as_dict())

    def _finish_journals(self, kind: str, report: RunReport) -> bool:
        """Finish batches an earlier run left open; False while an import still processes."""
        for journal in self.state.open_journals(kind):
            if not self._drive(journal, report):
                _waiting(report)
                return False
        return True

    def _process_inbox(
        self,
        report: RunReport,
        retries: dict[int, int],
        *,
        dry_run: bool,
        max_batches: int | None,
    ) -> None:
        batch_size = self.settings.run.batch_size
        after = self.state.checkpoint
        overlay: dict[str, Known] = {}
        batches = 0
        while max_batches is None or batches < max_batches:
            rows = self.state.inbox_after(after, batch_size)
            retry_rows = self.state.inbox_by_seqs(sorted(retries)) if retries else []
            retry_rows = [r for r in retry_rows if r.seq <= after]
            if not rows and not retry_rows:
                return
            batches += 1
            report.records_read += len(rows) + len(retry_rows)
            report.records_retried += len(retry_rows)
            last_seq = rows[-1].seq if rows else None
            done = self.process_rows(
                retry_rows + rows,
                report,
                kind="live",
                dry_run=dry_run,
                checkpoint=last_seq,
                attempts={r.seq: retries[r.seq] for r in retry_rows},
                overlay=overlay if dry_run else None,
            )
            retries = {}
            if not done:
                _waiting(report)
                return
            if last_seq is not None:
                after = last_seq

    def backfill(
        self,
        since: date,
        until: date | None,
        *,
        dry_run: bool = False,
        batch_guard: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> RunReport:
        """Process again the inbox records of a date window, leaving the live checkpoint alone.

        A record's date is its Flipcause transaction date, or the day it reached the inbox
        when it has none. Progress is kept per window, so an interrupted backfill resumes
        where it stopped; each batch runs under `batch_guard` (the organization lock), so
        cron runs interleave with a long backfill instead of waiting for all of it.
        """
        key = f"backfill:{since.isoformat()}:{until.isoformat() if until else ''}"
        date_field = self.settings.flipcause.fields.transaction_date
        overlay: dict[str, Known] = {}
        with self._recorded("backfill", dry_run) as report:
            with batch_guard():
                if not dry_run and not self._finish_journals("backfill", report):
                    return report
                scanned = 0 if dry_run else int(self.state.get_meta(key) or 0)
            while True:
                with batch_guard():
                    rows = self.state.inbox_after(scanned, self.settings.run.batch_size)
                    if not rows:
                        break
                    last = rows[-1].seq
                    chosen = [r for r in rows if _in_window(r, date_field, since, until)]
                    report.records_read += len(chosen)
                    if not chosen:
                        if not dry_run:
                            self.state.set_meta(key, str(last))
                    elif not self.process_rows(
                        chosen,
                        report,
                        kind="backfill",
                        dry_run=dry_run,
                        checkpoint=None,
                        overlay=overlay if dry_run else None,
                        progress=(key, last),
                    ):
                        _waiting(report)
                        break
                    scanned = last
        return report

    # -- one batch ----------------------------------------------------------------------

    def process_rows(
        self,
        rows: list[InboxRow],
        report: RunReport,
        *,
        kind: str,
        dry_run: bool,
        checkpoint: int | None,
        attempts: Mapping[int, int] | None = None,
        overlay: dict[str, Known] | None = None,
        progress: tuple[str, int] | None = None,
    ) -> bool:
        """Decide, plan, send and commit one batch. False when an import is still processing.

        `checkpoint` is where the live checkpoint moves on commit (None: it stays);
        `progress` is a (meta key, seq) a backfill records instead.
        """
        outcomes: list[dict[str, Any]] = []
        records: list[FlipcauseRecord] = []
        for row in rows:
            parsed = _parse_safely(row, self.settings)
            if isinstance(parsed, Unusable):
                outcomes.append(_unusable_outcome(parsed, row))
                continue
            rule = skip_rule_for(parsed, self.settings.policy)
            if rule is not None:
                outcomes.append(_record_outcome(parsed, "skip", f"skip rule {rule.name!r}"))
                continue
            records.append(parsed)
        txn_ids = [r.transaction_id for r in records if r.transaction_id]
        people = group_people(records, self.state.transactions_for(txn_ids))
        report.people += len(people)
        plan: Plan | None = None
        if people:
            catalog = self.resolve_catalog()
            learnt = self.knowledge.known_for([p.email_key for p in people])
            report.knowledge.append(learnt.method)
            known = dict(learnt.known)
            if overlay:
                # Dry runs commit nothing, so later batches see earlier ones through this overlay.
                known.update(
                    {p.email_key: overlay[p.email_key] for p in people if p.email_key in overlay}
                )
            decisions = [
                decide(
                    p,
                    known.get(p.email_key),
                    self.settings.policy,
                    confirmed_opt_in=self.settings.constant_contact.confirmed_opt_in,
                )
                for p in people
            ]
            batch_id = f"{self.run_id}:{rows[0].seq}-{rows[-1].seq}"
            plan = build_plan(
                decisions,
                batch_id=batch_id,
                list_ids=catalog.list_ids,
                field_ids=catalog.field_ids,
                max_contacts_per_import=self.settings.constant_contact.max_contacts_per_import,
            )
            for decision in plan.decisions:
                outcomes.append(
                    _decision_outcome(decision, plan.op_of.get(decision.person.email_key), catalog)
                )
            if overlay is not None:
                for decision in plan.decisions:
                    if decision.writes and decision.status_after:
                        overlay[decision.person.email_key] = Known(permission=decision.status_after)
        if dry_run:
            report.outcomes.extend(outcomes)
            for op in plan.ops if plan else ():
                report.planned_writes[op.kind] += 1
            return True
        journal = Journal(
            batch_id=f"{self.run_id}:{rows[0].seq}-{rows[-1].seq}",
            run_id=self.run_id,
            kind=kind,
            created_at=iso(self.clock()),
            first_seq=rows[0].seq,
            last_seq=checkpoint,
            batch={
                "outcomes": outcomes,
                "people": _people_facts(people),
                "attempts": {str(k): v for k, v in (attempts or {}).items()},
                "checkpoint": checkpoint,
                "progress": list(progress) if progress else None,
            },
            ops=tuple(
                JournalOp(op.op_id, i, op.kind, op.body, "planned", None, None, None)
                for i, op in enumerate(plan.ops if plan else ())
            ),
        )
        self.state.write_journal(journal)
        return self._drive(journal, report)

    def resolve_catalog(self) -> Catalog:
        """Lists (and custom fields) named by the config must exist before any write."""
        if self._catalog is not None:
            return self._catalog
        refs = self.settings.policy.all_list_refs()
        lists = self.api.list_lists()
        by_name = {lst.name: lst.list_id for lst in lists}
        names = {lst.list_id: lst.name for lst in lists}
        resolved: dict[str, str] = {}
        missing = []
        for ref in refs:
            if is_list_id(ref) and ref.lower() in {i.lower() for i in names}:
                resolved[ref] = next(i for i in names if i.lower() == ref.lower())
            elif ref in by_name:
                resolved[ref] = by_name[ref]
            else:
                missing.append(ref)
        field_ids: dict[str, str] = {}
        wanted = list(dict.fromkeys(self.settings.flipcause.custom_fields.values()))
        missing_fields: list[str] = []
        if wanted:
            fields = {f.name: f.custom_field_id for f in self.api.list_custom_fields()}
            field_ids = {n: fields[n] for n in wanted if n in fields}
            missing_fields = [n for n in wanted if n not in fields]
        if missing or missing_fields:
            parts = []
            if missing:
                parts.append(
                    "lists not found in the Constant Contact account: "
                    + ", ".join(repr(m) for m in missing)
                    + " (create them in Constant Contact, or fix the names under policy)"
                )
            if missing_fields:
                parts.append(
                    "custom fields not found: "
                    + ", ".join(repr(m) for m in missing_fields)
                    + " (create them, or fix flipcause.custom_fields)"
                )
            raise AccountMismatch("; ".join(parts) + ". Nothing was written.")
        self._catalog = Catalog(
            list_ids=resolved,
            list_names={ref: names[i] for ref, i in resolved.items()},
            field_ids=field_ids,
        )
        return self._catalog

    # -- sending and confirming ---------------------------------------------------------

    def _drive(self, journal: Journal, report: RunReport) -> bool:
        """Send what the journal has not sent, wait for imports, commit when all are final."""
        resumed = journal.run_id != self.run_id
        ops = {op.op_id: op for op in journal.ops}
        for op in journal.ops:
            if op.state in ("planned", "posting"):
                ops[op.op_id] = self._send(journal, op, resumed=resumed)
        pending = [op for op in ops.values() if op.state == "posted"]
        if pending:
            finished = self._wait(pending, report)
            ops.update(finished)
        if any(op.state == "posted" for op in ops.values()):
            return False
        self._commit(journal, ops, report)
        return True

    def _send(self, journal: Journal, op: JournalOp, *, resumed: bool) -> JournalOp:
        body = op.body
        if op.kind == "json_import":
            if op.state == "posting":
                adopted = self._find_posted_import(op)
                if adopted is not None:
                    self.state.update_op(op.op_id, state="posted", activity_id=adopted)
                    return _op(op, state="posted", activity_id=adopted)
            self.state.update_op(op.op_id, state="posting", posted_at=iso(self.clock()))
            activity_id = self.api.start_json_import(body["import_data"], body["list_ids"])
            self.state.update_op(op.op_id, state="posted", activity_id=activity_id)
            log.info("import_started", activity_id=activity_id, contacts=len(body["import_data"]))
            return _op(op, state="posted", activity_id=activity_id)
        result: dict[str, Any]
        if resumed and op.kind == "sign_up_form":
            # Time has passed since the plan: the person may have unsubscribed meanwhile, and
            # the sign-up form would resubscribe them. Look once more before sending.
            contact = self.api.lookup_contact(body["email_address"])
            if contact is not None and contact.permission == "unsubscribed":
                result = {"cancelled": "unsubscribed in Constant Contact since the plan was made"}
                self.state.update_op(op.op_id, state="cancelled", result=result)
                return _op(op, state="cancelled", result=result)
        was_posting = op.state == "posting"
        self.state.update_op(op.op_id, state="posting", posted_at=iso(self.clock()))
        try:
            if op.kind == "sign_up_form":
                signed = self.api.sign_up(body)
                result = {
                    "contact_id": signed.contact_id,
                    "created": signed.created,
                }
            else:
                result = {"contact_id": self.api.create_contact(body), "created": True}
        except ContactExists as exc:
            if was_posting or exc.after_uncertain_post:
                result = {
                    "contact_id": exc.contact_id,
                    "created": True,
                    "note": "created by an earlier attempt",
                }
            else:
                email = body["email_address"]["address"]
                contact = self.api.lookup_contact(email)
                if contact is not None:
                    entry = entry_from_remote(contact, self.clock())
                    if entry is not None:
                        self.state.save_mirror([entry])
                result = {
                    "error": "Constant Contact already has this email (added since flipsync's check, "
                    "or deleted there); decided again next run",
                    "retry": True,
                }
                self.state.update_op(op.op_id, state="failed", result=result)
                return _op(op, state="failed", result=result)
        except RequestRefused as exc:
            result = {"error": f"Constant Contact refused it: {exc}", "retry": False}
            self.state.update_op(op.op_id, state="failed", result=result)
            return _op(op, state="failed", result=result)
        self.state.update_op(op.op_id, state="done", result=result)
        return _op(op, state="done", result=result)

    def _find_posted_import(self, op: JournalOp) -> str | None:
        """After a crash between POST and recording its answer, find the activity it made.

        Adopts the newest contacts-import activity that (1) no other journaled op and no
        recently committed batch owns, (2) was created no earlier than IMPORT_MATCH_SKEW before
        the journaled post time, and (3) fits the op's row count (`_import_fits`). No match:
        post again, which costs requests but no data because an import is an upsert by email.
        Adopting a wrong activity would lose the op's people, hence the ownership rule.
        """
        if not op.posted_at:
            return None
        since = datetime.fromisoformat(op.posted_at) - IMPORT_MATCH_SKEW
        count = len(op.body["import_data"])
        owned = set(self._committed_imports())
        owned.update(
            o.activity_id
            for j in self.state.open_journals()
            for o in j.ops
            if o.activity_id and o.op_id != op.op_id
        )
        for activity in self.api.recent_activities(limit=50):
            created = activity.created_at
            if (
                activity.activity_id not in owned
                and created is not None
                and created >= since
                and _import_fits(activity, count)
            ):
                log.info("import_adopted", activity_id=activity.activity_id)
                return activity.activity_id
        return None

    def _committed_imports(self) -> list[str]:
        """Activity ids of the most recently committed imports, oldest first."""
        raw = self.state.get_meta(COMMITTED_IMPORTS)
        try:
            ids = json.loads(raw) if raw else []
        except ValueError:
            return []
        return [str(i) for i in ids] if isinstance(ids, list) else []

    def _wait(self, pending: list[JournalOp], report: RunReport) -> dict[str, JournalOp]:
        """Poll import activities until they finish or the configured wait is over."""
        budget = self.settings.constant_contact.activity_wait_seconds
        waited = 0.0
        out: dict[str, JournalOp] = {}
        waiting = list(pending)
        delays = iter(POLL_DELAYS)
        while waiting:
            # The schedule, not the wall clock, bounds the polls: a fixed, small number of
            # requests per wait whatever the machine's speed.
            delay = next(delays, POLL_DELAYS[-1])
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
        result = {
            "error": f"{why} (activity {op.activity_id}); tried again next run",
            "retry": True,
        }
        self.state.update_op(op.op_id, state="failed", result=result)
        return _op(op, state="failed", result=result)

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
            meta=self._commit_meta(journal, ops),
        )
        report.outcomes.extend(outcomes)
        log.info(
            "batch_committed",
            batch=journal.batch_id,
            outcomes=len(outcomes),
            checkpoint=journal.batch.get("checkpoint"),
        )

    def _commit_meta(self, journal: Journal, ops: Mapping[str, JournalOp]) -> dict[str, str]:
        """Meta written with a batch: backfill progress, and the import activities it owns."""
        meta: dict[str, str] = {}
        if progress := journal.batch.get("progress"):
            meta[str(progress[0])] = str(progress[1])
        owned = [op.activity_id for op in ops.values() if op.activity_id]
        if owned:
            kept = [i for i in self._committed_imports() if i not in owned] + owned
            meta[COMMITTED_IMPORTS] = json.dumps(kept[-COMMITTED_IMPORTS_KEPT:])
        return meta

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


# -- outcome rows ---------------------------------------------------------------------------


def _waiting(report: RunReport) -> None:
    report.status = "waiting"
    report.message = "an import is still processing in Constant Contact; the next run finishes it"


def _parse_safely(row: InboxRow, settings: Settings) -> FlipcauseRecord | Unusable:
    """parse_record, with a last line of defence: one bad record never stops the run."""
    try:
        return parse_record(row.seq, row.record_key, row.payload, settings.flipcause)
    except Exception as exc:  # noqa: BLE001 - any failure here is about this record only
        log.warning("record_unreadable", seq=row.seq, error=type(exc).__name__)
        return Unusable(
            row.seq,
            row.record_key,
            rejected=True,
            reason=f"could not be read ({type(exc).__name__})",
        )


def record_date(row: InboxRow, date_field: str) -> date | None:
    """The Flipcause transaction date of a payload (ISO or M/D/YYYY), else its inbox day."""
    raw = row.payload.get(date_field)
    if isinstance(raw, str) and raw.strip():
        text = raw.strip()[:10]
        for fmt in ("%Y-%m-%d", "%m/%d/%Y"):
            try:
                return datetime.strptime(text, fmt).date()  # noqa: DTZ007 - a calendar date
            except ValueError:
                continue
    try:
        return datetime.fromisoformat(row.received_at).date()
    except ValueError:
        return None


def _in_window(row: InboxRow, date_field: str, since: date, until: date | None) -> bool:
    day = record_date(row, date_field)
    return day is not None and day >= since and (until is None or day <= until)


def _unusable_outcome(item: Unusable, row: InboxRow) -> dict[str, Any]:
    return {
        "email": item.email,
        "email_key": None,
        "seqs": [row.seq],
        "record_keys": [row.record_key],
        "flipcause_ids": {k: [v] for k, v in item.ids.items()},
        "action": "reject" if item.rejected else "skip",
        "endpoint": "none",
        "status_before": None,
        "status_after": None,
        "lists": [],
        "list_ids": [],
        "fields": [],
        "reason": item.reason,
        "op_id": None,
    }


def _record_outcome(record: FlipcauseRecord, action: str, reason: str) -> dict[str, Any]:
    return {
        "email": record.email,
        "email_key": None,
        "seqs": [record.seq],
        "record_keys": [record.record_key],
        "flipcause_ids": {k: [v] for k, v in record.flipcause_ids().items()},
        "action": action,
        "endpoint": "none",
        "status_before": None,
        "status_after": None,
        "lists": [],
        "list_ids": [],
        "fields": [],
        "reason": reason,
        "op_id": None,
    }


def _decision_outcome(decision: Decision, op_id: str | None, catalog: Catalog) -> dict[str, Any]:
    person = decision.person
    return {
        "email": person.email,
        "email_key": person.email_key,
        "seqs": person.seqs,
        "record_keys": person.record_keys,
        "flipcause_ids": person.flipcause_ids(),
        "action": decision.action.value,
        "endpoint": decision.endpoint.value,
        "status_before": decision.status_before,
        "status_after": decision.status_after,
        "lists": [catalog.list_names.get(ref, ref) for ref in decision.lists],
        "list_ids": [catalog.list_ids[ref] for ref in decision.lists if ref in catalog.list_ids],
        "fields": list(decision.fields),
        "reason": decision.reason,
        "op_id": op_id if decision.writes and decision.action is not Action.REJECT else None,
    }


def _people_facts(people: list[Person]) -> dict[str, Any]:
    """Per email: its transactions and whether each carried a Mailing List activity."""
    facts: dict[str, Any] = {}
    for person in people:
        txns = []
        for txn in person.transaction_ids:
            signed = any(r.is_mailing_list for r in person.records if r.transaction_id == txn)
            txns.append([txn, signed])
        facts[person.email_key] = {"transactions": txns}
    return facts


def _op(op: JournalOp, **changes: Any) -> JournalOp:
    return replace(op, **changes)


def _import_fits(activity: ActivityStatus, rows: int) -> bool:
    """Whether an activity's counts fit an import of `rows` contacts.

    items_total_count (rows, plus one for the header CC counts) is known from the start;
    person_count only once the import finished, and it leaves out rows CC refused. With no
    counts at all, only an activity that is still starting or processing can be ours.
    """
    if activity.items_total_count:
        return activity.items_total_count in (rows, rows + 1)
    if activity.person_count:
        return activity.person_count == rows
    return activity.state in ("initialized", "processing")


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
        emails = [str(r.get("email", "")).lower() for r in rows]
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
            outcome["status_after"] = (
                outcome["status_before"] if outcome["status_before"] != "new" else None
            )
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
    if op.state == "cancelled":
        outcome["action"] = "skip"
        outcome["reason"] = str(result.get("cancelled", "cancelled"))
        outcome["status_after"] = outcome["status_before"]
        return
    outcome["action"] = DEFERRED if result.get("retry") else "reject"
    outcome["status_after"] = (
        outcome["status_before"] if outcome["status_before"] != "new" else None
    )
    outcome["reason"] = str(result.get("error", "failed"))
