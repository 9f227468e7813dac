"""Time as a value: what every wait in flipsync reads and sleeps on.

Rate limits, token expiry, the import poll schedule and lock waits all depend on time.
They take a ``Clock`` instead of calling ``time`` directly, so the product runs on
``SYSTEM_CLOCK`` and the tests run hours of waiting in no time on a ``VirtualClock``
(shared with the sandbox, whose token expiry, activities and rate windows then move with
it).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall time, a monotonic reading for intervals, and a way to wait."""

    def now(self) -> datetime:
        """The current time, timezone-aware in UTC."""
        ...

    def time(self) -> float:
        """The current time in seconds since the epoch (for state shared between processes)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for spacing and deadlines)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait this long."""
        ...


class SystemClock:
    """The real clock of the machine."""

    def now(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)

    def time(self) -> float:
        """``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """``time.sleep``; a negative wait is no wait."""
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class VirtualClock:
    """A clock that moves only when someone sleeps on it or ``advance`` is called; thread-safe.

    Sleeping returns at once, with the clock moved on by the wait: a run that polls an import
    for a minute, or paces 100 requests at 4 per second, takes no real time, and what it
    waited is still measurable (``slept``). Starts at the real time unless told otherwise.
    """

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._now = time.time() if start is None else start
        self.slept = 0.0

    def now(self) -> datetime:
        """The virtual time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), UTC)

    def time(self) -> float:
        """The virtual time in epoch seconds."""
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        """The same reading as ``time``: virtual time never goes back."""
        return self.time()

    def sleep(self, seconds: float) -> None:
        """Move the clock on by ``seconds`` and return at once."""
        if seconds > 0:
            with self._lock:
                self._now += seconds
                self.slept += seconds

    def advance(self, seconds: float) -> None:
        """Move the clock on without counting it as a wait (time passing elsewhere)."""
        with self._lock:
            self._now += max(0.0, seconds)
