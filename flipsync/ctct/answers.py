"""What a Constant Contact answer means: the error mapping under ``HttpClient.call``.

``check_response`` maps answers onto flipsync's error taxonomy (reference §2 and §5):


======================================  ==================================================
answer                                  result
======================================  ==================================================
2xx                                     the response
401                                     one token refresh and one resend, then ReauthRequired
429 ``quota_exceeded``                  QuotaExceeded at once, reset at the next 00:00 UTC
429 "1,000 queued activities"           TransientError at once (the next run tries again)
429 ``throttled`` (or unknown 429)      jittered exponential backoff, bounded, for any method
5xx, connection error, timeout          bounded retries when idempotent; otherwise
                                        ``OutcomeUnknown`` so the caller can check first
409 when the caller says it is safe     bounded retries (sign_up_form "simultaneous requests")
other 4xx (400/403/404/409/415)         RequestRefused with CC's error_key and message
3xx                                     RequestRefused (redirects are never followed)
======================================  ==================================================

``Retry-After`` is honoured when present; a wait longer than ``max_wait`` ends the retries.

Error texts go into logs and run reports, so email addresses in them become [email].
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests

from flipsync.errors import QuotaExceeded, RequestRefused, TransientError

_QUEUE_FULL = re.compile(r"queued activities", re.IGNORECASE)
_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")


def next_utc_midnight(now: datetime) -> datetime:
    """When CC's daily quota resets: the next 00:00:00 UTC strictly after ``now``."""
    day = now.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class RetryableFailure(Exception):
    """An attempt failed in a way that another attempt may fix (internal to the ctct package)."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        error_key: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.status = status
        self.error_key = error_key
        self.retry_after = retry_after
        super().__init__(reason)


class OutcomeUnknown(Exception):
    """A non-idempotent request failed after it may have reached CC (5xx, timeout, reset).

    The client decides how to find out whether it took effect before sending it again.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def request_path(url: str) -> str:
    """The path of ``url`` without query or host: safe for logs and messages."""
    return urlsplit(url).path or "/"


def cc_errors(response: requests.Response) -> list[tuple[str | None, str | None]]:
    """(error_key, error_message) pairs from either CC error shape: an array or one object."""
    try:
        data = response.json()
    except ValueError:
        return []
    items = data if isinstance(data, list) else [data]
    pairs = []
    for item in items:
        if isinstance(item, dict) and ("error_key" in item or "error_message" in item):
            key, message = item.get("error_key"), item.get("error_message")
            pairs.append(
                (
                    key if isinstance(key, str) else None,
                    message if isinstance(message, str) else None,
                )
            )
    return pairs


def describe_errors(response: requests.Response) -> tuple[str | None, str]:
    """The first error_key, and a one-line text of all CC errors (or the body's start).

    Email addresses in CC's text become [email]: the text goes into logs and run reports.
    """
    pairs = cc_errors(response)
    if pairs:
        text = "; ".join(f"{key or 'error'}: {message or ''}".strip() for key, message in pairs)
        return pairs[0][0], _EMAIL.sub("[email]", text)
    body = _EMAIL.sub("[email]", " ".join(response.text.split())[:200])
    return None, body or (response.reason or "no body")


def parse_retry_after(response: requests.Response, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def check_response(
    response: requests.Response,
    *,
    idempotent: bool,
    retry_conflict: bool = False,
    now: datetime,
) -> None:
    """Raise the error (or retry signal) a non-2xx answer means; 401 is handled by the caller."""
    status = response.status_code
    if 200 <= status < 300:
        return
    key, text = describe_errors(response)
    method = response.request.method if response.request is not None else "?"
    path = request_path(response.url or "")
    retry_after = parse_retry_after(response, now)
    if status == 429:
        if key == "quota_exceeded":
            raise QuotaExceeded(
                "The daily Constant Contact request quota of this application is spent",
                next_utc_midnight(now),
            )
        if _QUEUE_FULL.search(text):
            raise TransientError(
                "Constant Contact already holds 1,000 queued activities for this account; "
                "the next run tries again"
            )
        # Throttled (or a 429 we do not know): CC did not process it, so any method may retry.
        raise RetryableFailure(
            f"HTTP 429 {key or 'throttled'}", status=status, error_key=key, retry_after=retry_after
        )
    if status >= 500:
        if idempotent:
            raise RetryableFailure(
                f"HTTP {status}", status=status, error_key=key, retry_after=retry_after
            )
        raise OutcomeUnknown(f"HTTP {status}")
    if 300 <= status < 400:
        # Redirects are not followed: a POST must not turn into a GET or go to another host.
        target = urlsplit(response.headers.get("Location", "")).netloc or "elsewhere"
        raise RequestRefused(
            f"Constant Contact answered {method} {path} with HTTP {status} (a redirect to "
            f"{target}); check api_base_url and oauth_base_url",
            status=status,
        )
    if status == 409 and retry_conflict:
        raise RetryableFailure(
            f"HTTP 409 {key or 'conflict'}", status=status, error_key=key, retry_after=retry_after
        )
    raise RequestRefused(
        f"Constant Contact refused {method} {path} (HTTP {status}): {text}",
        status=status,
        error_key=key,
        body=response.text[:4000],
    )
