"""Progress of long work (ingest, the mirror build, backfills, long runs) for a person watching.

The core reports progress through a plain callable, ``Progress(what, done, total)``; it never
knows whether anyone looks. The CLI passes ``TerminalProgress`` only when stderr is a
terminal and the output is for people (not ``--json``, not cron's JSON logs); everywhere
else it passes ``no_progress``, so a log file never fills with bars.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

Progress = Callable[[str, int, "int | None"], None]


def no_progress(what: str, done: int, total: int | None) -> None:
    """Progress nobody watches."""


class TerminalProgress:
    """One self-overwriting line on stderr: what, a bar when the total is known, count, rate."""

    WIDTH = 30

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        every: float = 0.2,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._every = every
        self._started: dict[str, float] = {}
        self._shown = 0.0
        self._open = False

    def __call__(self, what: str, done: int, total: int | None) -> None:
        now = self._clock()
        start = self._started.setdefault(what, now)
        finished = total is not None and done >= total
        if not finished and now - self._shown < self._every:
            return
        self._shown = now
        rate = done / (now - start) if now > start else 0.0
        if total:
            filled = min(self.WIDTH, int(self.WIDTH * done / total))
            bar = "[" + "#" * filled + "." * (self.WIDTH - filled) + "] "
            count = f"{done:,}/{total:,}"
        else:
            bar, count = "", f"{done:,}"
        self._stream.write(f"\r{what}: {bar}{count} ({rate:,.0f}/s)\x1b[K")
        self._open = True
        if finished:
            self.close()
        self._stream.flush()

    def close(self) -> None:
        """End the line, so what is printed next starts on its own."""
        if self._open:
            self._stream.write("\n")
            self._stream.flush()
            self._open = False


def for_people(as_json: bool) -> Progress:
    """A terminal bar when a person watches stderr and asked for text; otherwise nothing."""
    from flipsync import logs

    if as_json or logs.reports_as_events() or not sys.stderr.isatty():
        return no_progress
    return TerminalProgress()
