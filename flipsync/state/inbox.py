"""The inbox group: stored payloads, intake rejects, test marks and the retry queue."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from flipsync.state.base import StateBase
from flipsync.state.model import (
    TEST_MARK_PREFIX,
    AddResult,
    InboxBatch,
    InboxRow,
    RawInboxRow,
    _dumps,
    iso,
    record_key_for,
    utcnow,
)


class InboxTables(StateBase):
    """What arrived from Flipcause (inbox, intake_rejects) and what waits again (retry_queue)."""

    def add_payloads(
        self,
        payloads: Iterable[tuple[str, dict[str, Any]]],
        *,
        source: str,
        id_field: str,
        received_at: datetime | None = None,
    ) -> AddResult:
        """Store (record_key, payload) pairs in one transaction; a repeated key is stored once."""
        stamp = iso(received_at or utcnow())
        added = duplicates = 0
        with self.transaction() as conn:
            for key, payload in payloads:
                cur = conn.execute(
                    "INSERT INTO inbox(record_key, source, received_at, payload) VALUES(?,?,?,?) "
                    "ON CONFLICT(record_key) DO NOTHING",
                    (key or record_key_for(payload, id_field), source, stamp, _dumps(payload)),
                )
                if cur.rowcount:
                    added += 1
                else:
                    duplicates += 1
        return AddResult(added=added, duplicates=duplicates)

    def add_payload_groups(
        self,
        groups: Sequence[tuple[str, Sequence[tuple[str, dict[str, Any]]]]],
        *,
        received_at: datetime | None = None,
    ) -> list[AddResult]:
        """Store several (source, [(record_key, payload)]) groups in ONE transaction.

        The webhook receiver's group commit: many requests share one commit (one
        fsync), and each group still learns what happened to its own payloads. A
        key repeated across groups is stored once; the later group counts it as a
        duplicate. Keys must be given (see `record_key_for`).
        """
        stamp = iso(received_at or utcnow())
        results: list[AddResult] = []
        with self.transaction() as conn:
            for source, payloads in groups:
                added = duplicates = 0
                for key, payload in payloads:
                    cur = conn.execute(
                        "INSERT INTO inbox(record_key, source, received_at, payload) "
                        "VALUES(?,?,?,?) ON CONFLICT(record_key) DO NOTHING",
                        (key, source, stamp, _dumps(payload)),
                    )
                    if cur.rowcount:
                        added += 1
                    else:
                        duplicates += 1
                results.append(AddResult(added=added, duplicates=duplicates))
        return results

    def add_intake_rejects(
        self, rejects: Iterable[tuple[str, str, str]], *, dedupe: bool = False
    ) -> None:
        """Remember inputs that could not be stored at all: (source, location, reason).

        With `dedupe`, a (source, location, reason) already recorded is not added again:
        ingesting the same file twice must not grow the table.
        """
        stamp = iso(utcnow())
        rows = list(dict.fromkeys(rejects)) if dedupe else list(rejects)
        with self.transaction() as conn:
            if dedupe and rows:
                known: set[tuple[str, str, str]] = set()
                for source in {s for s, _, _ in rows}:
                    known.update(
                        (source, r[0], r[1])
                        for r in conn.execute(
                            "SELECT location, reason FROM intake_rejects WHERE source=?", (source,)
                        )
                    )
                rows = [r for r in rows if r not in known]
            conn.executemany(
                "INSERT INTO intake_rejects(received_at, source, location, reason) VALUES(?,?,?,?)",
                [(stamp, s, loc, reason) for s, loc, reason in rows],
            )

    def inbox_after(self, seq: int, limit: int) -> list[InboxRow]:
        """The next `limit` payloads after `seq`, in arrival order, parsed."""
        return list(self.inbox_batch_after(seq, limit))

    def inbox_batch_after(self, seq: int, limit: int) -> InboxBatch:
        """The next `limit` payloads after `seq`, as text until each is read (a run's batch)."""
        return InboxBatch(
            [
                (int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]))
                for r in self._conn.execute(
                    "SELECT seq, record_key, source, received_at, payload FROM inbox "
                    "WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit),
                )
            ]
        )

    def inbox_batch_by_seqs(self, seqs: Sequence[int]) -> InboxBatch:
        """Payloads by seq (retries), in seq order, as text until each is read."""
        raw: list[RawInboxRow] = []
        for start in range(0, len(seqs), 500):
            chunk = list(seqs[start : start + 500])
            marks = ",".join("?" * len(chunk))
            raw += [
                (int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]))
                for r in self._conn.execute(
                    "SELECT seq, record_key, source, received_at, payload FROM inbox "
                    f"WHERE seq IN ({marks})",
                    chunk,
                )
            ]
        return InboxBatch(sorted(raw))

    def oldest_waiting(self) -> str | None:
        """When the oldest record after the checkpoint arrived (None: nothing waits)."""
        row = self._conn.execute(
            "SELECT min(received_at) FROM inbox WHERE seq > ?", (self.checkpoint,)
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def inbox_count(self) -> int:
        """How many payloads the inbox holds."""
        return int(self._conn.execute("SELECT count(*) FROM inbox").fetchone()[0])

    def inbox_pending_count(self) -> int:
        """How many payloads wait after the checkpoint."""
        return int(
            self._conn.execute(
                "SELECT count(*) FROM inbox WHERE seq > ?", (self.checkpoint,)
            ).fetchone()[0]
        )

    def test_marked(self, record_keys: Iterable[str]) -> set[str]:
        """Which of these inbox records `cleanup-test-contacts --apply` marked as tests.

        Marks are meta rows (TEST_MARK_PREFIX + record key), written with the clean-up's
        outcomes in one commit (`commit_batch(meta=...)`); no schema change was needed.
        """
        keys = [TEST_MARK_PREFIX + k for k in dict.fromkeys(record_keys)]
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                str(r[0]).removeprefix(TEST_MARK_PREFIX)
                for r in self._conn.execute(f"SELECT key FROM meta WHERE key IN ({marks})", chunk)
            )
        return found

    # -- retry queue --------------------------------------------------------------------

    def retry_seqs(self) -> dict[int, int]:
        """Inbox seqs to process again, with how often they were tried."""
        return {
            int(r[0]): int(r[1])
            for r in self._conn.execute("SELECT seq, attempts FROM retry_queue ORDER BY seq")
        }
