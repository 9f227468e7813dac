"""The runs and outcomes group: the run history and what happened to each person."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flipsync.state.base import StateBase
from flipsync.state.model import _dumps, iso, utcnow


class RunTables(StateBase):
    """Runs (with their reports) and outcomes, read by status and `flipsync explain`.

    Outcomes are written only by ``commit_batch`` (commit.py), with the checkpoint.
    """

    def start_run(self, run_id: str, kind: str, started_at: datetime) -> None:
        """Record that a run began."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO runs(run_id, kind, started_at, status) VALUES(?,?,?,?)",
                (run_id, kind, iso(started_at), "running"),
            )

    def finish_run(self, run_id: str, status: str, report: Mapping[str, Any]) -> None:
        """Record how a run ended and its report."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished_at=?, status=?, report=? WHERE run_id=?",
                (iso(utcnow()), status, _dumps(report), run_id),
            )

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        rows = self._conn.execute(
            "SELECT run_id, kind, started_at, finished_at, status, report FROM runs "
            "ORDER BY started_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {**dict(r), "report": json.loads(r["report"]) if r["report"] else None} for r in rows
        ]

    def outcomes_for(self, email_key: str) -> list[dict[str, Any]]:
        """Every outcome recorded for one email, oldest first (for `flipsync explain`)."""
        rows = self._conn.execute(
            "SELECT o.*, r.kind AS run_kind FROM outcomes o LEFT JOIN runs r USING (run_id) "
            "WHERE o.email_key=? ORDER BY o.id",
            (email_key,),
        ).fetchall()
        return [_outcome_dict(r) for r in rows]


def _outcome_dict(r: sqlite3.Row) -> dict[str, Any]:
    out = dict(r)
    for key in ("record_keys", "flipcause_ids", "lists", "fields"):
        out[key] = json.loads(out[key])
    return out
