"""The connection owner's basics every table group uses: transactions and the meta table.

``StateDB`` (db.py) opens the connection and composes the table groups on top of this.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class StateBase:
    """One open SQLite connection to a state file; the table groups share it."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: BEGIN IMMEDIATE so writers queue instead of failing mid-way."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT (disk full, I/O error): never leave a transaction open.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    # -- meta ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A value from the meta table, or None."""
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str, conn: sqlite3.Connection | None = None) -> None:
        """Set a meta value (inside the caller's transaction when `conn` is given)."""
        (conn or self._conn).execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def meta_with_prefix(self, prefix: str) -> dict[str, str]:
        """Every meta value whose key starts with `prefix` (e.g. backfill progress)."""
        rows = self._conn.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return {str(r[0]): str(r[1]) for r in rows}

    @property
    def checkpoint(self) -> int:
        """The highest inbox seq whose work Constant Contact confirmed."""
        value = self.get_meta("checkpoint_seq")
        return int(value) if value else 0
