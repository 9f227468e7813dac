"""Retention: what flipsync forgets after `run.retention_days`, and what it must never forget.

Payloads, outcomes (the decision record `explain` shows), run reports and intake
rejects hold personal data, so they go once they are older than the retention.
Two kinds of record stay whatever their age:

- work not finished: payloads after the checkpoint (not synced yet), in the retry
  queue, in an open journal (a batch sent but not confirmed), of a write not yet seen
  in Constant Contact (it may need sending again), or after the progress of an
  unfinished backfill;
- the facts consent decisions rest on: the `transactions` table (which email signed up
  in which Flipcause transaction, which contacts flipsync itself created) and the mirror
  of Constant Contact. Forgetting them could turn a later activity of an old transaction
  into a new-contact decision, so they are never pruned.

A pruned payload leaves a tombstone (its record key, no content), so the same webhook
or export row sent again is recognised as already seen and is not synced a second time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flipsync.safe_text import for_terminal
from flipsync.state import PruneCounts, StateDB, iso
from flipsync.sync import BACKFILL_PREFIX, DONE_SUFFIX


@dataclass(frozen=True)
class PruneReport:
    """What one prune removed, and what it kept back and why."""

    days: int
    cutoff: str
    dry_run: bool
    counts: PruneCounts
    keep_from_seq: int
    kept: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {
            "retention_days": self.days,
            "cutoff": self.cutoff,
            "dry_run": self.dry_run,
            "removed": asdict(self.counts),
            "payloads_kept_from_seq": self.keep_from_seq,
            "kept": list(self.kept),
        }

    def render(self) -> str:
        """One summary line, then a line per reason something old was kept."""
        c = self.counts
        verb = "would remove" if self.dry_run else "removed"
        lines = [
            f"prune (older than {self.days} days, before {self.cutoff}): {verb} "
            f"{c.payloads} payload(s), {c.outcomes} outcome(s), {c.runs} run report(s), "
            f"{c.intake_rejects} intake reject(s)"
        ]
        lines += [f"  kept: {reason}" for reason in self.kept]
        return for_terminal("\n".join(lines))


def unfinished_backfills(state: StateDB) -> dict[str, int]:
    """Backfill window -> the inbox seq it read up to, for backfills that did not finish."""
    meta = state.meta_with_prefix(BACKFILL_PREFIX)
    out: dict[str, int] = {}
    for key, value in meta.items():
        if key.endswith(DONE_SUFFIX) or meta.get(key + DONE_SUFFIX) == value:
            continue
        out[key[len(BACKFILL_PREFIX) :]] = int(value or 0)
    return out


def _journal_floor(batch: dict[str, Any], first_seq: int | None) -> int | None:
    seqs = [s for o in batch.get("outcomes", []) for s in o.get("seqs", [])]
    seqs += [int(k) for k in batch.get("attempts", {})]
    if first_seq is not None:
        seqs.append(first_seq)
    return min(seqs) if seqs else None


def prune(state: StateDB, *, days: int, now: datetime, dry_run: bool = False) -> PruneReport:
    """Remove what is older than `days` before `now`, keeping what the module doc names."""
    cutoff = iso(now - timedelta(days=days))
    floors: list[tuple[int, str]] = [
        (
            state.checkpoint + 1,
            f"payloads after the checkpoint (inbox seq {state.checkpoint}): not synced yet",
        )
    ]
    for journal in state.open_journals():
        floor = _journal_floor(journal.batch, journal.first_seq)
        if floor is not None:
            floors.append(
                (floor, f"payloads from seq {floor}: batch {journal.batch_id} is not confirmed yet")
            )
    for window, progress in sorted(unfinished_backfills(state).items()):
        since, _, until = window.partition(":")
        command = f"flipsync backfill --since {since}" + (f" --until {until}" if until else "")
        floors.append(
            (
                progress + 1,
                f"payloads after seq {progress}: the backfill of {window} did not finish "
                f"(finish it with `{command}`)",
            )
        )
    keep_from = min(seq for seq, _ in floors)
    kept = [reason for _, reason in floors]
    retries = len(state.retry_seqs())
    if retries:
        kept.append(f"{retries} payload(s) in the retry queue")
    unproven = {seq for e in state.pending_expectations() for seq in e.seqs}
    if unproven:
        kept.append(f"{len(unproven)} payload(s) of writes not yet seen in Constant Contact")
    kept.append("consent facts (sign-ups, contacts flipsync created) and the contact mirror")
    counts = state.prune(
        cutoff=cutoff, keep_from_seq=keep_from, keep_seqs=unproven, dry_run=dry_run
    )
    return PruneReport(
        days=days,
        cutoff=cutoff,
        dry_run=dry_run,
        counts=counts,
        keep_from_seq=keep_from,
        kept=kept,
    )
