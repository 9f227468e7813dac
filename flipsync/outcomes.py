"""The decision record: one outcome row per person (or unusable record) and the run report.

Outcome rows are plain dicts so the journal, the state DB, `--output` files and
`--json` reports all carry the same data; PUBLIC_OUTCOME_KEYS is what a person sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flipsync.people import Person
from flipsync.policy import Action, Decision
from flipsync.records import MERCHANT_KINDS, FlipcauseRecord, Unusable
from flipsync.state import InboxRow

DEFERRED = "deferred"


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
    writes_verified: int = 0
    writes_resent: int = 0
    # Records read per kind (activity, transaction, contact, merchant_payment, ...).
    record_kinds: Counter[str] = field(default_factory=Counter)

    def merchant_records(self) -> int:
        """Merchant account payments and credits read: counted, never synced."""
        return sum(self.record_kinds.get(k, 0) for k in MERCHANT_KINDS)

    def counts(self) -> dict[str, int]:
        """Outcomes per action."""
        counter = Counter(o["action"] for o in self.outcomes)
        return {k: counter.get(k, 0) for k in ("create", "update", "skip", "reject", DEFERRED)}

    def as_dict(self, *, with_outcomes: bool = False) -> dict[str, Any]:
        """Plain data: counts, and every rejected or skipped record with its ids and reason."""
        listed = [
            public(o)
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


def public(outcome: Mapping[str, Any]) -> dict[str, Any]:
    return {k: outcome.get(k) for k in PUBLIC_OUTCOME_KEYS}


def waiting(report: RunReport) -> None:
    """Mark a run that stopped because an import is still processing."""
    report.status = "waiting"
    report.message = "an import is still processing in Constant Contact; the next run finishes it"


def unusable_outcome(item: Unusable, row: InboxRow) -> dict[str, Any]:
    """The row for a payload that yields no record (rejected, or nothing to sync)."""
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


def record_outcome(record: FlipcauseRecord, action: str, reason: str) -> dict[str, Any]:
    """The row for one record dropped before any decision (a skip rule)."""
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


def decision_outcome(
    decision: Decision,
    op_id: str | None,
    list_names: Mapping[str, str],
    list_ids: Mapping[str, str],
) -> dict[str, Any]:
    """The row for one person's decision; list refs shown by name, kept by id."""
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
        "lists": [list_names.get(ref, ref) for ref in decision.lists],
        "list_ids": [list_ids[ref] for ref in decision.lists if ref in list_ids],
        "fields": list(decision.fields),
        "reason": decision.reason,
        "op_id": op_id if decision.writes and decision.action is not Action.REJECT else None,
    }


def people_facts(people: list[Person]) -> dict[str, Any]:
    """Per email: its transactions and whether each carried a Mailing List activity."""
    facts: dict[str, Any] = {}
    for person in people:
        txns = []
        for txn in person.transaction_ids:
            signed = any(r.is_mailing_list for r in person.records if r.transaction_id == txn)
            txns.append([txn, signed])
        facts[person.email_key] = {"transactions": txns}
    return facts
