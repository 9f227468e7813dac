"""Reading saved Flipcause payloads (NDJSON, one JSON object, or a JSON array) into the inbox.

Intake only stores: it checks that each item is a JSON object of sane size and
leaves every judgement about its content to the run, which records a reason for
each record it cannot use. A malformed line is reported with its file and line,
and every other line still goes in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from flipsync.state import StateDB, record_key_for

MAX_PAYLOAD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class BadItem:
    """An input item that could not be stored, with where it was and why."""

    location: str
    reason: str


@dataclass
class IngestReport:
    """What one `flipsync ingest` did, per file and in total."""

    added: int = 0
    duplicates: int = 0
    rejected: list[BadItem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json output."""
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "rejected": [{"location": b.location, "reason": b.reason} for b in self.rejected],
        }


# Code points JSON can carry as escapes ("\\ud800") but UTF-8 (and so SQLite text) cannot.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def loads_json(text: str) -> Any:
    """json.loads that turns pathological nesting into a ValueError instead of a crash."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def check_item(item: Any, location: str) -> dict[str, Any] | BadItem:
    """The payload if `item` is a JSON object of sane size, else a BadItem saying why.

    This is all intake judges. A lone surrogate (a valid JSON escape that is not
    valid Unicode, so it cannot be stored as UTF-8 text) becomes U+FFFD instead of
    costing the whole record.
    """
    if not isinstance(item, dict):
        return BadItem(location, f"expected a JSON object, got {type(item).__name__}")
    try:
        text = json.dumps(item, ensure_ascii=False)
    except RecursionError:
        return BadItem(location, "JSON nested too deeply")
    except (TypeError, ValueError) as exc:
        return BadItem(location, f"not storable as JSON ({type(exc).__name__})")
    if _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub("\ufffd", text)
        try:
            item = loads_json(text)
        except ValueError as exc:
            return BadItem(location, f"not storable as JSON ({_short(exc)})")
    size = len(text.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        return BadItem(location, f"payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    return cast(dict[str, Any], item)


def parse_payload_text(text: str, name: str) -> Iterator[dict[str, Any] | BadItem]:
    """Yield payload objects (or BadItems) from a JSON document or NDJSON text.

    A document that parses whole is one object or an array of objects; anything
    else is read as NDJSON, one object per non-blank line.
    """
    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        return
    whole: Any = None
    parsed_whole = False
    if stripped[0] in "[{":
        try:
            whole = loads_json(stripped)
            parsed_whole = True
        except ValueError:
            parsed_whole = False
    if parsed_whole:
        if isinstance(whole, list):
            for index, item in enumerate(whole):
                yield check_item(item, f"{name}: item {index + 1}")
        else:
            yield check_item(whole, f"{name}")
        return
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        location = f"{name}: line {number}"
        try:
            item = loads_json(line)
        except ValueError as exc:
            yield BadItem(location, f"not valid JSON ({_short(exc)})")
            continue
        yield check_item(item, location)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def ingest_text(
    state: StateDB, text: str, *, name: str, source: str, id_field: str
) -> IngestReport:
    """Store every good payload of one input; report the bad ones (and remember them)."""
    report = IngestReport()
    good: list[tuple[str, dict[str, Any]]] = []
    for item in parse_payload_text(text, name):
        if isinstance(item, BadItem):
            report.rejected.append(item)
        else:
            good.append((record_key_for(item, id_field), item))
    if good:
        result = state.add_payloads(good, source=source, id_field=id_field)
        report.added += result.added
        report.duplicates += result.duplicates
    if report.rejected:
        state.add_intake_rejects((source, b.location, b.reason) for b in report.rejected)
    return report
