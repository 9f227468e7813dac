"""The Constant Contact token file: reading, writing (atomic, 0600) and reporting on it.

A JSON object, written atomically with mode 0600 (never readable by others, not even briefly)::

    {
      "access_token": "<JWT>",
      "refresh_token": "<opaque>",
      "token_type": "Bearer",
      "scope": "contact_data offline_access",
      "expires_at": "2026-03-01T12:00:00Z",
      "obtained_at": "2026-02-28T12:00:00Z"
    }

``expires_at`` is when the access token expires and ``obtained_at`` when this token set was
issued (the last login or refresh), both ISO-8601 in UTC. A hand-placed file needs at least
``access_token``, ``refresh_token`` and ``expires_at``; ``token_type`` defaults to Bearer,
``scope`` to empty and ``obtained_at`` to the file's modification time.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from flipsync.ctct.types import TokenSet
from flipsync.errors import ReauthRequired, UnexpectedResponse

log = structlog.get_logger(__name__)

REFRESH_TOKEN_IDLE_DAYS = 180
_DEFAULT_EXPIRES_IN = 3600  # when CC sends no expires_in: assume short, refresh early


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a date-time string")
    moment = datetime.fromisoformat(value)
    # A naive time in the file is taken as UTC, the format's documented zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def token_set_from_response(
    response: Mapping[str, Any], now: datetime, previous: TokenSet | None = None
) -> TokenSet:
    """Build a TokenSet from a token-endpoint answer received at ``now``.

    A refresh answer without a refresh_token (long-lived tokens may omit it) keeps the previous
    one. Raises UnexpectedResponse when the answer has no usable access token.
    """
    access = response.get("access_token")
    refresh = response.get("refresh_token") or (previous.refresh_token if previous else None)
    if not isinstance(access, str) or not access:
        raise UnexpectedResponse("The Constant Contact token endpoint sent no access_token")
    if not isinstance(refresh, str) or not refresh:
        raise UnexpectedResponse(
            "The Constant Contact token endpoint sent no refresh_token; the login must ask for "
            "the offline_access scope"
        )
    expires_in = response.get("expires_in")
    seconds = expires_in if isinstance(expires_in, int | float) and expires_in > 0 else None
    scope = response.get("scope")
    return TokenSet(
        access_token=access,
        refresh_token=refresh,
        token_type=str(response.get("token_type") or "Bearer"),
        scope=scope if isinstance(scope, str) else (previous.scope if previous else ""),
        expires_at=now + timedelta(seconds=seconds or _DEFAULT_EXPIRES_IN),
        obtained_at=now,
    )


def write_token_file(path: Path, token_set: TokenSet) -> None:
    """Replace the token file atomically; the file is 0600 from the moment it exists.

    Temp file in the same directory (mkstemp creates it 0600), fsync, os.replace, fsync of the
    directory: after a crash the old file or the new one is there, never half of one.
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    content = {
        "access_token": token_set.access_token,
        "refresh_token": token_set.refresh_token,
        "token_type": token_set.token_type,
        "scope": token_set.scope,
        "expires_at": _iso(token_set.expires_at),
        "obtained_at": _iso(token_set.obtained_at),
    }
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            json.dump(content, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_token_file(path: Path) -> TokenSet:
    """Read the token file; a missing or unusable one means a person must log in.

    Raises:
        ReauthRequired: the file is missing, unreadable or not a token file (names the path).
    """
    path = Path(path)
    fix = f"Run `flipsync auth login`, or place a token file at {path} (format in the README)."
    try:
        text = path.read_text(encoding="utf-8")
        stat = path.stat()
    except FileNotFoundError:
        raise ReauthRequired(f"No Constant Contact token file at {path}. {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ReauthRequired(f"Cannot read the token file {path} ({reason}). {fix}") from None
    if stat.st_mode & 0o077:
        log.warning("token_file_permissions", path=str(path), mode=oct(stat.st_mode & 0o777))
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for key in ("access_token", "refresh_token"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"{key} missing")
            # A token with spaces or control characters would break the Authorization header,
            # and the HTTP library's error would quote the token; refuse it here, unquoted.
            if any(ch.isspace() or not ch.isprintable() for ch in data[key]):
                raise ValueError(f"{key} contains blanks or control characters")
        obtained = data.get("obtained_at")
        return TokenSet(
            access_token=data["access_token"],
            refresh_token=data["refresh_token"],
            token_type=str(data.get("token_type") or "Bearer"),
            scope=str(data.get("scope") or ""),
            expires_at=_parse_time(data.get("expires_at"), "expires_at"),
            obtained_at=(
                _parse_time(obtained, "obtained_at")
                if obtained is not None
                else datetime.fromtimestamp(stat.st_mtime, UTC)
            ),
        )
    except ValueError as exc:
        # json's messages quote a little of the text; say only what kind of problem it is.
        reason = str(exc) if not isinstance(exc, json.JSONDecodeError) else "not valid JSON"
        raise ReauthRequired(f"The token file {path} is not usable ({reason}). {fix}") from None


def token_status(
    token_set: TokenSet, now: datetime, last_refresh_at: datetime | None = None
) -> dict[str, Any]:
    """What `flipsync auth status` shows: expiries and days left, never a token.

    ``last_refresh_at`` is when the refresh token was last used; it defaults to ``obtained_at``
    (every refresh uses the refresh token and yields a new set).
    """
    last_used = last_refresh_at or token_set.obtained_at
    idle_expiry = last_used + timedelta(days=REFRESH_TOKEN_IDLE_DAYS)
    seconds_left = (token_set.expires_at - now).total_seconds()
    return {
        "token_type": token_set.token_type,
        "scope": token_set.scope,
        "offline_access": "offline_access" in token_set.scope.split(),
        "obtained_at": _iso(token_set.obtained_at),
        "access_token_expires_at": _iso(token_set.expires_at),
        "access_token_seconds_left": int(seconds_left),
        "access_token_expired": seconds_left <= 0,
        "refresh_token_last_used_at": _iso(last_used),
        "refresh_token_idle_expiry_at": _iso(idle_expiry),
        "refresh_token_days_left": round((idle_expiry - now).total_seconds() / 86400, 1),
    }
