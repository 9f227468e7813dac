"""File locks: the one way flipsync processes take turns.

Three things are shared between processes through a lock file, and all of them use
``locked_file`` here:

- the organization's run lock (``hold_lock``): a second run exits at once, a backfill
  batch waits for a run in progress;
- the token file's ``.lock`` (flipsync.ctct.auth): one refresh at a time across processes;
- the application key's budget file (flipsync.ctct.budget): its JSON lives in the locked
  file itself and is read and written under the lock.

They are ``flock`` locks: the kernel drops them when their process dies, so a crashed or
killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flipsync.errors import LockHeld
from flipsync.state_guard import not_writable

# How often a waiting run (a backfill batch) tries the organization's lock again.
RUN_LOCK_POLL_SECONDS = 0.2


class LockBusy(Exception):
    """Another process kept the lock for the whole allowed wait."""


@contextmanager
def locked_file(
    path: Path,
    *,
    wait_seconds: float | None = 0.0,
    poll_seconds: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` and yield its descriptor (open for reading and writing).

    The file is created 0600 (its folder 0700) and kept 0600: lock files sit beside secrets.
    ``wait_seconds`` None waits as long as it takes; otherwise the lock is tried every
    ``poll_seconds`` until the wait is over, then LockBusy. ``clock`` and ``sleep`` are the
    wait's, so tests can drive it without sleeping. The lock is released when the block ends.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(PermissionError):  # another owner's file: keep its mode
            os.fchmod(fd, 0o600)
        if wait_seconds is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = clock() + wait_seconds
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if clock() >= deadline:
                        raise LockBusy(str(path)) from None
                    sleep(poll_seconds)
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def hold_lock(
    path: Path,
    what: str = "run",
    *,
    wait_seconds: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[None]:
    """Take the organization's lock, waiting at most `wait_seconds`; LockHeld when it is kept.

    The holder writes who it is into the file, so the refusal can name the other process.
    """
    stack = contextlib.ExitStack()
    try:
        fd = stack.enter_context(
            locked_file(
                path,
                wait_seconds=wait_seconds,
                poll_seconds=RUN_LOCK_POLL_SECONDS,
                clock=clock,
                sleep=sleep,
            )
        )
    except PermissionError:
        raise not_writable(path, "lock file") from None
    except LockBusy:
        holder = ""
        with contextlib.suppress(OSError):
            holder = path.read_bytes()[:200].decode("utf-8", "replace").strip()
        detail = f" ({holder})" if holder else ""
        raise LockHeld(
            f"another flipsync process is working on this organization{detail}; "
            f"this {what} did nothing. It is safe to let the next cron run try again."
        ) from None
    with stack:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {what}".encode(), 0)
        yield
