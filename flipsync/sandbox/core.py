"""The sandbox account's shared model: lock, clock, data and the helpers every room uses.

Each resource (contacts.py, contact_search.py, lists.py, import_activity.py,
activities.py, faults.py, admin.py) is a mixin over ``SandboxCore``; ``Sandbox`` in
app.py combines them and routes requests. All state lives here, behind one lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from flipsync.sandbox.config import SandboxConfig
from flipsync.sandbox.deletes import DeleteActivity
from flipsync.sandbox.exports import ExportJob
from flipsync.sandbox.limits import DailyQuota, SlidingWindow
from flipsync.sandbox.model import INCLUDES, Activity, Contact, ContactList, CustomField
from flipsync.sandbox.oauth import OAuthServer
from flipsync.sandbox.requestlog import RequestLogEntry
from flipsync.sandbox.wire import ApiError, SandboxRequest, SandboxResponse, parse_limit, validation

ALL_INCLUDES = frozenset(INCLUDES)
MAX_QUEUED_ACTIVITIES = 1000

Handler = Callable[[SandboxRequest, dict[str, str], re.Match[str]], SandboxResponse]


def encode_cursor(params: Mapping[str, str], after: int) -> str:
    raw = json.dumps({"q": dict(params), "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[dict[str, str], int]:
    """Cursors carry the original query and the last position (creation order) served."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        params = {str(k): str(v) for k, v in data["q"].items()}
        return params, int(data["a"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise validation("cursor does not have a valid value") from None


class SandboxCore:
    """The state of one sandbox account and the clock; the rooms add behaviour to it."""

    def __init__(
        self, config: SandboxConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        """``clock`` (epoch seconds) is the account's time; tests share a VirtualClock's."""
        self.config = config if config is not None else SandboxConfig()
        self._clock = clock
        self._lock = threading.RLock()
        self._offset = 0.0
        self._last_stamp = 0
        self._oauth = OAuthServer(self.config, self.now)
        self._rate = SlidingWindow(self.config.requests_per_second)
        self._quota = DailyQuota(self.config.daily_quota)
        self._rng = random.Random(self.config.fault_seed)  # noqa: S311 - reproducible faults, not crypto
        self._fault_kinds = sorted(self.config.fault_kinds)
        self._scripted: deque[tuple[str, str]] = deque()
        self._held = False
        self._client: str | None = None  # application key of the request being handled
        self._lists: dict[str, ContactList] = {}
        self._fields: dict[str, CustomField] = {}
        self._contacts: list[Contact] = []
        self._by_id: dict[str, Contact] = {}
        self._by_email: dict[str, Contact] = {}
        self._activities: list[Activity | DeleteActivity] = []
        self._exports: list[ExportJob] = []
        self._log: list[RequestLogEntry] = []

    def now(self) -> float:
        """Sandbox time in epoch seconds: its clock plus ``advance_clock`` offsets."""
        return self._clock() + self._offset

    def _stamp(self) -> int:
        """A strictly increasing millisecond timestamp (in microseconds), never in the past."""
        now_ms = int(self.now() * 1000) * 1000
        self._last_stamp = max(now_ms, self._last_stamp + 1000)
        return self._last_stamp

    def advance_clock(self, seconds: float) -> None:
        """Move sandbox time forward: token expiry, activities, quota day, rate windows."""
        with self._lock:
            self._offset += seconds

    def _resolve_list(self, ref: str) -> str:
        if ref in self._lists:
            return ref
        for item in self._lists.values():
            if item.name.lower() == ref.lower():
                return item.list_id
        raise KeyError(f"no list with id or name {ref!r}")

    def _resolve_field(self, ref: str) -> str:
        if ref in self._fields:
            return ref
        for item in self._fields.values():
            if ref in (item.name, item.label):
                return item.custom_field_id
        raise KeyError(f"no custom field with id, name or label {ref!r}")

    def _require_contact(self, email_or_id: str) -> Contact:
        contact = self._by_id.get(email_or_id) or self._by_email.get(email_or_id.strip().lower())
        if contact is None:
            raise KeyError(f"no contact {email_or_id!r}")
        return contact

    @staticmethod
    def _json_body(request: SandboxRequest) -> Any:
        try:
            return json.loads(request.body.decode("utf-8"))
        except ValueError:
            raise validation("The request body is not valid JSON") from None

    def _page(
        self,
        path: str,
        query: dict[str, str],
        items: list[Any],
        *,
        default: int,
        maximum: int,
    ) -> tuple[list[Any], dict[str, str], str | None]:
        """Offset-cursor paging for the small collections (lists, custom fields, activities)."""
        if "cursor" in query:
            params, after = decode_cursor(query["cursor"])
        else:
            params, after = query, -1
        limit = parse_limit(params.get("limit"), default=default, maximum=maximum)
        start = after + 1
        page = items[start : start + limit]
        next_href = None
        if start + limit < len(items):
            next_href = f"{path}?cursor={encode_cursor(params, start + limit - 1)}"
        return page, params, next_href

    def _check_activity_queue(self) -> None:
        """429 once 1,000 activities wait (imports and deletes share the queue)."""
        queued = sum(1 for a in self._activities if not a.completed)
        if queued >= MAX_QUEUED_ACTIVITIES:
            raise ApiError(
                429,
                "too_many_requests",
                "Too many requests. You exceeded 1,000 queued activities for this user account.",
            )

    def _settle(self) -> None:
        """Complete every due activity; ``ActivitiesMixin`` (activities.py) implements it.

        Declared here because every room reads the account only after settling it.
        """
        raise NotImplementedError
