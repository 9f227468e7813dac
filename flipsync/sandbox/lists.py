"""Contact lists and custom fields: seeding, inspection and their endpoints."""

from __future__ import annotations

import re
import uuid
from typing import Any

from flipsync.sandbox import validate
from flipsync.sandbox.core import SandboxCore, decode_cursor
from flipsync.sandbox.model import (
    CUSTOM_FIELD_TYPES,
    ContactList,
    CustomField,
    custom_field_json,
    list_json,
)
from flipsync.sandbox.wire import (
    CONFLICT,
    ApiError,
    SandboxRequest,
    SandboxResponse,
    json_response,
    parse_bool,
    split_csv,
    validation,
)

MAX_LISTS = 1000
MAX_CUSTOM_FIELDS = 100


def _custom_field_name(label: str) -> str:
    """The read-only ``name`` CC derives from a label: blanks become underscores."""
    return re.sub(r"\s", "_", label.strip())


class ListsMixin(SandboxCore):
    """Lists and custom fields, by the Python API and by ``/v3/contact_lists`` and fields."""

    def add_list(
        self,
        name: str,
        *,
        list_id: str | None = None,
        description: str | None = None,
        favorite: bool = False,
    ) -> str:
        """Create a contact list and return its ``list_id``.

        Raises:
            ValueError: the name (case-insensitively) or the id is already taken.
        """
        with self._lock:
            if any(x.name.lower() == name.lower() for x in self._lists.values()):
                raise ValueError(f"a list named {name!r} already exists")
            new_id = list_id or str(uuid.uuid4())
            if new_id in self._lists:
                raise ValueError(f"list id {new_id!r} already exists")
            stamp = self._stamp()
            self._lists[new_id] = ContactList(new_id, name, stamp, stamp, description, favorite)
            return new_id

    def add_custom_field(
        self, label: str, type: str = "string", *, custom_field_id: str | None = None
    ) -> str:
        """Create a custom field (``name`` = label with blanks → ``_``); return its id."""
        if type not in CUSTOM_FIELD_TYPES:
            raise ValueError(f"unknown custom field type {type!r}")
        with self._lock:
            name = _custom_field_name(label)
            if any(f.name == name for f in self._fields.values()):
                raise ValueError(f"a custom field named {name!r} already exists")
            new_id = custom_field_id or str(uuid.uuid4())
            stamp = self._stamp()
            self._fields[new_id] = CustomField(new_id, label, name, type, stamp, stamp)
            return new_id

    def lists(self) -> list[dict[str, Any]]:
        """Every list with its ``membership_count`` (all members)."""
        with self._lock:
            return [
                list_json(x, self._membership_count(x.list_id, False)) for x in self._lists.values()
            ]

    def custom_fields(self) -> list[dict[str, Any]]:
        """Every custom field."""
        with self._lock:
            return [custom_field_json(f) for f in self._fields.values()]

    def _membership_count(self, list_id: str, active_only: bool) -> int:
        return sum(
            1
            for c in self._contacts
            if list_id in c.list_ids
            and not c.deleted
            and (not active_only or c.permission in ("explicit", "implicit"))
        )

    def _get_lists(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /contact_lists`` (``ContactListArray``); list names match case-insensitively."""
        params = dict(query)
        if "cursor" in params:
            params, _ = decode_cursor(params["cursor"])
        include_count = (
            parse_bool("include_count", params["include_count"])
            if "include_count" in params
            else False
        )
        membership = params.get("include_membership_count")
        if membership is not None and membership not in ("all", "active"):
            raise validation("include_membership_count does not have a valid value")
        if "status" in params:
            statuses = set(split_csv(params["status"]))
            if not statuses or not statuses <= {"all", "active", "deleted"}:
                raise validation("status does not have a valid value")
        channel = params.get("channel_type", "email")
        if channel not in ("email", "sms"):
            raise validation("channel_type does not have a valid value")
        if "include_sms_membership_count" in params:
            parse_bool("include_sms_membership_count", params["include_sms_membership_count"])
        items = list(self._lists.values()) if channel == "email" else []
        if "status" in params and set(split_csv(params["status"])) == {"deleted"}:
            items = []  # the sandbox never deletes lists
        if "name" in params:
            items = [x for x in items if x.name.lower() == params["name"].lower()]
        page, _, next_href = self._page("/v3/contact_lists", query, items, default=50, maximum=1000)
        out: dict[str, Any] = {
            "lists": [
                list_json(
                    x,
                    self._membership_count(x.list_id, membership == "active")
                    if membership
                    else None,
                )
                for x in page
            ]
        }
        if include_count:
            out["lists_count"] = len(items)
        if next_href:
            out["_links"] = {"next": {"href": next_href}}
        return json_response(200, out)

    def _post_list(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /contact_lists``: 201, or 409 when the name exists (case-insensitive)."""
        name, description, favorite = validate.list_input(self._json_body(request))
        if any(x.name.lower() == name.lower() for x in self._lists.values()):
            raise ApiError(409, CONFLICT, f"Validation failed: List name {name!r} already exists")
        if len(self._lists) >= MAX_LISTS:
            raise validation(f"An account can have at most {MAX_LISTS} lists")
        list_id = self.add_list(name, description=description, favorite=favorite)
        return json_response(201, list_json(self._lists[list_id]))

    def _get_custom_fields(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /contact_custom_fields`` (``CustomFields``), limit 1-100."""
        items = list(self._fields.values())
        page, _, next_href = self._page(
            "/v3/contact_custom_fields", query, items, default=50, maximum=100
        )
        out: dict[str, Any] = {"custom_fields": [custom_field_json(f) for f in page]}
        if next_href:
            out["_links"] = {"next": {"href": next_href}}
        return json_response(200, out)

    def _post_custom_field(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /contact_custom_fields``: 201, 409 on a duplicate name, at most 100."""
        label, kind = validate.custom_field_input(self._json_body(request), CUSTOM_FIELD_TYPES)
        name = _custom_field_name(label)
        if any(f.name == name for f in self._fields.values()):
            raise ApiError(
                409, CONFLICT, f"Validation failed: Custom field {name!r} already exists"
            )
        if len(self._fields) >= MAX_CUSTOM_FIELDS:
            raise validation(f"An account can have at most {MAX_CUSTOM_FIELDS} custom fields")
        field_id = self.add_custom_field(label, kind)
        return json_response(201, custom_field_json(self._fields[field_id]))
