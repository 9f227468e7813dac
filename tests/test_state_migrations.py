"""State DB schema: numbered migrations applied once, and a safe concurrent first creation."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

from flipsync import state as state_mod
from flipsync.state import StateDB


def _open_and_close(path: str) -> int:
    with StateDB.open(Path(path)) as db:
        return db.checkpoint


def test_concurrent_first_creation_is_safe(tmp_path: Path) -> None:
    """Eight processes open one missing file at once: all succeed, the schema is made once."""
    path = tmp_path / "state" / "org.db"
    path.parent.mkdir(mode=0o700)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        assert pool.map(_open_and_close, [str(path)] * 8) == [0] * 8
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == state_mod.SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"inbox", "journal", "activities", "expected_writes"} <= tables
    conn.close()
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_new_file_takes_the_same_path_as_an_old_one(tmp_path: Path) -> None:
    """A fresh file is created at version 1 and migrated, so every migration runs in tests."""
    with StateDB.open(tmp_path / "new.db") as db:
        assert db.known_activity_ids() == set()
    conn = sqlite3.connect(tmp_path / "new.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == state_mod.SCHEMA_VERSION
    conn.close()
    assert sorted(state_mod.MIGRATIONS) == list(range(2, state_mod.SCHEMA_VERSION + 1))


def test_migration_from_v1_keeps_every_owned_activity(tmp_path: Path) -> None:
    """A version-1 file upgrades in place; its committed, journaled and reported activities stay owned."""
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(state_mod._SCHEMA_V1)
    conn.execute(
        "INSERT INTO meta VALUES ('committed_import_activities', ?)", (json.dumps(["a1"]),)
    )
    conn.execute("INSERT INTO meta VALUES ('checkpoint_seq', '7')")
    conn.execute(
        "INSERT INTO journal VALUES ('b', 'r', 'live', '2026-01-01T00:00:00Z', 1, 2, '{}')"
    )
    conn.execute(
        "INSERT INTO journal_ops VALUES ('o', 'b', 0, 'json_import', '{}', 'posted', 'a2', NULL, NULL)"
    )
    conn.execute(
        "INSERT INTO runs VALUES ('r0', 'live', 'x', 'y', 'ok', ?)",
        (json.dumps({"activities": [{"activity_id": "a3", "state": "completed"}]}),),
    )
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    with StateDB.open(path) as db:
        assert db.known_activity_ids() == {"a1", "a2", "a3"}
        assert db.checkpoint == 7
        assert db.get_meta("committed_import_activities") is None
        assert db.pending_expectations() == []
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == state_mod.SCHEMA_VERSION
    check.close()
    with StateDB.open(path) as db:  # applied once: opening again changes nothing
        assert db.known_activity_ids() == {"a1", "a2", "a3"}
