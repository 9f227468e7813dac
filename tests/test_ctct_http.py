"""Rate limiting, retries and error mapping under the Constant Contact client (flipsync.ctct.http)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import responses
from structlog.testing import capture_logs

from flipsync.ctct.http import (
    HttpClient,
    OutcomeUnknown,
    RateLimiter,
    RetryPolicy,
    cc_errors,
    describe_errors,
    next_utc_midnight,
    parse_retry_after,
    process_limiter,
)
from flipsync.errors import (
    ExitCode,
    QuotaExceeded,
    ReauthRequired,
    RequestRefused,
    TransientError,
)

API = "http://127.0.0.1:8765/v3"
LISTS = f"{API}/contact_lists"
NOW = datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC)
THROTTLED = {"error_key": "throttled", "error_message": "Too Many Requests"}


class StubTokens:
    """A token source that hands out tok-1, and tok-2 after a refresh."""

    def __init__(self) -> None:
        self.token = "tok-1"
        self.refreshed: list[str] = []

    def access_token(self) -> str:
        return self.token

    def refresh(self, stale_access_token: str) -> str:
        self.refreshed.append(stale_access_token)
        self.token = "tok-2"
        return self.token


class Recorder:
    """Collects the pauses a RetryPolicy asks for, without sleeping."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture(name="rsps")
def fixture_rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture(name="pauses")
def fixture_pauses() -> Recorder:
    return Recorder()


def make_http(pauses: Recorder, *, attempts: int = 3, **policy: Any) -> HttpClient:
    retry = RetryPolicy(
        max_attempts=attempts, base_wait=1.0, max_wait=30.0, jitter=0.5, sleep=pauses, **policy
    )
    return HttpClient(requests.Session(), timeout=5, retry=retry, clock=lambda: NOW)


def get(http: HttpClient, url: str = LISTS, tokens: StubTokens | None = None) -> Any:
    return http.call("lists", "GET", url, tokens=tokens or StubTokens(), idempotent=True)


class TestRateLimiter:
    def test_no_more_than_rate_starts_in_any_second(self) -> None:
        """With a fake clock, 4/s spaces starts 0.2625 s apart (5% slack), never 5 in a second."""
        now = [0.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds

        limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
        starts = []
        for _ in range(20):
            limiter.acquire()
            starts.append(now[0])
        assert pytest.approx(19 * 0.2625) == starts[-1]
        for first in starts:
            assert sum(1 for s in starts if first <= s <= first + 1.0) <= 4  # closed window

    def test_idle_time_is_not_banked(self) -> None:
        """After a pause the next request goes at once, but the one after is spaced again."""
        now = [0.0]
        limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=lambda s: None)
        limiter.acquire()
        now[0] = 10.0
        assert limiter.acquire() == 0.0
        assert pytest.approx(0.2625) == limiter.acquire()

    def test_threads_share_one_spacing(self) -> None:
        """Four threads through one limiter at 200/s need at least 19 intervals for 20 starts."""
        limiter = RateLimiter(200.0)
        began = time.monotonic()
        threads = [
            threading.Thread(target=lambda: [limiter.acquire() for _ in range(5)]) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert time.monotonic() - began >= 19 / 200 - 0.001

    def test_zero_rate_disables(self) -> None:
        """rate <= 0 never waits."""
        limiter = RateLimiter(0, sleep=lambda s: pytest.fail("slept"))
        assert limiter.acquire() == 0.0

    def test_process_limiter_is_shared(self) -> None:
        """Every client of a process gets the same limiter; the token endpoint its own."""
        assert process_limiter(4.0) is process_limiter(4.0)
        assert process_limiter(1.0, key="token") is not process_limiter(1.0)


class TestRetryPolicy:
    def test_wait_grows_is_capped_and_jitter_is_bounded(self) -> None:
        """Exponential from base_wait, capped at max_wait, plus at most `jitter`."""
        policy = RetryPolicy(base_wait=1.0, max_wait=5.0, jitter=0.5)
        for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
            for _ in range(50):
                assert base <= policy.wait_seconds(attempt) <= base + 0.5

    def test_retry_after_wins_when_longer(self) -> None:
        """A Retry-After longer than the backoff is honoured."""
        policy = RetryPolicy(base_wait=1.0, jitter=0.0)
        assert policy.wait_seconds(1, retry_after=7.0) == 7.0
        assert policy.wait_seconds(1, retry_after=0.5) == 1.0


class TestRateLimitAnswers:
    def test_throttled_then_success(self, rsps: responses.RequestsMock, pauses: Recorder) -> None:
        """429 throttled backs off with bounded jitter and tries again."""
        rsps.get(LISTS, status=429, json=THROTTLED)
        rsps.get(LISTS, status=429, json=THROTTLED)
        rsps.get(LISTS, json={"lists": []})
        http = make_http(pauses)
        assert get(http).status_code == 200
        assert len(rsps.calls) == 3
        assert len(pauses.sleeps) == 2
        assert 1.0 <= pauses.sleeps[0] <= 1.5
        assert 2.0 <= pauses.sleeps[1] <= 2.5
        assert http.request_counts["lists"] == 3

    def test_throttled_for_too_long_gives_up(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """Throttling that outlasts the attempts becomes a TransientError."""
        rsps.get(LISTS, status=429, json=THROTTLED)
        with pytest.raises(TransientError, match="throttled"):
            get(make_http(pauses))
        assert len(rsps.calls) == 3

    def test_quota_exceeded_stops_at_once_until_midnight_utc(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """quota_exceeded is not retried and says when the quota resets."""
        rsps.get(LISTS, status=429, json={"error_key": "quota_exceeded", "error_message": "Limit"})
        with pytest.raises(QuotaExceeded) as caught:
            get(make_http(pauses))
        assert datetime(2026, 3, 2, tzinfo=UTC) == caught.value.reset_at
        assert caught.value.exit_code == ExitCode.QUOTA
        assert len(rsps.calls) == 1
        assert pauses.sleeps == []

    def test_queued_activities_limit_waits_for_the_next_run(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """The 1,000-queued-activities 429 is a TransientError, not retried now."""
        message = "Too many requests. You exceeded 1,000 queued activities for this user account."
        rsps.post(
            f"{API}/activities/contacts_json_import", status=429, json=[{"error_message": message}]
        )
        http = make_http(pauses)
        with pytest.raises(TransientError, match="queued activities"):
            http.call(
                "json_import",
                "POST",
                f"{API}/activities/contacts_json_import",
                tokens=StubTokens(),
                idempotent=False,
            )
        assert len(rsps.calls) == 1

    def test_retry_after_is_honoured(self, rsps: responses.RequestsMock, pauses: Recorder) -> None:
        """A Retry-After header sets the pause."""
        rsps.get(LISTS, status=429, json=THROTTLED, headers={"Retry-After": "7"})
        rsps.get(LISTS, json={})
        get(make_http(pauses))
        assert pauses.sleeps == [7.0]

    def test_retry_after_beyond_max_wait_ends_the_run(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """Cron does not sleep an hour: a long Retry-After becomes a TransientError."""
        rsps.get(LISTS, status=503, headers={"Retry-After": "3600"})
        with pytest.raises(TransientError, match="wait 3600 s"):
            get(make_http(pauses))
        assert len(rsps.calls) == 1


class TestServerErrors:
    @pytest.mark.parametrize(
        "failure",
        [{"status": 500}, {"status": 502}, {"status": 503}, {"body": requests.ConnectionError()}],
    )
    def test_retried_then_transient(
        self, rsps: responses.RequestsMock, pauses: Recorder, failure: dict[str, Any]
    ) -> None:
        """5xx and connection errors on a GET are retried a bounded number of times."""
        rsps.get(LISTS, **failure)
        http = make_http(pauses, attempts=4)
        with pytest.raises(TransientError) as caught:
            get(http)
        assert len(rsps.calls) == 4
        assert http.request_counts["lists"] == 4
        assert len(pauses.sleeps) == 3
        assert caught.value.exit_code == ExitCode.TRANSIENT

    def test_timeout_is_retried(self, rsps: responses.RequestsMock, pauses: Recorder) -> None:
        """A read timeout on a GET is retried and can succeed."""
        rsps.get(LISTS, body=requests.ReadTimeout())
        rsps.get(LISTS, json={})
        assert get(make_http(pauses)).status_code == 200

    @pytest.mark.parametrize("failure", [{"status": 500}, {"body": requests.ReadTimeout()}])
    def test_post_is_not_retried_blindly(
        self, rsps: responses.RequestsMock, pauses: Recorder, failure: dict[str, Any]
    ) -> None:
        """A non-idempotent POST that may have landed raises OutcomeUnknown after one send."""
        url = f"{API}/contacts"
        rsps.post(url, **failure)
        with pytest.raises(OutcomeUnknown):
            make_http(pauses).call(
                "create_contact", "POST", url, tokens=StubTokens(), idempotent=False
            )
        assert len(rsps.calls) == 1

    def test_post_throttled_is_retried(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """A throttled POST was not processed, so sending it again is safe."""
        url = f"{API}/contacts"
        rsps.post(url, status=429, json=THROTTLED)
        rsps.post(url, status=201, json={"contact_id": "c1"})
        http = make_http(pauses)
        response = http.call("create_contact", "POST", url, tokens=StubTokens(), idempotent=False)
        assert response.status_code == 201
        assert http.request_counts["create_contact"] == 2

    def test_conflict_retried_only_when_the_caller_says_so(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """409 'simultaneous requests' on sign_up_form is retried after a backoff."""
        url = f"{API}/contacts/sign_up_form"
        rsps.post(url, status=409, json=[{"error_key": "contacts.api.conflict"}])
        rsps.post(url, status=200, json={"contact_id": "c1"})
        http = make_http(pauses)
        response = http.call(
            "sign_up_form", "POST", url, tokens=StubTokens(), idempotent=True, retry_conflict=True
        )
        assert response.status_code == 200
        assert len(pauses.sleeps) == 1


class TestRefusals:
    @pytest.mark.parametrize("status", [400, 403, 404, 409, 415])
    @pytest.mark.parametrize("shape", ["array", "object"])
    def test_refused_without_retry_with_cc_text(
        self, rsps: responses.RequestsMock, pauses: Recorder, status: int, shape: str
    ) -> None:
        """4xx answers are RequestRefused at once, carrying CC's error_key and message."""
        error = {"error_key": "contacts.api.validation.error", "error_message": "bad limit value"}
        rsps.get(LISTS, status=status, json=[error] if shape == "array" else error)
        with pytest.raises(RequestRefused) as caught:
            get(make_http(pauses))
        assert len(rsps.calls) == 1
        assert status == caught.value.status
        assert caught.value.error_key == "contacts.api.validation.error"
        assert "contacts.api.validation.error: bad limit value" in str(caught.value)
        assert f"GET /v3/contact_lists (HTTP {status})" in str(caught.value)
        assert caught.value.exit_code == ExitCode.REFUSED

    def test_emails_in_cc_text_are_redacted(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """CC's message may echo an address; the error text does not."""
        error = [
            {
                "error_key": "contacts.api.validation.error",
                "error_message": "ada@example.org is invalid",
            }
        ]
        rsps.get(LISTS, status=400, json=error)
        with pytest.raises(RequestRefused) as caught:
            get(make_http(pauses))
        assert "example.org" not in str(caught.value)
        assert "[email] is invalid" in str(caught.value)

    def test_redirects_are_not_followed(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """A 302 is refused, never followed (a POST must not become a GET elsewhere)."""
        url = f"{API}/contacts"
        rsps.post(url, status=302, headers={"Location": "https://elsewhere.example/v3/contacts"})
        with pytest.raises(RequestRefused, match=r"elsewhere\.example"):
            make_http(pauses).call(
                "create_contact", "POST", url, tokens=StubTokens(), idempotent=False
            )
        assert len(rsps.calls) == 1

    def test_refusal_without_json(self, rsps: responses.RequestsMock, pauses: Recorder) -> None:
        """A non-JSON error body still gives a readable message."""
        rsps.get(LISTS, status=403, body="<html>Forbidden</html>")
        with pytest.raises(RequestRefused, match="Forbidden"):
            get(make_http(pauses))


class TestUnauthorized:
    def test_one_refresh_and_one_retry(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """401 refreshes the token once and resends with the new one."""
        rsps.get(
            LISTS, status=401, json={"error_key": "unauthorized", "error_message": "Unauthorized"}
        )
        rsps.get(LISTS, json={})
        tokens = StubTokens()
        get(make_http(pauses), tokens=tokens)
        assert tokens.refreshed == ["tok-1"]
        assert rsps.calls[0].request.headers["Authorization"] == "Bearer tok-1"
        assert rsps.calls[1].request.headers["Authorization"] == "Bearer tok-2"

    def test_second_401_needs_a_login(self, rsps: responses.RequestsMock, pauses: Recorder) -> None:
        """A 401 right after a refresh is ReauthRequired; no second refresh."""
        rsps.get(LISTS, status=401, json={"error_key": "unauthorized"})
        tokens = StubTokens()
        with pytest.raises(ReauthRequired, match="flipsync auth login") as caught:
            get(make_http(pauses), tokens=tokens)
        assert tokens.refreshed == ["tok-1"]
        assert len(rsps.calls) == 2
        assert caught.value.exit_code == ExitCode.REAUTH
        assert "tok-" not in str(caught.value)


class TestCountsAndLogs:
    def test_request_counts_match_the_calls_sent(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """Every send is counted by kind, retries and refresh resends included."""
        rsps.get(LISTS, status=503)
        rsps.get(LISTS, status=401)
        rsps.get(LISTS, json={})
        rsps.get(f"{API}/contacts", status=429, json=THROTTLED)
        rsps.get(f"{API}/contacts", json={})
        http = make_http(pauses, attempts=5)
        get(http)
        http.call("contact_lookup", "GET", f"{API}/contacts", tokens=StubTokens(), idempotent=True)
        assert dict(http.request_counts) == {"lists": 3, "contact_lookup": 2}
        assert len(rsps.calls) == sum(http.request_counts.values())

    def test_logs_carry_no_token_and_no_email(
        self, rsps: responses.RequestsMock, pauses: Recorder
    ) -> None:
        """Retry events name the path, never the query (an email) or a token."""
        url = f"{API}/contacts"
        rsps.get(url, body=requests.ConnectionError(f"{url}?email=ada%40example.org failed"))
        rsps.get(url, status=401)
        rsps.get(url, status=503)
        rsps.get(url, json={})
        with capture_logs() as logs:
            make_http(pauses, attempts=5).call(
                "contact_lookup",
                "GET",
                url,
                tokens=StubTokens(),
                idempotent=True,
                params={"email": "ada@example.org"},
            )
        assert [e["event"] for e in logs].count("ctct_retry") == 2
        text = repr(logs)
        assert "example.org" not in text
        assert "tok-" not in text
        assert {"/v3/contacts"} == {e["path"] for e in logs}


class TestHelpers:
    def test_both_error_shapes_parse(self) -> None:
        """CC sends an array for most errors and one object for auth and rate limits."""
        array = _response(400, [{"error_key": "a", "error_message": "x"}, {"error_key": "b"}])
        single = _response(429, {"error_key": "throttled", "error_message": "Too Many Requests"})
        assert cc_errors(array) == [("a", "x"), ("b", None)]
        assert cc_errors(single) == [("throttled", "Too Many Requests")]
        assert describe_errors(array) == ("a", "a: x; b:")

    def test_next_midnight(self) -> None:
        """The quota resets at the next 00:00 UTC, even from another zone or at midnight."""
        assert datetime(2026, 3, 2, tzinfo=UTC) == next_utc_midnight(
            datetime(2026, 3, 1, tzinfo=UTC)
        )
        local = datetime.fromisoformat("2026-03-01T20:00:00-05:00")  # 01:00 UTC on the 2nd
        assert datetime(2026, 3, 3, tzinfo=UTC) == next_utc_midnight(local)

    def test_retry_after_as_http_date(self) -> None:
        """Retry-After may be a date."""
        response = _response(503, {}, headers={"Retry-After": "Sun, 01 Mar 2026 23:59:40 GMT"})
        assert parse_retry_after(response, NOW) == 10.0


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    import json

    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers.update(headers or {})
    return response
