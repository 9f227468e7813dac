"""``POST /activities/contact_delete``: the request body, the activity, and its status JSON.

The spec (``ContactDelete``, ``ActivityDeleteStatus``) says: contacts are named by
``contact_ids`` (up to 500) or by ``list_ids`` (up to 50, every member is deleted), the two
are mutually exclusive, the answer is 201 with the queued activity, and 429 past 1,000
queued activities. What the sources leave open, decided here:

* A body with neither key, both keys, an empty array, too many ids, or an id that is not a
  UUID is refused with a 400 validation error before anything is queued; so is an unknown
  list id (as the JSON import does). A repeated id counts once.
* A well-formed contact id that names no contact does not fail the request: the activity
  completes and lists it in ``activity_errors``, and ``items_completed_count`` counts only
  the contacts it deleted (or found already deleted).
* Effects happen when the activity completes, like imports: ``deleted_at`` is set, list
  memberships go, ``updated_at`` moves. An already deleted contact is left as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flipsync.sandbox.model import MAX_LISTS_PER_CONTACT
from flipsync.sandbox.validate import reject_unknown, require_object
from flipsync.sandbox.wire import iso_from_micros, validation

MAX_DELETE_CONTACT_IDS = 500
MAX_DELETE_LIST_IDS = MAX_LISTS_PER_CONTACT  # 50, as the spec's maxItems
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class DeleteRequest:
    """A validated ContactDelete body: exactly one of the two id arrays is set."""

    contact_ids: tuple[str, ...] = ()
    list_ids: tuple[str, ...] = ()


@dataclass
class DeleteActivity:
    """A queued or finished ``contact_delete`` activity."""

    activity_id: str
    created_us: int
    due_s: float
    contact_ids: tuple[str, ...]
    list_ids: tuple[str, ...]
    items_total: int
    client_id: str | None
    completed_us: int | None = None
    updated_us: int | None = None
    deleted: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        """Effects are applied exactly once, when the activity completes."""
        return self.completed_us is not None


def parse_delete_body(body: Any) -> DeleteRequest:
    """Validate a ContactDelete body; a 400 names the first problem."""
    data = require_object(body)
    reject_unknown(data, ("contact_ids", "list_ids"))
    if "contact_ids" in data and "list_ids" in data:
        raise validation("contact_ids and list_ids are mutually exclusive; send one of them")
    if "contact_ids" in data:
        return DeleteRequest(
            contact_ids=_uuids(data["contact_ids"], "contact_ids", MAX_DELETE_CONTACT_IDS)
        )
    if "list_ids" in data:
        return DeleteRequest(list_ids=_uuids(data["list_ids"], "list_ids", MAX_DELETE_LIST_IDS))
    raise validation("Either contact_ids or list_ids is required")


def _uuids(value: Any, name: str, maximum: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise validation(f"{name} must be an array of ids")
    if not 1 <= len(value) <= maximum:
        raise validation(f"{name} must contain between 1 and {maximum} ids")
    for item in value:
        if not _UUID.match(item):
            raise validation(f"{name} contains an invalid id: {item}")
    return tuple(dict.fromkeys(value))


def delete_activity_json(
    activity: DeleteActivity, *, now_s: float, duration_s: float
) -> dict[str, Any]:
    """``ActivityDeleteStatus`` as seen at ``now_s`` (same pacing as imports)."""
    created_s = activity.created_us / 1_000_000
    out: dict[str, Any] = {"activity_id": activity.activity_id}
    if activity.completed_us is not None:
        state, percent = "completed", 100
    else:
        elapsed = now_s - created_s
        if duration_s > 0 and elapsed < duration_s * 0.2:
            state, percent = "initialized", 0
        else:
            state = "processing"
            fraction = elapsed / duration_s if duration_s > 0 else 0.99
            percent = max(0, min(99, int(fraction * 100)))
    out["state"] = state
    if state != "initialized":
        out["started_at"] = iso_from_micros(int((created_s + duration_s * 0.2) * 1_000_000))
    if activity.completed_us is not None:
        out["completed_at"] = iso_from_micros(activity.completed_us)
    out["created_at"] = iso_from_micros(activity.created_us)
    out["updated_at"] = iso_from_micros(activity.updated_us or activity.created_us)
    out["percent_done"] = percent
    out["activity_errors"] = list(activity.errors)
    status: dict[str, Any] = {
        "items_total_count": activity.items_total,
        "items_completed_count": (
            activity.deleted if activity.completed else activity.items_total * percent // 100
        ),
    }
    if activity.list_ids:
        status["list_count"] = len(activity.list_ids)
    out["status"] = status
    out["_links"] = {"self": {"href": f"/v3/activities/{activity.activity_id}"}}
    return out
