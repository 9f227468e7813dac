"""Webhook body decoding: a request body into payload objects, or a status and a reason.

This module owns reading what a webhook carries: the media type and charset of
its Content-Type, and JSON, form-encoded and multipart form bodies (all three,
since Flipcause's transport is undocumented). It knows nothing of HTTP serving
or storage, so every body shape can be tested, and fuzzed, on its own.

Each item is checked only for being "a JSON object of sane size" (the check file
ingest uses); what a payload means is the run's to decide.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Literal
from urllib.parse import parse_qsl

from flipsync.intake import BadItem, check_item, loads_json

MAX_FORM_FIELDS = 1000

JSON_TYPES = frozenset({"application/json", "text/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"
_CHARSETS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "iso-8859-1": "latin-1",
    "latin-1": "latin-1",
    "latin1": "latin-1",
    "windows-1252": "cp1252",
    "cp1252": "cp1252",
    "utf-16": "utf-16",
    "utf-16le": "utf-16-le",
    "utf-16be": "utf-16-be",
}
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]$")


class BodyError(Exception):
    """A request body that yields nothing to store: the status to answer and a short reason."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ParsedBody:
    """What a body held: how it was read, and each item as a payload or a BadItem."""

    kind: Literal["json", "form", "multipart"]
    items: list[dict[str, Any] | BadItem]


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """Split a Content-Type header into its lower-cased media type and its parameters."""
    if not content_type:
        return "", {}
    parts = content_type.split(";")
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            params.setdefault(key.strip().lower(), value)
    return parts[0].strip().lower(), params


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(body: bytes, charset: str | None) -> str:
    name = (charset or "utf-8").strip().lower()
    codec = _CHARSETS.get(name)
    if codec is None:
        raise BodyError(415, f"unsupported charset {short(name, 40)!r}; send UTF-8")
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        raise BodyError(400, f"body is not valid {codec} (byte {exc.start})") from None
    return text.removeprefix("\ufeff")


def _looks_like_json(text: str) -> bool:
    stripped = text.lstrip()
    return stripped[:1] in ("{", "[")


def _json_items(text: str) -> list[dict[str, Any] | BadItem]:
    stripped = text.strip()
    if not stripped:
        raise BodyError(400, "empty body")
    try:
        doc = loads_json(stripped)
    except json.JSONDecodeError as exc:
        raise BodyError(400, f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    except ValueError as exc:
        reason = str(exc) if "nested" in str(exc) else "a value JSON cannot carry"
        raise BodyError(400, f"not valid JSON ({reason})") from None
    if isinstance(doc, dict):
        return [check_item(doc, "body")]
    if isinstance(doc, list):
        if not doc:
            raise BodyError(400, "empty JSON array: nothing to store")
        return [check_item(item, f"item {index}") for index, item in enumerate(doc, start=1)]
    raise BodyError(400, f"expected a JSON object or an array of objects, got {type(doc).__name__}")


def _flat(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Form fields as one flat object of strings; a repeated field keeps every value, joined."""
    out: dict[str, str] = {}
    for key, value in pairs:
        out[key] = f"{out[key]}, {value}" if key in out else value
    return dict(out)


def _form_items(text: str, charset: str | None) -> list[dict[str, Any] | BadItem]:
    if not text.strip():
        raise BodyError(400, "empty body")
    codec = _CHARSETS.get((charset or "utf-8").strip().lower(), "utf-8")
    try:
        pairs = parse_qsl(
            text.strip(),
            keep_blank_values=True,
            encoding=codec,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise BodyError(400, f"a form field is not valid {codec} after %-decoding") from None
    except ValueError:
        raise BodyError(400, f"more than {MAX_FORM_FIELDS} form fields") from None
    if not pairs:
        raise BodyError(400, "no form fields in the body")
    return [check_item(_flat(pairs), "body")]


def _multipart_items(body: bytes, boundary: str | None) -> list[dict[str, Any] | BadItem]:
    if not boundary or not _BOUNDARY_RE.match(boundary):
        raise BodyError(400, "multipart body without a valid boundary parameter")
    head = f'Content-Type: multipart/form-data; boundary="{boundary}"\r\n\r\n'.encode("ascii")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    parts = message.get_payload() if message.is_multipart() else None
    if not isinstance(parts, list) or not parts:
        raise BodyError(400, "malformed multipart body (no parts)")
    if len(parts) > MAX_FORM_FIELDS:
        raise BodyError(400, f"more than {MAX_FORM_FIELDS} form fields")
    pairs: list[tuple[str, str]] = []
    for number, part in enumerate(parts, start=1):
        if not isinstance(part, Message) or part.is_multipart():
            raise BodyError(400, f"multipart part {number} is not a plain form field")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise BodyError(400, f"multipart part {number} has no field name")
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        charset = part.get_content_charset() or "utf-8"
        codec = _CHARSETS.get(charset.lower())
        if codec is None:
            raise BodyError(415, f"multipart part {number}: unsupported charset; send UTF-8")
        try:
            pairs.append((name, data.decode(codec)))
        except UnicodeDecodeError:
            raise BodyError(400, f"multipart part {number} is not valid {codec}") from None
    return [check_item(_flat(pairs), "body")]


def parse_body(body: bytes, content_type: str | None) -> ParsedBody:
    """Decode a webhook body into payload objects, or raise BodyError(status, reason).

    JSON (one object, or an array of objects whose bad items are reported one by
    one), form-encoded and multipart form fields (a flat object of strings). With no
    Content-Type, or text/plain, a body that looks like JSON is read as JSON; with no
    Content-Type a body with `=` is read as a form. A form-typed body that starts
    with `{` or `[` is read as JSON: it cannot be a real form.
    """
    media, params = media_type(content_type)
    charset = params.get("charset")
    if media == MULTIPART_TYPE:
        return ParsedBody("multipart", _multipart_items(body, params.get("boundary")))
    if media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return ParsedBody("json", _json_items(_decode(body, charset)))
    if media == FORM_TYPE:
        text = _decode(body, charset)
        if _looks_like_json(text):
            return ParsedBody("json", _json_items(text))
        return ParsedBody("form", _form_items(text, charset))
    if media in ("", "text/plain"):
        text = _decode(body, charset)
        if _looks_like_json(text):
            return ParsedBody("json", _json_items(text))
        if not media and "=" in text:
            return ParsedBody("form", _form_items(text, charset))
        if not text.strip():
            raise BodyError(400, "empty body")
    raise BodyError(
        415,
        f"unsupported Content-Type {short(media or '(none)', 60)!r}; "
        f"send application/json or {FORM_TYPE}",
    )
