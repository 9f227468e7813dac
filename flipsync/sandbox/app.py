"""The sandbox account: its state, the Constant Contact V3 endpoints, and the test controls.

``Sandbox`` owns everything behind one lock: lists, custom fields, contacts, bulk
activities, OAuth tokens (via ``OAuthServer``), rate limits, quota, scripted and random
faults and the request log. ``handle`` turns one ``SandboxRequest`` into one
``SandboxResponse``; the HTTP server in ``server.py`` is a thin shell around it.

Behaviour follows constant-contact-v3.md and the official spec. Choices the sources leave
open are documented where they are made; the main ones:

* Every /v3 request goes through, in order: bearer check (401), daily quota (429
  ``quota_exceeded``), per-second rate (429 ``throttled``), then faults, then the endpoint.
  Only requests that pass the first three count against the quota and the rate window.
* ``contacts_json_import`` effects are applied when the activity completes, rows in order.
  Deleted contacts named in an import are restored (as sign_up_form and PUT restore them),
  keeping their permission; unsubscribed contacts get their properties updated but are not
  added to lists (``cannot_add_to_list_count``). ``person_count`` counts rows that created
  or updated a contact.
* Deleting a contact keeps its permission, strips its list memberships and sets
  ``deleted_at``; its email stays reserved (POST /contacts answers 409). The bulk
  ``contact_delete`` activity does the same on completion (see ``deletes.py``).
* ``GET /contacts?status=active`` means not deleted and explicit or implicit; the other
  permission statuses match non-deleted contacts with that permission; ``deleted`` matches
  deleted contacts whatever their permission.
* Every write to a contact bumps ``updated_at`` from a strictly increasing millisecond
  clock, even when no value changed.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from flipsync.sandbox import validate
from flipsync.sandbox.config import SCRIPTED_FAULT_KINDS, SandboxConfig
from flipsync.sandbox.deletes import DeleteActivity, delete_activity_json, parse_delete_body
from flipsync.sandbox.exports import (
    ExportJob,
    export_json,
    parse_export_body,
    render_csv,
    selected,
)
from flipsync.sandbox.imports import RowChanges, RowProblem, check_row, parse_import_payload
from flipsync.sandbox.limits import DailyQuota, SlidingWindow
from flipsync.sandbox.model import (
    CUSTOM_FIELD_TYPES,
    INCLUDES,
    MAX_ADDRESSES,
    MAX_CUSTOM_FIELDS_PER_CONTACT,
    MAX_LISTS_PER_CONTACT,
    MAX_PHONES,
    PERMISSIONS,
    Activity,
    Address,
    Contact,
    ContactList,
    CustomField,
    ImportRow,
    Phone,
    activity_json,
    contact_json,
    custom_field_json,
    initialized_activity_json,
    list_json,
)
from flipsync.sandbox.oauth import (
    DEFAULT_CLIENT_ID,
    DEFAULT_SCOPE,
    OAUTH_PREFIX,
    OAuthServer,
    activation_page,
)
from flipsync.sandbox.requestlog import RequestLogEntry
from flipsync.sandbox.wire import (
    CONFLICT,
    JSON_TYPE,
    MICROS,
    NOT_FOUND,
    QUOTA_BODY,
    THROTTLED_BODY,
    UNAUTHORIZED_BODY,
    ApiError,
    SandboxRequest,
    SandboxResponse,
    error_array,
    html_response,
    json_response,
    parse_bool,
    parse_iso_micros,
    parse_limit,
    split_csv,
    validation,
)

ALL_INCLUDES = frozenset(INCLUDES)
MAX_LISTS = 1000
MAX_CUSTOM_FIELDS = 100
MAX_QUEUED_ACTIVITIES = 1000
ACTIVITY_WINDOW_SECONDS = 10 * 86400
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
ACTIVITY_STATES = ("processing", "completed", "cancelled", "failed", "timed_out")
_PRE_FAULTS = frozenset({"500", "503", "drop", "throttle"})
_UNAUTHORIZED_HEADERS = (
    ("WWW-Authenticate", "Bearer realm=api.cc.email"),
    ("x-amzn-ErrorType", "UnauthorizedException"),
)

Handler = Callable[[SandboxRequest, dict[str, str], re.Match[str]], SandboxResponse]


def _fault_response(kind: str) -> SandboxResponse:
    """The answer a fault of ``kind`` produces (a drop produces none)."""
    if kind in ("drop", "drop_after"):
        return SandboxResponse(0, drop=True)
    if kind == "throttle":
        return json_response(429, THROTTLED_BODY)
    if kind == "503":
        return error_array(
            503, "service_unavailable", "Our internal service is temporarily unavailable."
        )
    return error_array(500, "server_error", "There was a problem with our internal service.")


def _encode_cursor(params: Mapping[str, str], after: int) -> str:
    raw = json.dumps({"q": dict(params), "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_cursor(cursor: str) -> tuple[dict[str, str], int]:
    """Cursors carry the original query and the last position (creation order) served."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        params = {str(k): str(v) for k, v in data["q"].items()}
        return params, int(data["a"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise validation("cursor does not have a valid value") from None


def _custom_field_name(label: str) -> str:
    """The read-only ``name`` CC derives from a label: blanks become underscores."""
    return re.sub(r"\s", "_", label.strip())


class Sandbox:
    """A thread-safe, in-memory Constant Contact account with its OAuth server.

    Use the Python methods to seed data and drive tests; serve it over HTTP with
    ``flipsync.sandbox.server.start_in_thread`` or ``serve_forever``.
    """

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
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (
                re.compile(r"/v3/contacts"),
                {"GET": self._get_contacts, "POST": self._post_contact},
            ),
            (re.compile(r"/v3/contacts/counts"), {"GET": self._get_counts}),
            (re.compile(r"/v3/contacts/sign_up_form"), {"POST": self._post_sign_up}),
            (
                re.compile(r"/v3/contacts/(?P<id>[^/]+)"),
                {"GET": self._get_contact, "PUT": self._put_contact, "DELETE": self._delete},
            ),
            (
                re.compile(r"/v3/contact_lists"),
                {"GET": self._get_lists, "POST": self._post_list},
            ),
            (
                re.compile(r"/v3/contact_custom_fields"),
                {"GET": self._get_custom_fields, "POST": self._post_custom_field},
            ),
            (
                re.compile(r"/v3/activities/contacts_json_import"),
                {"POST": self._post_import},
            ),
            (
                re.compile(r"/v3/activities/contact_exports"),
                {"POST": self._post_export},
            ),
            (re.compile(r"/v3/contact_exports/(?P<id>[^/]+)"), {"GET": self._get_export_file}),
            (
                re.compile(r"/v3/activities/contact_delete"),
                {"POST": self._post_contact_delete},
            ),
            (re.compile(r"/v3/activities"), {"GET": self._get_activities}),
            (re.compile(r"/v3/activities/(?P<id>[^/]+)"), {"GET": self._get_activity}),
        ]

    # --- clock ------------------------------------------------------------------------------

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

    # --- seeding ----------------------------------------------------------------------------

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

    def add_contact(
        self,
        email: str,
        *,
        permission: str = "implicit",
        list_ids: Iterable[str] = (),
        first_name: str | None = None,
        last_name: str | None = None,
        job_title: str | None = None,
        company_name: str | None = None,
        deleted: bool = False,
        phone: str | None = None,
        phone_kind: str = "home",
        street: str | None = None,
        city: str | None = None,
        state: str | None = None,
        postal_code: str | None = None,
        country: str | None = None,
        address_kind: str = "home",
        custom_fields: Mapping[str, str] | None = None,
        create_source: str = "Account",
        opt_out_source: str = "Contact",
        opt_out_reason: str | None = None,
        contact_id: str | None = None,
    ) -> str:
        """Create a contact directly (no API call, no request log) and return its id.

        ``list_ids`` and ``custom_fields`` keys may be ids or names. A deleted contact
        keeps ``permission`` but loses its list memberships, like one deleted in the UI.

        Raises:
            ValueError: the email exists or a value is not allowed.
            KeyError: a list or custom field does not exist.
        """
        if permission not in PERMISSIONS:
            raise ValueError(f"permission must be one of {PERMISSIONS}")
        with self._lock:
            address = email.strip()
            if address.lower() in self._by_email:
                raise ValueError(f"a contact with email {address!r} already exists")
            lists = [self._resolve_list(ref) for ref in list_ids]
            fields = {self._resolve_field(k): v for k, v in (custom_fields or {}).items()}
            stamp = self._stamp()
            contact = self._new_contact(
                address,
                permission=permission,
                source=create_source,
                opt_in_source="Contact" if permission == "explicit" else "Account",
                stamp=stamp,
                contact_id=contact_id,
            )
            contact.first_name = first_name
            contact.last_name = last_name
            contact.job_title = job_title
            contact.company_name = company_name
            if permission == "unsubscribed":
                contact.opt_out_source = opt_out_source
                contact.opt_out_us = stamp
                contact.opt_out_reason = opt_out_reason
            if phone:
                contact.phones.append(
                    Phone(str(uuid.uuid4()), phone, phone_kind, stamp, stamp, create_source)
                )
            parts = {
                "street": street,
                "city": city,
                "state": state,
                "postal_code": postal_code,
                "country": country,
            }
            if any(parts.values()):
                contact.addresses.append(
                    Address(str(uuid.uuid4()), address_kind, stamp, stamp, **parts)
                )
            contact.custom_fields.update(fields)
            contact.list_ids = list(dict.fromkeys(lists))
            if deleted:
                contact.deleted_us = stamp
                contact.list_ids = []
            return contact.contact_id

    def seed(self, data: Mapping[str, Any]) -> dict[str, list[str]]:
        """Load ``{"lists": [...], "custom_fields": [...], "contacts": [...]}``.

        Lists are names or ``{"name", "list_id"?, "description"?, "favorite"?}``; custom
        fields are labels or ``{"label", "type"?, "custom_field_id"?}``; contacts are
        ``add_contact`` keyword dicts with ``email`` (``lists`` is accepted as an alias of
        ``list_ids``). Returns the created ids per kind.
        """
        unknown = sorted(set(data) - {"lists", "custom_fields", "contacts"})
        if unknown:
            raise ValueError(f"seed: unknown key(s) {unknown}")
        created: dict[str, list[str]] = {"lists": [], "custom_fields": [], "contacts": []}
        with self._lock:
            for item in data.get("lists", []):
                if isinstance(item, str):
                    created["lists"].append(self.add_list(item))
                else:
                    spec = dict(item)
                    name = spec.pop("name")
                    created["lists"].append(self.add_list(name, **spec))
            for item in data.get("custom_fields", []):
                if isinstance(item, str):
                    created["custom_fields"].append(self.add_custom_field(item))
                else:
                    spec = dict(item)
                    label = spec.pop("label")
                    created["custom_fields"].append(self.add_custom_field(label, **spec))
            for item in data.get("contacts", []):
                spec = dict(item)
                email = spec.pop("email")
                if "lists" in spec:
                    spec["list_ids"] = spec.pop("lists")
                created["contacts"].append(self.add_contact(email, **spec))
        return created

    def unsubscribe(
        self,
        email: str,
        *,
        source: str = "Contact",
        reason: str | None = None,
        touch: bool = True,
    ) -> None:
        """Unsubscribe a contact as if they clicked "unsubscribe" (or the account did it).

        ``touch=False`` leaves the contact's ``updated_at`` alone: Constant Contact does not
        document that an opt-out bumps it, so a careful client must not depend on it.
        """
        with self._lock:
            contact = self._require_contact(email)
            stamp = self._stamp()
            self._set_permission(contact, "unsubscribed", stamp, source=source, reason=reason)
            contact.update_source = source
            if touch:
                contact.updated_us = stamp

    def delete_contact(self, email_or_id: str) -> None:
        """Delete a contact as the UI does: ``deleted_at`` set, list memberships removed."""
        with self._lock:
            contact = self._require_contact(email_or_id)
            stamp = self._stamp()
            contact.deleted_us = stamp
            contact.list_ids = []
            contact.updated_us = stamp

    def remove_from_list(self, email: str, list_ref: str) -> None:
        """Take a contact off a list as a list move in the UI does: ``updated_at`` stays.

        Constant Contact does not bump a contact's ``updated_at`` for list moves (a known
        trap for incremental syncs), so this change is invisible to ``updated_after``.
        """
        with self._lock:
            contact = self._require_contact(email)
            list_id = self._resolve_list(list_ref)
            contact.list_ids = [i for i in contact.list_ids if i != list_id]

    def add_import_activity(
        self,
        emails: Sequence[str],
        list_refs: Sequence[str],
        *,
        age_seconds: float = 0.0,
        counts: bool = True,
        finish: bool = True,
    ) -> str:
        """A contacts import that flipsync did not make (staff importing a spreadsheet).

        ``age_seconds`` back-dates it; ``counts=False`` keeps it unfinished and shows no
        counts (as an activity CC has only just registered); ``finish=False`` alone keeps it
        processing with its counts. Returns the activity id.
        """
        with self._lock:
            list_ids = [self._resolve_list(ref) for ref in list_refs]
            stamp = self._stamp() - int(age_seconds * MICROS)
            unfinished = not counts or not finish
            activity = Activity(
                activity_id=str(uuid.uuid4()),
                created_us=stamp,
                due_s=float("inf") if unfinished else self.now(),
                list_ids=list_ids,
                rows=[ImportRow(i + 2, {"email": e}) for i, e in enumerate(emails)],
                received_rows=len(emails),
                truncated=False,
                dropped_rows=0,
                client_id=None,
                counts_hidden=not counts,
            )
            self._activities.append(activity)
            self._settle()
            return activity.activity_id

    def _require_contact(self, email_or_id: str) -> Contact:
        contact = self._by_id.get(email_or_id) or self._by_email.get(email_or_id.strip().lower())
        if contact is None:
            raise KeyError(f"no contact {email_or_id!r}")
        return contact

    # --- OAuth and test controls ------------------------------------------------------------

    def register_client(self, client_id: str, secret: str | None = None) -> None:
        """Register an application key; ``secret=None`` makes it a public client."""
        with self._lock:
            self._oauth.register_client(client_id, secret)

    def issue_tokens(
        self, client_id: str = DEFAULT_CLIENT_ID, scope: str = DEFAULT_SCOPE
    ) -> dict[str, Any]:
        """A token set exactly like the token endpoint returns, without a login.

        With rotating refresh tokens this, like any new grant, invalidates the client's
        earlier refresh tokens.
        """
        with self._lock:
            return self._oauth.issue_tokens(client_id, scope)

    def expire_access_tokens(self) -> None:
        """Expire every access token now; API calls answer 401 until the client refreshes."""
        with self._lock:
            self._oauth.expire_access_tokens()

    def revoke_refresh_tokens(self) -> None:
        """Invalidate every refresh token; refreshing answers ``invalid_grant``."""
        with self._lock:
            self._oauth.revoke_refresh_tokens()

    def approve_device(self, user_code: str) -> None:
        """Approve a device-flow user code, as the user would on ``/activate``.

        Raises:
            KeyError: no pending device authorization has this user code.
        """
        with self._lock:
            if not self._oauth.approve_device(user_code):
                raise KeyError(f"no pending device authorization for {user_code!r}")

    def deny_device(self, user_code: str) -> None:
        """Deny a device-flow user code; the next poll answers ``access_denied``.

        Raises:
            KeyError: no pending device authorization has this user code.
        """
        with self._lock:
            if not self._oauth.deny_device(user_code):
                raise KeyError(f"no pending device authorization for {user_code!r}")

    def pending_user_codes(self) -> list[str]:
        """Device-flow user codes waiting for approval."""
        with self._lock:
            return self._oauth.pending_user_codes()

    def issue_auth_code(
        self,
        client_id: str,
        redirect_uri: str,
        *,
        scope: str = DEFAULT_SCOPE,
        code_challenge: str | None = None,
        code_challenge_method: str = "S256",
    ) -> str:
        """An authorization code as the consent page would issue it (5 minutes, single use)."""
        with self._lock:
            return self._oauth.issue_auth_code(
                client_id,
                redirect_uri,
                scope=scope,
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method,
            )

    def fail_next(self, n: int, kind: str, path_prefix: str = "/v3") -> None:
        """Give the next ``n`` requests whose path starts with ``path_prefix`` a fault.

        Kinds: "500", "503", "drop", "500_after", "drop_after", "throttle". Scripted
        faults also work on ``/oauth2`` paths, and are used before any random fault.
        """
        if kind not in SCRIPTED_FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use {sorted(SCRIPTED_FAULT_KINDS)}")
        if n < 0:
            raise ValueError("n must not be negative")
        with self._lock:
            self._scripted.extend((kind, path_prefix) for _ in range(n))

    def hold_activities(self, hold: bool = True) -> None:
        """While held, activities stay ``processing`` and nothing is applied.

        Activities already due when the hold starts complete first, as they would have in
        a real account.
        """
        with self._lock:
            self._settle()
            self._held = hold

    def set_quota_used(self, n: int, client_id: str | None = None) -> None:
        """Pretend ``n`` API requests were made today (by one client, or by every client)."""
        with self._lock:
            now = self.now()
            targets = [client_id] if client_id is not None else list(self._oauth.clients)
            for target in targets:
                self._quota.set_used(target, n, now)

    def quota_used(self, client_id: str = DEFAULT_CLIENT_ID) -> int:
        """API requests counted today against ``client_id``'s daily quota."""
        with self._lock:
            return self._quota.used(client_id, self.now())

    # --- inspection -------------------------------------------------------------------------

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

    def activities(self) -> list[dict[str, Any]]:
        """Every activity, oldest first, as ``ActivityImport`` plus a ``sandbox`` key.

        ``sandbox`` holds what tests need and the API never shows: ``truncated`` (the
        4 MB cut happened), ``received_rows``, ``dropped_rows``, ``list_ids``,
        ``created_contacts``, ``updated_contacts`` and ``client_id``.
        """
        with self._lock:
            self._settle()
            return [self._activity_with_internals(a) for a in self._activities]

    def _activity_with_internals(self, activity: Activity | DeleteActivity) -> dict[str, Any]:
        out = self._activity_view(activity, self.now())
        if isinstance(activity, DeleteActivity):
            out["sandbox"] = {
                "kind": "contact_delete",
                "contact_ids": list(activity.contact_ids),
                "list_ids": list(activity.list_ids),
                "client_id": activity.client_id,
            }
            return out
        out["sandbox"] = {
            "kind": "contacts_json_import",
            "truncated": activity.truncated,
            "received_rows": activity.received_rows,
            "dropped_rows": activity.dropped_rows,
            "list_ids": list(activity.list_ids),
            "created_contacts": activity.created_contacts,
            "updated_contacts": activity.updated_contacts,
            "client_id": activity.client_id,
        }
        return out

    def request_log(self) -> list[RequestLogEntry]:
        """Every /v3 and /oauth2 request so far, rejected ones included, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_request_log(self) -> None:
        """Forget the logged requests (counters and limits are unaffected)."""
        with self._lock:
            self._log.clear()

    def count_requests(
        self,
        method: str | None = None,
        path_prefix: str | None = None,
        *,
        include_rejected: bool = True,
    ) -> int:
        """How many logged requests match a method and/or path prefix."""
        with self._lock:
            return sum(
                1
                for e in self._log
                if (method is None or e.method == method.upper())
                and (path_prefix is None or e.path.startswith(path_prefix))
                and (include_rejected or not e.rejected)
            )

    def state(self) -> dict[str, Any]:
        """Everything an operator may want to look at (``GET /__sandbox/state``)."""
        with self._lock:
            self._settle()
            return {
                "now": self.now(),
                "lists": self.lists(),
                "custom_fields": self.custom_fields(),
                "contacts": self.contacts(),
                "activities": self.activities(),
                "pending_user_codes": self._oauth.pending_user_codes(),
                "activities_held": self._held,
            }

    # --- request entry point ----------------------------------------------------------------

    def handle(self, request: SandboxRequest) -> SandboxResponse:
        """Answer one request (API, OAuth, admin or activation page)."""
        path = request.path
        if path.startswith("/__sandbox/"):
            return self._admin(request)
        if path in ("/activate", "/activate/"):
            return self._activate(request)
        if path == "/v3" or path.startswith("/v3/"):
            return self._api(request)
        if path.startswith(OAUTH_PREFIX + "/"):
            return self._oauth_request(request)
        return error_array(404, NOT_FOUND, "The requested resource was not found.")

    def _record(
        self,
        request: SandboxRequest,
        started: float,
        response: SandboxResponse,
        *,
        rejected: bool,
        fault: str | None,
        client_id: str | None,
    ) -> None:
        self._log.append(
            RequestLogEntry(
                timestamp=started,
                method=request.method,
                path=request.path,
                query=MappingProxyType(request.query()),
                status=None if response.drop else response.status,
                error_key=None if response.drop else response.error_key(),
                fault=fault,
                rejected=rejected,
                client_id=client_id,
                content_type=request.content_type(),
                raw_body=request.body,
            )
        )

    def _next_fault(self, path: str) -> str | None:
        """Scripted faults first (in order, matching prefix), then the seeded random ones."""
        for index, (kind, prefix) in enumerate(self._scripted):
            if path.startswith(prefix):
                del self._scripted[index]
                return kind
        if (
            path.startswith("/v3")
            and self.config.fault_rate > 0
            and self._rng.random() < self.config.fault_rate
        ):
            return self._rng.choice(self._fault_kinds)
        return None

    def _api(self, request: SandboxRequest) -> SandboxResponse:
        with self._lock:
            started = self.now()
            self._settle()
            token = self._oauth.bearer(request.headers.get("authorization"))
            if token is None:
                response = json_response(401, UNAUTHORIZED_BODY, _UNAUTHORIZED_HEADERS)
                self._record(request, started, response, rejected=True, fault=None, client_id=None)
                return response
            client_id = token.client_id
            if "contact_data" not in token.scope.split():
                response = error_array(
                    403, "forbidden", "The access token lacks the contact_data scope."
                )
                self._record(
                    request, started, response, rejected=True, fault=None, client_id=client_id
                )
                return response
            if self._quota.exceeded(client_id, started):
                response = json_response(429, QUOTA_BODY)
                self._record(
                    request, started, response, rejected=True, fault=None, client_id=client_id
                )
                return response
            if not self._rate.allow(client_id, started):
                response = json_response(429, THROTTLED_BODY)
                self._record(
                    request, started, response, rejected=True, fault=None, client_id=client_id
                )
                return response
            self._quota.count(client_id, started)
            fault = self._next_fault(request.path)
            if fault in _PRE_FAULTS:
                response = _fault_response(fault)
                self._record(
                    request, started, response, rejected=True, fault=fault, client_id=client_id
                )
                return response
            try:
                response = self._route(request, client_id)
            except ApiError as error:
                response = error.response()
            if fault is not None:
                response = _fault_response(fault)
            self._record(
                request, started, response, rejected=False, fault=fault, client_id=client_id
            )
            return response

    def _oauth_request(self, request: SandboxRequest) -> SandboxResponse:
        with self._lock:
            started = self.now()
            fault = None
            for index, (kind, prefix) in enumerate(self._scripted):
                if request.path.startswith(prefix):
                    del self._scripted[index]
                    fault = kind
                    break
            client_id = self._oauth.claimed_client(request)
            if fault in _PRE_FAULTS:
                response = _fault_response(fault)
                self._record(
                    request, started, response, rejected=True, fault=fault, client_id=client_id
                )
                return response
            response = self._oauth.handle(request)
            if fault is not None:
                response = _fault_response(fault)
            rejected = response.status == 429 and response.error_key() == "throttled"
            self._record(
                request, started, response, rejected=rejected, fault=fault, client_id=client_id
            )
            return response

    def _route(self, request: SandboxRequest, client_id: str) -> SandboxResponse:
        """Dispatch to the endpoint: 404 unknown path, 405 wrong method, 415 not JSON.

        A path can match several patterns (``/contacts/counts`` is also a ``/contacts/{id}``);
        the first pattern that supports the method wins.
        """
        allowed: set[str] = set()
        for pattern, methods in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allowed.update(methods)
                continue
            if request.method in ("POST", "PUT") and request.content_type() != JSON_TYPE:
                return error_array(
                    415,
                    "unsupported_media_type",
                    "Unsupported Media Type; the payload must be in JSON format, "
                    "and Content-Type must be application/json",
                )
            self._client = client_id
            return handler(request, request.query(), match)
        if allowed:
            response = error_array(405, "method_not_allowed", "Method Not Allowed")
            allow = ", ".join(sorted(allowed))
            return SandboxResponse(
                response.status, response.body, (*response.headers, ("Allow", allow))
            )
        return error_array(404, NOT_FOUND, "The requested resource was not found.")

    @staticmethod
    def _json_body(request: SandboxRequest) -> Any:
        try:
            return json.loads(request.body.decode("utf-8"))
        except ValueError:
            raise validation("The request body is not valid JSON") from None

    # --- contacts: helpers ------------------------------------------------------------------

    def _new_contact(
        self,
        email: str,
        *,
        permission: str,
        source: str,
        opt_in_source: str | None,
        stamp: int,
        contact_id: str | None = None,
    ) -> Contact:
        new_id = contact_id or str(uuid.uuid4())
        if new_id in self._by_id:
            raise ValueError(f"contact id {new_id!r} already exists")
        opted_in = permission in ("explicit", "implicit", "pending_confirmation")
        contact = Contact(
            contact_id=new_id,
            seq=len(self._contacts),
            email=email,
            permission=permission,
            created_us=stamp,
            updated_us=stamp,
            email_created_us=stamp,
            email_updated_us=stamp,
            create_source=source,
            update_source=source,
            opt_in_source=opt_in_source if opted_in else None,
            opt_in_us=stamp if permission in ("explicit", "implicit") else None,
            confirm_status="pending" if permission == "pending_confirmation" else "off",
        )
        self._contacts.append(contact)
        self._by_id[new_id] = contact
        self._by_email[email.lower()] = contact
        return contact

    @staticmethod
    def _set_permission(
        contact: Contact, permission: str, stamp: int, *, source: str, reason: str | None = None
    ) -> None:
        """Change ``permission_to_send`` and the opt-in/opt-out facts that go with it."""
        if permission == contact.permission:
            return
        if permission == "unsubscribed":
            contact.opt_out_source = source
            contact.opt_out_us = stamp
            contact.opt_out_reason = reason
        else:
            contact.opt_out_source = None
            contact.opt_out_us = None
            contact.opt_out_reason = None
            if permission in ("explicit", "implicit"):
                contact.opt_in_us = stamp
                contact.opt_in_source = contact.opt_in_source or source
        contact.confirm_status = "pending" if permission == "pending_confirmation" else "off"
        contact.permission = permission
        contact.email_updated_us = stamp

    @staticmethod
    def _merge_phones(
        contact: Contact, phones: list[tuple[str, str]], stamp: int, source: str
    ) -> None:
        """Update the phone of the same kind, else add one while there are fewer than 3."""
        for kind, number in phones:
            existing = next((p for p in contact.phones if p.kind == kind), None)
            if existing is not None:
                existing.phone_number = number
                existing.updated_us = stamp
            elif len(contact.phones) < MAX_PHONES:
                contact.phones.append(Phone(str(uuid.uuid4()), number, kind, stamp, stamp, source))

    @staticmethod
    def _merge_address(contact: Contact, kind: str, parts: Mapping[str, str], stamp: int) -> None:
        """Update the given parts of the address of the same kind, else add one (max 3)."""
        existing = next((a for a in contact.addresses if a.kind == kind), None)
        if existing is None:
            if len(contact.addresses) >= MAX_ADDRESSES:
                return
            existing = Address(str(uuid.uuid4()), kind, stamp, stamp)
            contact.addresses.append(existing)
        for name, value in parts.items():
            if name != "kind":
                setattr(existing, name, value)
        existing.updated_us = stamp

    @staticmethod
    def _merge_custom_fields(contact: Contact, values: Mapping[str, str]) -> None:
        """Update existing values; add new ones while the contact has fewer than 25."""
        for field_id, value in values.items():
            if (
                field_id in contact.custom_fields
                or len(contact.custom_fields) < MAX_CUSTOM_FIELDS_PER_CONTACT
            ):
                contact.custom_fields[field_id] = value

    @staticmethod
    def _append_lists(contact: Contact, list_ids: Iterable[str]) -> None:
        """Add list memberships (never removing any), up to 50 per contact."""
        for list_id in list_ids:
            if list_id not in contact.list_ids and len(contact.list_ids) < MAX_LISTS_PER_CONTACT:
                contact.list_ids.append(list_id)

    def _membership_count(self, list_id: str, active_only: bool) -> int:
        return sum(
            1
            for c in self._contacts
            if list_id in c.list_ids
            and not c.deleted
            and (not active_only or c.permission in ("explicit", "implicit"))
        )

    def _conflict(self, contact: Contact) -> ApiError:
        return ApiError(
            409,
            CONFLICT,
            f"Validation failed: Email already exists for contact {contact.contact_id}",
        )

    @staticmethod
    def _includes(query: Mapping[str, str]) -> frozenset[str]:
        if "include" not in query:
            return frozenset()
        names = split_csv(query["include"])
        for name in names:
            if name not in ALL_INCLUDES:
                raise validation("include does not have a valid value")
        return frozenset(names)

    # --- contacts: endpoints ----------------------------------------------------------------

    def _get_contacts(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /contacts``: filters, ``include``, ``include_count``, cursor pagination.

        Pages are in creation order and a cursor remembers the last contact served, so
        contacts changed between pages are neither skipped nor repeated.
        """
        if "cursor" in query:
            params, after = _decode_cursor(query["cursor"])
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
            cursor = _encode_cursor(params, page[-1].seq)
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

    def _post_contact(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /contacts``: 409 when the email exists, deleted contacts included."""
        data = validate.contact_post(self._json_body(request), self._lists, self._fields)
        if data.email is None:
            raise validation("email_address is required by this sandbox (no SMS-only contacts)")
        existing = self._by_email.get(data.email.lower())
        if existing is not None:
            raise self._conflict(existing)
        permission = data.permission or "not_set"
        source = data.create_source or "Account"
        stamp = self._stamp()
        contact = self._new_contact(
            data.email, permission=permission, source=source, opt_in_source=source, stamp=stamp
        )
        if permission == "unsubscribed":
            contact.opt_out_source = source
            contact.opt_out_us = stamp
        self._apply_input(contact, data, stamp, source, replace=True)
        return json_response(201, contact_json(contact, ALL_INCLUDES))

    def _apply_input(
        self,
        contact: Contact,
        data: validate.ContactInput,
        stamp: int,
        source: str,
        *,
        replace: bool,
    ) -> None:
        """Write checked fields and sub-resources; ``replace`` swaps given sub-resource arrays."""
        for name, value in (data.fields or {}).items():
            setattr(contact, name, value)
        if data.phones is not None:
            if replace:
                contact.phones = [
                    Phone(str(uuid.uuid4()), number, kind, stamp, stamp, source)
                    for kind, number in data.phones
                ]
            else:
                self._merge_phones(contact, data.phones, stamp, source)
        if data.addresses is not None:
            if replace:
                contact.addresses = []
            for item in data.addresses:
                if replace:
                    parts = {k: v for k, v in item.items() if k != "kind"}
                    contact.addresses.append(
                        Address(str(uuid.uuid4()), item["kind"], stamp, stamp, **parts)
                    )
                else:
                    self._merge_address(contact, item["kind"], item, stamp)
        if data.custom_fields is not None:
            if replace:
                contact.custom_fields = dict(data.custom_fields)
            else:
                self._merge_custom_fields(contact, data.custom_fields)
        if data.list_ids is not None:
            if replace:
                contact.list_ids = list(data.list_ids)
            else:
                self._append_lists(contact, data.list_ids)
        if data.taggings is not None:
            contact.taggings = list(data.taggings)
        if data.notes is not None:
            contact.notes = [dict(n) for n in data.notes]

    def _post_sign_up(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /contacts/sign_up_form``: create (201) or update (200) by email.

        New contacts are ``explicit`` (opt_in_source Contact), or ``pending_confirmation``
        when Confirmed Opt-In is on. Existing contacts, unsubscribed and deleted ones
        included, are set to ``explicit`` (deleted ones are restored); given fields are
        updated and lists and custom fields appended. Under Confirmed Opt-In a contact
        still ``pending_confirmation`` stays so: only the person's own confirmation ends
        it [inferred: the spec says nothing of pending contacts].
        """
        data = validate.sign_up(self._json_body(request), self._lists, self._fields)
        assert data.email is not None
        stamp = self._stamp()
        contact = self._by_email.get(data.email.lower())
        if contact is None:
            permission = "pending_confirmation" if self.config.confirmed_opt_in else "explicit"
            contact = self._new_contact(
                data.email,
                permission=permission,
                source="Contact",
                opt_in_source="Contact",
                stamp=stamp,
            )
            self._apply_input(contact, data, stamp, "Contact", replace=False)
            return json_response(201, {"contact_id": contact.contact_id, "action": "created"})
        contact.deleted_us = None
        awaiting = self.config.confirmed_opt_in and contact.permission == "pending_confirmation"
        if not awaiting:
            self._set_permission(contact, "explicit", stamp, source="Contact")
        contact.update_source = "Contact"
        self._apply_input(contact, data, stamp, "Contact", replace=False)
        contact.updated_us = stamp
        return json_response(200, {"contact_id": contact.contact_id, "action": "updated"})

    def _put_contact(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``PUT /contacts/{id}``: full replace of top-level properties.

        Omitted top-level properties become null; omitted sub-resources are kept, given ones
        replace the existing arrays. An omitted ``email_address`` keeps the address and
        permission. A deleted contact is revived, which needs ``update_source: Account``.
        """
        contact = self._by_id.get(match["id"])
        if contact is None:
            raise ApiError(404, NOT_FOUND, "The contact_id was not found.")
        data = validate.contact_put(self._json_body(request), self._lists, self._fields)
        source = data.update_source or "Account"
        if contact.deleted and source != "Account":
            raise validation("update_source must be Account to restore a deleted contact")
        if data.email is not None and data.email.lower() != contact.email.lower():
            other = self._by_email.get(data.email.lower())
            if other is not None:
                raise self._conflict(other)
        stamp = self._stamp()
        if data.email is not None:
            if data.email != contact.email:
                del self._by_email[contact.email.lower()]
                contact.email = data.email
                self._by_email[data.email.lower()] = contact
                contact.email_updated_us = stamp
            if data.permission is not None:
                self._set_permission(
                    contact, data.permission, stamp, source=source, reason=data.opt_out_reason
                )
        for name in validate.NAME_FIELDS:
            setattr(contact, name, None)
        contact.birthday_month = contact.birthday_day = None
        contact.anniversary = None
        self._apply_input(contact, data, stamp, source, replace=True)
        contact.deleted_us = None
        contact.update_source = source
        contact.updated_us = stamp
        return json_response(200, contact_json(contact, ALL_INCLUDES))

    def _delete(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``DELETE /contacts/{id}``: 204; deleting a deleted contact is also 204."""
        contact = self._by_id.get(match["id"])
        if contact is None:
            raise ApiError(404, NOT_FOUND, "The contact_id was not found.")
        if not contact.deleted:
            stamp = self._stamp()
            contact.deleted_us = stamp
            contact.list_ids = []
            contact.updated_us = stamp
        return SandboxResponse(204)

    # --- lists and custom fields ------------------------------------------------------------

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
            params, after = _decode_cursor(query["cursor"])
        else:
            params, after = query, -1
        limit = parse_limit(params.get("limit"), default=default, maximum=maximum)
        start = after + 1
        page = items[start : start + limit]
        next_href = None
        if start + limit < len(items):
            next_href = f"{path}?cursor={_encode_cursor(params, start + limit - 1)}"
        return page, params, next_href

    def _get_lists(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /contact_lists`` (``ContactListArray``); list names match case-insensitively."""
        params = dict(query)
        if "cursor" in params:
            params, _ = _decode_cursor(params["cursor"])
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

    # --- bulk activities --------------------------------------------------------------------

    def _post_import(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /activities/contacts_json_import``: validate now, apply on completion."""
        payload = parse_import_payload(request.body)
        for list_id in payload.list_ids:
            if list_id not in self._lists:
                raise validation(f"list_ids contains an unknown list id: {list_id}")
        self._check_activity_queue()
        stamp = self._stamp()
        activity = Activity(
            activity_id=str(uuid.uuid4()),
            created_us=stamp,
            # Due by the clock, not by the stamp: stamps run ahead of it after a burst of
            # writes (strictly increasing milliseconds), which would delay the activity.
            due_s=self.now() + self.config.activity_seconds,
            list_ids=payload.list_ids,
            rows=[ImportRow(index + 2, row) for index, row in enumerate(payload.rows)],
            received_rows=payload.received_rows,
            truncated=payload.truncated,
            dropped_rows=payload.received_rows - len(payload.rows),
            client_id=self._client,
        )
        self._activities.append(activity)
        return json_response(201, initialized_activity_json(activity))

    def _check_activity_queue(self) -> None:
        """429 once 1,000 activities wait (imports and deletes share the queue)."""
        queued = sum(1 for a in self._activities if not a.completed)
        if queued >= MAX_QUEUED_ACTIVITIES:
            raise ApiError(
                429,
                "too_many_requests",
                "Too many requests. You exceeded 1,000 queued activities for this user account.",
            )

    def _post_contact_delete(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /activities/contact_delete``: validate now, delete on completion (deletes.py)."""
        wanted = parse_delete_body(self._json_body(request))
        for list_id in wanted.list_ids:
            if list_id not in self._lists:
                raise validation(f"list_ids contains an unknown list id: {list_id}")
        self._check_activity_queue()
        members = {c.contact_id for c in self._contacts if set(c.list_ids) & set(wanted.list_ids)}
        activity = DeleteActivity(
            activity_id=str(uuid.uuid4()),
            created_us=self._stamp(),
            due_s=self.now() + self.config.activity_seconds,
            contact_ids=wanted.contact_ids,
            list_ids=wanted.list_ids,
            items_total=len(wanted.contact_ids) + len(members),
            client_id=self._client,
        )
        self._activities.append(activity)
        # The 201 shows the activity as just queued, whatever the sandbox clock says.
        return json_response(
            201, delete_activity_json(activity, now_s=activity.created_us / MICROS, duration_s=1)
        )

    def _settle(self) -> None:
        """Complete every due activity, oldest first (nothing happens while held)."""
        if self._held:
            return
        now = self.now()
        for activity in self._activities:
            if not activity.completed and activity.due_s <= now:
                if isinstance(activity, DeleteActivity):
                    self._complete_delete(activity)
                else:
                    self._complete(activity)
        for job in self._exports:
            if job.completed_us is None and job.due_s <= now:
                names = {i: lst.name for i, lst in self._lists.items()}
                job.csv, job.rows = render_csv(
                    (c for c in self._contacts if selected(job, c)), names
                )
                job.completed_us = self._stamp()

    def _post_export(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /activities/contact_exports``: queue an export; the file exists when done."""
        status, list_ids, contact_ids = parse_export_body(self._json_body(request))
        for list_id in list_ids:
            if list_id not in self._lists:
                raise validation(f"list_ids contains an unknown list id: {list_id}")
        job = ExportJob(
            activity_id=str(uuid.uuid4()),
            file_export_id=str(uuid.uuid4()),
            created_us=self._stamp(),
            due_s=self.now() + self.config.activity_seconds,
            status=status,
            list_ids=list_ids,
            contact_ids=contact_ids,
        )
        self._exports.append(job)
        return json_response(201, export_json(job, now_s=self.now()))

    def _get_export_file(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /contact_exports/{file_export_id}``: the CSV of a completed export."""
        job = next((j for j in self._exports if j.file_export_id == match["id"]), None)
        if job is None or job.csv is None:
            raise ApiError(404, NOT_FOUND, "The requested resource was not found.")
        return SandboxResponse(200, job.csv, (("Content-Type", "text/csv"),))

    def _complete_delete(self, activity: DeleteActivity) -> None:
        """Delete the named contacts (or every member of the named lists) now."""
        if activity.list_ids:
            wanted = set(activity.list_ids)
            targets = [c for c in self._contacts if set(c.list_ids) & wanted]
        else:
            targets = []
            for contact_id in activity.contact_ids:
                contact = self._by_id.get(contact_id)
                if contact is None:
                    activity.errors.append(f"contact_id {contact_id} was not found")
                else:
                    targets.append(contact)
        for contact in targets:
            if not contact.deleted:
                stamp = self._stamp()
                contact.deleted_us = stamp
                contact.list_ids = []
                contact.updated_us = stamp
            activity.deleted += 1
        activity.completed_us = self._stamp()
        activity.updated_us = activity.completed_us

    def _activity_view(self, activity: Activity | DeleteActivity, now: float) -> dict[str, Any]:
        """The API's JSON for either kind of activity."""
        duration = self.config.activity_seconds
        if isinstance(activity, DeleteActivity):
            return delete_activity_json(activity, now_s=now, duration_s=duration)
        return activity_json(activity, now_s=now, duration_s=duration)

    def _complete(self, activity: Activity) -> None:
        """Apply an import's rows in order and fill its status counters."""
        names = {f.name: f.custom_field_id for f in self._fields.values()}
        for row in activity.rows:
            result = check_row(row.line, row.data, names)
            if isinstance(result, RowProblem):
                if result.kind == "correctable":
                    activity.correctable_count += 1
                else:
                    activity.error_count += 1
                activity.errors.append(result.message)
                continue
            self._import_row(activity, result)
        activity.completed_us = self._stamp()
        activity.updated_us = activity.completed_us

    def _import_row(self, activity: Activity, changes: RowChanges) -> None:
        """One valid row: create (implicit, Account) or update only the given properties.

        Existing contacts keep their permission. Deleted contacts are restored. Unsubscribed
        contacts are updated but not added to lists (``cannot_add_to_list_count``).
        """
        stamp = self._stamp()
        contact = self._by_email.get(changes.email.lower())
        if contact is None:
            contact = self._new_contact(
                changes.email,
                permission="implicit",
                source="Account",
                opt_in_source="Account",
                stamp=stamp,
            )
            activity.created_contacts += 1
        else:
            activity.updated_contacts += 1
            contact.deleted_us = None
            contact.update_source = "Account"
        for name, value in changes.fields.items():
            setattr(contact, name, value)
        self._merge_phones(contact, changes.phones, stamp, "Account")
        for kind, parts in changes.addresses.items():
            self._merge_address(contact, kind, parts, stamp)
        self._merge_custom_fields(contact, changes.custom_fields)
        if contact.permission == "unsubscribed":
            activity.cannot_add_to_list_count += 1
        else:
            self._append_lists(contact, activity.list_ids)
        contact.updated_us = stamp
        activity.person_count += 1

    def _get_activities(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /activities``: the last 10 days, newest first, optional ``state`` filter."""
        params = dict(query)
        if "cursor" in params:
            params, _ = _decode_cursor(params["cursor"])
        state = params.get("state")
        if state is not None and state not in ACTIVITY_STATES:
            raise validation("state does not have a valid value")
        now = self.now()
        views = []
        for activity in reversed(self._activities):
            if activity.created_us / MICROS < now - ACTIVITY_WINDOW_SECONDS:
                continue
            view = self._activity_view(activity, now)
            shown = "processing" if view["state"] == "initialized" else view["state"]
            if state is None or shown == state:
                views.append(view)
        for job in reversed(self._exports):
            if job.created_us / MICROS < now - ACTIVITY_WINDOW_SECONDS:
                continue
            view = export_json(job, now_s=now)
            if state is None or view["state"] == state:
                views.append(view)
        views.sort(key=lambda v: str(v["created_at"]), reverse=True)
        page, _, next_href = self._page("/v3/activities", query, views, default=50, maximum=500)
        out: dict[str, Any] = {"activities": page}
        if next_href:
            out["_links"] = {"next": {"href": next_href}}
        return json_response(200, out)

    def _get_activity(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /activities/{id}`` (``ActivityImport``)."""
        job = next((j for j in self._exports if j.activity_id == match["id"]), None)
        if job is not None:
            return json_response(200, export_json(job, now_s=self.now()))
        activity = next((a for a in self._activities if a.activity_id == match["id"]), None)
        if activity is None:
            raise ApiError(404, NOT_FOUND, "Resource not found for the activity_id provided.")
        return json_response(200, self._activity_view(activity, self.now()))

    # --- admin and activation page ----------------------------------------------------------

    def _admin(self, request: SandboxRequest) -> SandboxResponse:
        """``/__sandbox/*``: never rate-limited, never logged."""
        route = (request.method, request.path)
        try:
            body: Any = json.loads(request.body) if request.body.strip() else {}
        except ValueError:
            return json_response(400, {"error": "body is not JSON"})
        if not isinstance(body, dict):
            return json_response(400, {"error": "body must be a JSON object"})
        try:
            if route == ("GET", "/__sandbox/state"):
                return json_response(200, self.state())
            if route == ("GET", "/__sandbox/requests"):
                return json_response(200, [e.to_json() for e in self.request_log()])
            if route == ("DELETE", "/__sandbox/requests"):
                self.clear_request_log()
                return SandboxResponse(204)
            if route == ("POST", "/__sandbox/seed"):
                return json_response(200, self.seed(body))
            if route == ("POST", "/__sandbox/tokens"):
                client_id = body.get("client_id", DEFAULT_CLIENT_ID)
                scope = body.get("scope", DEFAULT_SCOPE)
                return json_response(200, self.issue_tokens(client_id, scope))
            if route == ("POST", "/__sandbox/approve"):
                self.approve_device(str(body.get("user_code", "")))
                return json_response(200, {"approved": True})
            if route == ("POST", "/__sandbox/deny"):
                self.deny_device(str(body.get("user_code", "")))
                return json_response(200, {"denied": True})
            if route == ("POST", "/__sandbox/clock"):
                self.advance_clock(float(body.get("advance_seconds", 0)))
                return json_response(200, {"now": self.now()})
            if route == ("POST", "/__sandbox/faults"):
                self.fail_next(
                    int(body.get("n", 1)), str(body["kind"]), str(body.get("path_prefix", "/v3"))
                )
                return json_response(200, {"queued": int(body.get("n", 1))})
            if route == ("POST", "/__sandbox/hold"):
                self.hold_activities(bool(body.get("hold", True)))
                return json_response(200, {"held": bool(body.get("hold", True))})
            if route == ("POST", "/__sandbox/quota"):
                self.set_quota_used(int(body["used"]), body.get("client_id"))
                return json_response(200, {"used": int(body["used"])})
            if route == ("POST", "/__sandbox/expire_tokens"):
                self.expire_access_tokens()
                return json_response(200, {"expired": True})
            if route == ("POST", "/__sandbox/revoke_refresh_tokens"):
                self.revoke_refresh_tokens()
                return json_response(200, {"revoked": True})
            if route == ("POST", "/__sandbox/unsubscribe"):
                self.unsubscribe(str(body["email"]), reason=body.get("reason"))
                return json_response(200, self.contact_by_email(str(body["email"])))
        except KeyError as error:
            return json_response(404, {"error": str(error)})
        except (ValueError, TypeError) as error:
            return json_response(400, {"error": str(error)})
        return json_response(404, {"error": f"no admin route {request.method} {request.path}"})

    def _activate(self, request: SandboxRequest) -> SandboxResponse:
        """The device flow's ``verification_uri``: a form to approve or deny a user code."""
        if request.method == "GET":
            return html_response(200, activation_page(request.query().get("user_code", "")))
        if request.method != "POST":
            return html_response(405, "<h1>Method Not Allowed</h1>")
        form = request.form()
        user_code = form.get("user_code", "")
        try:
            if form.get("decision", "approve") == "deny":
                self.deny_device(user_code)
                message = "Access denied. You can close this window."
            else:
                self.approve_device(user_code)
                message = "Device approved. You can close this window."
        except KeyError:
            return html_response(404, activation_page(user_code, "Unknown or expired code."))
        return html_response(200, activation_page("", message))
