"""Grouping Flipcause records into people: one Person per email, with subscriber evidence.

Subscriber status is decided per Flipcause transaction: a Mailing List activity
for this email in any of the person's transactions, seen in this batch or in an
earlier one, makes the person a subscriber. A contact flipsync itself created
from one of those transactions still counts as new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flipsync.records import Address, FlipcauseRecord

# (transaction id, email key) -> (signed up, contact created by flipsync)
TransactionKnowledge = Mapping[tuple[str, str], tuple[bool, bool]]


@dataclass(frozen=True)
class Person:
    """Everything one batch says about one email address."""

    email: str
    email_key: str
    records: tuple[FlipcauseRecord, ...]
    first_name: str | None = None
    last_name: str | None = None
    company_name: str | None = None
    phone: str | None = None
    address: Address = field(default_factory=Address)
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    signed_up: bool = False
    signup_evidence: str | None = None
    created_by_flipsync: bool = False
    created_evidence: str | None = None

    @property
    def transaction_ids(self) -> tuple[str, ...]:
        """The Flipcause transactions this person appears in, in arrival order."""
        return tuple(dict.fromkeys(r.transaction_id for r in self.records if r.transaction_id))

    @property
    def record_keys(self) -> list[str]:
        """Inbox keys of the person's records."""
        return [r.record_key for r in self.records]

    @property
    def seqs(self) -> list[int]:
        """Inbox seqs of the person's records."""
        return [r.seq for r in self.records]

    def flipcause_ids(self) -> dict[str, list[str]]:
        """Flipcause ids of all records, grouped by kind of id, for reports."""
        out: dict[str, list[str]] = {}
        for record in self.records:
            for kind, value in record.flipcause_ids().items():
                bucket = out.setdefault(kind, [])
                if value not in bucket:
                    bucket.append(value)
        return out


def _latest(records: list[FlipcauseRecord], attr: str) -> str | None:
    for record in reversed(records):
        value = getattr(record, attr)
        if value:
            return str(value)
    return None


def group_people(records: Iterable[FlipcauseRecord], known: TransactionKnowledge) -> list[Person]:
    """One Person per email (case-insensitive), in order of first appearance.

    Attributes come from the latest record that has them (an address is taken
    whole from one record, never mixed from several).
    """
    by_email: dict[str, list[FlipcauseRecord]] = {}
    for record in sorted(records, key=lambda r: r.seq):
        by_email.setdefault(record.email_key, []).append(record)
    people = []
    for key, recs in by_email.items():
        signup = next((r for r in recs if r.is_mailing_list), None)
        evidence = None
        if signup is not None:
            evidence = f"Mailing List activity {signup.activity_id or signup.record_key}"
            if signup.transaction_id:
                evidence += f" in transaction {signup.transaction_id}"
        created_evidence = None
        txns = [r.transaction_id for r in recs if r.transaction_id]
        for txn in dict.fromkeys(txns):
            signed, created = known.get((txn, key), (False, False))
            if signed and evidence is None:
                evidence = f"Mailing List activity seen earlier in transaction {txn}"
            if created and created_evidence is None:
                created_evidence = f"flipsync created this contact from transaction {txn}"
        address = next((r.address for r in reversed(recs) if not r.address.is_empty()), Address())
        custom: dict[str, str] = {}
        for record in recs:
            custom.update(record.custom_fields)
        people.append(
            Person(
                email=recs[0].email,
                email_key=key,
                records=tuple(recs),
                first_name=_latest(recs, "first_name"),
                last_name=_latest(recs, "last_name"),
                company_name=_latest(recs, "company_name"),
                phone=_latest(recs, "phone"),
                address=address,
                custom_fields=custom,
                signed_up=evidence is not None,
                signup_evidence=evidence,
                created_by_flipsync=created_evidence is not None,
                created_evidence=created_evidence,
            )
        )
    return people
