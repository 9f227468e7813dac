"""The state DB: one SQLite file per organization, the only module that writes it.

It holds the inbox of Flipcause payloads, the checkpoint, the run history, the
per-person outcomes, the journal of work sent to Constant Contact but not yet
committed, the contact mirror and what flipsync knows of each Flipcause
transaction. The file is private (0600), versioned, in WAL mode so the webhook
receiver can write while a run reads, and never silently reset.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flipsync.emails import normalize_email
from flipsync.errors import NotWritable, StateError
from flipsync.state_guard import (
    header_problem,
    not_writable,
    readonly_uri_query,
    require_readable,
    require_writable,
    unusable,
)

SCHEMA_VERSION = 2
# Meta key prefix of an inbox record marked as a test (see StateDB.test_marked).
TEST_MARK_PREFIX = "test_record:"

# The first schema, as version 1 shipped it. A new file is created at version 1 and then
# migrated like any old file, so the upgrade path is the path every file takes.
_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    received_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX inbox_received ON inbox (received_at);
CREATE TABLE intake_rejects (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    location TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    report TEXT
);
CREATE TABLE outcomes (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    at TEXT NOT NULL,
    email TEXT,
    email_key TEXT,
    record_keys TEXT NOT NULL,
    flipcause_ids TEXT NOT NULL,
    action TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status_before TEXT,
    status_after TEXT,
    lists TEXT NOT NULL,
    fields TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX outcomes_email ON outcomes (email_key);
CREATE INDEX outcomes_run ON outcomes (run_id);
CREATE TABLE journal (
    batch_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    first_seq INTEGER,
    last_seq INTEGER,
    batch TEXT NOT NULL
);
CREATE TABLE journal_ops (
    op_id TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL REFERENCES journal (batch_id),
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    activity_id TEXT,
    posted_at TEXT,
    result TEXT
);
CREATE TABLE mirror (
    email_key TEXT PRIMARY KEY,
    contact_id TEXT,
    permission TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    list_ids TEXT NOT NULL,
    updated_at TEXT,
    seen_at TEXT NOT NULL
);
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL,
    email_key TEXT NOT NULL,
    signed_up INTEGER NOT NULL DEFAULT 0,
    created_contact INTEGER NOT NULL DEFAULT 0,
    first_run TEXT NOT NULL,
    PRIMARY KEY (transaction_id, email_key)
);
CREATE TABLE retry_queue (
    seq INTEGER PRIMARY KEY,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    since TEXT NOT NULL
);
"""

# Version 2: every import activity flipsync ever owned (an uncertain POST may only adopt an
# activity that is in none of them), and the writes to verify at the next read of the account.
_SCHEMA_V2 = """
CREATE TABLE activities (
    activity_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE TABLE expected_writes (
    email_key TEXT PRIMARY KEY,
    list_ids TEXT NOT NULL,
    seqs TEXT NOT NULL,
    op_ref TEXT NOT NULL,
    run_id TEXT NOT NULL,
    written_at TEXT NOT NULL
);
"""

# How long flipsync remembers the activities it owned. Constant Contact lists the activities
# of the last 10 days, so an older one can never be offered as a candidate again.
ACTIVITIES_KEPT_DAYS = 30


def _statements(script: str) -> list[str]:
    return [s for s in script.split(";") if s.strip()]


def _migrate_to_2(conn: sqlite3.Connection) -> None:
    """Add the activities and expected_writes tables; remember the activities already owned."""
    for statement in _statements(_SCHEMA_V2):
        conn.execute(statement)
    now = iso(utcnow())
    owned: list[str] = []
    row = conn.execute("SELECT value FROM meta WHERE key='committed_import_activities'").fetchone()
    if row is not None:
        try:
            ids = json.loads(row[0])
        except ValueError:
            ids = []
        owned += [str(i) for i in ids] if isinstance(ids, list) else []
    owned += [
        str(r[0])
        for r in conn.execute("SELECT activity_id FROM journal_ops WHERE activity_id IS NOT NULL")
    ]
    for (report,) in conn.execute("SELECT report FROM runs WHERE report IS NOT NULL").fetchall():
        try:
            activities = json.loads(report).get("activities", [])
        except (ValueError, AttributeError):
            continue
        owned += [
            str(a["activity_id"])
            for a in activities
            if isinstance(a, dict) and isinstance(a.get("activity_id"), str)
        ]
    conn.executemany(
        "INSERT OR IGNORE INTO activities(activity_id, kind, recorded_at) VALUES(?,?,?)",
        [(i, "json_import", now) for i in dict.fromkeys(owned)],
    )
    conn.execute("DELETE FROM meta WHERE key='committed_import_activities'")


# Numbered migrations: MIGRATIONS[n] takes a file from version n-1 to n. Each runs once, in
# the same transaction as the user_version bump.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {2: _migrate_to_2}


def utcnow() -> datetime:
    """Timezone-aware now; every timestamp flipsync stores is UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds, so stored stamps sort as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def record_key_for(payload: Mapping[str, Any], id_field: str) -> str:
    """The inbox dedupe key: Flipcause's webhook record id, else a hash of the payload."""
    raw = payload.get(id_field)
    if isinstance(raw, (str, int)) and not isinstance(raw, bool) and str(raw).strip():
        return f"wh:{str(raw).strip()}"
    digest = hashlib.sha256(_dumps(payload).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"


# The key of a pruned payload's tombstone: {"flipsync_pruned_before": "<cutoff>"}.
PRUNED_KEY = "flipsync_pruned_before"


@dataclass(frozen=True)
class PruneCounts:
    """How many rows one prune removed (payloads: how many became tombstones)."""

    payloads: int
    outcomes: int
    runs: int
    intake_rejects: int


@dataclass(frozen=True)
class InboxRow:
    """One stored payload, as the run reads it."""

    seq: int
    record_key: str
    source: str
    received_at: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class AddResult:
    """What storing a group of payloads did."""

    added: int
    duplicates: int


@dataclass(frozen=True)
class MirrorEntry:
    """What the state DB knows of one Constant Contact contact."""

    email_key: str
    contact_id: str | None
    permission: str
    deleted: bool
    list_ids: frozenset[str]
    updated_at: str | None
    seen_at: str


@dataclass(frozen=True)
class Expectation:
    """A person flipsync recorded as written: the lists Constant Contact should now show.

    ``op_ref`` names the write request (an import activity id, or the journal op id of a
    single-contact request), the unit in which a write is lost or lands.
    """

    email_key: str
    list_ids: frozenset[str]
    seqs: tuple[int, ...]
    op_ref: str
    run_id: str
    written_at: str


@dataclass(frozen=True)
class JournalOp:
    """One request-sized unit of a journaled batch and how far it got."""

    op_id: str
    position: int
    kind: str
    body: dict[str, Any]
    state: str
    activity_id: str | None
    posted_at: str | None
    result: dict[str, Any] | None


@dataclass(frozen=True)
class Journal:
    """A batch whose work was (or is being) sent to Constant Contact but not committed."""

    batch_id: str
    run_id: str
    kind: str
    created_at: str
    first_seq: int | None
    last_seq: int | None
    batch: dict[str, Any]
    ops: tuple[JournalOp, ...]


class StateDB:
    """Access to one organization's state file. Open it with `StateDB.open(path)`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

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
        if not path.exists():
            if not create or readonly:
                raise StateError(f"state file {path} does not exist (run `flipsync ingest` first)")
            cls._create(path)
        elif not _new:
            (require_readable if readonly else require_writable)(path)
            problem = header_problem(path)
            if problem:
                raise unusable(path, problem)
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
            if version == 0 and (tables or not _new):
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
        if version > SCHEMA_VERSION:
            db.close()
            raise StateError(
                f"{path} was written by a newer flipsync (schema {version} > {SCHEMA_VERSION}); "
                "upgrade flipsync, never downgrade a state file"
            )
        if version < SCHEMA_VERSION:
            if readonly:
                # An older file is migrated once, by whoever may write it; a reader cannot.
                db.close()
                if os.access(path.parent, os.W_OK | os.X_OK) and os.access(path, os.W_OK):
                    return cls.open(path, create=False)
                raise NotWritable(
                    f"state file {path} has schema {version}; this flipsync needs "
                    f"{SCHEMA_VERSION}. Run `flipsync init` once as the user that owns the "
                    "file: it upgrades the file in place."
                )
            db._upgrade()
        return db

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

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    # -- inbox --------------------------------------------------------------------------

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
        """The next `limit` payloads after `seq`, in arrival order."""
        rows = self._conn.execute(
            "SELECT seq, record_key, source, received_at, payload FROM inbox "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        return [_inbox_row(r) for r in rows]

    def inbox_by_seqs(self, seqs: Sequence[int]) -> list[InboxRow]:
        """Payloads by seq (retries, journal replays), in seq order."""
        out: list[InboxRow] = []
        for start in range(0, len(seqs), 500):
            chunk = list(seqs[start : start + 500])
            marks = ",".join("?" * len(chunk))
            out += [
                _inbox_row(r)
                for r in self._conn.execute(
                    f"SELECT seq, record_key, source, received_at, payload FROM inbox "
                    f"WHERE seq IN ({marks})",
                    chunk,
                ).fetchall()
            ]
        return sorted(out, key=lambda r: r.seq)

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

    # -- runs and outcomes --------------------------------------------------------------

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

    # -- writes to verify ---------------------------------------------------------------

    def pending_expectations(self) -> list[Expectation]:
        """Writes not yet seen in Constant Contact, oldest first."""
        return [
            Expectation(
                email_key=r["email_key"],
                list_ids=frozenset(json.loads(r["list_ids"])),
                seqs=tuple(int(x) for x in json.loads(r["seqs"])),
                op_ref=r["op_ref"],
                run_id=r["run_id"],
                written_at=r["written_at"],
            )
            for r in self._conn.execute("SELECT * FROM expected_writes ORDER BY written_at, rowid")
        ]

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

    def commit_batch(
        self,
        *,
        batch_id: str | None,
        run_id: str,
        outcomes: Sequence[Mapping[str, Any]],
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
                        o.get("email"),
                        normalize_email(o.get("email") or "") or None,
                        _dumps(o.get("record_keys", [])),
                        _dumps(o.get("flipcause_ids", {})),
                        o["action"],
                        o.get("endpoint", "none"),
                        o.get("status_before"),
                        o.get("status_after"),
                        _dumps(o.get("lists", [])),
                        _dumps(o.get("fields", [])),
                        o["reason"],
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
                    for e in expect
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

    # -- retention ----------------------------------------------------------------------

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

    # -- knowledge of Constant Contact --------------------------------------------------

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


def _inbox_row(r: sqlite3.Row) -> InboxRow:
    return InboxRow(
        seq=int(r["seq"]),
        record_key=r["record_key"],
        source=r["source"],
        received_at=r["received_at"],
        payload=json.loads(r["payload"]),
    )


def _outcome_dict(r: sqlite3.Row) -> dict[str, Any]:
    out = dict(r)
    for key in ("record_keys", "flipcause_ids", "lists", "fields"):
        out[key] = json.loads(out[key])
    return out
