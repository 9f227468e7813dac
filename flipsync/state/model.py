"""The state DB's values: stored rows as frozen dataclasses, stamps and keys.

Kept apart from the SQL so a reader of the data flow sees what the DB holds without it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flipsync.json_fields import JSONObject

# Meta key prefix of an inbox record marked as a test (see StateDB.test_marked).
TEST_MARK_PREFIX = "test_record:"


def utcnow() -> datetime:
    """Timezone-aware now; every timestamp flipsync stores is UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds, so stored stamps sort as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(value: object) -> str:
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


RawInboxRow = tuple[int, str, str, str, str]  # seq, record_key, source, received_at, payload JSON


class InboxBatch:
    """A batch of inbox rows whose payloads stay JSON text until each is read.

    A run holds a batch of up to 100,000 records; as parsed dicts their payloads would take
    several times the room of their text, all at once. Here each payload is parsed when it
    is needed and dropped after (``drain`` also lets go of the text as it goes).
    """

    def __init__(self, raw: list[RawInboxRow]) -> None:
        self._raw = raw

    def __len__(self) -> int:
        return len(self._raw)

    def __bool__(self) -> bool:
        return bool(self._raw)

    def __add__(self, other: InboxBatch) -> InboxBatch:
        return InboxBatch(self._raw + other._raw)

    @property
    def first_seq(self) -> int:
        return self._raw[0][0]

    @property
    def last_seq(self) -> int:
        return self._raw[-1][0]

    def seqs(self) -> list[int]:
        return [r[0] for r in self._raw]

    def record_keys(self) -> list[str]:
        return [r[1] for r in self._raw]

    def __iter__(self) -> Iterator[InboxRow]:
        return (_row(r) for r in self._raw)

    def drain(self) -> Iterator[InboxRow]:
        """Every row in order, parsed once; the batch is empty afterwards."""
        self._raw.reverse()
        while self._raw:
            yield _row(self._raw.pop())

    def where(self, keep: Callable[[InboxRow], bool]) -> InboxBatch:
        """The rows that pass ``keep`` (each parsed for the test, then dropped)."""
        return InboxBatch([r for r in self._raw if keep(_row(r))])


def _row(raw: RawInboxRow) -> InboxRow:
    return InboxRow(raw[0], raw[1], raw[2], raw[3], json.loads(raw[4]))


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
    body: JSONObject
    state: str
    activity_id: str | None
    posted_at: str | None
    result: JSONObject | None


@dataclass(frozen=True)
class Journal:
    """A batch whose work was (or is being) sent to Constant Contact but not committed."""

    batch_id: str
    run_id: str
    kind: str
    created_at: str
    first_seq: int | None
    last_seq: int | None
    batch: JSONObject  # written and read by flipsync.journal_batch.BatchRecord
    ops: tuple[JournalOp, ...]
