"""Request limits per application key: a sliding-window rate limit and a UTC-day quota.

Both run on the sandbox clock (real time plus ``advance_clock`` offsets), so a test can
step past a window or a day boundary instead of sleeping. Neither is thread-safe on its
own; ``Sandbox`` calls them under its lock.
"""

from __future__ import annotations

import math
from collections import deque


class SlidingWindow:
    """At most ``rate`` accepted requests per key in any window of one second.

    A fractional rate below 1 (say 0.5) becomes one request per ``1/rate`` seconds;
    a fractional rate above 1 keeps the same average over a proportionally shorter window.
    Only accepted requests are remembered, so a throttled client is not punished twice.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._capacity = max(1, math.floor(rate)) if rate > 0 else 0
        self._window = self._capacity / rate if rate > 0 else 0.0
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float) -> bool:
        """Record and accept the request, or return False when it is over the rate."""
        if self.rate <= 0:
            return True
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self._window:
            hits.popleft()
        if len(hits) >= self._capacity:
            return False
        hits.append(now)
        return True


class DailyQuota:
    """Requests per key per UTC day (the counter resets at 00:00:00 UTC)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _day(now: float) -> int:
        return int(now // 86400)

    def used(self, key: str, now: float) -> int:
        """Requests counted today for ``key``."""
        day, count = self._used.get(key, (self._day(now), 0))
        return count if day == self._day(now) else 0

    def exceeded(self, key: str, now: float) -> bool:
        """True when today's budget is spent (never when the quota is disabled)."""
        return self.limit > 0 and self.used(key, now) >= self.limit

    def count(self, key: str, now: float) -> None:
        """Count one request against today's budget."""
        self._used[key] = (self._day(now), self.used(key, now) + 1)

    def set_used(self, key: str, used: int, now: float) -> None:
        """Pretend ``used`` requests were already made today."""
        self._used[key] = (self._day(now), used)
