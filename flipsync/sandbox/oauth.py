"""The sandbox's OAuth2 authorization server (Okta-style ``/oauth2/default/v1/...``).

Owns clients, access tokens, refresh tokens, authorization codes and device codes, and the
token, device-authorization, authorize and revoke endpoints, following section 1 of
constant-contact-v3.md: 24 h JWT-shaped access tokens, refresh tokens only with
``offline_access``, rotating refresh tokens that invalidate every earlier one (or long-lived
ones that come back unchanged), single-use 5-minute codes, RFC 8628 device-flow errors, and
one token request per second per client. Not thread-safe on its own: ``Sandbox`` calls it
under its lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from flipsync.sandbox.config import SandboxConfig
from flipsync.sandbox.limits import SlidingWindow
from flipsync.sandbox.oauth_tokens import (
    AccessToken,
    AuthCode,
    DeviceCode,
    RefreshToken,
    b64url,
    jwt_access_token,
    normalize_user_code,
)
from flipsync.sandbox.wire import (
    THROTTLED_BODY,
    SandboxRequest,
    SandboxResponse,
    html_response,
    json_response,
)

DEFAULT_CLIENT_ID = "flipsync-sandbox"
DEFAULT_SCOPE = "contact_data offline_access"
OAUTH_PREFIX = "/oauth2/default/v1"
KNOWN_SCOPES = frozenset(
    {
        "contact_data",
        "campaign_data",
        "account_read",
        "account_update",
        "billing_data",
        "offline_access",
        "openid",
        "profile",
    }
)
AUTH_CODE_SECONDS = 300
REFRESH_IDLE_SECONDS = 180 * 86400
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
_NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


def oauth_error(status: int, error: str, description: str) -> SandboxResponse:
    """The OAuth error shape ``{"error", "error_description"}``."""
    return json_response(status, {"error": error, "error_description": description}, _NO_STORE)


class OAuthServer:
    """Token state and the OAuth endpoints. Times are sandbox-clock seconds."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._signing_key = secrets.token_bytes(32)
        self.clients: dict[str, str | None] = {DEFAULT_CLIENT_ID: None}
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, RefreshToken] = {}
        self._codes: dict[str, AuthCode] = {}
        self._devices: dict[str, DeviceCode] = {}
        self._user_codes: dict[str, str] = {}
        self._token_window = SlidingWindow(config.token_endpoint_per_second)

    # --- Python API (used by Sandbox) -------------------------------------------------------

    def register_client(self, client_id: str, secret: str | None = None) -> None:
        """Add (or replace) a client; ``secret=None`` makes it public (device flow, PKCE)."""
        if not client_id:
            raise ValueError("client_id must not be empty")
        self.clients[client_id] = secret

    def issue_tokens(self, client_id: str, scope: str = DEFAULT_SCOPE) -> dict[str, Any]:
        """A fresh token set, as if the user had just authorized ``client_id``."""
        if client_id not in self.clients:
            raise KeyError(f"unknown client_id {client_id!r}; register_client() it first")
        return self._token_set(client_id, scope, reuse_refresh=None)

    def bearer(self, header: str | None) -> AccessToken | None:
        """The valid, unexpired access token named by an Authorization header, else None."""
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        record = self._access.get(token.strip())
        if record is None or record.expires_at <= self._clock():
            return None
        return record

    def expire_access_tokens(self) -> None:
        """Make every issued access token expired (the next API call gets 401)."""
        now = self._clock()
        for record in self._access.values():
            record.expires_at = min(record.expires_at, now)

    def revoke_refresh_tokens(self) -> None:
        """Invalidate every refresh token (the next refresh gets ``invalid_grant``)."""
        for record in self._refresh.values():
            record.valid = False

    def issue_auth_code(
        self,
        client_id: str,
        redirect_uri: str,
        *,
        scope: str = DEFAULT_SCOPE,
        code_challenge: str | None = None,
        code_challenge_method: str = "S256",
    ) -> str:
        """An authorization code as the consent page would redirect with (5 min, one use)."""
        if client_id not in self.clients:
            raise KeyError(f"unknown client_id {client_id!r}")
        code = secrets.token_urlsafe(32)
        self._codes[code] = AuthCode(
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            expires_at=self._clock() + AUTH_CODE_SECONDS,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
        )
        return code

    def approve_device(self, user_code: str) -> bool:
        """Approve a pending device authorization; False when the code is unknown/finished."""
        device = self._device_for_user_code(user_code)
        if device is None or device.status != "pending" or device.expires_at <= self._clock():
            return False
        device.status = "approved"
        return True

    def deny_device(self, user_code: str) -> bool:
        """Deny a pending device authorization; the next poll gets ``access_denied``."""
        device = self._device_for_user_code(user_code)
        if device is None or device.status != "pending" or device.expires_at <= self._clock():
            return False
        device.status = "denied"
        return True

    def pending_user_codes(self) -> list[str]:
        """User codes still waiting for approval (for the admin state and the demo)."""
        now = self._clock()
        return [
            d.user_code
            for d in self._devices.values()
            if d.status == "pending" and d.expires_at > now
        ]

    def _device_for_user_code(self, user_code: str) -> DeviceCode | None:
        device_code = self._user_codes.get(normalize_user_code(user_code))
        return self._devices.get(device_code) if device_code else None

    # --- tokens -----------------------------------------------------------------------------

    def _jwt(self, client_id: str, scope: str, now: float) -> str:
        return jwt_access_token(
            self._signing_key, self._config.token_lifetime_seconds, client_id, scope, now
        )

    def _token_set(
        self, client_id: str, scope: str, *, reuse_refresh: str | None
    ) -> dict[str, Any]:
        """Mint an access token (and a refresh token when ``offline_access`` was granted).

        ``reuse_refresh`` is the refresh token being redeemed, if any: long-lived mode hands
        it back; rotating mode (like every new grant) invalidates all earlier refresh tokens.
        """
        now = self._clock()
        access = self._jwt(client_id, scope, now)
        self._access[access] = AccessToken(
            client_id, scope, now + self._config.token_lifetime_seconds
        )
        result: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": self._config.token_lifetime_seconds,
            "access_token": access,
            "scope": scope,
        }
        if "offline_access" in scope.split():
            if reuse_refresh is not None and not self._config.rotating_refresh_tokens:
                self._refresh[reuse_refresh].last_used = now
                result["refresh_token"] = reuse_refresh
            else:
                if self._config.rotating_refresh_tokens:
                    for record in self._refresh.values():
                        if record.client_id == client_id:
                            record.valid = False
                token = secrets.token_urlsafe(32)
                self._refresh[token] = RefreshToken(client_id, scope, last_used=now)
                result["refresh_token"] = token
        return result

    # --- HTTP -------------------------------------------------------------------------------

    def handle(self, request: SandboxRequest) -> SandboxResponse:
        """Route a request under ``/oauth2/default/v1``."""
        route = request.path[len(OAUTH_PREFIX) :] if request.path.startswith(OAUTH_PREFIX) else ""
        if route == "/token":
            if request.method != "POST":
                return oauth_error(405, "invalid_request", "Use POST.")
            return self._token_endpoint(request)
        if route == "/device/authorize":
            if request.method != "POST":
                return oauth_error(405, "invalid_request", "Use POST.")
            return self._device_authorize(request)
        if route == "/authorize":
            return self._authorize(request)
        if route == "/revoke":
            if request.method != "POST":
                return oauth_error(405, "invalid_request", "Use POST.")
            return self._revoke(request)
        return oauth_error(404, "not_found", "Not found.")

    def _client_credentials(
        self, request: SandboxRequest, form: dict[str, str]
    ) -> tuple[str | None, str | None, bool]:
        """(client_id, secret, via_basic) from HTTP Basic or the form."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic" and value:
            try:
                decoded = base64.b64decode(value.strip()).decode("utf-8")
            except ValueError:
                return None, None, True
            client_id, _, secret = decoded.partition(":")
            return unquote(client_id), unquote(secret), True
        return form.get("client_id"), form.get("client_secret"), False

    def claimed_client(self, request: SandboxRequest) -> str | None:
        """The client id a request names (Basic header or form), authenticated or not."""
        form = request.form() if "form-urlencoded" in request.content_type() else {}
        client_id, _, _ = self._client_credentials(request, form)
        return client_id or request.query().get("client_id")

    def _authenticate(self, request: SandboxRequest, form: dict[str, str]) -> str | SandboxResponse:
        """The authenticated client id, or the 401 ``invalid_client`` response."""
        client_id, secret, _ = self._client_credentials(request, form)
        if not client_id or client_id not in self.clients:
            return oauth_error(401, "invalid_client", "Invalid value for 'client_id' parameter.")
        expected = self.clients[client_id]
        if expected is not None and not (
            secret is not None and hmac.compare_digest(secret, expected)
        ):
            return oauth_error(401, "invalid_client", "The client secret supplied is invalid.")
        return client_id

    def _token_endpoint(self, request: SandboxRequest) -> SandboxResponse:
        form = request.form()
        claimed, _, _ = self._client_credentials(request, form)
        if not self._token_window.allow(claimed or "-", self._clock()):
            return json_response(429, THROTTLED_BODY)
        if request.content_type() != "application/x-www-form-urlencoded":
            return oauth_error(
                400, "invalid_request", "The body must be application/x-www-form-urlencoded."
            )
        client = self._authenticate(request, form)
        if isinstance(client, SandboxResponse):
            return client
        grant = form.get("grant_type", "")
        if grant == "refresh_token":
            return self._refresh_grant(client, form)
        if grant == "authorization_code":
            return self._code_grant(client, form)
        if grant == DEVICE_GRANT:
            return self._device_grant(client, form)
        if not grant:
            return oauth_error(400, "invalid_request", "The 'grant_type' parameter is missing.")
        return oauth_error(
            400, "unsupported_grant_type", f"'grant_type' {grant!r} is not supported."
        )

    def _refresh_grant(self, client_id: str, form: dict[str, str]) -> SandboxResponse:
        token = form.get("refresh_token", "")
        if not token:
            return oauth_error(400, "invalid_request", "The 'refresh_token' parameter is missing.")
        record = self._refresh.get(token)
        now = self._clock()
        if (
            record is None
            or not record.valid
            or record.client_id != client_id
            or now - record.last_used > REFRESH_IDLE_SECONDS
        ):
            return oauth_error(400, "invalid_grant", "The refresh token is invalid or expired.")
        scope = record.scope
        requested = form.get("scope")
        if requested:
            if not set(requested.split()) <= set(record.scope.split()):
                return oauth_error(
                    400, "invalid_scope", "The requested scope exceeds the granted scope."
                )
            scope = requested
        record.last_used = now
        return json_response(200, self._token_set(client_id, scope, reuse_refresh=token), _NO_STORE)

    def _code_grant(self, client_id: str, form: dict[str, str]) -> SandboxResponse:
        code = form.get("code", "")
        record = self._codes.get(code)
        bad = oauth_error(400, "invalid_grant", "The authorization code is invalid or has expired.")
        if record is None or record.used or record.expires_at <= self._clock():
            return bad
        record.used = True  # single use, even when this exchange fails
        if record.client_id != client_id or form.get("redirect_uri", "") != record.redirect_uri:
            return bad
        if record.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            if record.code_challenge_method == "S256":
                computed = b64url(hashlib.sha256(verifier.encode()).digest())
            else:
                computed = verifier
            if not verifier or not hmac.compare_digest(computed, record.code_challenge):
                return oauth_error(400, "invalid_grant", "PKCE verification failed.")
        elif self.clients.get(client_id) is None:
            return oauth_error(
                400, "invalid_request", "PKCE code_verifier is required for public clients."
            )
        return json_response(
            200, self._token_set(client_id, record.scope, reuse_refresh=None), _NO_STORE
        )

    def _device_grant(self, client_id: str, form: dict[str, str]) -> SandboxResponse:
        device = self._devices.get(form.get("device_code", ""))
        now = self._clock()
        if device is None or device.client_id != client_id or device.status == "consumed":
            return oauth_error(400, "invalid_grant", "The device code is invalid or expired.")
        if device.expires_at <= now:
            return oauth_error(400, "expired_token", "The device code has expired.")
        if device.status == "denied":
            return oauth_error(
                400,
                "access_denied",
                "The resource owner or authorization server denied the request.",
            )
        if device.status == "approved":
            device.status = "consumed"
            return json_response(
                200, self._token_set(client_id, device.scope, reuse_refresh=None), _NO_STORE
            )
        too_fast = device.last_poll is not None and now - device.last_poll < device.interval
        device.last_poll = now
        if too_fast:
            return oauth_error(400, "slow_down", "The client is polling too frequently.")
        return oauth_error(
            400,
            "authorization_pending",
            "The device authorization is pending. Please try again later.",
        )

    def _scope_problem(self, scope: str) -> SandboxResponse | None:
        names = scope.split()
        if not names:
            return oauth_error(400, "invalid_scope", "The 'scope' parameter is required.")
        unknown = sorted(set(names) - KNOWN_SCOPES)
        if unknown:
            return oauth_error(400, "invalid_scope", f"Unknown scope(s): {' '.join(unknown)}.")
        return None

    def _device_authorize(self, request: SandboxRequest) -> SandboxResponse:
        params = request.query()
        if request.content_type() == "application/x-www-form-urlencoded":
            params.update(request.form())
        client = self._authenticate(request, params)
        if isinstance(client, SandboxResponse):
            return client
        scope = params.get("scope", "")
        problem = self._scope_problem(scope)
        if problem is not None:
            return problem
        now = self._clock()
        device_code = secrets.token_urlsafe(32)
        while True:
            raw = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
            if raw not in self._user_codes:
                break
        user_code = f"{raw[:4]}-{raw[4:]}"
        self._devices[device_code] = DeviceCode(
            device_code=device_code,
            user_code=user_code,
            client_id=client,
            scope=" ".join(scope.split()),
            expires_at=now + self._config.device_expires_in,
            interval=self._config.device_interval,
        )
        self._user_codes[raw] = device_code
        verification_uri = f"{request.base_url}/activate"
        return json_response(
            200,
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": verification_uri,
                "verification_uri_complete": f"{verification_uri}?user_code={user_code}",
                "expires_in": self._config.device_expires_in,
                "interval": self._config.device_interval,
            },
            _NO_STORE,
        )

    def _revoke(self, request: SandboxRequest) -> SandboxResponse:
        """RFC 7009: always 200, the named token no longer works."""
        form = request.form()
        client = self._authenticate(request, form)
        if isinstance(client, SandboxResponse):
            return client
        token = form.get("token", "")
        refresh = self._refresh.get(token)
        if refresh is not None and refresh.client_id == client:
            refresh.valid = False
        access = self._access.get(token)
        if access is not None and access.client_id == client:
            access.expires_at = min(access.expires_at, self._clock())
        return SandboxResponse(200, b"", (("Content-Type", "application/json"),))

    def _authorize(self, request: SandboxRequest) -> SandboxResponse:
        """The consent page of the code/PKCE flows: GET shows it, POST answers with a redirect."""
        params = request.query()
        if request.method == "POST":
            params.update(request.form())
        elif request.method != "GET":
            return oauth_error(405, "invalid_request", "Use GET or POST.")
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        if client_id not in self.clients or not redirect_uri:
            return html_response(
                400, "<h1>Invalid request</h1><p>Unknown client_id or missing redirect_uri.</p>"
            )
        if params.get("response_type") != "code":
            return html_response(400, "<h1>Invalid request</h1><p>response_type must be code.</p>")
        scope = params.get("scope", "")
        if self._scope_problem(scope) is not None:
            return html_response(400, "<h1>Invalid request</h1><p>Invalid scope.</p>")
        if request.method == "GET":
            hidden = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in params.items()
                if k != "decision"
            )
            return html_response(
                200,
                "<!doctype html><title>Authorize</title><h1>Constant Contact sandbox</h1>"
                f"<p>Allow <b>{html.escape(client_id)}</b> access to "
                f"<code>{html.escape(scope)}</code>?</p>"
                f'<form method="post">{hidden}'
                '<button name="decision" value="approve">Allow</button> '
                '<button name="decision" value="deny">Deny</button></form>',
            )
        extra: dict[str, str] = {}
        if params.get("decision") == "approve":
            extra["code"] = self.issue_auth_code(
                client_id,
                redirect_uri,
                scope=" ".join(scope.split()),
                code_challenge=params.get("code_challenge") or None,
                code_challenge_method=params.get("code_challenge_method", "S256") or "S256",
            )
        else:
            extra["error"] = "access_denied"
        if "state" in params:
            extra["state"] = params["state"]
        parts = urlsplit(redirect_uri)
        query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
        location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        return SandboxResponse(302, b"", (("Location", location),))
