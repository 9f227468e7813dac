"""Parsing Constant Contact answers into flipsync's frozen dataclasses, strictly.

A malformed answer raises ``UnexpectedResponse`` here rather than passing half-read data on.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from flipsync.ctct.types import ActivityStatus, RemoteContact
from flipsync.errors import UnexpectedResponse


def _text_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """UTF-8 text lines (ending in their newline) from byte chunks, for the csv module.

    Only "\n" ends a line here, so any other line separator inside a field stays in it; the
    csv module joins the lines of a quoted field that spans several.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        start = 0
        while (end := pending.find("\n", start)) != -1:
            yield pending[start : end + 1]
            start = end + 1
        pending = pending[start:]
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        method = response.request.method if response.request is not None else "?"
        path = urlsplit(response.url or "").path
        raise UnexpectedResponse(f"Constant Contact answered {method} {path} without a JSON object")
    return data


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    items = data.get(key, [])
    if not isinstance(items, list):
        raise UnexpectedResponse(f"Constant Contact sent {key} that is not a list")
    return [item for item in items if isinstance(item, dict)]


def _req_str(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise UnexpectedResponse(f"Constant Contact sent an item without {key}")
    return value


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _iso_param(moment: datetime) -> str:
    """A query-string time in CC's style; naive datetimes are refused (their zone is unknown)."""
    if moment.tzinfo is None:
        raise ValueError("updated_after must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _contact(raw: Mapping[str, Any]) -> RemoteContact:
    email = _dict(raw.get("email_address"))
    memberships = raw.get("list_memberships")
    return RemoteContact(
        contact_id=_req_str(raw, "contact_id"),
        email=_opt_str(email.get("address")),
        permission=_opt_str(email.get("permission_to_send")),
        opt_out_source=_opt_str(email.get("opt_out_source")),
        deleted=bool(raw.get("deleted_at")),
        list_ids=frozenset(
            m for m in (memberships if isinstance(memberships, list) else []) if isinstance(m, str)
        ),
        created_at=_parse_time(raw.get("created_at")),
        updated_at=_parse_time(raw.get("updated_at")),
        first_name=_opt_str(raw.get("first_name")),
        last_name=_opt_str(raw.get("last_name")),
    )


def _activity(raw: Mapping[str, Any]) -> ActivityStatus:
    status = _dict(raw.get("status"))
    errors = raw.get("activity_errors")
    return ActivityStatus(
        activity_id=_req_str(raw, "activity_id"),
        state=str(raw.get("state") or "unknown"),
        percent_done=_opt_int(raw.get("percent_done")) or 0,
        errors=tuple(
            str(e.get("message", e)) if isinstance(e, dict) else str(e)
            for e in (errors if isinstance(errors, list) else [])
        ),
        items_total_count=_opt_int(status.get("items_total_count")),
        items_completed_count=_opt_int(status.get("items_completed_count")),
        person_count=_opt_int(status.get("person_count")),
        error_count=_opt_int(status.get("error_count")),
        correctable_count=_opt_int(status.get("correctable_count")),
        cannot_add_to_list_count=_opt_int(status.get("cannot_add_to_list_count")),
        created_at=_parse_time(raw.get("created_at")),
        results_href=_opt_str(_dict(_dict(raw.get("_links")).get("results")).get("href")),
    )
