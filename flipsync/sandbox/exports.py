"""Contact exports in the sandbox: ``POST /activities/contact_exports`` and the CSV it makes.

As the spec and the export guide describe it: the POST queues an activity (201,
``ActivityExportStatus``); when it completes, its ``_links.results.href`` names
``/v3/contact_exports/{file_export_id}``, which answers ``text/csv``. The body may filter by
``status`` (active, unsubscribed, removed), ``list_ids`` (up to 50) or ``contact_ids`` (up
to 500); without a filter every contact that is not deleted is exported.

The guide does not fix the CSV's column headers. The sandbox writes the export field names of
the request schema (``email_address``, ``email_lists``, ...), the API's permission values, and
list names, so the client's header and value matching is exercised on one plausible layout.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flipsync.sandbox.model import Contact
from flipsync.sandbox.wire import iso_from_micros, validation

EXPORT_STATUSES = ("active", "unsubscribed", "removed")
COLUMNS = (
    "email_address",
    "first_name",
    "last_name",
    "email_permission_status",
    "email_lists",
    "created_at",
    "updated_at",
    "email_optout_date",
)


@dataclass
class ExportJob:
    """One export activity; the file is written when it completes."""

    activity_id: str
    file_export_id: str
    created_us: int
    due_s: float
    status: str | None
    list_ids: tuple[str, ...]
    contact_ids: tuple[str, ...]
    completed_us: int | None = None
    csv: bytes | None = None
    rows: int = 0


def parse_export_body(body: Any) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
    """(status, list_ids, contact_ids) from a ``ContactsExport`` body; 400 on a bad one."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise validation("the request body must be a JSON object")
    status = body.get("status")
    if status is not None and status not in EXPORT_STATUSES:
        raise validation(f"status must be one of {', '.join(EXPORT_STATUSES)}")
    list_ids = body.get("list_ids") or []
    contact_ids = body.get("contact_ids") or []
    if not isinstance(list_ids, list) or len(list_ids) > 50:
        raise validation("list_ids must be an array of at most 50 list ids")
    if not isinstance(contact_ids, list) or len(contact_ids) > 500:
        raise validation("contact_ids must be an array of at most 500 contact ids")
    if list_ids and contact_ids:
        raise validation("contact_ids and list_ids are mutually exclusive")
    return status, tuple(str(i) for i in list_ids), tuple(str(i) for i in contact_ids)


def selected(job: ExportJob, contact: Contact) -> bool:
    """Whether the export's filters take this contact."""
    if job.status == "removed":
        if not contact.deleted:
            return False
    elif (
        contact.deleted
        or (job.status == "unsubscribed" and contact.permission != "unsubscribed")
        or (job.status == "active" and contact.permission == "unsubscribed")
    ):
        return False
    if job.list_ids and not set(job.list_ids).intersection(contact.list_ids):
        return False
    return not job.contact_ids or contact.contact_id in job.contact_ids


def render_csv(contacts: Iterable[Contact], list_names: Mapping[str, str]) -> tuple[bytes, int]:
    """The export file (UTF-8, header row, RFC 4180 quoting) and its row count."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    rows = 0
    for c in contacts:
        rows += 1
        writer.writerow(
            (
                c.email,
                c.first_name or "",
                c.last_name or "",
                c.permission,
                ", ".join(list_names.get(i, i) for i in c.list_ids),
                iso_from_micros(c.created_us),
                iso_from_micros(c.updated_us),
                iso_from_micros(c.opt_out_us) if c.opt_out_us is not None else "",
            )
        )
    return out.getvalue().encode("utf-8"), rows


def export_json(job: ExportJob, *, now_s: float) -> dict[str, Any]:
    """``ActivityExportStatus`` as seen at ``now_s``."""
    done = job.completed_us is not None
    out: dict[str, Any] = {
        "activity_id": job.activity_id,
        "state": "completed" if done else "processing",
        "created_at": iso_from_micros(job.created_us),
        "updated_at": iso_from_micros(job.completed_us or job.created_us),
        "percent_done": 100 if done else 0,
        "activity_errors": [],
        "status": {
            "items_total_count": job.rows if done else 0,
            "items_completed_count": job.rows if done else 0,
        },
        "_links": {"self": {"href": f"/v3/activities/{job.activity_id}"}},
    }
    if done:
        out["completed_at"] = iso_from_micros(job.completed_us or job.created_us)
        out["_links"]["results"] = {"href": f"/v3/contact_exports/{job.file_export_id}"}
    return out
