"""The sandbox account: its state, the Constant Contact V3 endpoints, and the test controls.

``Sandbox`` owns everything behind one lock: lists, custom fields, contacts, bulk
activities, OAuth tokens (via ``OAuthServer``), rate limits, quota, scripted and random
faults and the request log. ``handle`` turns one ``SandboxRequest`` into one
``SandboxResponse``; the HTTP server in ``server.py`` is a thin shell around it.

This module is the façade: it routes requests and gates them (bearer, quota, rate,
faults). The state and clock live in core.py; each resource is a room of its own:
contacts.py and contact_search.py, lists.py (lists and custom fields),
import_activity.py, activities.py (settling, listing, exports, bulk deletes),
faults.py, admin.py (test controls, ``/__sandbox/*``, the activation page) and oauth.py.

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

import re
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from flipsync.sandbox.activities import ActivitiesMixin
from flipsync.sandbox.admin import AdminMixin, handle_activate, handle_admin
from flipsync.sandbox.config import SandboxConfig
from flipsync.sandbox.contact_search import ContactSearchMixin
from flipsync.sandbox.core import Handler
from flipsync.sandbox.faults import PRE_FAULTS, FaultsMixin, fault_response
from flipsync.sandbox.lists import ListsMixin
from flipsync.sandbox.oauth import OAUTH_PREFIX
from flipsync.sandbox.requestlog import RequestLogEntry
from flipsync.sandbox.wire import (
    JSON_TYPE,
    NOT_FOUND,
    UNAUTHORIZED_BODY,
    ApiError,
    SandboxRequest,
    SandboxResponse,
    error_array,
    json_response,
)

_UNAUTHORIZED_HEADERS = (
    ("WWW-Authenticate", "Bearer realm=api.cc.email"),
    ("x-amzn-ErrorType", "UnauthorizedException"),
)


class Sandbox(AdminMixin, FaultsMixin, ActivitiesMixin, ListsMixin, ContactSearchMixin):
    """A thread-safe, in-memory Constant Contact account with its OAuth server.

    Use the Python methods to seed data and drive tests; serve it over HTTP with
    ``flipsync.sandbox.server.start_in_thread`` or ``serve_forever``.
    """

    def __init__(
        self, config: SandboxConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        """``clock`` (epoch seconds) is the account's time; tests share a VirtualClock's."""
        super().__init__(config, clock=clock)
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

    def handle(self, request: SandboxRequest) -> SandboxResponse:
        """Answer one request (API, OAuth, admin or activation page)."""
        path = request.path
        if path.startswith("/__sandbox/"):
            return handle_admin(self, request)
        if path in ("/activate", "/activate/"):
            return handle_activate(self, request)
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
            limited = self._over_limit(client_id, started)
            if limited is not None:
                self._record(
                    request, started, limited, rejected=True, fault=None, client_id=client_id
                )
                return limited
            fault = self._next_fault(request.path)
            if fault in PRE_FAULTS:
                response = fault_response(fault)
                self._record(
                    request, started, response, rejected=True, fault=fault, client_id=client_id
                )
                return response
            try:
                response = self._route(request, client_id)
            except ApiError as error:
                response = error.response()
            if fault is not None:
                response = fault_response(fault)
            self._record(
                request, started, response, rejected=False, fault=fault, client_id=client_id
            )
            return response

    def _oauth_request(self, request: SandboxRequest) -> SandboxResponse:
        with self._lock:
            started = self.now()
            fault = self._take_scripted(request.path)
            client_id = self._oauth.claimed_client(request)
            if fault in PRE_FAULTS:
                response = fault_response(fault)
                self._record(
                    request, started, response, rejected=True, fault=fault, client_id=client_id
                )
                return response
            response = self._oauth.handle(request)
            if fault is not None:
                response = fault_response(fault)
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
