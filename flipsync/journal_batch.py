"""The typed content of a journaled batch and of its requests' results.

The state DB keeps both as JSON (journal.batch, journal_ops.result). They are written by
`to_json` and read back by `from_json`, which also reads what the dict-based code before
them wrote (the same keys), so a journal left by an older flipsync still finishes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flipsync.json_fields import (
    JSON,
    JSONObject,
    StoredDataError,
    obj,
    opt_bool,
    opt_int,
    opt_str,
)
from flipsync.outcomes import Outcome, PeopleFacts


@dataclass(frozen=True)
class BatchRecord:
    """What a batch commits once Constant Contact confirmed its requests."""

    outcomes: tuple[Outcome, ...]
    people: PeopleFacts
    attempts: Mapping[int, int]
    checkpoint: int | None
    progress: tuple[str, int] | None = None

    def to_json(self) -> JSONObject:
        people: JSONObject = {
            key: {"transactions": [[txn, signed] for txn, signed in txns]}
            for key, txns in self.people.items()
        }
        return {
            "outcomes": [o.to_json() for o in self.outcomes],
            "people": people,
            "attempts": {str(k): v for k, v in self.attempts.items()},
            "checkpoint": self.checkpoint,
            "progress": list(self.progress) if self.progress else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> BatchRecord:
        raw_outcomes = data.get("outcomes") or []
        if not isinstance(raw_outcomes, list) or not all(isinstance(o, dict) for o in raw_outcomes):
            raise StoredDataError("stored batch: 'outcomes' is not a list of objects")
        people: dict[str, tuple[tuple[str, bool], ...]] = {}
        for key, fact in obj(data, "people").items():
            txns = fact.get("transactions") if isinstance(fact, dict) else None
            if not isinstance(txns, list):
                raise StoredDataError(f"stored batch: transactions of {key!r} are not a list")
            people[key] = tuple(_transaction(t) for t in txns)
        attempts: dict[int, int] = {}
        for seq, tried in obj(data, "attempts").items():
            if isinstance(tried, bool) or not isinstance(tried, int):
                raise StoredDataError(f"stored batch: attempts of seq {seq} is not a number")
            attempts[int(seq)] = tried
        progress = data.get("progress")
        if progress is not None and not (
            isinstance(progress, list)
            and len(progress) == 2
            and isinstance(progress[0], str)
            and isinstance(progress[1], int)
        ):
            raise StoredDataError("stored batch: 'progress' is not [meta key, seq]")
        return cls(
            outcomes=tuple(Outcome.from_json(o) for o in raw_outcomes),
            people=people,
            attempts=attempts,
            checkpoint=opt_int(data, "checkpoint"),
            progress=(progress[0], progress[1]) if progress else None,
        )


def _transaction(value: JSON) -> tuple[str, bool]:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        return value[0], bool(value[1])
    raise StoredDataError("stored batch: a transaction is not [id, signed_up]")


@dataclass(frozen=True)
class OpResult:
    """What Constant Contact answered to one request (or why it was not confirmed)."""

    contact_id: str | None = None
    created: bool | None = None
    note: str | None = None
    error: str | None = None
    retry: bool = False
    state: str | None = None
    error_count: int | None = None
    correctable_count: int | None = None
    cannot_add_to_list_count: int | None = None
    errors: tuple[str, ...] = ()

    @property
    def row_error_count(self) -> int:
        """Row errors the import counted, with or without a message."""
        return (self.error_count or 0) + (self.correctable_count or 0)

    @classmethod
    def failed(cls, error: str, *, retry: bool) -> OpResult:
        return cls(error=error, retry=retry)

    def to_json(self) -> JSONObject:
        """The keys that are set (the journal's format since the first release)."""
        data: JSONObject = {}
        if self.contact_id is not None or self.created is not None:
            data["contact_id"] = self.contact_id
        if self.created is not None:
            data["created"] = self.created
        if self.note is not None:
            data["note"] = self.note
        if self.error is not None:
            data["error"] = self.error
            data["retry"] = self.retry
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> OpResult:
        if not data:
            return cls()
        errors = data.get("errors") or []
        if not isinstance(errors, list):
            raise StoredDataError("stored result: 'errors' is not a list")
        return cls(
            contact_id=opt_str(data, "contact_id"),
            created=opt_bool(data, "created"),
            note=opt_str(data, "note"),
            error=None if data.get("error") is None else str(data.get("error")),
            retry=bool(data.get("retry")),
            state=opt_str(data, "state"),
            error_count=opt_int(data, "error_count"),
            correctable_count=opt_int(data, "correctable_count"),
            cannot_add_to_list_count=opt_int(data, "cannot_add_to_list_count"),
            errors=tuple(str(e) for e in errors),
        )
