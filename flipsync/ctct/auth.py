"""OAuth for Constant Contact: the token file, refreshing, and the two login flows.

This module owns everything that touches a token or the client secret: reading and writing the
token file, refreshing access tokens (once, under a lock, across processes), the device flow
for headless logins, and the authorization-code exchange. No token, secret, code or
Authorization header is ever logged or put into an exception message.

The token file and its format live in ``flipsync.ctct.token_file``.

Refresh rules
-------------
The access token is refreshed only when it expires within ``refresh_margin_seconds`` (or when CC
answers 401), because the token endpoint allows 1 request per second. A refresh takes an
exclusive lock on ``<token_file>.lock`` (``flipsync.lock``) and re-reads the file first: when another process
has already put a different, fresh access token there, that one is used and no refresh is sent.
With rotating refresh tokens the old refresh token dies at the refresh, so the new set is
written to disk before the new access token is used. A refresh token not used for 180 days
expires; the 15-minute cron keeps it alive, and ``token_status`` says how much time is left.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import requests
import structlog
from requests.auth import HTTPBasicAuth

from flipsync.ctct.http import (
    HttpClient,
    Limiter,
    RetryableFailure,
    RetryPolicy,
    process_limiter,
    request_path,
    utc_now,
)
from flipsync.ctct.token_file import REFRESH_TOKEN_IDLE_DAYS as REFRESH_TOKEN_IDLE_DAYS
from flipsync.ctct.token_file import _iso
from flipsync.ctct.token_file import read_token_file as read_token_file
from flipsync.ctct.token_file import token_set_from_response as token_set_from_response
from flipsync.ctct.token_file import token_status as token_status
from flipsync.ctct.token_file import write_token_file as write_token_file
from flipsync.ctct.types import ClientSettings, DevicePrompt, TokenSet
from flipsync.errors import (
    ConfigError,
    LoginFailed,
    ReauthRequired,
    RequestRefused,
    TransientError,
    UnexpectedResponse,
)
from flipsync.lock import LockBusy, locked_file

log = structlog.get_logger(__name__)

DEFAULT_SCOPE = "contact_data offline_access"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_LOGIN = "run `flipsync auth login`"


# --- token endpoint -----------------------------------------------------------------------


def _token_url(settings: ClientSettings) -> str:
    return settings.oauth_base_url.rstrip("/") + "/token"


def _client_auth(
    settings: ClientSettings, form: dict[str, str]
) -> tuple[dict[str, str], HTTPBasicAuth | None]:
    """HTTP Basic when there is a secret (confidential app), else client_id in the form."""
    if not settings.client_id:
        raise ConfigError(
            "Constant Contact settings",
            ["client_id is empty: set it to the API key of your Constant Contact application"],
        )
    if settings.client_secret:
        return form, HTTPBasicAuth(settings.client_id, settings.client_secret)
    return {**form, "client_id": settings.client_id}, None


def _post_form(
    http: HttpClient, settings: ClientSettings, url: str, form: dict[str, str]
) -> requests.Response:
    """POST a form to the OAuth server with bounded retries on 429, 5xx and network errors."""
    body, auth = _client_auth(settings, form)

    def attempt() -> requests.Response:
        try:
            response = http.send("token", "POST", url, data=body, auth=auth)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RetryableFailure(type(exc).__name__) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableFailure(f"HTTP {response.status_code}", status=response.status_code)
        return response

    return http.run(attempt, kind="token", method="POST", url=url)


def _oauth_error(response: requests.Response, *hide: str | None) -> tuple[str | None, str]:
    """The OAuth ``error`` code and a redacted description of a token-endpoint refusal."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return None, f"HTTP {response.status_code}"
    error = data.get("error") if isinstance(data.get("error"), str) else None
    description = data.get("error_description")
    text = error or f"HTTP {response.status_code}"
    if isinstance(description, str) and description:
        text = f"{text}: {' '.join(description.split())[:200]}"
    return error, redact(text, *hide)


def redact(text: str, *values: str | None) -> str:
    """``text`` with every given secret value replaced by [redacted]."""
    for value in values:
        if value and len(value) >= 4:
            text = text.replace(value, "[redacted]")
    return text


def _json_body(response: requests.Response, what: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise UnexpectedResponse(f"The Constant Contact {what} answer is not a JSON object")
    return data


# --- refreshing ---------------------------------------------------------------------------


class TokenManager:
    """Hands out valid access tokens for one token file, refreshing only when needed.

    Safe to share between threads, and between processes through the lock file.
    """

    def __init__(
        self,
        settings: ClientSettings,
        session: requests.Session,
        *,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        lock_timeout: float = 60.0,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.path = Path(settings.token_file)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._clock = clock
        self._sleep = sleep
        self._lock_timeout = lock_timeout
        self._margin = timedelta(seconds=settings.refresh_margin_seconds)
        self._http = HttpClient(
            session,
            timeout=settings.timeout_seconds,
            limiter=limiter if limiter is not None else process_limiter(1.0, key="token"),
            retry=retry if retry is not None else RetryPolicy(max_attempts=3, sleep=sleep),
            clock=clock,
        )
        self._thread_lock = threading.RLock()
        self._cached: TokenSet | None = None

    @property
    def request_counts(self) -> Counter[str]:
        """Requests this manager sent to the token endpoint (kind "token")."""
        return self._http.request_counts

    def current(self) -> TokenSet:
        """The token set in use (read from the file on first use)."""
        with self._thread_lock:
            if self._cached is None:
                self._cached = read_token_file(self.path)
            return self._cached

    def access_token(self) -> str:
        """A valid access token; refreshes only when it expires within the margin."""
        with self._thread_lock:
            token_set = self.current()
            if self._fresh(token_set):
                return token_set.access_token
            return self._refresh(token_set.access_token)

    def refresh(self, stale_access_token: str) -> str:
        """A new access token after CC refused ``stale_access_token`` (the 401 path)."""
        with self._thread_lock:
            return self._refresh(stale_access_token)

    def _fresh(self, token_set: TokenSet) -> bool:
        # The margin never exceeds half the token's lifetime: a short-lived token (a stand-in,
        # or a changed CC policy) must not be refreshed before every request.
        margin = min(self._margin, (token_set.expires_at - token_set.obtained_at) / 2)
        return token_set.expires_at - self._clock() > margin

    def _refresh(self, stale_access_token: str) -> str:
        with self._file_lock():
            on_disk = read_token_file(self.path)
            if on_disk.access_token != stale_access_token and self._fresh(on_disk):
                # Another process (or manager) refreshed while we waited: use its token.
                log.info("token_refreshed_elsewhere", expires_at=_iso(on_disk.expires_at))
                self._cached = on_disk
                return on_disk.access_token
            new = self._request_refresh(on_disk)
            try:
                write_token_file(self.path, new)
            except OSError as exc:
                raise ReauthRequired(
                    f"Refreshed the Constant Contact token but could not save it to {self.path} "
                    f"({exc.strerror or type(exc).__name__}). Fix the file system; if the next "
                    f"run still fails, {_LOGIN}."
                ) from None
            self._cached = new
            log.info(
                "token_refreshed",
                expires_at=_iso(new.expires_at),
                refresh_token_rotated=new.refresh_token != on_disk.refresh_token,
            )
            return new.access_token

    def _request_refresh(self, token_set: TokenSet) -> TokenSet:
        url = _token_url(self.settings)
        form = {"grant_type": "refresh_token", "refresh_token": token_set.refresh_token}
        try:
            response = _post_form(self._http, self.settings, url, form)
        except TransientError as exc:
            raise TransientError(
                f"Could not refresh the Constant Contact access token: {exc}"
            ) from exc
        if response.status_code == 200:
            return token_set_from_response(
                _json_body(response, "token"), self._clock(), previous=token_set
            )
        error, text = _oauth_error(
            response, token_set.refresh_token, token_set.access_token, self.settings.client_secret
        )
        if response.status_code in (400, 401):
            raise ReauthRequired(
                f"Constant Contact refused to refresh the access token ({text}). The refresh "
                f"token is expired, revoked or already used: {_LOGIN} (token file {self.path})."
            )
        raise RequestRefused(
            f"The Constant Contact token endpoint {request_path(url)} answered "
            f"HTTP {response.status_code} ({text}); check oauth_base_url",
            status=response.status_code,
            error_key=error,
        )

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """The token file's lock (``<token_file>.lock``, 0600), waiting at most lock_timeout."""
        try:
            with locked_file(
                self.lock_path,
                wait_seconds=self._lock_timeout,
                poll_seconds=0.02,
                clock=lambda: self._clock().timestamp(),
                sleep=self._sleep,
            ):
                yield
        except LockBusy:
            raise TransientError(
                f"Another process held {self.lock_path} for over "
                f"{self._lock_timeout:.0f} s while refreshing the token; "
                "the next run tries again"
            ) from None


# --- logins -------------------------------------------------------------------------------


def device_login(
    settings: ClientSettings,
    session: requests.Session,
    *,
    scope: str = DEFAULT_SCOPE,
    on_prompt: Callable[[DevicePrompt], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = utc_now,
    retry: RetryPolicy | None = None,
) -> TokenSet:
    """Log in with the OAuth device flow (no secret, no redirect URI) and return the tokens.

    Shows the person where to go through ``on_prompt``, then polls the token endpoint at the
    server's interval (plus 5 s per ``slow_down``) until they approve, deny, or the code
    expires. Writes nothing; the caller saves the token file.

    Raises:
        LoginFailed: denied, expired, or refused (exit code REAUTH).
        TransientError: the OAuth server kept failing.
    """
    http = HttpClient(
        session,
        timeout=settings.timeout_seconds,
        retry=retry if retry is not None else RetryPolicy(max_attempts=3, sleep=sleep),
        clock=clock,
    )
    authorize_url = settings.oauth_base_url.rstrip("/") + "/device/authorize"
    form = {"scope": scope, "response_type": "code", "state": secrets.token_urlsafe(16)}
    response = _post_form(http, settings, authorize_url, form)
    if response.status_code != 200:
        _, text = _oauth_error(response, settings.client_secret)
        raise LoginFailed(
            f"Constant Contact refused to start a device login ({text}). Check client_id and "
            "that the application allows the Device Flow in the developer portal."
        )
    data = _json_body(response, "device authorization")
    device_code, user_code = data.get("device_code"), data.get("user_code")
    verification_uri = data.get("verification_uri")
    if not (
        isinstance(device_code, str)
        and isinstance(user_code, str)
        and isinstance(verification_uri, str)
    ):
        raise UnexpectedResponse("The device authorization answer lacks a code or a URI")
    expires_in = _positive_int(data.get("expires_in"), 600)
    interval = max(1, _positive_int(data.get("interval"), 5))
    complete = data.get("verification_uri_complete")
    on_prompt(
        DevicePrompt(
            verification_uri=verification_uri,
            verification_uri_complete=complete if isinstance(complete, str) else None,
            user_code=user_code,
            expires_in=expires_in,
        )
    )
    log.info("device_login_waiting", expires_in=expires_in, interval=interval)
    deadline = clock() + timedelta(seconds=expires_in)
    token_url = _token_url(settings)
    poll = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
    while True:
        sleep(interval)
        if clock() >= deadline:
            raise LoginFailed(
                f"The device login was not approved within {expires_in} s; {_LOGIN} again."
            )
        response = _post_form(http, settings, token_url, poll)
        if response.status_code == 200:
            log.info("device_login_approved")
            return token_set_from_response(_json_body(response, "token"), clock())
        error, text = _oauth_error(response, device_code, settings.client_secret)
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            log.info("device_login_slow_down", interval=interval)
            continue
        if error == "access_denied":
            raise LoginFailed(f"The device login was denied in the browser; {_LOGIN} again.")
        if error == "expired_token":
            raise LoginFailed(f"The device login code expired before approval; {_LOGIN} again.")
        raise LoginFailed(f"Constant Contact refused the device login ({text}); {_LOGIN} again.")


def _positive_int(value: object, default: int) -> int:
    """A count of seconds from an OAuth answer; anything unusable gives the RFC default."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float | str):
        try:
            number = int(float(value))
        except ValueError:
            return default
        return number if number > 0 else default
    return default


def authorization_url(
    settings: ClientSettings, redirect_uri: str, state: str, *, scope: str = DEFAULT_SCOPE
) -> str:
    """The browser URL that starts the authorization-code flow."""
    query = urlencode(
        {
            "client_id": settings.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": scope,
            "state": state,
        },
        quote_via=quote,
    )
    return f"{settings.oauth_base_url.rstrip('/')}/authorize?{query}"


def exchange_code(
    settings: ClientSettings,
    session: requests.Session,
    code: str,
    redirect_uri: str,
    *,
    clock: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
) -> TokenSet:
    """Trade an authorization code for tokens (needs the client secret). Writes nothing.

    Raises:
        ConfigError: no client secret is configured.
        LoginFailed: CC refused the code (expired after 5 minutes, or used already).
    """
    if not settings.client_secret:
        raise ConfigError(
            "Constant Contact settings",
            [
                "client_secret is not set: the authorization-code login needs it (set the "
                "environment variable the config names), or use the device login, which needs "
                "no secret"
            ],
        )
    http = HttpClient(
        session,
        timeout=settings.timeout_seconds,
        retry=retry if retry is not None else RetryPolicy(max_attempts=3, sleep=sleep),
        clock=clock,
    )
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    response = _post_form(http, settings, _token_url(settings), form)
    if response.status_code == 200:
        return token_set_from_response(_json_body(response, "token"), clock())
    _, text = _oauth_error(response, code, settings.client_secret)
    raise LoginFailed(
        f"Constant Contact refused the authorization code ({text}). A code works once and "
        f"only for 5 minutes, with the same redirect URI: {_LOGIN} again."
    )
