"""Flipcause CSV exports (contacts, transactions) into the inbox, as webhook-shaped payloads.

This module owns the CSV side of intake: matching export columns
(`flipcause.csv_columns`) to the configured Flipcause field names
(`flipcause.fields`), so the run parses each row exactly like a webhook; keeping
every other column under its header name; and a record key that is stable per
row, so re-ingesting an export (or a later export that overlaps it) adds nothing.

Like the other intake paths it judges structure only. A file without a usable
header is an InputError naming the file and the missing columns; a row with the
wrong number of cells is reported with its file and line, and every other row is
still stored. Whether a row has a usable email is the run's business.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from flipsync.emails import normalize_email
from flipsync.errors import InputError
from flipsync.intake import MAX_LINE_BYTES, BadItem, IngestReport, check_item, store_items
from flipsync.settings import FlipcauseSettings
from flipsync.state import StateDB

CSV_FORMAT = "flipcause-csv"


@dataclass(frozen=True)
class CsvRow:
    """One export row as an inbox payload, with the line it starts on and its record key."""

    line: int
    record_key: str
    payload: dict[str, Any]


def _norm(name: str) -> str:
    """Header names match ignoring case and runs of whitespace."""
    return " ".join(name.split()).casefold()


@dataclass(frozen=True)
class _Layout:
    headers: tuple[str, ...]  # unique names, as they go into payloads
    fields: dict[str, tuple[int, ...]]  # configured field name -> candidate column indexes
    transaction_field: str | None
    email_field: str


def _unique_headers(header: Sequence[str]) -> tuple[str, ...]:
    seen: Counter[str] = Counter()
    out: list[str] = []
    for index, cell in enumerate(header):
        name = cell.strip().lstrip("\ufeff").strip() or f"column {index + 1}"
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return tuple(out)


def _header_problem(name: str, header: Sequence[str], missing: Sequence[str], key: str) -> str:
    wanted = " or ".join(repr(c) for c in missing)
    text = (
        f"{name}: not a Flipcause export flipsync can read: missing column {wanted} "
        f"(flipcause.csv_columns.{key})."
    )
    if any("@" in cell for cell in header):
        # Never echo a data row: it holds personal data and this message may reach a log.
        return text + " Its first line looks like data, not a header: export with the header row."
    shown = [repr(cell.strip()[:40]) for cell in header[:15]]
    more = f" and {len(header) - 15} more" if len(header) > 15 else ""
    return text + f" Its header has: {', '.join(shown) or 'nothing'}{more}."


def _layout(header: Sequence[str], settings: FlipcauseSettings, name: str) -> _Layout:
    headers = _unique_headers(header)
    index: dict[str, int] = {}
    for position, cell in enumerate(headers):
        index.setdefault(_norm(cell), position)
    fields: dict[str, tuple[int, ...]] = {}
    for logical, columns in settings.csv_columns.items():
        target = getattr(settings.fields, logical)
        found = tuple(index[_norm(c)] for c in columns if _norm(c) in index)
        if found:
            fields[target] = tuple(dict.fromkeys(fields.get(target, ()) + found))
    email_columns = settings.csv_columns.get("email", ())
    if not email_columns:
        raise InputError(
            f"{name}: flipcause.csv_columns.email maps no column; CSV ingest needs the email column"
        )
    email_field = settings.fields.email
    if email_field not in fields:
        raise InputError(_header_problem(name, header, email_columns, "email"))
    txn_field = settings.fields.transaction_id
    return _Layout(
        headers=headers,
        fields=fields,
        transaction_field=txn_field if txn_field in fields else None,
        email_field=email_field,
    )


def _payload(row: Sequence[str], layout: _Layout) -> dict[str, Any]:
    """Mapped columns under their configured field names; every other column by its header."""
    payload: dict[str, Any] = {}
    used: set[int] = set()
    for target, columns in layout.fields.items():
        chosen = next((c for c in columns if row[c].strip()), columns[0])
        payload[target] = row[chosen]
        used.add(chosen)
    for position, header in enumerate(layout.headers):
        if position in used:
            continue
        key = header if header not in payload else f"{header} (csv)"
        payload[key] = row[position]
    return payload


def _content_key(row: Sequence[str], layout: _Layout) -> str:
    cells = sorted((h, v) for h, v in zip(layout.headers, row, strict=True) if v.strip())
    text = json.dumps(cells, ensure_ascii=False, separators=(",", ":"))
    return "csv:sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def parse_csv_text(text: str, name: str, settings: FlipcauseSettings) -> Iterator[CsvRow | BadItem]:
    """parse_csv_lines for an export already in memory."""
    return parse_csv_lines(io.StringIO(text.lstrip("\ufeff"), newline=""), name, settings)


# Bytes that are not UTF-8, as the surrogateescape error handler decodes them.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_NOT_UTF8 = 'not UTF-8 text (in Excel, save the export as "CSV UTF-8")'


def _stream_lines(stream: IO[bytes]) -> Iterator[str]:
    """Lines of an export as it is read (LF, CRLF or CR ends kept, for csv).

    Bytes that are not UTF-8 are kept as surrogateescape code points, so their row can
    be rejected alone; a line over MAX_LINE_BYTES characters is cut there (its row then
    fails to parse) and the rest of it skipped unread.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        while True:
            line = text.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES and not line.endswith(("\n", "\r")):
                while (more := text.readline(1 << 20)) and not more.endswith(("\n", "\r")):
                    pass
                line = line[:MAX_LINE_BYTES] + "\n"
            yield line
    finally:
        with contextlib.suppress(ValueError):  # already closed by its owner: nothing to do
            text.detach()  # the caller owns (and closes) the byte stream


def parse_csv_stream(
    stream: IO[bytes], name: str, settings: FlipcauseSettings
) -> Iterator[CsvRow | BadItem]:
    """parse_csv_lines over a byte stream, read as it goes; rows that are not UTF-8 are rejected."""
    return parse_csv_lines(_stream_lines(stream), name, settings, strict_utf8=True)


def parse_csv_lines(
    lines: Iterable[str], name: str, settings: FlipcauseSettings, *, strict_utf8: bool = False
) -> Iterator[CsvRow | BadItem]:
    """Yield a CsvRow (or a BadItem with file and line) per non-blank row of an export.

    Raises InputError, before yielding anything, when the header is missing or lacks
    the email column. Record keys come from the row's content, so re-ingesting a fixed or
    reordered export adds only what is new: `csv:<transaction id>:<email>:<content hash>`
    when the export has a transaction id column, else `csv:sha256:<content hash>` (the
    hash of the row's non-empty cells); identical rows in one file get `#2`, `#3`...
    With `strict_utf8`, a row holding undecodable bytes (see _stream_lines) is rejected.
    """
    reader = csv.reader(lines, strict=False)
    header: list[str] | None = None
    while header is None:
        try:
            first = next(reader)
        except StopIteration:
            raise InputError(f"{name}: empty file; expected a Flipcause CSV export") from None
        except csv.Error as exc:
            raise InputError(f"{name}: line 1: unreadable CSV header ({exc})") from None
        if any(cell.strip() for cell in first):
            header = first
    if strict_utf8 and any(_UNDECODABLE.search(cell) for cell in header):
        raise InputError(f"{name}: the header is {_NOT_UTF8}")
    layout = _layout(header, settings, name)
    width = len(layout.headers)
    seen: Counter[str] = Counter()
    while True:
        start = reader.line_num + 1
        location = f"{name}: line {start}"
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadItem(location, f"unreadable CSV ({exc})")
            if reader.line_num < start:  # the reader did not move: stop rather than spin
                return
            continue
        if not any(cell.strip() for cell in row):
            continue
        if strict_utf8 and any(_UNDECODABLE.search(cell) for cell in row):
            yield BadItem(location, _NOT_UTF8)
            continue
        if len(row) > width and not any(cell.strip() for cell in row[width:]):
            row = row[:width]
        if len(row) != width:
            yield BadItem(
                location,
                f"row has {len(row)} cells but the header has {width} (cut off or misaligned)",
            )
            continue
        payload = _payload(row, layout)
        content = _content_key(row, layout)
        if layout.transaction_field and str(payload[layout.transaction_field]).strip():
            txn = str(payload[layout.transaction_field]).strip()
            email = normalize_email(str(payload[layout.email_field]))
            base = f"csv:{txn}:{email}:{content.rsplit(':', 1)[1][:16]}"
        else:
            base = content
        # Identical rows in one file are separate records (two equal gifts); numbering only
        # those keeps every key tied to the row's content, whatever the order of the file.
        seen[base] += 1
        key = base if seen[base] == 1 else f"{base}#{seen[base]}"
        checked = check_item(payload, location)
        if isinstance(checked, BadItem):
            yield checked
            continue
        yield CsvRow(line=start, record_key=key, payload=checked)


def ingest_csv_text(
    state: StateDB, text: str, *, name: str, source: str, settings: FlipcauseSettings
) -> IngestReport:
    """Store every good row of one export in memory; report (and remember) the bad ones."""
    return _store(state, parse_csv_text(text, name, settings), name, source, settings)


def ingest_csv_stream(
    state: StateDB, stream: IO[bytes], *, name: str, source: str, settings: FlipcauseSettings
) -> IngestReport:
    """Store every good row of one export read as it streams; report the bad ones."""
    return _store(state, parse_csv_stream(stream, name, settings), name, source, settings)


def _store(
    state: StateDB,
    rows: Iterable[CsvRow | BadItem],
    name: str,
    source: str,
    settings: FlipcauseSettings,
) -> IngestReport:
    """Like JSON intake: a file whose first rows are mostly unreadable is refused whole."""
    items = (
        item if isinstance(item, BadItem) else (item.record_key, item.payload) for item in rows
    )
    return store_items(
        state,
        items,
        name=name,
        source=source,
        id_field=settings.fields.webhook_record_id,
        unit="rows",
        bad_phrase="cannot be read as export rows",
    )
