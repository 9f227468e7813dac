"""One run: inbox records after the checkpoint -> decisions -> journaled plan -> push.

Orchestration only: parsing, grouping, policy, planning, pushing and HTTP live in
their own modules, and this one talks to them through plain objects and the
ConstantContactAPI protocol. The invariants it keeps (with flipsync.push):

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

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import date, datetime, timedelta

import structlog

from flipsync.catalog import Catalog, resolve_catalog
from flipsync.journal_batch import BatchRecord
from flipsync.mirror import Knowledge
from flipsync.outcomes import (
    Outcome,
    RunReport,
    decision_outcome,
    outcome_log,
    people_facts,
    record_outcome,
    unusable_outcome,
    waiting,
)
from flipsync.people import Person, group_people
from flipsync.plan import Plan, build_plan
from flipsync.policy import NEW, Action, Decision, Endpoint, Known, decide
from flipsync.ports import ConstantContactAPI, SyncState
from flipsync.progress import Progress, no_progress
from flipsync.push import Pusher
from flipsync.reconcile import Reconciler
from flipsync.records import UNRECOGNISED, FlipcauseRecord, Unusable, parse_record
from flipsync.rules import skip_rule_for
from flipsync.settings import Settings
from flipsync.state import InboxBatch, InboxRow, Journal, JournalOp, MirrorEntry, iso, utcnow

log = structlog.get_logger(__name__)
# Backfill progress lives in meta: "backfill:<since>:<until>" -> the last inbox seq it read;
# the same key + DONE_SUFFIX -> that seq again once the backfill reached the inbox's end.
BACKFILL_PREFIX = "backfill:"
DONE_SUFFIX = ":done"

# Writes that no later read has proven are checked by the first run this long after them.
VERIFY_AFTER = timedelta(minutes=30)
TEST_RECORD_REASON = "test record, marked by cleanup-test-contacts: never sent again"


class Syncer:
    """Runs batches for one organization. Build one per run."""

    def __init__(
        self,
        settings: Settings,
        state: SyncState,
        api: ConstantContactAPI,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        run_id: str | None = None,
        progress: Progress = no_progress,
    ) -> None:
        self.settings = settings
        self.state = state
        self.api = api
        self.clock = clock
        self.sleep = sleep
        self.run_id = run_id or f"{clock().strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        self.knowledge = Knowledge(
            state, api, strategy=settings.run.lookup_strategy, clock=clock, sleep=sleep
        )
        self.reconciler = Reconciler(state, api, clock=clock)
        self.progress = progress
        self.knowledge.progress = progress
        self.pusher = Pusher(settings, state, api, run_id=self.run_id, clock=clock, sleep=sleep)
        self._catalog: Catalog | None = None
        self.report: RunReport | None = None
        self._requests_at_start = Counter(api.request_counts)

    # -- entry points -------------------------------------------------------------------

    def run(self, *, dry_run: bool = False, max_batches: int | None = None) -> RunReport:
        """Finish any journaled work, then process the inbox after the checkpoint."""
        with self._recorded("live", dry_run) as report:
            if dry_run or self._finish_journals("live", report):
                # Read after the journals: finishing a batch settles or adds retries.
                retries = self.state.retry_seqs()
                self._process_inbox(report, retries, dry_run=dry_run, max_batches=max_batches)
                if not dry_run:
                    self._verify_writes(report)
        return report

    @contextmanager
    def _recorded(self, kind: str, dry_run: bool) -> Iterator[RunReport]:
        """A report for this run, kept in the run history (live work only) however it ends."""
        report = RunReport(
            run_id=self.run_id, kind=kind, dry_run=dry_run, started_at=iso(self.clock())
        )
        report.outcomes = outcome_log(self.settings.state_file.parent)  # spilled beside the DB
        report.checkpoint_before = report.checkpoint_after = self.state.checkpoint
        self.report = report
        if not dry_run:
            self.state.start_run(self.run_id, kind, self.clock())
            self.knowledge.on_read = lambda seen: self._settle_writes(seen, report)
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
                self.state.finish_run(self.run_id, report.status, report.history_record())

    def _settle_writes(self, seen: Mapping[str, MirrorEntry], report: RunReport) -> None:
        """Check earlier batches' writes against a fresh read; lost ones go back in the queue."""
        result = self.reconciler.check(seen)
        report.writes_verified += result.verified
        report.writes_resent += result.resent
        report.warnings.extend(w for w in result.warnings if w not in report.warnings)

    def _verify_writes(self, report: RunReport) -> None:
        """Prove writes that no later read has checked yet, once they are ``VERIFY_AFTER`` old.

        Normally the next batch's read of the account settles them for free. When no work
        follows, a later run (idle or not) pays one refresh of a warm mirror (or a lookup per
        import without one), so an idle run right after a write still sends nothing.
        """
        if report.status != "ok":
            return
        oldest = self.state.oldest_expectation_at()
        if oldest is None or self.clock() - datetime.fromisoformat(oldest) < VERIFY_AFTER:
            return
        if self.knowledge.mirror_complete and self.settings.run.lookup_strategy != "lookup":
            self.knowledge.refresh()
            report.warnings.extend(w for w in self.knowledge.warnings if w not in report.warnings)
        else:
            self._settle_writes({}, report)

    def _finish_journals(self, kind: str, report: RunReport) -> bool:
        """Finish batches an earlier run left open; False while an import still processes."""
        for journal in self.state.open_journals(kind):
            if not self.pusher.drive(journal, report):
                waiting(report)
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
        total = self.state.inbox_pending_count() + len(retries)
        while max_batches is None or batches < max_batches:
            rows = self.state.inbox_batch_after(after, batch_size)
            # A queued record past the checkpoint (a backfill deferred it) comes with the new
            # rows; it still counts as a retry, so its queue entry is settled with it.
            retry_rows = self.state.inbox_batch_by_seqs(sorted(s for s in retries if s <= after))
            if not rows and not retry_rows:
                return
            batches += 1
            report.records_read += len(rows) + len(retry_rows)
            report.records_retried += len(retry_rows)
            last_seq = rows.last_seq if rows else None
            batch = retry_rows + rows
            del rows, retry_rows  # process_rows consumes the batch's payloads as it parses
            attempts = {s: retries.pop(s) for s in batch.seqs() if s in retries}
            done = self.process_rows(
                batch,
                report,
                kind="live",
                dry_run=dry_run,
                checkpoint=last_seq,
                attempts=attempts,
                overlay=overlay if dry_run else None,
            )
            self.progress("records", report.records_read, max(total, report.records_read))
            if not done:
                waiting(report)
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
        key = f"{BACKFILL_PREFIX}{since.isoformat()}:{until.isoformat() if until else ''}"
        date_field = self.settings.flipcause.fields.transaction_date
        inbox_size = self.state.inbox_count()
        overlay: dict[str, Known] = {}
        with self._recorded("backfill", dry_run) as report:
            with batch_guard():
                if not dry_run and not self._finish_journals("backfill", report):
                    return report
                scanned = 0 if dry_run else self._backfill_start(key, report)
            while True:
                with batch_guard():
                    rows = self.state.inbox_batch_after(scanned, self.settings.run.batch_size)
                    if not rows:
                        if not dry_run:  # finished: retention may prune what it read
                            self.state.set_meta(key + DONE_SUFFIX, self.state.get_meta(key) or "0")
                        break
                    last = rows.last_seq
                    chosen = rows.where(lambda r: _in_window(r, date_field, since, until))
                    del rows  # process_rows consumes the chosen payloads as it parses
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
                        waiting(report)
                        break
                    scanned = last
                    self.progress("records scanned", scanned, max(scanned, inbox_size))
            if not dry_run:
                with batch_guard():
                    self._verify_writes(report)
        return report

    def _backfill_start(self, key: str, report: RunReport) -> int:
        """Where a live backfill of this window starts: where an interrupted one stopped, or
        at the beginning when the window was backfilled to its end before (after a policy
        change that is the point: the dry run plans every record, and so does the run)."""
        progress = self.state.get_meta(key)
        if progress is None or self.state.get_meta(key + DONE_SUFFIX) != progress:
            return int(progress or 0)
        self.state.set_meta(key, "0")  # unfinished again until it reaches the end
        report.message = "this window was backfilled before: it runs again from the start"
        log.info("backfill_again", window=key[len(BACKFILL_PREFIX) :])
        return 0

    # -- one batch ----------------------------------------------------------------------

    def process_rows(
        self,
        rows: InboxBatch | list[InboxRow],
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
        `progress` is a (meta key, seq) a backfill records instead. The list of rows is
        consumed (emptied as each payload is parsed), so a batch's raw payloads are never all
        held beside its records: the callers drop their own references first.
        """
        outcomes: list[Outcome] = []
        records: list[FlipcauseRecord] = []
        if isinstance(rows, InboxBatch):
            first_seq, last_row_seq = rows.first_seq, rows.last_seq
            tests = self.state.test_marked(rows.record_keys())
            source: Iterator[InboxRow] = rows.drain()
        else:
            first_seq, last_row_seq = rows[0].seq, rows[-1].seq
            tests = self.state.test_marked(r.record_key for r in rows)
            source = iter(list(rows))
            rows.clear()
        for row in source:
            parsed = _parse_safely(row, self.settings)
            # A payload without a kind has an unknown trigger, or could not be read at all.
            unknown = "unreadable" if isinstance(parsed, Unusable) and parsed.rejected else None
            report.record_kinds[parsed.kind or unknown or UNRECOGNISED] += 1
            if isinstance(parsed, Unusable):
                outcomes.append(unusable_outcome(parsed, row))
                continue
            if row.record_key in tests:
                outcomes.append(record_outcome(parsed, Action.SKIP, TEST_RECORD_REASON))
                continue
            rule = skip_rule_for(parsed, self.settings.policy)
            if rule is not None:
                outcomes.append(record_outcome(parsed, Action.SKIP, f"skip rule {rule.name!r}"))
                continue
            records.append(parsed)
        txn_ids = [r.transaction_id for r in records if r.transaction_id]
        people = group_people(records, self.state.transactions_for(txn_ids))
        report.people += len(people)
        plan: Plan | None = None
        batch_id = f"{self.run_id}:{first_seq}-{last_row_seq}"
        if people:
            catalog = self.resolve_catalog()
            learnt = self.knowledge.known_for([p.email_key for p in people])
            report.knowledge.append(learnt.method)
            report.warnings.extend(w for w in self.knowledge.warnings if w not in report.warnings)
            known = dict(learnt.known)
            if overlay:
                # Dry runs commit nothing, so later batches see earlier ones through this overlay.
                known.update(
                    {p.email_key: overlay[p.email_key] for p in people if p.email_key in overlay}
                )
            decisions = self._decide(people, known)
            if learnt.method.startswith("mirror") and (
                _signs_up_existing(decisions)
                or (not dry_run and learnt.requests == 0 and _writes_anyone(decisions))
            ):
                # The sign-up form would make an unsubscribed contact explicit again, and no
                # write may touch one: ask who opted out since the last check (not relying on
                # updated_at), then decide anew. Needed before a sign-up of a known contact,
                # and before any write of a later batch of a run, which reads the account
                # once: someone may have unsubscribed meanwhile, even a contact created since.
                self.knowledge.check_optouts()
                known.update(self.knowledge.from_mirror(p.email_key for p in people))
                if overlay:
                    known.update(
                        {
                            p.email_key: overlay[p.email_key]
                            for p in people
                            if p.email_key in overlay
                        }
                    )
                decisions = self._decide(people, known)
            plan = build_plan(
                decisions,
                batch_id=batch_id,
                list_ids=catalog.list_ids,
                field_ids=catalog.field_ids,
                max_contacts_per_import=self.settings.constant_contact.max_contacts_per_import,
            )
            for decision in plan.decisions:
                outcomes.append(
                    decision_outcome(
                        decision,
                        plan.op_of.get(decision.person.email_key),
                        catalog.list_names,
                        catalog.list_ids,
                    )
                )
            if overlay is not None:
                for decision in plan.decisions:
                    if decision.writes and decision.status_after:
                        overlay[decision.person.email_key] = Known(permission=decision.status_after)
        if dry_run:
            report.add(outcomes)
            for op in plan.ops if plan else ():
                report.planned_writes[op.kind] += 1
            return True
        journal = Journal(
            batch_id=batch_id,
            run_id=self.run_id,
            kind=kind,
            created_at=iso(self.clock()),
            first_seq=first_seq,
            last_seq=checkpoint,
            batch=BatchRecord(
                outcomes=tuple(outcomes),
                people=people_facts(people),
                attempts=dict(attempts or {}),
                checkpoint=checkpoint,
                progress=progress,
            ).to_json(),
            ops=tuple(
                JournalOp(op.op_id, i, op.kind, op.body, "planned", None, None, None)
                for i, op in enumerate(plan.ops if plan else ())
            ),
        )
        self.state.write_journal(journal)
        return self.pusher.drive(journal, report)

    def _decide(self, people: list[Person], known: Mapping[str, Known]) -> list[Decision]:
        return [
            decide(
                p,
                known.get(p.email_key),
                self.settings.policy,
                confirmed_opt_in=self.settings.constant_contact.confirmed_opt_in,
            )
            for p in people
        ]

    def resolve_catalog(self) -> Catalog:
        """Lists (and custom fields) named by the config must exist before any write."""
        if self._catalog is None:
            self._catalog = resolve_catalog(self.settings, self.api)
            # The mirror's export needs list names too: no second read of the lists.
            self.knowledge.list_ids_by_name = {
                self._catalog.list_names[ref]: list_id
                for ref, list_id in self._catalog.list_ids.items()
                if ref in self._catalog.list_names
            }
        return self._catalog


# -- helpers ------------------------------------------------------------------------------


def _writes_anyone(decisions: list[Decision]) -> bool:
    """Whether any decision sends a write to Constant Contact."""
    return any(d.endpoint is not Endpoint.NONE for d in decisions)


def _signs_up_existing(decisions: list[Decision]) -> bool:
    """Whether any decision sends a contact Constant Contact already has to the sign-up form."""
    return any(
        d.endpoint is Endpoint.SIGN_UP_FORM and d.status_before not in (None, "", NEW)
        for d in decisions
    )


def _parse_safely(row: InboxRow, settings: Settings) -> FlipcauseRecord | Unusable:
    """parse_record, with a last line of defence: one bad record never stops the run."""
    try:
        return parse_record(
            row.seq, row.record_key, row.payload, settings.flipcause, keep_extra=False
        )
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
