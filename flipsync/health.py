"""Health checks for monitors: is this organization's sync quietly broken?

Unattended integrations die silently (an expired login, a cron line that stopped, an
import stuck for days). `flipsync status --check` turns the state DB and the token
file into a list of problems, each saying what to do, and a distinct exit code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

# A 15-minute cron leaves nothing waiting this long unless runs are failing or not running.
STALE_INBOX = timedelta(hours=2)
STUCK_BATCH = timedelta(hours=6)
REFRESH_TOKEN_WARN_DAYS = 30


def problems(
    *,
    now: datetime,
    runs: Sequence[Mapping[str, Any]],
    oldest_waiting: datetime | None,
    open_batches: Sequence[datetime],
    token: Mapping[str, Any] | None,
    token_error: str | None,
) -> list[str]:
    """Every problem found, worst first; empty when the sync looks healthy."""
    found: list[str] = []
    if token_error:
        found.append(f"login: {token_error}")
    elif token is not None and token.get("refresh_token_days_left", 999) < REFRESH_TOKEN_WARN_DAYS:
        found.append(
            f"login: the refresh token expires from disuse in {token['refresh_token_days_left']} "
            "days; runs keep it alive, so check that cron runs, or run `flipsync auth login`"
        )
    live = [r for r in runs if r.get("kind") == "live"]
    if live and live[0].get("status") == "error":
        message = (live[0].get("report") or {}).get("message") or "see the log"
        found.append(f"last run failed ({live[0].get('started_at')}): {message}")
    if oldest_waiting is not None and now - oldest_waiting > STALE_INBOX:
        hours = (now - oldest_waiting).total_seconds() / 3600
        found.append(
            f"inbox: records have waited {hours:.1f} hours; is the cron job running and succeeding?"
        )
    for created in open_batches:
        if now - created > STUCK_BATCH:
            found.append(
                f"a batch sent at {created.isoformat()} is still unconfirmed; "
                "`flipsync status` shows its imports"
            )
    return found
