"""The mirror group: what flipsync knows of Constant Contact (contacts and transactions)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping

from flipsync.state.base import StateBase
from flipsync.state.model import MirrorEntry, _dumps


class MirrorTables(StateBase):
    """The contact mirror and the Flipcause transactions flipsync has acted on."""

    def _upsert_mirror(self, conn: sqlite3.Connection, entries: Iterable[MirrorEntry]) -> None:
        conn.executemany(
            "INSERT INTO mirror(email_key, contact_id, permission, deleted, list_ids, updated_at, "
            "seen_at) VALUES(?,?,?,?,?,?,?) ON CONFLICT(email_key) DO UPDATE SET "
            "contact_id=coalesce(excluded.contact_id, mirror.contact_id), "
            "permission=excluded.permission, deleted=excluded.deleted, "
            "list_ids=excluded.list_ids, updated_at=excluded.updated_at, "
            "seen_at=excluded.seen_at",
            [
                (
                    e.email_key,
                    e.contact_id,
                    e.permission,
                    int(e.deleted),
                    _dumps(sorted(e.list_ids)),
                    e.updated_at,
                    e.seen_at,
                )
                for e in entries
            ],
        )

    def save_mirror(
        self,
        entries: Iterable[MirrorEntry],
        meta: Mapping[str, str] | None = None,
        *,
        replace_all: bool = False,
    ) -> None:
        """Upsert mirror rows (and meta such as the watermark) in one transaction.

        `replace_all` drops every row first: a full read of the account is the truth.
        """
        with self.transaction() as conn:
            if replace_all:
                conn.execute("DELETE FROM mirror")
            self._upsert_mirror(conn, entries)
            for key, value in (meta or {}).items():
                self.set_meta(key, value, conn)

    def replace_mirror(
        self,
        active: Iterable[MirrorEntry],
        deleted: Iterable[MirrorEntry],
        meta: Mapping[str, str],
    ) -> int:
        """Replace the whole mirror from two streams, in one transaction; returns rows kept.

        A deleted contact never overwrites a live one with the same email. If a stream
        raises, everything rolls back and the old mirror stays.
        """
        count = 0
        with self.transaction() as conn:
            conn.execute("DELETE FROM mirror")
            for replace, stream in ((True, active), (False, deleted)):
                verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
                chunk: list[MirrorEntry] = []
                for entry in stream:
                    chunk.append(entry)
                    if len(chunk) >= 5000:
                        count += self._insert_mirror(conn, verb, chunk)
                        chunk = []
                count += self._insert_mirror(conn, verb, chunk)
            for key, value in meta.items():
                self.set_meta(key, value, conn)
            self.set_meta("account_contacts", str(count), conn)
        return count

    @staticmethod
    def _insert_mirror(conn: sqlite3.Connection, verb: str, entries: list[MirrorEntry]) -> int:
        conn.executemany(
            f"{verb} INTO mirror(email_key, contact_id, permission, deleted, list_ids, "
            "updated_at, seen_at) VALUES(?,?,?,?,?,?,?)",
            [
                (
                    e.email_key,
                    e.contact_id,
                    e.permission,
                    int(e.deleted),
                    _dumps(sorted(e.list_ids)),
                    e.updated_at,
                    e.seen_at,
                )
                for e in entries
            ],
        )
        return len(entries)

    def mirror_get(self, email_keys: Iterable[str]) -> dict[str, MirrorEntry]:
        """Mirror rows for these emails (lower-cased keys)."""
        keys = list(dict.fromkeys(email_keys))
        out: dict[str, MirrorEntry] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._conn.execute(
                f"SELECT * FROM mirror WHERE email_key IN ({marks})", chunk
            ):
                out[r["email_key"]] = MirrorEntry(
                    email_key=r["email_key"],
                    contact_id=r["contact_id"],
                    permission=r["permission"],
                    deleted=bool(r["deleted"]),
                    list_ids=frozenset(json.loads(r["list_ids"])),
                    updated_at=r["updated_at"],
                    seen_at=r["seen_at"],
                )
        return out

    def mirror_count(self) -> int:
        """How many contacts the mirror knows."""
        return int(self._conn.execute("SELECT count(*) FROM mirror").fetchone()[0])

    def transactions_for(self, txn_ids: Iterable[str]) -> dict[tuple[str, str], tuple[bool, bool]]:
        """(transaction, email) -> (signed up, contact created by flipsync) for these transactions."""
        ids = list(dict.fromkeys(txn_ids))
        out: dict[tuple[str, str], tuple[bool, bool]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._conn.execute(
                f"SELECT * FROM transactions WHERE transaction_id IN ({marks})", chunk
            ):
                out[(r["transaction_id"], r["email_key"])] = (
                    bool(r["signed_up"]),
                    bool(r["created_contact"]),
                )
        return out
