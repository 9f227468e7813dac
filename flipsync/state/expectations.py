"""The expected_writes group: writes to verify at the next read of the account."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import replace

from flipsync.state.base import StateBase
from flipsync.state.model import Expectation, iso, utcnow


def _expectation(row: sqlite3.Row) -> Expectation:
    return Expectation(
        email_key=str(row["email_key"]),
        list_ids=frozenset(str(x) for x in json.loads(row["list_ids"])),
        seqs=tuple(int(x) for x in json.loads(row["seqs"])),
        op_ref=str(row["op_ref"]),
        run_id=str(row["run_id"]),
        written_at=str(row["written_at"]),
    )


def merged_with_pending(
    conn: sqlite3.Connection, expect: Iterable[Expectation]
) -> list[Expectation]:
    """New expectations, each joined with any still unproven for the same person.

    One row per person: a later write of someone whose earlier write is not yet seen must
    not replace it, or a lost first write (its lists, its records) would never be checked.
    Memberships only accumulate, so the person must show every list of both writes, and
    a lost write sends the records of both again. The later write's time decides when.
    """
    merged: dict[str, Expectation] = {}
    for new in expect:
        old = merged.get(new.email_key)
        if old is None:
            row = conn.execute(
                "SELECT * FROM expected_writes WHERE email_key=?", (new.email_key,)
            ).fetchone()
            old = None if row is None else _expectation(row)
        if old is not None:
            new = replace(
                new,
                list_ids=old.list_ids | new.list_ids,
                seqs=tuple(sorted(set(old.seqs) | set(new.seqs))),
                written_at=max(old.written_at, new.written_at),
            )
        merged[new.email_key] = new
    return list(merged.values())


class ExpectationTables(StateBase):
    """People recorded as written whose lists Constant Contact has not yet shown."""

    def pending_expectations(self) -> list[Expectation]:
        """Writes not yet seen in Constant Contact, oldest first."""
        rows = self._conn.execute("SELECT * FROM expected_writes ORDER BY written_at, rowid")
        return [_expectation(r) for r in rows]

    def oldest_expectation_at(self) -> str | None:
        """When the oldest unproven write was committed, or None."""
        row = self._conn.execute("SELECT min(written_at) FROM expected_writes").fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def settle_expectations(self, settled: Iterable[str], resend: Mapping[int, str]) -> None:
        """Drop checked expectations; queue the records of lost writes to be sent again."""
        now = iso(utcnow())
        with self.transaction() as conn:
            conn.executemany(
                "DELETE FROM expected_writes WHERE email_key=?", [(k,) for k in settled]
            )
            conn.executemany(
                "INSERT INTO retry_queue(seq, attempts, reason, since) VALUES(?,?,?,?) "
                "ON CONFLICT(seq) DO UPDATE SET reason=excluded.reason",
                [(seq, 0, reason, now) for seq, reason in resend.items()],
            )
