"""The one-transaction commit of a confirmed batch, across every table group.

The invariant lives here: outcomes and the checkpoint (with retries, knowledge, the
writes to verify and the journal's removal) commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from flipsync.emails import normalize_email
from flipsync.state.expectations import merged_with_pending
from flipsync.state.mirror import MirrorTables
from flipsync.state.model import Expectation, MirrorEntry, _dumps, iso, utcnow

if TYPE_CHECKING:  # outcomes imports records, which imports flipsync.state
    from flipsync.outcomes import Outcome


class CommitTables(MirrorTables):
    """``commit_batch``: writes outcomes, runs' checkpoint, retries, mirror, expectations."""

    def commit_batch(
        self,
        *,
        batch_id: str | None,
        run_id: str,
        outcomes: Sequence[Outcome],
        checkpoint: int | None,
        done_retry_seqs: Iterable[int] = (),
        requeue: Mapping[int, str] | None = None,
        attempts: Mapping[int, int] | None = None,
        transactions: Iterable[tuple[str, str, bool, bool]] = (),
        mirror: Iterable[MirrorEntry] = (),
        meta: Mapping[str, str] | None = None,
        expect: Iterable[Expectation] = (),
    ) -> None:
        """Commit a confirmed batch: outcomes, checkpoint, retries, knowledge, journal removal.

        ``expect`` lists the people recorded as written, to be verified at the next read.

        Everything happens in one transaction, so a crash leaves either the whole
        batch committed or the journal still there for the next run to finish.
        """
        now = iso(utcnow())
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO outcomes(run_id, at, email, email_key, record_keys, flipcause_ids, "
                "action, endpoint, status_before, status_after, lists, fields, reason) "
                "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        now,
                        o.email,
                        normalize_email(o.email or "") or None,
                        _dumps(list(o.record_keys)),
                        _dumps({k: list(v) for k, v in o.flipcause_ids.items()}),
                        o.action.value,
                        o.endpoint.value,
                        o.status_before,
                        o.status_after,
                        _dumps(list(o.lists)),
                        _dumps(list(o.fields)),
                        o.reason,
                    )
                    for o in outcomes
                ],
            )
            if checkpoint is not None:
                current = self.get_meta("checkpoint_seq")
                if current is None or int(current) < checkpoint:
                    self.set_meta("checkpoint_seq", str(checkpoint), conn)
            conn.executemany("DELETE FROM retry_queue WHERE seq=?", [(s,) for s in done_retry_seqs])
            tried = attempts or {}
            conn.executemany(
                "INSERT OR REPLACE INTO retry_queue(seq, attempts, reason, since) VALUES(?,?,?,?)",
                [
                    (seq, tried.get(seq, 0) + 1, reason, now)
                    for seq, reason in (requeue or {}).items()
                ],
            )
            for txn_id, email_key, signed_up, created in transactions:
                conn.execute(
                    "INSERT INTO transactions(transaction_id, email_key, signed_up, created_contact, "
                    "first_run) VALUES(?,?,?,?,?) ON CONFLICT(transaction_id, email_key) DO UPDATE "
                    "SET signed_up=max(signed_up, excluded.signed_up), "
                    "created_contact=max(created_contact, excluded.created_contact)",
                    (txn_id, email_key, int(signed_up), int(created), run_id),
                )
            self._upsert_mirror(conn, mirror)
            # One row per person; a later write joins an unproven earlier one, never replaces it.
            conn.executemany(
                "INSERT OR REPLACE INTO expected_writes(email_key, list_ids, seqs, op_ref, run_id, "
                "written_at) VALUES(?,?,?,?,?,?)",
                [
                    (
                        e.email_key,
                        _dumps(sorted(e.list_ids)),
                        _dumps(list(e.seqs)),
                        e.op_ref,
                        e.run_id,
                        e.written_at,
                    )
                    for e in merged_with_pending(conn, expect)
                ],
            )
            for key, value in (meta or {}).items():
                self.set_meta(key, value, conn)
            if batch_id is not None:
                conn.executemany(
                    "INSERT OR IGNORE INTO activities(activity_id, kind, recorded_at) "
                    "SELECT activity_id, kind, ? FROM journal_ops "
                    "WHERE batch_id=? AND activity_id IS NOT NULL",
                    [(now, batch_id)],
                )
                conn.execute("DELETE FROM journal_ops WHERE batch_id=?", (batch_id,))
                conn.execute("DELETE FROM journal WHERE batch_id=?", (batch_id,))
