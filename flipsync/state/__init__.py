"""The state DB: one SQLite file per organization, the only package that writes it.

It holds the inbox of Flipcause payloads, the checkpoint, the run history, the
per-person outcomes, the journal of work sent to Constant Contact but not yet
committed, the contact mirror and what flipsync knows of each Flipcause
transaction. The file is private (0600), versioned, in WAL mode so the webhook
receiver can write while a run reads, and never silently reset.

``StateDB`` (db.py) owns the connection, the transactions and the schema; each table
group lives in its own module. Everything callers use is re-exported here.
"""

from flipsync.state.db import StateDB
from flipsync.state.journal import ACTIVITIES_KEPT_DAYS
from flipsync.state.model import (
    PRUNED_KEY,
    TEST_MARK_PREFIX,
    AddResult,
    Expectation,
    InboxBatch,
    InboxRow,
    Journal,
    JournalOp,
    MirrorEntry,
    PruneCounts,
    iso,
    record_key_for,
    utcnow,
)
from flipsync.state.runs import OutcomeRecord
from flipsync.state.schema import _SCHEMA_V1, _SCHEMA_V2, MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "ACTIVITIES_KEPT_DAYS",
    "MIGRATIONS",
    "PRUNED_KEY",
    "SCHEMA_VERSION",
    "TEST_MARK_PREFIX",
    "_SCHEMA_V1",
    "_SCHEMA_V2",
    "AddResult",
    "Expectation",
    "InboxBatch",
    "InboxRow",
    "Journal",
    "JournalOp",
    "MirrorEntry",
    "OutcomeRecord",
    "PruneCounts",
    "StateDB",
    "iso",
    "record_key_for",
    "utcnow",
]
