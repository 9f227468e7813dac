"""StateDB: the one owner of a state file's connection, its schema and its table groups.

Opening checks and migrates the file; each table group (inbox.py, runs.py, journal.py,
expectations.py, mirror.py, pruning.py, and commit.py across them) is a class this one
composes, all sharing the connection and ``transaction`` of base.py.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import Counter
from contextlib import suppress
from pathlib import Path

from flipsync.errors import NotWritable, StateError
from flipsync.state.commit import CommitTables
from flipsync.state.expectations import ExpectationTables
from flipsync.state.inbox import InboxTables
from flipsync.state.journal import JournalTables
from flipsync.state.pruning import PruneTables
from flipsync.state.runs import RunTables
from flipsync.state.schema import _SCHEMA_V1, MIGRATIONS, SCHEMA_VERSION, _statements
from flipsync.state_guard import (
    header_problem,
    not_writable,
    readonly_uri_query,
    require_readable,
    require_writable,
    unusable,
)

# POSIX record locks belong to the process, and closing *any* descriptor of a file drops all
# of them. SQLite guards its own descriptors against that; the header check's plain read does
# not. Run while this process holds a connection to the file (the receiver's writer, while
# /healthz, /metrics or a reload opens it again), it would drop that connection's locks: a
# cron run closing its connection would then take itself for the last one, checkpoint and
# delete the WAL, and every webhook answered 200 afterwards would go to a deleted file. So
# the raw check runs only while the process has no connection to the file (a file in use
# here was checked by its first opener), and opens and closes take turns (OPENS).
OPENS = threading.RLock()
_CONNECTED: Counter[tuple[int, int]] = Counter()


def _file_id(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


class StateDB(InboxTables, RunTables, JournalTables, ExpectationTables, PruneTables, CommitTables):
    """Access to one organization's state file. Open it with `StateDB.open(path)`."""

    _file: tuple[int, int] | None = None  # while counted in _CONNECTED
    _version: int = 0  # the schema version the file had when opened

    @classmethod
    def open(
        cls, path: Path, *, create: bool = True, readonly: bool = False, _new: bool = False
    ) -> StateDB:
        """Open (or create, 0600 in a 0700 directory), check the schema version, migrate.

        An existing file that is not a whole flipsync state DB (empty, truncated, foreign)
        is refused, never taken as a fresh start (see flipsync.state_guard). `readonly`
        opens without any write, for commands that only read (status, explain), so a
        healthy state DB in a folder this user cannot write is still read.
        """
        path = Path(path)
        with OPENS:
            if not path.exists():
                if not create or readonly:
                    raise StateError(
                        f"state file {path} does not exist (run `flipsync ingest` first)"
                    )
                cls._create(path)
            elif not _new:
                (require_readable if readonly else require_writable)(path)
                problem = None if _CONNECTED[_file_id(path)] else header_problem(path)
                if problem:
                    raise unusable(path, problem)
            db = cls._connect(path, readonly=readonly, new=_new)
            db._file = _file_id(path)
            _CONNECTED[db._file] += 1
        if db._version > SCHEMA_VERSION:
            db.close()
            raise StateError(
                f"{path} was written by a newer flipsync (schema {db._version} > "
                f"{SCHEMA_VERSION}); upgrade flipsync, never downgrade a state file"
            )
        if db._version < SCHEMA_VERSION:
            if readonly:
                # An older file is migrated once, by whoever may write it; a reader cannot.
                db.close()
                if os.access(path.parent, os.W_OK | os.X_OK) and os.access(path, os.W_OK):
                    return cls.open(path, create=False)
                raise NotWritable(
                    f"state file {path} has schema {db._version}; this flipsync needs "
                    f"{SCHEMA_VERSION}. Run `flipsync init` once as the user that owns the "
                    "file: it upgrades the file in place."
                )
            db._upgrade()
        return db

    @classmethod
    def _connect(cls, path: Path, *, readonly: bool, new: bool) -> StateDB:
        """The connection, set up; refuses a file that is SQLite but not flipsync's."""
        try:
            if readonly:
                conn = sqlite3.connect(
                    f"{path.resolve().as_uri()}?{readonly_uri_query(path)}",
                    uri=True,
                    timeout=30,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(
                    path, timeout=30, isolation_level=None, check_same_thread=False
                )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            # Read what the file is before any write: a foreign file must stay as it was.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version == 0 and (tables or not new):
                conn.close()
                raise unusable(path, "is an SQLite database but not a flipsync state DB")
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.OperationalError as exc:
            if readonly and "readonly" in str(exc):
                raise not_writable(path.parent, "state folder") from exc
            raise StateError(f"cannot open state file {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise unusable(path, f"cannot be read as an SQLite database ({exc})") from exc
        db = cls(conn, path)
        db._version = version
        return db

    def close(self) -> None:
        """Close the connection (and let the header check read the file again, if unused)."""
        with OPENS:
            self._conn.close()
            if self._file is not None:
                _CONNECTED[self._file] -= 1
                if _CONNECTED[self._file] <= 0:
                    del _CONNECTED[self._file]
                self._file = None

    @classmethod
    def _create(cls, path: Path) -> None:
        """Build a new state DB under a temporary name, then link it into place.

        A crash mid-creation leaves only the temporary file, never an empty state file
        that the next start would have to refuse; linking (not renaming) never replaces
        a state DB another process created meanwhile, so concurrent first opens all end
        up on one complete file.
        """
        require_writable(path)
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        temp = path.with_name(f".{path.name}.new-{os.getpid()}")
        # Create the file private before SQLite opens it; SQLite gives -wal/-shm the same mode.
        fd = os.open(temp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        os.close(fd)
        try:
            cls.open(temp, create=False, _new=True).close()
            with suppress(FileExistsError):  # another process created it first: use theirs
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)

    def _upgrade(self) -> None:
        """Create or migrate the schema, once, however many processes open the file at once.

        BEGIN IMMEDIATE serialises them; the version is read again inside the transaction,
        so the second process finds the work done.
        """
        conn = self._conn
        with self.transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise StateError(
                        f"{self.path} is an SQLite file but not a flipsync state DB; "
                        "refusing to use it"
                    )
                for statement in _statements(_SCHEMA_V1):
                    conn.execute(statement)
                version = 1
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](conn)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
