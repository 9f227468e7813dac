"""The retention group: turning old payloads into tombstones and dropping old history."""

from __future__ import annotations

from collections.abc import Iterable

from flipsync.state.base import StateBase
from flipsync.state.model import PRUNED_KEY, PruneCounts, _dumps


class PruneTables(StateBase):
    """``prune``: what flipsync.retention asks the state DB to forget, in one transaction."""

    def prune(
        self,
        *,
        cutoff: str,
        keep_from_seq: int,
        keep_seqs: Iterable[int] = (),
        dry_run: bool = False,
    ) -> PruneCounts:
        """Remove what is older than `cutoff` (an ISO stamp), in one transaction.

        Payloads received before `cutoff` and before seq `keep_from_seq` become
        tombstones: the payload is replaced by PRUNED_PAYLOAD while the record key stays,
        so the same webhook or export row is still recognised and never stored again.
        Payloads in the retry queue or in `keep_seqs` stay whole. Outcomes, finished run reports (except
        runs an open journal belongs to) and intake rejects before `cutoff` are deleted.
        Mirror, transactions, journals, retry queue and meta are never touched here.
        `dry_run` counts and rolls back.
        """
        tombstone = _dumps({PRUNED_KEY: cutoff})
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS prune_keep (seq INTEGER PRIMARY KEY)")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute("DELETE FROM temp.prune_keep")
            self._conn.executemany(
                "INSERT OR IGNORE INTO temp.prune_keep(seq) VALUES(?)", [(s,) for s in keep_seqs]
            )
            payloads = self._conn.execute(
                "UPDATE inbox SET payload=? WHERE received_at < ? AND seq < ? "
                "AND seq NOT IN (SELECT seq FROM retry_queue) "
                "AND seq NOT IN (SELECT seq FROM temp.prune_keep) AND payload NOT LIKE ?",
                (tombstone, cutoff, keep_from_seq, '{"' + PRUNED_KEY + '"%'),
            ).rowcount
            outcomes = self._conn.execute("DELETE FROM outcomes WHERE at < ?", (cutoff,)).rowcount
            runs = self._conn.execute(
                "DELETE FROM runs WHERE coalesce(finished_at, started_at) < ? "
                "AND run_id NOT IN (SELECT run_id FROM journal)",
                (cutoff,),
            ).rowcount
            rejects = self._conn.execute(
                "DELETE FROM intake_rejects WHERE received_at < ?", (cutoff,)
            ).rowcount
            self._conn.execute("ROLLBACK" if dry_run else "COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        return PruneCounts(payloads=payloads, outcomes=outcomes, runs=runs, intake_rejects=rejects)
