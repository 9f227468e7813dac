"""The journal group: batches sent (or being sent) but not committed, and owned activities."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flipsync.state.base import StateBase
from flipsync.state.model import Journal, JournalOp, _dumps, iso, utcnow

# How long flipsync remembers the activities it owned. Constant Contact lists the activities
# of the last 10 days, so an older one can never be offered as a candidate again.
ACTIVITIES_KEPT_DAYS = 30


class JournalTables(StateBase):
    """journal, journal_ops and activities: what flipsync sent and which activities it owns."""

    def write_journal(self, journal: Journal) -> None:
        """Record a batch and its planned requests before the first request is sent."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO journal(batch_id, run_id, kind, created_at, first_seq, last_seq, batch) "
                "VALUES(?,?,?,?,?,?,?)",
                (
                    journal.batch_id,
                    journal.run_id,
                    journal.kind,
                    journal.created_at,
                    journal.first_seq,
                    journal.last_seq,
                    _dumps(journal.batch),
                ),
            )
            conn.executemany(
                "INSERT INTO journal_ops(op_id, batch_id, position, kind, body, state) "
                "VALUES(?,?,?,?,?,?)",
                [
                    (op.op_id, journal.batch_id, op.position, op.kind, _dumps(op.body), op.state)
                    for op in journal.ops
                ],
            )

    def update_op(
        self,
        op_id: str,
        *,
        state: str,
        activity_id: str | None = None,
        posted_at: str | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> None:
        """Move one journaled request forward (posting -> posted -> done / failed).

        An activity id is also remembered for good (``known_activity_ids``), in the same
        transaction: once flipsync owns an activity, no later uncertain POST may adopt it.
        """
        with self.transaction() as conn:
            conn.execute(
                "UPDATE journal_ops SET state=?, activity_id=coalesce(?, activity_id), "
                "posted_at=coalesce(?, posted_at), result=coalesce(?, result) WHERE op_id=?",
                (state, activity_id, posted_at, None if result is None else _dumps(result), op_id),
            )
            if activity_id is not None:
                self._record_activity(conn, activity_id)

    def _record_activity(self, conn: sqlite3.Connection, activity_id: str) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO activities(activity_id, kind, recorded_at) VALUES(?,?,?)",
            (activity_id, "json_import", iso(utcnow())),
        )

    def remember_activity(self, activity_id: str, kind: str) -> None:
        """Own an activity started outside a journaled batch (a bulk delete), for good."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO activities(activity_id, kind, recorded_at) VALUES(?,?,?)",
                (activity_id, kind, iso(utcnow())),
            )

    def known_activity_ids(self) -> set[str]:
        """Every activity flipsync owned lately: journaled, committed, or adopted, any run."""
        since = iso(utcnow() - timedelta(days=ACTIVITIES_KEPT_DAYS))
        known = {
            str(r[0])
            for r in self._conn.execute(
                "SELECT activity_id FROM activities WHERE recorded_at >= ?", (since,)
            )
        }
        known.update(
            str(r[0])
            for r in self._conn.execute(
                "SELECT activity_id FROM journal_ops WHERE activity_id IS NOT NULL"
            )
        )
        return known

    def open_journals(self, kind: str | None = None) -> list[Journal]:
        """Batches left uncommitted by this or an earlier run, oldest first."""
        query = "SELECT * FROM journal"
        params: list[Any] = []
        if kind is not None:
            query += " WHERE kind=?"
            params.append(kind)
        journals = []
        for j in self._conn.execute(query + " ORDER BY created_at", params).fetchall():
            ops = tuple(
                JournalOp(
                    op_id=o["op_id"],
                    position=o["position"],
                    kind=o["kind"],
                    body=json.loads(o["body"]),
                    state=o["state"],
                    activity_id=o["activity_id"],
                    posted_at=o["posted_at"],
                    result=json.loads(o["result"]) if o["result"] else None,
                )
                for o in self._conn.execute(
                    "SELECT * FROM journal_ops WHERE batch_id=? ORDER BY position", (j["batch_id"],)
                )
            )
            journals.append(
                Journal(
                    batch_id=j["batch_id"],
                    run_id=j["run_id"],
                    kind=j["kind"],
                    created_at=j["created_at"],
                    first_seq=j["first_seq"],
                    last_seq=j["last_seq"],
                    batch=json.loads(j["batch"]),
                    ops=ops,
                )
            )
        return journals
