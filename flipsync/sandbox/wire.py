"""Transport-neutral request/response values and the wire formats the sandbox speaks.

The HTTP server turns sockets into ``SandboxRequest`` values and ``SandboxResponse``
values back into bytes, so the state machine in ``app.py`` never touches a socket and a
fault can say "drop the connection" as plain data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

JSON_TYPE = "application/json"

UNAUTHORIZED_BODY = {"error_key": "unauthorized", "error_message": "Unauthorized"}
THROTTLED_BODY = {"error_key": "throttled", "error_message": "Too Many Requests"}
QUOTA_BODY = {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}

VALIDATION = "contacts.api.validation.error"
NOT_FOUND = "contacts.api.not_found"
CONFLICT = "contacts.api.conflict"


@dataclass(frozen=True)
class SandboxRequest:
    """One HTTP request as the server read it.

    ``headers`` keys are lower-case. ``base_url`` is scheme + Host as the client
    addressed the server; it is used for links that must be absolute
    (``verification_uri``).
    """

    method: str
    path: str
    query_string: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    base_url: str = "http://127.0.0.1"

    def query(self) -> dict[str, str]:
        """Query parameters, first value of each name, blanks kept."""
        parsed = parse_qs(self.query_string, keep_blank_values=True)
        return {name: values[0] for name, values in parsed.items()}

    def content_type(self) -> str:
        """The media type without parameters, lower-case ("" when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def form(self) -> dict[str, str]:
        """The body parsed as application/x-www-form-urlencoded, first value of each name."""
        text = self.body.decode("utf-8", errors="replace")
        parsed = parse_qs(text, keep_blank_values=True)
        return {name: values[0] for name, values in parsed.items()}


@dataclass(frozen=True)
class SandboxResponse:
    """What to send back; ``drop=True`` means close the socket without any reply."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error_key(self) -> str | None:
        """The ``error_key`` (API) or ``error`` (OAuth) of an error body, if any."""
        if self.status < 400:
            return None
        data = self.json()
        if isinstance(data, list) and data and isinstance(data[0], dict):
            data = data[0]
        if isinstance(data, dict):
            for name in ("error_key", "error"):
                value = data.get(name)
                if isinstance(value, str):
                    return value
        return None


def json_response(
    status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()
) -> SandboxResponse:
    """Serialize ``payload`` compactly, as the real API does."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return SandboxResponse(status, body, (("Content-Type", JSON_TYPE), *headers))


def error_array(status: int, key: str, message: str) -> SandboxResponse:
    """The usual CC error envelope: a JSON array of one ``{error_key, error_message}``."""
    return json_response(status, [{"error_key": key, "error_message": message}])


def html_response(status: int, html: str) -> SandboxResponse:
    """A small HTML page (the device activation and consent pages)."""
    return SandboxResponse(
        status, html.encode("utf-8"), (("Content-Type", "text/html; charset=utf-8"),)
    )


class ApiError(Exception):
    """Raised inside an endpoint handler; becomes the CC array error envelope."""

    def __init__(self, status: int, key: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.key = key
        self.message = message

    def response(self) -> SandboxResponse:
        """The error as a response."""
        return error_array(self.status, self.key, self.message)


def validation(message: str) -> ApiError:
    """A 400 ``contacts.api.validation.error``."""
    return ApiError(400, VALIDATION, message)


# --- time -------------------------------------------------------------------------------

MICROS = 1_000_000


def iso_from_micros(micros: int) -> str:
    """ISO-8601 UTC with millisecond precision and a ``Z``, like the spec's examples."""
    moment = datetime.fromtimestamp(micros / MICROS, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def date_from_micros(micros: int) -> str:
    """``YYYY-MM-DD`` (the spec types ``ContactResource.deleted_at`` as a date)."""
    return datetime.fromtimestamp(micros / MICROS, tz=UTC).strftime("%Y-%m-%d")


def parse_iso_micros(text: str) -> int:
    """Parse an ISO-8601 date or date-time to epoch microseconds; naive means UTC.

    Raises:
        ValueError: the text is not ISO-8601.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty date-time")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * MICROS + delta.microseconds


# --- value checks shared by the endpoints ----------------------------------------------------

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def is_valid_email(address: str) -> bool:
    """A pragmatic syntax check: one @, a dotted domain, no spaces, no leading/trailing dot."""
    if not _EMAIL_RE.match(address):
        return False
    local = address.split("@", 1)[0]
    return not (local.startswith(".") or local.endswith(".") or ".." in local)


_DATE_FORMATS = (
    re.compile(r"^(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})$"),
    re.compile(r"^(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})$"),
    re.compile(r"^(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})$"),
    re.compile(r"^(?P<m>\d{1,2})-(?P<d>\d{1,2})-(?P<y>\d{4})$"),
)


def is_valid_anniversary(text: str) -> bool:
    """The spec's formats: MM/DD/YYYY, M/D/YYYY, YYYY/MM/DD, YYYY/M/D, YYYY-MM-DD, YYYY-M-D,
    M-D-YYYY, M-DD-YYYY; at most 10 characters and a real calendar date."""
    if len(text) > 10:
        return False
    for pattern in _DATE_FORMATS:
        match = pattern.match(text)
        if match:
            try:
                datetime(int(match["y"]), int(match["m"]), int(match["d"]), tzinfo=UTC)
            except ValueError:
                return False
            return True
    return False


def parse_bool(name: str, text: str) -> bool:
    """``true``/``false`` query flags; anything else is a 400, as a strict server does."""
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise validation(f"{name} does not have a valid value")


def parse_limit(text: str | None, *, default: int, maximum: int) -> int:
    """A ``limit`` query parameter within 1..maximum."""
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise validation("limit does not have a valid value") from None
    if not 1 <= value <= maximum:
        raise validation(f"limit must be between 1 and {maximum}")
    return value


def split_csv(text: str) -> list[str]:
    """Comma-separated query values, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]
