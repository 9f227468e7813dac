"""Token file, refresh and login flows (flipsync.ctct.auth)."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from structlog.testing import capture_logs

from flipsync.ctct.auth import (
    TokenManager,
    authorization_url,
    device_login,
    exchange_code,
    read_token_file,
    token_set_from_response,
    token_status,
    write_token_file,
)
from flipsync.ctct.http import RateLimiter, RetryPolicy
from flipsync.ctct.types import ClientSettings, DevicePrompt, TokenSet
from flipsync.errors import (
    ConfigError,
    ExitCode,
    LoginFailed,
    ReauthRequired,
    TransientError,
)

OAUTH = "http://127.0.0.1:8765/oauth2/default/v1"
TOKEN_URL = f"{OAUTH}/token"
DEVICE_URL = f"{OAUTH}/device/authorize"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "s3cr3t-client-secret"


class Clock:
    """A settable wall clock; ``sleep`` moves it forward and records the pause."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture(name="rsps")
def fixture_rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


def make_settings(tmp_path: Path, **overrides: Any) -> ClientSettings:
    values: dict[str, Any] = {
        "oauth_base_url": OAUTH,
        "api_base_url": "http://127.0.0.1:8765/v3",
        "client_id": "client-123",
        "token_file": tmp_path / "tokens.json",
    }
    values.update(overrides)
    return ClientSettings(**values)


def token_set(
    access: str = "access-old", refresh: str = "refresh-old", expires_in: float = 86400
) -> TokenSet:
    return TokenSet(
        access_token=access,
        refresh_token=refresh,
        token_type="Bearer",
        scope="contact_data offline_access",
        expires_at=NOW + timedelta(seconds=expires_in),
        obtained_at=NOW - timedelta(days=1),
    )


def manager(
    settings: ClientSettings,
    clock: Clock | None = None,
    sleep: Callable[[float], None] | None = None,
) -> TokenManager:
    clock = clock or Clock()
    return TokenManager(
        settings,
        requests.Session(),
        clock=clock,
        sleep=sleep or clock.sleep,
        limiter=RateLimiter(0),
        retry=RetryPolicy.no_wait(max_attempts=3),
        lock_timeout=5,
    )


def form(call: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(call.request.body).items()}


def refreshed(access: str = "access-new", refresh: str | None = "refresh-new") -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": 86400}
    if refresh:
        body["refresh_token"] = refresh
    return body


class TestTokenFile:
    def test_round_trip_and_format(self, tmp_path: Path) -> None:
        """The file is the documented JSON object with UTC ISO times."""
        path = tmp_path / "tokens.json"
        write_token_file(path, token_set())
        data = json.loads(path.read_text())
        assert data == {
            "access_token": "access-old",
            "refresh_token": "refresh-old",
            "token_type": "Bearer",
            "scope": "contact_data offline_access",
            "expires_at": "2026-03-02T12:00:00Z",
            "obtained_at": "2026-02-28T12:00:00Z",
        }
        assert token_set() == read_token_file(path)

    def test_private_from_creation_and_no_temp_left(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Even with a permissive umask the temp file is 0600 before it is renamed into place."""
        modes: list[int] = []
        original = Path.replace

        def spy(self: Path, target: Any) -> Any:
            modes.append(stat.S_IMODE(self.stat().st_mode))
            return original(self, target)

        monkeypatch.setattr(Path, "replace", spy)
        old_umask = os.umask(0)
        try:
            write_token_file(tmp_path / "tokens.json", token_set())
        finally:
            os.umask(old_umask)
        assert modes == [0o600]
        assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600
        assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]

    def test_missing_file_says_how_to_fix(self, tmp_path: Path) -> None:
        """No file: ReauthRequired naming the path and `flipsync auth login`."""
        path = tmp_path / "nope.json"
        with pytest.raises(ReauthRequired) as caught:
            read_token_file(path)
        assert str(path) in str(caught.value)
        assert "flipsync auth login" in str(caught.value)
        assert "place a token file" in str(caught.value)

    @pytest.mark.parametrize(
        "content",
        [
            '{"access_token": "leaky-token-value", "refresh_token": ',
            '{"access_token": "leaky-token-value"}',
            '{"access_token": "leaky-token-value", "refresh_token": "r", "expires_at": "soon"}',
            "[]",
        ],
    )
    def test_corrupt_file_is_reauth_without_leaking(self, tmp_path: Path, content: str) -> None:
        """A broken file is ReauthRequired; the message quotes none of its content."""
        path = tmp_path / "tokens.json"
        path.write_text(content)
        with pytest.raises(ReauthRequired) as caught:
            read_token_file(path)
        assert str(path) in str(caught.value)
        assert "leaky" not in str(caught.value)

    def test_hand_placed_minimal_file(self, tmp_path: Path) -> None:
        """Only the tokens and expires_at are required."""
        path = tmp_path / "tokens.json"
        path.write_text(
            '{"access_token": "a", "refresh_token": "r", "expires_at": "2026-03-02T12:00:00Z"}'
        )
        loaded = read_token_file(path)
        assert (loaded.token_type, loaded.scope) == ("Bearer", "")
        assert NOW + timedelta(days=1) == loaded.expires_at

    def test_token_set_from_response(self) -> None:
        """expires_at = now + expires_in; a missing refresh token keeps the previous one."""
        fresh = token_set_from_response(refreshed(refresh=None), NOW, previous=token_set())
        assert fresh.refresh_token == "refresh-old"
        assert NOW + timedelta(days=1) == fresh.expires_at
        assert fresh.obtained_at == NOW

    def test_repr_hides_secrets(self) -> None:
        """Tokens and the client secret never show up in a repr (and so in a log)."""
        assert "access-old" not in repr(token_set())
        assert "refresh-old" not in repr(token_set())
        assert SECRET not in repr(ClientSettings(client_secret=SECRET))

    def test_token_status(self) -> None:
        """Status shows expiry and the days left before the refresh token dies of disuse."""
        status = token_status(token_set(expires_in=3600), NOW)
        assert status["access_token_seconds_left"] == 3600
        assert status["access_token_expired"] is False
        assert status["refresh_token_days_left"] == 179.0
        assert status["refresh_token_idle_expiry_at"] == "2026-08-27T12:00:00Z"
        assert status["offline_access"] is True
        assert (
            token_status(token_set(), NOW, NOW - timedelta(days=170))["refresh_token_days_left"]
            == 10.0
        )
        assert "access-old" not in repr(status)


class TestRefresh:
    def test_fresh_token_is_used_without_a_request(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """A token valid beyond the margin is handed out as is."""
        settings = make_settings(tmp_path)
        write_token_file(settings.token_file, token_set(expires_in=301))
        tokens = manager(settings)
        assert tokens.access_token() == "access-old"
        assert len(rsps.calls) == 0

    def test_refresh_within_the_margin_writes_before_use(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """Near expiry: one refresh; the rotated set is on disk (0600) when the token is returned."""
        settings = make_settings(tmp_path)
        write_token_file(settings.token_file, token_set(expires_in=299))
        rsps.post(TOKEN_URL, json=refreshed())
        tokens = manager(settings)
        assert tokens.access_token() == "access-new"
        on_disk = json.loads(settings.token_file.read_text())
        assert (on_disk["access_token"], on_disk["refresh_token"]) == ("access-new", "refresh-new")
        assert stat.S_IMODE(settings.token_file.stat().st_mode) == 0o600
        assert tokens.access_token() == "access-new"  # cached, no second refresh
        assert len(rsps.calls) == 1
        assert dict(tokens.request_counts) == {"token": 1}
        lock = settings.token_file.with_name("tokens.json.lock")
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600

    def test_short_lived_tokens_are_not_refreshed_on_every_call(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """A token living less than the margin is refreshed at half its life, not at once."""
        settings = make_settings(tmp_path)
        short = TokenSet(
            "access-old", "refresh-old", "Bearer", "", NOW + timedelta(seconds=200), NOW
        )
        write_token_file(settings.token_file, short)
        clock = Clock()
        tokens = manager(settings, clock)
        assert tokens.access_token() == "access-old"
        clock.now += timedelta(seconds=101)
        rsps.post(TOKEN_URL, json=refreshed())
        assert tokens.access_token() == "access-new"
        assert len(rsps.calls) == 1

    def test_public_client_sends_client_id_in_the_form(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """Without a secret: client_id in the form, no Authorization header."""
        settings = make_settings(tmp_path)
        write_token_file(settings.token_file, token_set(expires_in=0))
        rsps.post(TOKEN_URL, json=refreshed())
        manager(settings).access_token()
        assert form(rsps.calls[0]) == {
            "grant_type": "refresh_token",
            "refresh_token": "refresh-old",
            "client_id": "client-123",
        }
        assert "Authorization" not in rsps.calls[0].request.headers

    def test_confidential_client_uses_basic_auth(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """With a secret: HTTP Basic client auth, and no client_id in the form."""
        settings = make_settings(tmp_path, client_secret=SECRET)
        write_token_file(settings.token_file, token_set(expires_in=0))
        rsps.post(TOKEN_URL, json=refreshed())
        manager(settings).access_token()
        expected = base64.b64encode(f"client-123:{SECRET}".encode()).decode()
        assert f"Basic {expected}" == rsps.calls[0].request.headers["Authorization"]
        assert "client_id" not in form(rsps.calls[0])

    def test_long_lived_refresh_token_is_kept(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """An answer without a refresh token keeps the one on disk."""
        settings = make_settings(tmp_path)
        write_token_file(settings.token_file, token_set(expires_in=0))
        rsps.post(TOKEN_URL, json=refreshed(refresh=None))
        manager(settings).access_token()
        assert read_token_file(settings.token_file).refresh_token == "refresh-old"

    def test_invalid_grant_needs_a_login(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """invalid_grant is ReauthRequired naming the fix; the file is left alone."""
        settings = make_settings(tmp_path, client_secret=SECRET)
        write_token_file(settings.token_file, token_set(expires_in=0))
        rsps.post(
            TOKEN_URL,
            status=400,
            json={"error": "invalid_grant", "error_description": "bad token refresh-old"},
        )
        with capture_logs() as logs, pytest.raises(ReauthRequired) as caught:
            manager(settings).access_token()
        message = str(caught.value)
        assert "invalid_grant" in message
        assert "flipsync auth login" in message
        for secret in ("refresh-old", "access-old", SECRET):
            assert secret not in message
            assert secret not in repr(logs)
        assert caught.value.exit_code == ExitCode.REAUTH
        assert read_token_file(settings.token_file).refresh_token == "refresh-old"

    def test_token_endpoint_outage_is_transient(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """5xx from the token endpoint: bounded retries, then TransientError."""
        settings = make_settings(tmp_path)
        write_token_file(settings.token_file, token_set(expires_in=0))
        rsps.post(TOKEN_URL, status=503)
        with pytest.raises(TransientError, match="refresh"):
            manager(settings).access_token()
        assert len(rsps.calls) == 3

    def test_token_endpoint_blip_recovers(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """A connection error then a good answer refreshes normally."""
        settings = make_settings(tmp_path)
        write_token_file(settings.token_file, token_set(expires_in=0))
        rsps.post(TOKEN_URL, body=requests.ConnectionError())
        rsps.post(TOKEN_URL, json=refreshed())
        assert manager(settings).access_token() == "access-new"

    def test_refresh_after_401_uses_a_token_another_process_rotated(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """When the file already holds a different fresh token, no refresh is sent."""
        settings = make_settings(tmp_path)
        write_token_file(settings.token_file, token_set())
        tokens = manager(settings)
        assert tokens.access_token() == "access-old"
        write_token_file(
            settings.token_file, token_set(access="access-other", refresh="refresh-other")
        )
        assert tokens.refresh("access-old") == "access-other"
        assert len(rsps.calls) == 0

    def test_refresh_after_401_forces_a_refresh_of_the_same_token(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """CC refused a token the file still holds: refresh although it looks fresh."""
        settings = make_settings(tmp_path)
        write_token_file(settings.token_file, token_set())
        rsps.post(TOKEN_URL, json=refreshed())
        assert manager(settings).refresh("access-old") == "access-new"
        assert len(rsps.calls) == 1

    def test_two_managers_refresh_once(self, tmp_path: Path, rsps: responses.RequestsMock) -> None:
        """Two managers (as two cron runs) racing on one file send a single refresh."""
        settings = make_settings(tmp_path)
        write_token_file(settings.token_file, token_set(expires_in=10))
        calls: list[str] = []
        waiting, finished = threading.Event(), threading.Event()

        def wait_for_the_lock(_seconds: float) -> None:
            waiting.set()  # this manager found the token lock taken
            finished.wait(5)  # (instead of sleeping) until the holder is done

        def token_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
            calls.append("refresh")
            # the refresh is in flight, holding the lock, while the other manager waits for it
            assert waiting.wait(5)
            return (
                200,
                {},
                json.dumps(
                    refreshed(access=f"access-{len(calls)}", refresh=f"refresh-{len(calls)}")
                ),
            )

        rsps.add_callback(responses.POST, TOKEN_URL, callback=token_endpoint)
        results: list[str] = []
        barrier = threading.Barrier(2)

        def run() -> None:
            tokens = manager(settings, sleep=wait_for_the_lock)
            barrier.wait()
            results.append(tokens.access_token())
            finished.set()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert calls == ["refresh"]
        assert results == ["access-1", "access-1"]
        assert read_token_file(settings.token_file).refresh_token == "refresh-1"


class TestDeviceLogin:
    def device(
        self, rsps: responses.RequestsMock, interval: int = 5, expires_in: int = 600
    ) -> None:
        rsps.post(
            DEVICE_URL,
            json={
                "device_code": "dev-code-xyz",
                "user_code": "ABCD-EFGH",
                "verification_uri": "https://example.test/activate",
                "verification_uri_complete": "https://example.test/activate?user_code=ABCD-EFGH",
                "expires_in": expires_in,
                "interval": interval,
            },
        )

    def login(
        self, settings: ClientSettings, clock: Clock, prompts: list[DevicePrompt]
    ) -> TokenSet:
        return device_login(
            settings,
            requests.Session(),
            on_prompt=prompts.append,
            sleep=clock.sleep,
            clock=clock,
            retry=RetryPolicy.no_wait(),
        )

    def test_pending_slow_down_then_success(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """Polls at the interval, +5 s after slow_down, and returns the tokens."""
        self.device(rsps)
        rsps.post(TOKEN_URL, status=400, json={"error": "authorization_pending"})
        rsps.post(TOKEN_URL, status=400, json={"error": "slow_down"})
        rsps.post(TOKEN_URL, status=400, json={"error": "authorization_pending"})
        rsps.post(TOKEN_URL, json={**refreshed(), "scope": "contact_data offline_access"})
        clock, prompts = Clock(), []
        tokens = self.login(make_settings(tmp_path), clock, prompts)
        assert (tokens.access_token, tokens.refresh_token) == ("access-new", "refresh-new")
        assert clock.sleeps == [5, 5, 10, 10]
        assert [
            DevicePrompt(
                verification_uri="https://example.test/activate",
                verification_uri_complete="https://example.test/activate?user_code=ABCD-EFGH",
                user_code="ABCD-EFGH",
                expires_in=600,
            )
        ] == prompts
        start = form(rsps.calls[0])
        assert {k: start[k] for k in ("client_id", "scope", "response_type")} == {
            "client_id": "client-123",
            "scope": "contact_data offline_access",
            "response_type": "code",
        }
        assert start["state"]
        assert form(rsps.calls[1]) == {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": "dev-code-xyz",
            "client_id": "client-123",
        }
        assert not (tmp_path / "tokens.json").exists()

    @pytest.mark.parametrize(
        ("error", "words"), [("access_denied", "denied"), ("expired_token", "expired")]
    )
    def test_denied_or_expired(
        self, tmp_path: Path, rsps: responses.RequestsMock, error: str, words: str
    ) -> None:
        """A refusal ends the login with LoginFailed (exit code REAUTH)."""
        self.device(rsps)
        rsps.post(TOKEN_URL, status=400, json={"error": error})
        with pytest.raises(LoginFailed, match=words) as caught:
            self.login(make_settings(tmp_path), Clock(), [])
        assert caught.value.exit_code == ExitCode.REAUTH
        assert "dev-code-xyz" not in str(caught.value)

    def test_deadline(self, tmp_path: Path, rsps: responses.RequestsMock) -> None:
        """Nobody approves within expires_in: LoginFailed without further polling."""
        self.device(rsps, interval=5, expires_in=12)
        rsps.post(TOKEN_URL, status=400, json={"error": "authorization_pending"})
        with pytest.raises(LoginFailed, match="not approved within 12 s"):
            self.login(make_settings(tmp_path), Clock(), [])
        assert len(rsps.calls) == 3  # authorize + polls at 5 s and 10 s; 15 s is past the deadline

    def test_odd_numbers_fall_back_to_defaults(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """A string or missing interval/expires_in uses the RFC 8628 defaults (5 s, 600 s)."""
        rsps.post(
            DEVICE_URL,
            json={
                "device_code": "d",
                "user_code": "U",
                "verification_uri": "https://x.test",
                "interval": "soon",
            },
        )
        rsps.post(TOKEN_URL, json=refreshed())
        clock, prompts = Clock(), []
        self.login(make_settings(tmp_path), clock, prompts)
        assert clock.sleeps == [5]
        assert prompts[0].expires_in == 600
        assert prompts[0].verification_uri_complete is None

    def test_app_not_set_up_for_device_flow(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """A refused start names the likely cause."""
        rsps.post(DEVICE_URL, status=400, json={"error": "unauthorized_client"})
        with pytest.raises(LoginFailed, match="Device Flow"):
            self.login(make_settings(tmp_path), Clock(), [])


class TestAuthorizationCode:
    def test_exchange_needs_the_secret(self, tmp_path: Path) -> None:
        """Without a client secret the code flow stops with a config error before any request."""
        with pytest.raises(ConfigError, match="client_secret"):
            exchange_code(
                make_settings(tmp_path), requests.Session(), "code-1", "https://localhost"
            )

    def test_exchange(self, tmp_path: Path, rsps: responses.RequestsMock) -> None:
        """The code is traded with Basic auth for a token set."""
        rsps.post(TOKEN_URL, json=refreshed())
        settings = make_settings(tmp_path, client_secret=SECRET)
        tokens = exchange_code(
            settings, requests.Session(), "code-1", "https://localhost", clock=Clock()
        )
        assert tokens.access_token == "access-new"
        assert form(rsps.calls[0]) == {
            "grant_type": "authorization_code",
            "code": "code-1",
            "redirect_uri": "https://localhost",
        }
        assert rsps.calls[0].request.headers["Authorization"].startswith("Basic ")

    def test_refused_code(self, tmp_path: Path, rsps: responses.RequestsMock) -> None:
        """A used or expired code is LoginFailed; the code itself is not echoed."""
        rsps.post(
            TOKEN_URL,
            status=400,
            json={"error": "invalid_grant", "error_description": "code code-1 used"},
        )
        settings = make_settings(tmp_path, client_secret=SECRET)
        with pytest.raises(LoginFailed, match="5 minutes") as caught:
            exchange_code(settings, requests.Session(), "code-1", "https://localhost")
        assert "code-1" not in str(caught.value)

    def test_authorization_url(self, tmp_path: Path) -> None:
        """The URL carries client, redirect, scope and state, on the configured server."""
        url = authorization_url(make_settings(tmp_path), "https://localhost/cb", "st-1")
        parts = urlsplit(url)
        assert f"{OAUTH}/authorize" == f"{parts.scheme}://{parts.netloc}{parts.path}"
        assert parse_qs(parts.query) == {
            "client_id": ["client-123"],
            "redirect_uri": ["https://localhost/cb"],
            "response_type": ["code"],
            "scope": ["contact_data offline_access"],
            "state": ["st-1"],
        }
        assert "scope=contact_data%20offline_access" in url


def test_token_with_blanks_is_refused_without_quoting_it(tmp_path: Path) -> None:
    """A token that would break the Authorization header is refused; the message never shows it."""
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "access_token": " secret-access\n",
                "refresh_token": "secret-refresh",
                "expires_at": "2026-03-02T12:00:00Z",
            }
        )
    )
    with pytest.raises(ReauthRequired) as caught:
        read_token_file(path)
    assert "blanks or control characters" in str(caught.value)
    assert "secret-access" not in str(caught.value)
