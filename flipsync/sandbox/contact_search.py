"""Contacts: reading them (``GET /contacts`` filters and cursors, one contact, counts)."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping
from typing import Any

from flipsync.sandbox.core import ALL_INCLUDES, SandboxCore, decode_cursor, encode_cursor
from flipsync.sandbox.model import Contact, contact_json
from flipsync.sandbox.wire import (
    MICROS,
    NOT_FOUND,
    ApiError,
    SandboxRequest,
    SandboxResponse,
    json_response,
    parse_bool,
    parse_iso_micros,
    parse_limit,
    split_csv,
    validation,
)

CONTACT_STATUSES = (
    "all",
    "active",
    "deleted",
    "not_set",
    "pending_confirmation",
    "temp_hold",
    "unsubscribed",
)
SMS_STATUSES = ("all", "explicit", "unsubscribed", "pending_confirmation", "not_set")


class ContactSearchMixin(SandboxCore):
    """The read side of contacts: inspection methods and the GET endpoints."""

    def contacts(self) -> list[dict[str, Any]]:
        """Every contact (deleted ones too) as ``ContactResource`` with all sub-resources."""
        with self._lock:
            self._settle()
            return [contact_json(c, ALL_INCLUDES) for c in self._contacts]

    def contact_by_email(self, email: str) -> dict[str, Any] | None:
        """One contact by email (case-insensitive), deleted ones included, or None."""
        with self._lock:
            self._settle()
            contact = self._by_email.get(email.strip().lower())
            return contact_json(contact, ALL_INCLUDES) if contact else None

    def contact(self, contact_id: str) -> dict[str, Any] | None:
        """One contact by id, or None."""
        with self._lock:
            self._settle()
            contact = self._by_id.get(contact_id)
            return contact_json(contact, ALL_INCLUDES) if contact else None

    @staticmethod
    def _includes(query: Mapping[str, str]) -> frozenset[str]:
        if "include" not in query:
            return frozenset()
        names = split_csv(query["include"])
        for name in names:
            if name not in ALL_INCLUDES:
                raise validation("include does not have a valid value")
        return frozenset(names)

    def _get_contacts(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /contacts``: filters, ``include``, ``include_count``, cursor pagination.

        Pages are in creation order and a cursor remembers the last contact served, so
        contacts changed between pages are neither skipped nor repeated.
        """
        if "cursor" in query:
            params, after = decode_cursor(query["cursor"])
        else:
            params, after = query, -1
        predicate = self._contact_filter(params)
        include = self._includes(params)
        include_count = (
            parse_bool("include_count", params["include_count"])
            if "include_count" in params
            else False
        )
        limit = parse_limit(params.get("limit"), default=50, maximum=500)
        matching = [c for c in self._contacts if predicate(c)]
        start = bisect.bisect_right([c.seq for c in matching], after)
        page = matching[start : start + limit]
        out: dict[str, Any] = {"contacts": [contact_json(c, include) for c in page]}
        if include_count:
            out["contacts_count"] = len(matching)
        if start + limit < len(matching):
            cursor = encode_cursor(params, page[-1].seq)
            out["_links"] = {"next": {"href": f"/v3/contacts?cursor={cursor}"}}
        return json_response(200, out)

    def _contact_filter(self, params: Mapping[str, str]) -> Callable[[Contact], bool]:
        """Build the predicate of the ``GET /contacts`` query; invalid values are a 400."""
        statuses: set[str] | None = None
        if "status" in params:
            statuses = set(split_csv(params["status"]))
            if not statuses or not statuses <= set(CONTACT_STATUSES):
                raise validation("status does not have a valid value")
        email = params.get("email")
        email_key = email.strip().lower() if email is not None else None
        lists: set[str] | None = None
        if "lists" in params:
            lists = set(split_csv(params["lists"]))
            if len(lists) > 25:
                raise validation("lists cannot contain more than 25 list ids")
        tags: set[str] | None = set(split_csv(params["tags"])) if "tags" in params else None
        if "segment_id" in params:
            raise ApiError(404, NOT_FOUND, "Segment not found.")
        sms: set[str] | None = None
        if "sms_status" in params:
            sms = set(split_csv(params["sms_status"]))
            if not sms or not sms <= set(SMS_STATUSES):
                raise validation("sms_status does not have a valid value")
        bounds: dict[str, int] = {}
        for name in (
            "updated_after",
            "updated_before",
            "created_after",
            "created_before",
            "optout_after",
            "optout_before",
        ):
            if name in params:
                try:
                    bounds[name] = parse_iso_micros(params[name])
                except ValueError:
                    raise validation(f"{name} does not have a valid value") from None

        def status_ok(c: Contact) -> bool:
            if statuses is None:
                return not c.deleted
            if "all" in statuses:
                return True
            if c.deleted:
                return "deleted" in statuses
            if "active" in statuses and c.permission in ("explicit", "implicit"):
                return True
            return c.permission in statuses

        def predicate(c: Contact) -> bool:
            if not status_ok(c):
                return False
            if email_key is not None and c.email.lower() != email_key:
                return False
            if lists is not None and not lists.intersection(c.list_ids):
                return False
            if tags is not None and not tags.intersection(c.taggings):
                return False
            if sms is not None and "all" not in sms:
                return False  # the sandbox models no SMS channels
            if "updated_after" in bounds and not c.updated_us > bounds["updated_after"]:
                return False
            if "updated_before" in bounds and not c.updated_us < bounds["updated_before"]:
                return False
            if "created_after" in bounds and not c.created_us > bounds["created_after"]:
                return False
            if "created_before" in bounds and not c.created_us < bounds["created_before"]:
                return False
            if "optout_after" in bounds or "optout_before" in bounds:
                if c.permission != "unsubscribed" or c.opt_out_us is None:
                    return False
                if "optout_after" in bounds and not c.opt_out_us > bounds["optout_after"]:
                    return False
                if "optout_before" in bounds and not c.opt_out_us < bounds["optout_before"]:
                    return False
            return True

        return predicate

    def _get_contact(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /contacts/{id}``; deleted contacts are returned with ``deleted_at``."""
        include = self._includes(query)
        contact = self._by_id.get(match["id"])
        if contact is None:
            raise ApiError(404, NOT_FOUND, "The contact_id was not found.")
        return json_response(200, contact_json(contact, include))

    def _get_counts(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /contacts/counts`` (``ContactsCounts``); deleted contacts are not counted."""
        include = query.get("include")
        if include is not None and include != "new_subscriber":
            raise validation("include does not have a valid value")
        live = [c for c in self._contacts if not c.deleted]
        out: dict[str, Any] = {
            "total": len(live),
            "explicit": sum(c.permission == "explicit" for c in live),
            "implicit": sum(c.permission == "implicit" for c in live),
            "pending": sum(c.permission == "pending_confirmation" for c in live),
            "unsubscribed": sum(c.permission == "unsubscribed" for c in live),
        }
        if include == "new_subscriber":
            since = int((self.now() - 30 * 86400) * MICROS)
            out["new_subscriber"] = sum(
                c.permission == "explicit" and (c.opt_in_us or 0) > since for c in live
            )
        return json_response(200, out)
