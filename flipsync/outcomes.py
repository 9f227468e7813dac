"""The decision record: one typed Outcome per person (or unusable record), and the run report.

An Outcome is made once from a decision (or a record dropped before one) and never edited:
push replaces it with a new value when Constant Contact's answer changes it. The journal,
the state DB, `--output` files and `--json` reports all carry the same fields;
PUBLIC_OUTCOME_KEYS is what a person sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flipsync.json_fields import (
    JSONObject,
    StoredDataError,
    int_tuple,
    opt_str,
    req_str,
    str_lists,
    str_tuple,
)
from flipsync.outcome_log import OutcomeLog
from flipsync.people import Person
from flipsync.policy import Action, Decision, Endpoint
from flipsync.records import MERCHANT_KINDS, FlipcauseRecord, Unusable

if TYPE_CHECKING:
    from flipsync.state import InboxRow

# Outcomes a run report lists as "not synced".
NOT_SYNCED = frozenset({Action.SKIP, Action.REJECT, Action.DEFERRED})

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


@dataclass(frozen=True)
class Outcome:
    """What happened (or would happen) to one person or record, with the reason."""

    email: str | None
    email_key: str | None
    seqs: tuple[int, ...]
    record_keys: tuple[str, ...]
    flipcause_ids: Mapping[str, tuple[str, ...]]
    action: Action
    endpoint: Endpoint
    status_before: str | None
    status_after: str | None
    lists: tuple[str, ...]
    list_ids: tuple[str, ...]
    fields: tuple[str, ...]
    reason: str
    op_id: str | None
    contact_id: str | None = None

    @property
    def synced(self) -> bool:
        return self.action not in NOT_SYNCED

    def public(self) -> JSONObject:
        """The keys a person sees, as plain JSON values."""
        full = self.to_json()
        return {k: full[k] for k in PUBLIC_OUTCOME_KEYS}

    def to_json(self) -> JSONObject:
        """Every field as JSON (the journal's and the spill's format; old journals match it)."""
        data: JSONObject = {
            "email": self.email,
            "email_key": self.email_key,
            "seqs": list(self.seqs),
            "record_keys": list(self.record_keys),
            "flipcause_ids": {k: list(v) for k, v in self.flipcause_ids.items()},
            "action": self.action.value,
            "endpoint": self.endpoint.value,
            "status_before": self.status_before,
            "status_after": self.status_after,
            "lists": list(self.lists),
            "list_ids": list(self.list_ids),
            "fields": list(self.fields),
            "reason": self.reason,
            "op_id": self.op_id,
        }
        if self.contact_id is not None:
            data["contact_id"] = self.contact_id
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Outcome:
        """Read an outcome written by `to_json` or by the dict-based code before it."""
        try:
            action = Action(req_str(data, "action"))
            endpoint = Endpoint(opt_str(data, "endpoint") or Endpoint.NONE.value)
        except ValueError as exc:
            raise StoredDataError(f"stored outcome: {exc}") from exc
        return cls(
            email=opt_str(data, "email"),
            email_key=opt_str(data, "email_key"),
            seqs=int_tuple(data, "seqs"),
            record_keys=str_tuple(data, "record_keys"),
            flipcause_ids=str_lists(data, "flipcause_ids"),
            action=action,
            endpoint=endpoint,
            status_before=opt_str(data, "status_before"),
            status_after=opt_str(data, "status_after"),
            lists=str_tuple(data, "lists"),
            list_ids=str_tuple(data, "list_ids"),
            fields=str_tuple(data, "fields"),
            reason=req_str(data, "reason"),
            op_id=opt_str(data, "op_id"),
            contact_id=opt_str(data, "contact_id"),
        )


def public(outcome: Outcome) -> JSONObject:
    return outcome.public()


def outcome_log(directory: Path | None = None) -> OutcomeLog[Outcome]:
    """An empty spill for a run's outcomes, in `directory` (the state DB's, so on its disk)."""
    return OutcomeLog(Outcome.to_json, Outcome.from_json, directory)


@dataclass
class RunReport:
    """What a run did, for people (text) and monitors (--json).

    Outcomes are counted and spilled to `outcomes` (an OutcomeLog), never kept as a list:
    a run's memory does not grow with the number of people it decides.
    """

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
    outcomes: OutcomeLog[Outcome] = field(default_factory=lambda: outcome_log())
    activities: list[JSONObject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    message: str | None = None
    planned_writes: Counter[str] = field(default_factory=Counter)
    writes_verified: int = 0
    writes_resent: int = 0
    # Records read per kind (activity, transaction, contact, merchant_payment, ...).
    record_kinds: Counter[str] = field(default_factory=Counter)
    # Outcomes per action, counted as they are added.
    by_action: Counter[Action] = field(default_factory=Counter)

    def add(self, outcomes: Iterable[Outcome]) -> None:
        """Count and spill a batch's outcomes."""
        items = list(outcomes)
        self.by_action.update(o.action for o in items)
        self.outcomes.extend(items)

    def not_synced(self) -> Iterator[Outcome]:
        """Skipped, rejected and deferred outcomes, in order, streamed from the spill."""
        return (o for o in self.outcomes if not o.synced)

    def merchant_records(self) -> int:
        """Merchant account payments and credits read: counted, never synced."""
        return sum(self.record_kinds.get(k, 0) for k in MERCHANT_KINDS)

    def counts(self) -> dict[str, int]:
        """Outcomes per action."""
        shown = (Action.CREATE, Action.UPDATE, Action.SKIP, Action.REJECT, Action.DEFERRED)
        return {a.value: self.by_action.get(a, 0) for a in shown}

    def listed_key(self, *, with_outcomes: bool) -> str:
        return "outcomes" if with_outcomes else "not_synced"

    def listed(self, *, with_outcomes: bool) -> Iterator[Outcome]:
        """The outcomes `as_dict` lists: all of them, or the not-synced ones."""
        return iter(self.outcomes) if with_outcomes else self.not_synced()

    def as_dict(self, *, with_outcomes: bool = False, listing: bool = True) -> dict[str, object]:
        """Plain data: counts, and every rejected or skipped record with its ids and reason.

        ``listing=False`` leaves the list empty, for callers that stream it (report.py).
        """
        listed = [o.public() for o in self.listed(with_outcomes=with_outcomes)] if listing else []
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "dry_run": self.dry_run,
            "status": self.status,
            "message": self.message,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "checkpoint": {"before": self.checkpoint_before, "after": self.checkpoint_after},
            "records": {
                "read": self.records_read,
                "retried": self.records_retried,
                "by_kind": dict(sorted(self.record_kinds.items())),
                "merchant": self.merchant_records(),
            },
            "people": self.people,
            "counts": self.counts(),
            "knowledge": self.knowledge,
            "requests": {
                "total": sum(self.requests.values()),
                "by_kind": dict(sorted(self.requests.items())),
            },
            "activities": self.activities,
            "writes": {"verified": self.writes_verified, "resent": self.writes_resent},
            "warnings": self.warnings,
            "planned_writes": dict(self.planned_writes) if self.dry_run else None,
            self.listed_key(with_outcomes=with_outcomes): listed,
        }

    def history_record(self) -> dict[str, object]:
        """The report kept in the run history: counts only, whatever the run's size.

        The not-synced outcomes themselves are in the outcomes table under this run's id
        (`flipsync explain` reads them there), so the history counts them.
        """
        data = self.as_dict(listing=False)
        data["not_synced"] = sum(n for a, n in self.by_action.items() if a in NOT_SYNCED)
        return data


def waiting(report: RunReport) -> None:
    """Mark a run that stopped because an import is still processing."""
    report.status = "waiting"
    report.message = "an import is still processing in Constant Contact; the next run finishes it"


def _ids(ids: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    return {k: (v,) for k, v in ids.items()}


def unusable_outcome(item: Unusable, row: InboxRow) -> Outcome:
    """The outcome of a payload that yields no record (rejected, or nothing to sync)."""
    action = Action.REJECT if item.rejected else Action.SKIP
    return _undecided(item.email, row.seq, row.record_key, _ids(item.ids), action, item.reason)


def record_outcome(record: FlipcauseRecord, action: Action, reason: str) -> Outcome:
    """The outcome of one record dropped before any decision (a skip rule)."""
    ids = _ids(record.flipcause_ids())
    return _undecided(record.email, record.seq, record.record_key, ids, action, reason)


def _undecided(
    email: str | None,
    seq: int,
    record_key: str,
    ids: dict[str, tuple[str, ...]],
    action: Action,
    reason: str,
) -> Outcome:
    """One record's outcome with no person decided and nothing written."""
    return Outcome(
        email=email,
        email_key=None,
        seqs=(seq,),
        record_keys=(record_key,),
        flipcause_ids=ids,
        action=action,
        endpoint=Endpoint.NONE,
        status_before=None,
        status_after=None,
        lists=(),
        list_ids=(),
        fields=(),
        reason=reason,
        op_id=None,
    )


def decision_outcome(
    decision: Decision,
    op_id: str | None,
    list_names: Mapping[str, str],
    list_ids: Mapping[str, str],
) -> Outcome:
    """The outcome of one person's decision; list refs shown by name, kept by id."""
    person = decision.person
    return Outcome(
        email=person.email,
        email_key=person.email_key,
        seqs=tuple(person.seqs),
        record_keys=tuple(person.record_keys),
        flipcause_ids={k: tuple(v) for k, v in person.flipcause_ids().items()},
        action=decision.action,
        endpoint=decision.endpoint,
        status_before=decision.status_before,
        status_after=decision.status_after,
        lists=tuple(list_names.get(ref, ref) for ref in decision.lists),
        list_ids=tuple(list_ids[ref] for ref in decision.lists if ref in list_ids),
        fields=tuple(decision.fields),
        reason=decision.reason,
        op_id=op_id if decision.writes and decision.action is not Action.REJECT else None,
    )


# Per email: its transactions, each with whether it carried a Mailing List activity.
PeopleFacts = Mapping[str, tuple[tuple[str, bool], ...]]


def people_facts(people: list[Person]) -> dict[str, tuple[tuple[str, bool], ...]]:
    """Per email: its transactions and whether each carried a Mailing List activity."""
    facts: dict[str, tuple[tuple[str, bool], ...]] = {}
    for person in people:
        txns = []
        for txn in person.transaction_ids:
            signed = any(r.is_mailing_list for r in person.records if r.transaction_id == txn)
            txns.append((txn, signed))
        facts[person.email_key] = tuple(txns)
    return facts
