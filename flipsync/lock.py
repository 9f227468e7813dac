"""One lock per organization, so two runs (or a run and a backfill) never overlap."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flipsync.errors import LockHeld
from flipsync.state_guard import not_writable


@contextmanager
def hold_lock(path: Path, what: str = "run", *, wait_seconds: float = 0.0) -> Iterator[None]:
    """Take the lock, waiting at most `wait_seconds`; LockHeld when another process keeps it.

    flock locks die with their process, so a crashed run never leaves a stale lock.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError:
        raise not_writable(path, "lock file") from None
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                detail = f" ({holder})" if holder else ""
                raise LockHeld(
                    f"another flipsync process is working on this organization{detail}; "
                    f"this {what} did nothing. It is safe to let the next cron run try again."
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {what}".encode(), 0)
        yield
    finally:
        os.close(fd)
