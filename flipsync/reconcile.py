"""Proof that written people landed: each one recorded as written carries its batch's lists.

The checkpoint moves when Constant Contact confirmed a batch, but a confirmation can be
wrong (an activity adopted by mistake, a stand-in or proxy that lost a write, staff undoing
a list move). So every person a batch records as created or updated is kept as an
expectation (``state.expected_writes``), and the next read of the account settles it:

- A person the read returns is checked directly. On the batch's lists, or unsubscribed or
  deleted since (Constant Contact keeps unsubscribed people off lists; a deletion is the
  account's choice): settled. Missing a list: a warning, and the person's records go back to
  the retry queue, so the next run sends them again.
- List moves do not bump ``updated_at`` in Constant Contact, so an existing contact imported
  onto a list may be absent from an ``updated_after`` read. A write request (one import, one
  sign-up) lands whole or not at all, and its rows' own errors are reported by the activity.
  So when a read returns some of an import's people on their lists, the import landed; when
  it returns none of them, ``SAMPLE_PER_REQUEST`` of them are looked up: on their lists
  proves the import, otherwise every person of it is sent again.
- A single-contact request (sign-up form, create) was answered for that very contact, with
  its id; it is checked when a read returns the contact, and otherwise its answer is proof.
  (An import's answer is only an activity id, which is what can be wrongly adopted.)

Lookups are capped per check (``MAX_LOOKUPS``); requests beyond the cap wait for the next.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from flipsync.mirror import entry_from_remote
from flipsync.ports import ConstantContactAPI, ExpectationStore
from flipsync.state import Expectation, MirrorEntry

log = structlog.get_logger(__name__)

SAMPLE_PER_REQUEST = 1
MAX_LOOKUPS = 50


@dataclass
class ReconcileResult:
    """What one check settled, sent again, and cost."""

    verified: int = 0
    resent: int = 0
    lookups: int = 0
    warnings: list[str] = field(default_factory=list)


def carries(expected: Expectation, entry: MirrorEntry | None) -> bool:
    """Whether Constant Contact's contact shows the write (or a later choice that overrides it)."""
    if entry is None:
        return False
    if entry.deleted or entry.permission == "unsubscribed":
        return True
    return expected.list_ids <= entry.list_ids


class Reconciler:
    """Settles the expectations of earlier batches against what Constant Contact shows."""

    def __init__(
        self, state: ExpectationStore, api: ConstantContactAPI, *, clock: Callable[[], datetime]
    ) -> None:
        self.state = state
        self.api = api
        self.clock = clock

    def pending(self) -> bool:
        """Whether any write still waits for its proof."""
        return bool(self.state.pending_expectations())

    def check(self, seen: Mapping[str, MirrorEntry]) -> ReconcileResult:
        """Settle what ``seen`` (a fresh read of the account) proves, with lookups for the rest."""
        result = ReconcileResult()
        by_ref: dict[str, list[Expectation]] = {}
        for expected in self.state.pending_expectations():
            by_ref.setdefault(expected.op_ref, []).append(expected)
        settled: list[str] = []
        resend: dict[int, str] = {}
        fresh: list[MirrorEntry] = []
        for ref, people in by_ref.items():
            shown: dict[str, MirrorEntry | None] = {
                e.email_key: seen[e.email_key] for e in people if e.email_key in seen
            }
            if not shown and _single_contact(ref):
                settled += [e.email_key for e in people]
                result.verified += len(people)
                continue
            if not shown:
                if result.lookups + SAMPLE_PER_REQUEST > MAX_LOOKUPS:
                    continue  # the next check samples this request
                sample = sorted(people, key=lambda e: e.email_key)[:SAMPLE_PER_REQUEST]
                for expected in sample:
                    result.lookups += 1
                    contact = self.api.lookup_contact(expected.email_key)
                    entry = entry_from_remote(contact, self.clock()) if contact else None
                    if entry is not None:
                        fresh.append(entry)
                    shown[expected.email_key] = entry
            landed = any(carries(e, shown[e.email_key]) for e in people if e.email_key in shown)
            lost = [
                e
                for e in people
                if (not carries(e, shown[e.email_key]) if e.email_key in shown else not landed)
            ]
            settled += [e.email_key for e in people]
            result.verified += len(people) - len(lost)
            if lost:
                result.resent += len(lost)
                what = _describe(ref)
                for expected in lost:
                    resend.update(
                        dict.fromkeys(
                            expected.seqs,
                            f"written by run {expected.run_id} ({what}) but not on its lists in "
                            "Constant Contact; sent again",
                        )
                    )
                warning = (
                    f"{what} of run {people[0].run_id}: {len(lost)} of {len(people)} people "
                    "recorded as written do not carry their lists in Constant Contact; queued to "
                    "be sent again"
                )
                result.warnings.append(warning)
                log.warning(
                    "write_not_found", ref=ref, run=people[0].run_id, lost=len(lost), of=len(people)
                )
        if fresh:
            self.state.save_mirror(fresh)
        if settled:
            self.state.settle_expectations(settled, resend)
        if settled or result.lookups:
            log.info(
                "writes_verified",
                verified=result.verified,
                resent=result.resent,
                lookups=result.lookups,
            )
        return result


def _single_contact(ref: str) -> bool:
    """A journal op id ("kind:digest") names a single-contact request; an import is its activity."""
    return ":" in ref


def _describe(ref: str) -> str:
    return "a single-contact request" if _single_contact(ref) else f"import {ref}"
