"""One request budget per application key, shared by every flipsync process on the machine.

Constant Contact's limits (4 requests/second, 10,000/day) belong to the application key,
and one key usually serves many organizations, each run by its own cron line. A
per-process limiter cannot see the others, so this one keeps its state in a small JSON
file under an exclusive lock (``flipsync.lock.locked_file``): the start time of the last
request (spaced by the same ``Spacer`` as the in-process limiter, but across processes)
and today's request counts, per key and per organization (so one
organization's backfill cannot spend everyone's day).

When a configured daily budget is spent, `acquire` raises QuotaExceeded before the
request leaves, exactly as Constant Contact's own `quota_exceeded` would end the run:
cleanly, nothing lost, resuming after 00:00 UTC.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flipsync.ctct.http import Spacer
from flipsync.errors import QuotaExceeded
from flipsync.lock import locked_file


@dataclass(frozen=True)
class Usage:
    """Requests counted today (UTC) for the key and for one organization."""

    day: str
    key_total: int
    organization: int


class KeyBudget:
    """A cross-process rate limiter and daily request counter for one application key."""

    def __init__(
        self,
        path: Path,
        *,
        organization: str,
        rate_per_second: float,
        daily_limit: int | None,
        organization_daily_limit: int | None,
        slack: float = 0.05,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        self.organization = organization
        self.daily_limit = daily_limit
        self.organization_daily_limit = organization_daily_limit
        self._clock = wall_clock
        self._spacer = Spacer(rate_per_second, slack=slack, clock=wall_clock, sleep=sleep)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with locked_file(self.path, wait_seconds=None) as fd:
            raw = os.pread(fd, 1 << 20, 0)
            try:
                data = json.loads(raw) if raw.strip() else {}
            except ValueError:
                data = {}  # a torn or foreign file only costs today's counts, never a run
            if not isinstance(data, dict):
                data = {}
            yield data
            encoded = json.dumps(data, sort_keys=True).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, encoded, 0)

    def _today(self, now: float) -> str:
        return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")

    def acquire(self) -> float:
        """Reserve the next request slot (waiting for it); QuotaExceeded when a budget is spent."""
        with self._locked() as data:
            now = self._clock()
            day = self._today(now)
            if data.get("day") != day:
                data.clear()
                data["day"] = day
            orgs = data.setdefault("organizations", {})
            total = int(data.get("total", 0))
            mine = int(orgs.get(self.organization, 0))
            reset = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
            if self.daily_limit is not None and total >= self.daily_limit:
                raise QuotaExceeded(
                    f"flipsync's daily budget of {self.daily_limit} requests for this application "
                    "key is spent (shared by every organization on this machine)",
                    reset,
                )
            if self.organization_daily_limit is not None and mine >= self.organization_daily_limit:
                raise QuotaExceeded(
                    f"this organization's daily budget of {self.organization_daily_limit} "
                    "requests is spent",
                    reset,
                )
            last = data.get("last_start")
            start, wait = self._spacer.reserve(float(last) if last is not None else None)
            data["last_start"] = start
            data["total"] = total + 1
            orgs[self.organization] = mine + 1
        return self._spacer.wait(wait)

    def usage(self) -> Usage:
        """Today's counts, for `flipsync status` and dry-run forecasts."""
        with self._locked() as data:
            day = self._today(self._clock())
            if data.get("day") != day:
                return Usage(day, 0, 0)
            return Usage(
                day,
                int(data.get("total", 0)),
                int(data.get("organizations", {}).get(self.organization, 0)),
            )

    def by_organization(self) -> dict[str, int]:
        """Today's requests of every organization of the key (for the fleet's shares)."""
        with self._locked() as data:
            if data.get("day") != self._today(self._clock()):
                return {}
            orgs = data.get("organizations", {})
            return {str(k): int(v) for k, v in orgs.items()} if isinstance(orgs, dict) else {}


def default_budget_file(client_id: str) -> Path:
    """Where processes of one key meet: $XDG_STATE_HOME/flipsync (or ~/.local/state/flipsync)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in client_id) or "default"
    return Path(base) / "flipsync" / f"key-{safe}.json"
