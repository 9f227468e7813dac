"""The HTTP plumbing under the Constant Contact client: session, rate limiter, retries, errors.

This module owns how a request leaves the process and what its answer means:

- ``make_session`` builds the one ``requests.Session`` (User-Agent, Accept).
- ``Spacer`` is the one rule that spaces request starts so fewer than the configured rate begin
  in any second (CC allows 4/s per API key, the token endpoint 1/s); ``RateLimiter`` applies
  it within a process (``process_limiter`` shares one per process), the key budget across
  processes.
- ``RetryPolicy`` is a value (attempts, waits, jitter, the sleep function), so tests run with
  zero wait; ``HttpClient.run`` applies it through tenacity.
- ``HttpClient.send`` is the single place a request is sent, and counts it by kind in
  ``request_counts`` (retries included), so a run report can match the server's request log.
  It also reads each answer's ``Date`` header into ``ServerClock``: the measured bounds of
  Constant Contact's clock against ours, which the import matching rule relies on.
- ``HttpClient.call`` maps answers onto flipsync's error taxonomy with ``check_response``
  (``flipsync.ctct.answers``, which holds the table of what each answer means).

Logs carry the request kind, method and path, never the query (it can hold an email address),
a token or a header.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import requests
import structlog
import tenacity
from urllib3.exceptions import MaxRetryError, NewConnectionError

from flipsync.clock import SYSTEM_CLOCK, Clock
from flipsync.ctct.answers import OutcomeUnknown as OutcomeUnknown
from flipsync.ctct.answers import RetryableFailure as RetryableFailure
from flipsync.ctct.answers import cc_errors as cc_errors
from flipsync.ctct.answers import check_response as check_response
from flipsync.ctct.answers import describe_errors as describe_errors
from flipsync.ctct.answers import next_utc_midnight as next_utc_midnight
from flipsync.ctct.answers import parse_retry_after as parse_retry_after
from flipsync.ctct.answers import request_path as request_path
from flipsync.errors import ReauthRequired, TransientError, UnexpectedResponse

log = structlog.get_logger(__name__)

T = TypeVar("T")


def utc_now() -> datetime:
    """The default wall clock: an aware UTC datetime."""
    return datetime.now(UTC)


def make_session(user_agent: str) -> requests.Session:
    """A session with flipsync's User-Agent that asks for JSON."""
    session = requests.Session()
    session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})
    return session


class Limiter(Protocol):
    """Anything that makes a request wait for its slot (this process's or the machine's)."""

    def acquire(self) -> float:
        """Wait until a request may start; returns the seconds waited."""
        ...


class Spacer:
    """The one rate-spacing rule: request starts at least (1 + slack)/rate seconds apart.

    Exact 1/rate spacing sits on the edge of the server's window: a little network jitter
    lands the fifth request of a 4/s budget inside the first one's second and draws a 429
    (seen against the sandbox). The default 5% slack absorbs that for ~5% of throughput.

    The spacer holds no state: its user keeps the last reserved start where the sharing
    needs it (in memory for one process, ``RateLimiter``; in the key's budget file for the
    whole machine, ``flipsync.ctct.budget``), reserves under its own lock with ``reserve``
    and waits outside it with ``wait``, so waiters queue in order and never sleep holding a
    lock. ``rate <= 0`` spaces nothing.
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        slack: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate_per_second = rate_per_second
        self.interval = (1.0 + slack) / rate_per_second if rate_per_second > 0 else 0.0
        self._clock = clock
        self._sleep = sleep

    def reserve(self, last_start: float | None) -> tuple[float, float]:
        """The next start after ``last_start`` (None: no earlier request), and the wait for it."""
        now = self._clock()
        start = now if last_start is None else max(now, last_start + self.interval)
        return start, start - now

    def wait(self, seconds: float) -> float:
        """Sleep the reserved wait; returns the seconds waited."""
        if seconds > 0:
            self._sleep(seconds)
            return seconds
        return 0.0


class RateLimiter:
    """Spaces this process's request starts with a ``Spacer``; thread-safe.

    ``rate <= 0`` disables the limiter.
    """

    def __init__(
        self,
        rate_per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        slack: float = 0.05,
    ) -> None:
        self.rate_per_second = rate_per_second
        self._spacer = Spacer(rate_per_second, slack=slack, clock=clock, sleep=sleep)
        self._lock = threading.Lock()
        self._last_start: float | None = None

    def acquire(self) -> float:
        """Wait until a request may start; returns the seconds waited."""
        if self._spacer.interval == 0.0:
            return 0.0
        with self._lock:
            self._last_start, wait = self._spacer.reserve(self._last_start)
        return self._spacer.wait(wait)


_limiters: dict[tuple[str, float, Clock], RateLimiter] = {}
_limiters_lock = threading.Lock()


def process_limiter(
    rate_per_second: float, key: str = "api", *, clock: Clock = SYSTEM_CLOCK
) -> RateLimiter:
    """The limiter shared by every client of this process for ``key`` at this rate.

    CC's limits are per API key, so all clients in one process must share one limiter; the
    token endpoint has its own (``key="token"``, 1/s). Clients on another ``clock`` (a
    test's virtual time) share theirs with the clients on that clock only.
    """
    with _limiters_lock:
        limiter = _limiters.get((key, rate_per_second, clock))
        if limiter is None:
            limiter = _limiters[(key, rate_per_second, clock)] = RateLimiter(
                rate_per_second, clock=clock.monotonic, sleep=clock.sleep
            )
        return limiter


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; a value so tests can pass zero waits.

    Wait before retry n (1-based) = min(max_wait, base_wait * 2**(n-1)) + jitter * random(),
    or Retry-After when CC sends a longer one. Retries stop after ``max_attempts`` attempts or
    ``max_total_seconds``, whichever comes first.
    """

    max_attempts: int = 5
    base_wait: float = 1.0
    max_wait: float = 30.0
    jitter: float = 1.0
    max_total_seconds: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random

    def wait_seconds(self, attempt: int, retry_after: float | None = None) -> float:
        """The pause after failed attempt number ``attempt`` (1-based)."""
        backoff = min(self.max_wait, self.base_wait * 2.0 ** (attempt - 1))
        backoff += self.jitter * self.rng()
        if retry_after is not None:
            backoff = max(backoff, retry_after)
        return backoff

    @classmethod
    def no_wait(cls, max_attempts: int = 3) -> RetryPolicy:
        """A policy for tests: same decisions, no sleeping."""
        return cls(max_attempts=max_attempts, base_wait=0.0, jitter=0.0, sleep=lambda _s: None)


class TokenSource(Protocol):
    """What ``HttpClient.call`` needs from the token manager."""

    def access_token(self) -> str:
        """A valid access token."""
        ...

    def refresh(self, stale_access_token: str) -> str:
        """A new access token after CC refused ``stale_access_token``."""
        ...


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the connection failed before any byte of the request could reach CC."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    return isinstance(reason, MaxRetryError) and isinstance(reason.reason, NewConnectionError)


class ServerClock:
    """Bounds on Constant Contact's clock minus ours, measured from ``Date`` headers.

    An answer sent between our local moments ``sent`` and ``received`` carries the server's
    time at some moment in between, truncated to the second. So the offset (server minus
    local) is at least ``Date - received`` and less than ``Date + 1 s - sent``. The tightest
    bounds over the recent answers are kept; when drift makes them cross, the newest answer
    alone is believed. With no answer measured yet, nothing is known (``lower`` is None), and
    callers that need proof (the import matching rule) must not guess.
    """

    KEPT = 50

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: list[tuple[float, float]] = []

    def observe(self, sent: datetime, received: datetime, date_header: str | None) -> None:
        """Learn from one answer's ``Date`` header (ignored when absent or unreadable)."""
        if not date_header:
            return
        try:
            server = parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError):
            return
        if server.tzinfo is None:
            return
        lower = (server - received).total_seconds()
        upper = (server - sent).total_seconds() + 1.0
        with self._lock:
            self._samples.append((lower, upper))
            del self._samples[: -self.KEPT]
            if self._bounds() is None:
                self._samples[:] = self._samples[-1:]

    def _bounds(self) -> tuple[float, float] | None:
        if not self._samples:
            return None
        lower = max(s[0] for s in self._samples)
        upper = min(s[1] for s in self._samples)
        return (lower, upper) if lower <= upper else None

    @property
    def lower(self) -> timedelta | None:
        """The least the server's clock can be ahead of ours; None before any measurement."""
        with self._lock:
            bounds = self._bounds()
        return None if bounds is None else timedelta(seconds=bounds[0])

    @property
    def samples(self) -> int:
        """How many answers the bounds rest on."""
        with self._lock:
            return len(self._samples)


class HttpClient:
    """Sends requests for one component: rate-limited, counted, retried, errors mapped."""

    def __init__(
        self,
        session: requests.Session,
        *,
        timeout: float,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.session = session
        self.retry = retry if retry is not None else RetryPolicy()
        self.request_counts: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._timeout = timeout
        self._limiter = limiter
        self._clock = clock
        self.server_clock = ServerClock()

    def send(self, kind: str, method: str, url: str, **kwargs: Any) -> requests.Response:
        """The one place a request leaves: wait for the limiter, count it, send it once."""
        if self._limiter is not None:
            self._limiter.acquire()
        with self._count_lock:
            self.request_counts[kind] += 1
        sent = self._clock()
        response = self.session.request(
            method, url, timeout=self._timeout, allow_redirects=False, **kwargs
        )
        self.server_clock.observe(sent, self._clock(), response.headers.get("Date"))
        return response

    def run(self, attempt: Callable[[], T], *, kind: str, method: str, url: str) -> T:
        """Call ``attempt`` until it stops raising RetryableFailure, within the policy.

        Raises:
            TransientError: the attempts or the time ran out, or CC asked for a longer wait.
        """
        policy = self.retry
        path = request_path(url)

        def guarded() -> T:
            try:
                return attempt()
            except RetryableFailure as exc:
                if exc.retry_after is not None and exc.retry_after > policy.max_wait:
                    raise TransientError(
                        f"Constant Contact asked to wait {exc.retry_after:.0f} s before "
                        f"{method} {path} ({exc.reason}); the next run tries again"
                    ) from exc
                raise

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = exc.retry_after if isinstance(exc, RetryableFailure) else None
            return policy.wait_seconds(state.attempt_number, retry_after)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "ctct_retry",
                kind=kind,
                method=method,
                path=path,
                attempt=state.attempt_number,
                max_attempts=policy.max_attempts,
                wait_seconds=round(state.upcoming_sleep, 3),
                reason=getattr(exc, "reason", type(exc).__name__),
                status=getattr(exc, "status", None),
                error_key=getattr(exc, "error_key", None),
            )

        retrying = tenacity.Retrying(
            stop=(
                tenacity.stop_after_attempt(max(1, policy.max_attempts))
                | tenacity.stop_after_delay(policy.max_total_seconds)
            ),
            wait=wait,
            retry=tenacity.retry_if_exception_type(RetryableFailure),
            sleep=policy.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(guarded)
        except RetryableFailure as exc:
            raise TransientError(
                f"Constant Contact did not answer {method} {path} well after retries "
                f"(last: {exc.reason}); the next run tries again"
            ) from exc

    def call(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        tokens: TokenSource | None,
        idempotent: bool,
        params: Mapping[str, str | int] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        retry_conflict: bool = False,
        stream: bool = False,
    ) -> requests.Response:
        """One API request with auth, retries and error mapping; returns a 2xx response.

        ``stream=True`` leaves a 2xx body unread, for the caller to consume (a CSV export).

        Raises:
            OutcomeUnknown: a non-idempotent request may or may not have taken effect.
            ReauthRequired: CC refused the token again right after a refresh.
            QuotaExceeded, TransientError, RequestRefused: see the module docstring.
        """
        refreshed = False

        def attempt() -> requests.Response:
            nonlocal refreshed
            sent_headers = dict(headers or {})
            token = tokens.access_token() if tokens is not None else None
            if token is not None:
                sent_headers["Authorization"] = f"Bearer {token}"
            response = self._send_once(
                kind, method, url, params, data, sent_headers, idempotent, stream=stream
            )
            if response.status_code == 401 and tokens is not None and token is not None:
                if refreshed:
                    raise self._reauth(method, url)
                refreshed = True
                log.info("ctct_token_rejected", kind=kind, method=method, path=request_path(url))
                sent_headers["Authorization"] = f"Bearer {tokens.refresh(token)}"
                response = self._send_once(
                    kind, method, url, params, data, sent_headers, idempotent, stream=stream
                )
                if response.status_code == 401:
                    raise self._reauth(method, url)
            check_response(
                response, idempotent=idempotent, retry_conflict=retry_conflict, now=self._clock()
            )
            return response

        return self.run(attempt, kind=kind, method=method, url=url)

    def _send_once(
        self,
        kind: str,
        method: str,
        url: str,
        params: Mapping[str, str | int] | None,
        data: bytes | None,
        headers: dict[str, str],
        idempotent: bool,
        *,
        stream: bool = False,
    ) -> requests.Response:
        try:
            return self.send(
                kind, method, url, params=params, data=data, headers=headers, stream=stream
            )
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            # The exception text can hold the URL with its query (an email): name the type only.
            reason = type(exc).__name__
            if idempotent or _never_sent(exc):
                raise RetryableFailure(reason) from None
            raise OutcomeUnknown(reason) from None
        except requests.RequestException as exc:
            # Anything else (a bad header, an invalid URL) is a local problem that retrying will
            # not fix; its text may quote a header, so only the type is reported.
            raise UnexpectedResponse(
                f"the request {method} {request_path(url)} could not be sent ({type(exc).__name__})"
            ) from None

    @staticmethod
    def _reauth(method: str, url: str) -> ReauthRequired:
        return ReauthRequired(
            f"Constant Contact refused a freshly refreshed access token for {method} "
            f"{request_path(url)} (HTTP 401). The authorization may have been revoked or the app "
            "deactivated: run `flipsync auth login`."
        )
