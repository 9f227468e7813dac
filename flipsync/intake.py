"""Reading saved Flipcause payloads (NDJSON, one JSON object, or a JSON array) into the inbox.

Intake only stores: it checks that each item is a JSON object of sane size and
leaves every judgement about its content to the run, which records a reason for
each record it cannot use. A malformed line is reported with its file and line,
and every other line still goes in.

It also protects the inbox from the wrong file. NDJSON is read line by line (a
line is never held longer than a payload may be), and a file whose first lines
are mostly not payloads (a log, /etc/passwd, 50 MB of junk) is refused after at
most `SNIFF_LINES` lines, with nothing stored from it and one summary recorded
instead of one reject per line.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

from flipsync.progress import Progress, no_progress
from flipsync.state import StateDB, record_key_for

MAX_PAYLOAD_BYTES = 1024 * 1024
# A line longer than this cannot hold a payload within MAX_PAYLOAD_BYTES; it is skipped unread.
MAX_LINE_BYTES = 4 * MAX_PAYLOAD_BYTES
# A single JSON document (object or array) is parsed whole, so it has a ceiling.
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
# A file is judged on its first SNIFF_LINES lines: more than half bad, and nothing is stored.
SNIFF_LINES = 100
STORE_CHUNK = 1000
# Rejects recorded one by one per file (the state DB is not a log); the rest are counted.
MAX_RECORDED_REJECTS = 1000


@dataclass(frozen=True)
class BadItem:
    """An input item that could not be stored, with where it was and why."""

    location: str
    reason: str


@dataclass
class IngestReport:
    """What one `flipsync ingest` did, per file and in total.

    `refused` holds one line per file that was refused (or stopped) as not Flipcause
    data, with the summary that says why.
    """

    added: int = 0
    duplicates: int = 0
    rejected: list[BadItem] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def add(self, other: IngestReport) -> None:
        """Fold one file's report into a total."""
        self.added += other.added
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)
        self.refused.extend(other.refused)

    @property
    def failed(self) -> bool:
        """True when the command should exit non-zero: a file was refused, or only rejects."""
        nothing_stored = not (self.added or self.duplicates)
        return bool(self.refused) or (nothing_stored and bool(self.rejected))

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json output (every reject, however many)."""
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "rejected": [{"location": b.location, "reason": b.reason} for b in self.rejected],
            "refused": list(self.refused),
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


# -- reading --------------------------------------------------------------------------------


def _raw_lines(stream: IO[bytes]) -> Iterator[bytes | int]:
    """Physical lines without their ends; an over-long line comes as its length, never whole.

    Lines end at LF, CR LF or a bare CR: none of them can occur inside a JSON text.
    """
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            size = len(line)
            while True:  # skip the rest of the line in bounded pieces
                more = stream.readline(1 << 20)
                size += len(more)
                if not more or more.endswith(b"\n"):
                    break
            yield size
            continue
        yield from line.rstrip(b"\n").rstrip(b"\r").split(b"\r")


def _decode(raw: bytes, errors: str) -> str | BadItem:
    try:
        return raw.decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        return BadItem("", f"not UTF-8 text (byte {exc.start + 1} of the line)")


def _ndjson(
    lines: Iterable[tuple[int, bytes | int]], name: str, errors: str
) -> Iterator[dict[str, Any] | BadItem]:
    for number, raw in lines:
        location = f"{name}: line {number}"
        if isinstance(raw, int):
            yield BadItem(
                location, f"line is {raw} bytes; a payload is at most {MAX_PAYLOAD_BYTES}"
            )
            continue
        text = _decode(raw, errors)
        if isinstance(text, BadItem):
            yield BadItem(location, text.reason)
            continue
        if not text.strip():
            continue
        try:
            item = loads_json(text)
        except ValueError as exc:
            yield BadItem(location, f"not valid JSON ({_short(exc)})")
            continue
        yield check_item(item, location)


def parse_payload_stream(
    stream: IO[bytes], name: str, *, errors: str = "strict"
) -> Iterator[dict[str, Any] | BadItem]:
    """Yield payload objects (or BadItems) from a JSON document or NDJSON, read as it goes.

    Input that starts with `[`, or with a `{` line that is not a whole object, is one
    JSON document: parsed whole (up to MAX_DOCUMENT_BYTES) as one object or an array of
    objects. Anything else, and a document that does not parse, is NDJSON: one object
    per non-blank line, each line judged alone.
    """
    numbered = enumerate(_raw_lines(stream), start=1)
    consumed: list[tuple[int, bytes | int]] = []
    first: str | None = None
    for number, raw in numbered:
        if number == 1 and isinstance(raw, bytes) and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        consumed.append((number, raw))
        if isinstance(raw, int) or raw.strip():
            first = raw.decode("utf-8", "replace").strip() if isinstance(raw, bytes) else None
            break
    if first is None and not consumed:
        return
    document = first is not None and (
        first.startswith("[") or (first.startswith("{") and not _parses(first))
    )
    if not document:
        yield from _ndjson(itertools.chain(consumed, numbered), name, errors)
        return
    head = b"\n".join(r for _, r in consumed if isinstance(r, bytes))
    rest = stream.read(MAX_DOCUMENT_BYTES + 1)
    if len(head) + len(rest) > MAX_DOCUMENT_BYTES:
        yield BadItem(
            name,
            f"a JSON document over {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB; "
            "split it into NDJSON (one object per line)",
        )
        return
    body = head + b"\n" + rest
    whole: Any = None
    try:
        whole = loads_json(body.decode("utf-8", errors))
    except (ValueError, UnicodeDecodeError):
        yield from _ndjson(enumerate(_raw_lines(io.BytesIO(body)), start=1), name, errors)
        return
    if isinstance(whole, list):
        for index, item in enumerate(whole):
            yield check_item(item, f"{name}: item {index + 1}")
    else:
        yield check_item(whole, name)


def _parses(text: str) -> bool:
    try:
        loads_json(text)
    except ValueError:
        return False
    return True


def parse_payload_text(text: str, name: str) -> Iterator[dict[str, Any] | BadItem]:
    """parse_payload_stream for text already in memory (tests, benchmarks)."""
    data = text.encode("utf-8", "surrogatepass")
    return parse_payload_stream(io.BytesIO(data), name, errors="surrogatepass")


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


# -- storing --------------------------------------------------------------------------------


def store_items(
    state: StateDB,
    items: Iterable[tuple[str, dict[str, Any]] | BadItem],
    *,
    name: str,
    source: str,
    id_field: str,
    unit: str = "lines",
    bad_phrase: str = "are not JSON objects",
    progress: Progress = no_progress,
) -> IngestReport:
    """Store (record_key, payload) items in chunks; report and remember the bad ones.

    Nothing is stored until the first SNIFF_LINES items are seen: if more than half
    of them are bad, the file is refused whole ("N of the first M lines are not
    JSON objects"). Later, reading stops the moment more than half of everything
    read so far is bad (what was stored before stays). Rejects are recorded once
    per (source, location, reason), so ingesting the same file again adds none, and
    at most MAX_RECORDED_REJECTS of them per file (then one line with the count).
    """
    report = IngestReport()
    pending: list[tuple[str, dict[str, Any]]] = []
    seen = bad = 0
    sniffing = True

    def flush() -> None:
        if pending:
            result = state.add_payloads(pending, source=source, id_field=id_field)
            report.added += result.added
            report.duplicates += result.duplicates
            pending.clear()
            progress(f"{name}: payloads read", seen, None)

    for item in items:
        seen += 1
        if isinstance(item, BadItem):
            bad += 1
            report.rejected.append(item)
        else:
            pending.append(item)
        if seen >= SNIFF_LINES:
            if 2 * bad > seen:
                break
            sniffing = False
        if not sniffing and len(pending) >= STORE_CHUNK:
            flush()
    if 2 * bad > seen:
        summary = f"{bad} of the first {seen} {unit} {bad_phrase}"
        if sniffing:
            pending.clear()
            report.refused.append(
                f"{name}: refused, {summary}; nothing was stored from it. "
                "Is it a file of Flipcause payloads?"
            )
        else:
            flush()
            report.refused.append(
                f"{name}: stopped reading, {summary}; the good ones before were stored"
            )
        state.add_intake_rejects([(source, name, f"refused: {summary}")], dedupe=True)
        return report
    flush()
    if report.rejected:
        rows = [(source, b.location, b.reason) for b in report.rejected[:MAX_RECORDED_REJECTS]]
        more = len(report.rejected) - MAX_RECORDED_REJECTS
        if more > 0:
            rows.append((source, name, f"{more} more rejects, not recorded one by one"))
        state.add_intake_rejects(rows, dedupe=True)
    return report


def keyed(
    items: Iterable[dict[str, Any] | BadItem], id_field: str
) -> Iterator[tuple[str, dict[str, Any]] | BadItem]:
    """Payloads with their inbox record keys; BadItems pass through."""
    for item in items:
        yield item if isinstance(item, BadItem) else (record_key_for(item, id_field), item)


def ingest_stream(
    state: StateDB,
    stream: IO[bytes],
    *,
    name: str,
    source: str,
    id_field: str,
    progress: Progress = no_progress,
) -> IngestReport:
    """Store every good payload of one input read from a byte stream (see store_items)."""
    items = keyed(parse_payload_stream(stream, name), id_field)
    return store_items(state, items, name=name, source=source, id_field=id_field, progress=progress)


def ingest_text(
    state: StateDB, text: str, *, name: str, source: str, id_field: str
) -> IngestReport:
    """Store every good payload of one input already in memory; report the bad ones."""
    items = keyed(parse_payload_text(text, name), id_field)
    return store_items(state, items, name=name, source=source, id_field=id_field)
