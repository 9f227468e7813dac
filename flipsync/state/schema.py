"""The state DB's schema as each version shipped it, and the numbered migrations.

A new file is built at version 1 and then migrated like any old file (see
``StateDB._upgrade``), so the upgrade path is the path every file takes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from flipsync.state.model import iso, utcnow

SCHEMA_VERSION = 2

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
