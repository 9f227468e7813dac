"""Test controls: OAuth shortcuts, the request log, ``/__sandbox/*`` and the activation page.

The HTTP admin routes and the device-flow page use only ``Sandbox``'s public Python API.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from flipsync.sandbox.core import SandboxCore
from flipsync.sandbox.oauth import DEFAULT_CLIENT_ID, DEFAULT_SCOPE
from flipsync.sandbox.requestlog import RequestLogEntry
from flipsync.sandbox.wire import SandboxRequest, SandboxResponse, html_response, json_response

if TYPE_CHECKING:
    from flipsync.sandbox.app import Sandbox


class AdminMixin(SandboxCore):
    """The Python controls tests use that no API call offers."""

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


def handle_admin(sandbox: Sandbox, request: SandboxRequest) -> SandboxResponse:
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
            return json_response(200, sandbox.state())
        if route == ("GET", "/__sandbox/requests"):
            return json_response(200, [e.to_json() for e in sandbox.request_log()])
        if route == ("DELETE", "/__sandbox/requests"):
            sandbox.clear_request_log()
            return SandboxResponse(204)
        if route == ("POST", "/__sandbox/seed"):
            return json_response(200, sandbox.seed(body))
        if route == ("POST", "/__sandbox/tokens"):
            client_id = body.get("client_id", DEFAULT_CLIENT_ID)
            scope = body.get("scope", DEFAULT_SCOPE)
            return json_response(200, sandbox.issue_tokens(client_id, scope))
        if route == ("POST", "/__sandbox/approve"):
            sandbox.approve_device(str(body.get("user_code", "")))
            return json_response(200, {"approved": True})
        if route == ("POST", "/__sandbox/deny"):
            sandbox.deny_device(str(body.get("user_code", "")))
            return json_response(200, {"denied": True})
        if route == ("POST", "/__sandbox/clock"):
            sandbox.advance_clock(float(body.get("advance_seconds", 0)))
            return json_response(200, {"now": sandbox.now()})
        if route == ("POST", "/__sandbox/faults"):
            sandbox.fail_next(
                int(body.get("n", 1)), str(body["kind"]), str(body.get("path_prefix", "/v3"))
            )
            return json_response(200, {"queued": int(body.get("n", 1))})
        if route == ("POST", "/__sandbox/hold"):
            sandbox.hold_activities(bool(body.get("hold", True)))
            return json_response(200, {"held": bool(body.get("hold", True))})
        if route == ("POST", "/__sandbox/quota"):
            sandbox.set_quota_used(int(body["used"]), body.get("client_id"))
            return json_response(200, {"used": int(body["used"])})
        if route == ("POST", "/__sandbox/expire_tokens"):
            sandbox.expire_access_tokens()
            return json_response(200, {"expired": True})
        if route == ("POST", "/__sandbox/revoke_refresh_tokens"):
            sandbox.revoke_refresh_tokens()
            return json_response(200, {"revoked": True})
        if route == ("POST", "/__sandbox/unsubscribe"):
            sandbox.unsubscribe(str(body["email"]), reason=body.get("reason"))
            return json_response(200, sandbox.contact_by_email(str(body["email"])))
    except KeyError as error:
        return json_response(404, {"error": str(error)})
    except (ValueError, TypeError) as error:
        return json_response(400, {"error": str(error)})
    return json_response(404, {"error": f"no admin route {request.method} {request.path}"})


def handle_activate(sandbox: Sandbox, request: SandboxRequest) -> SandboxResponse:
    """The device flow's ``verification_uri``: a form to approve or deny a user code."""
    if request.method == "GET":
        return html_response(200, activation_page(request.query().get("user_code", "")))
    if request.method != "POST":
        return html_response(405, "<h1>Method Not Allowed</h1>")
    form = request.form()
    user_code = form.get("user_code", "")
    try:
        if form.get("decision", "approve") == "deny":
            sandbox.deny_device(user_code)
            message = "Access denied. You can close this window."
        else:
            sandbox.approve_device(user_code)
            message = "Device approved. You can close this window."
    except KeyError:
        return html_response(404, activation_page(user_code, "Unknown or expired code."))
    return html_response(200, activation_page("", message))


def activation_page(user_code: str = "", message: str = "") -> str:
    """The ``verification_uri`` page: a form to approve or deny a device's user code."""
    note = f"<p><b>{html.escape(message)}</b></p>" if message else ""
    return (
        "<!doctype html><title>Activate device</title><h1>Constant Contact sandbox</h1>"
        f'{note}<form method="post" action="/activate">'
        '<label>Code <input name="user_code" '
        f'value="{html.escape(user_code)}" autofocus></label> '
        '<button name="decision" value="approve">Approve</button> '
        '<button name="decision" value="deny">Deny</button></form>'
    )
