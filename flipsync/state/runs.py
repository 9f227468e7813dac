"""The runs and outcomes group: the run history and what happened to each person."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flipsync.actions import Action, Endpoint
from flipsync.json_fields import JSONObject, StoredDataError, opt_str, req_str, str_lists, str_tuple
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

    def outcomes_for(self, email_key: str) -> list[OutcomeRecord]:
        """Every outcome recorded for one email, oldest first (for `flipsync explain`)."""
        rows = self._conn.execute(
            "SELECT o.*, r.kind AS run_kind FROM outcomes o LEFT JOIN runs r USING (run_id) "
            "WHERE o.email_key=? ORDER BY o.id",
            (email_key,),
        ).fetchall()
        return [OutcomeRecord.from_row(r) for r in rows]


@dataclass(frozen=True)
class OutcomeRecord:
    """One committed outcome as the outcomes table keeps it: with its run and time.

    The history `flipsync explain` shows and cleanup-test-contacts judges by; a subset of
    ``Outcome`` (no seqs, list ids or op id), so a type of its own, never a dict.
    """

    id: int
    run_id: str
    at: str
    email: str | None
    email_key: str | None
    record_keys: tuple[str, ...]
    flipcause_ids: Mapping[str, tuple[str, ...]]
    action: Action
    endpoint: Endpoint
    status_before: str | None
    status_after: str | None
    lists: tuple[str, ...]
    fields: tuple[str, ...]
    reason: str
    run_kind: str | None  # None once retention removed the run

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> OutcomeRecord:
        data: dict[str, object] = dict(row)
        for key in ("record_keys", "flipcause_ids", "lists", "fields"):
            raw = data.get(key)
            try:
                data[key] = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError as exc:
                raise StoredDataError(f"stored outcome {data.get('id')}: {key}: {exc}") from exc
        try:
            action = Action(req_str(data, "action"))
            endpoint = Endpoint(req_str(data, "endpoint"))
        except ValueError as exc:
            raise StoredDataError(f"stored outcome {data.get('id')}: {exc}") from exc
        number = data.get("id")
        if not isinstance(number, int):
            raise StoredDataError(f"stored outcome without an id: {number!r}")
        return cls(
            id=number,
            run_id=req_str(data, "run_id"),
            at=req_str(data, "at"),
            email=opt_str(data, "email"),
            email_key=opt_str(data, "email_key"),
            record_keys=str_tuple(data, "record_keys"),
            flipcause_ids=str_lists(data, "flipcause_ids"),
            action=action,
            endpoint=endpoint,
            status_before=opt_str(data, "status_before"),
            status_after=opt_str(data, "status_after"),
            lists=str_tuple(data, "lists"),
            fields=str_tuple(data, "fields"),
            reason=req_str(data, "reason"),
            run_kind=opt_str(data, "run_kind"),
        )

    def to_json(self) -> JSONObject:
        """The `explain --json` form: the table's columns, lists as lists."""
        return {
            "id": self.id,
            "run_id": self.run_id,
            "at": self.at,
            "email": self.email,
            "email_key": self.email_key,
            "record_keys": list(self.record_keys),
            "flipcause_ids": {k: list(v) for k, v in self.flipcause_ids.items()},
            "action": self.action.value,
            "endpoint": self.endpoint.value,
            "status_before": self.status_before,
            "status_after": self.status_after,
            "lists": list(self.lists),
            "fields": list(self.fields),
            "reason": self.reason,
            "run_kind": self.run_kind,
        }
