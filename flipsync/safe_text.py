"""Payload text made harmless where people look at it: terminals and spreadsheets.

Anyone can put text into a Flipcause form, and flipsync shows that text to staff.
On a terminal, control characters and escape sequences could move the cursor,
rewrite earlier lines or change the window title; bidirectional controls could
reorder what is shown. In a spreadsheet, a cell starting with `=`, `+`, `-` or `@`
is a formula. The data itself is never changed (an email starting with `=` is
valid and is synced as it is); only what is printed or written for people is.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls except newline, DEL, C1 controls (8-bit CSI and friends), and the
# bidirectional marks, embeddings, overrides and isolates, plus the line and
# paragraph separators that some terminals treat as line ends.
_UNSAFE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
# The same set minus what json.dumps already escapes (every C0 control, newline included).
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """`text` with every control, escape and bidi character shown as a visible `\\xNN` code.

    Newlines stay, so multi-line reports keep their shape; tabs are shown too,
    because a tab inside a cell breaks table columns.
    """
    return _UNSAFE.sub(_escape, text)


def json_for_terminal(data: Any, *, indent: int | None = 2) -> str:
    """JSON text whose strings mean the same, with the characters above as \\u escapes.

    json.dumps already escapes C0 controls; C1 controls, DEL and bidi controls it
    would print raw (ensure_ascii=False keeps names readable), so they are escaped here.
    JSON syntax is ASCII, so every match is inside a string and the escape is exact.
    """
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: formula-like text gets a leading `'`.

    Spreadsheets hide the apostrophe and show the text as it was; leading spaces do
    not protect a formula in every spreadsheet, so they are looked through.
    """
    if isinstance(value, str) and value.lstrip(" ").startswith(FORMULA_PREFIXES):
        return "'" + value
    return value
