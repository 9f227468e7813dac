"""Building the contact mirror from Constant Contact's contact export, a few requests in all.

Paging ``GET /contacts`` costs one request per 500 contacts: 400 for an account of 200,000.
An export (``POST /activities/contact_exports``, a poll or two, one CSV download) costs about
four, whatever the size. Two exports make the mirror: every contact that is not deleted, then
the deleted ones (``status: removed``), which the policy must know so it never restores them.

The guide does not fix the CSV's column headers or how it spells a permission, so headers are
matched loosely (case, blanks and punctuation ignored, a few known spellings) and a permission
must be one of the API's own values. Anything else (no email or permission column, a value
flipsync cannot read, a failed or slow export) raises ``ExportUnusable``, and the caller pages
instead: a mirror built on a guess would be a consent risk.

Rows are streamed into the state DB in one transaction and never held whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta

import structlog

from flipsync.emails import normalize_email
from flipsync.ports import ConstantContactAPI
from flipsync.state import MirrorEntry, iso

log = structlog.get_logger(__name__)

PERMISSIONS = frozenset(
    {"implicit", "explicit", "pending_confirmation", "unsubscribed", "not_set", "temp_hold"}
)
_HEADERS = {
    "email": ("email_address", "email", "email_addresses"),
    "permission": (
        "email_permission_status",
        "permission_to_send",
        "email_permission",
        "permission_status",
        "permission",
    ),
    "lists": ("email_lists", "lists", "list_memberships", "email_list"),
    "updated": ("updated_at", "updated", "date_updated", "last_updated"),
    "contact_id": ("contact_id", "id"),
}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# When to look at an export: after 1 s, then twice as long each time, at most a minute apart
# (about 6 minutes in all; an account of 200,000 contacts exports in a few).
POLLS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0, 60.0, 60.0, 60.0, 60.0)


class ExportUnusable(Exception):
    """The export cannot be trusted for the mirror; the reason says why."""


def _norm(header: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", header.strip().lower()).strip("_")


def columns(headers: list[str]) -> dict[str, str]:
    """Which CSV header holds each thing the mirror needs; raises when email or status lack."""
    by_norm = {_norm(h): h for h in headers}
    found = {}
    for what, names in _HEADERS.items():
        hit = next((by_norm[n] for n in names if n in by_norm), None)
        if hit is not None:
            found[what] = hit
    missing = [w for w in ("email", "permission") if w not in found]
    if missing:
        raise ExportUnusable(
            f"the export has no {' or '.join(missing)} column (headers: {', '.join(headers)})"
        )
    return found


def permission_of(value: str) -> str:
    """The API's permission value from an export cell; raises on anything else."""
    norm = _norm(value)
    if norm not in PERMISSIONS:
        raise ExportUnusable(
            f"the export spells a permission {value[:40]!r}, which flipsync cannot read"
        )
    return norm


def list_ids_of(value: str, list_ids_by_name: Mapping[str, str]) -> frozenset[str]:
    """List ids from an export cell of list names (or ids), comma, semicolon or bar separated."""
    known_ids = set(list_ids_by_name.values())
    out = set()
    for part in re.split(r"[,;|]", value):
        name = part.strip()
        if not name:
            continue
        if name in list_ids_by_name:
            out.add(list_ids_by_name[name])
        elif _UUID.match(name) and name.lower() in {i.lower() for i in known_ids}:
            out.add(next(i for i in known_ids if i.lower() == name.lower()))
    return frozenset(out)


def entries(
    rows: Iterator[dict[str, str]],
    *,
    deleted: bool,
    list_ids_by_name: Mapping[str, str],
    now: datetime,
) -> Iterator[MirrorEntry]:
    """Mirror rows from export rows (the first row's headers decide the columns)."""
    cols: dict[str, str] | None = None
    seen_at = iso(now)
    for row in rows:
        if cols is None:
            cols = columns(list(row))
        email = normalize_email(row.get(cols["email"]) or "")
        if not email:
            continue
        updated = _time(row.get(cols["updated"], "")) if "updated" in cols else None
        yield MirrorEntry(
            email_key=email,
            contact_id=(row.get(cols["contact_id"]) or None) if "contact_id" in cols else None,
            permission=permission_of(row.get(cols["permission"]) or ""),
            deleted=deleted,
            list_ids=(
                list_ids_of(row.get(cols["lists"]) or "", list_ids_by_name)
                if "lists" in cols
                else frozenset()
            ),
            updated_at=iso(updated) if updated else None,
            seen_at=seen_at,
        )


def export_rows(
    api: ConstantContactAPI,
    activity_id: str,
    sleep: Callable[[float], None],
    *,
    look_first: bool = False,
) -> Iterator[dict[str, str]]:
    """Wait for one started export and stream its rows.

    The caller starts both exports first, so they are processed side by side: by the time
    the first file is read, the second is usually done at its first look (``look_first``:
    look before waiting, since it has been running all along).
    """
    waited = 0.0
    for delay in POLLS:
        activity = api.get_activity(activity_id) if waited or look_first else None
        if activity is not None and activity.finished:
            if activity.state != "completed" or not activity.results_href:
                raise ExportUnusable(f"the export ended {activity.state} without a file")
            yield from api.iter_export_rows(activity.results_href)
            return
        sleep(delay)
        waited += delay
    activity = api.get_activity(activity_id)
    if activity.finished and activity.state == "completed" and activity.results_href:
        yield from api.iter_export_rows(activity.results_href)
        return
    raise ExportUnusable(f"the export did not finish within {timedelta(seconds=waited)}")


def _time(value: str) -> datetime | None:
    text = value.strip().replace("Z", "+00:00")
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
