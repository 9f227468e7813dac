"""Checks on the state file before SQLite opens it, and the one deliberate way to start over.

SQLite happily turns an empty file into a new database, and a truncated one fails
later, mid-run. Either would make flipsync forget its inbox, checkpoint and history
without a word, so a file that is not a whole SQLite database is refused here with
its path and the two ways out: restore a backup, or `flipsync init --start-over`.
Folders and files that cannot be written are named with the fix, before any work.
"""

from __future__ import annotations

import fcntl
import getpass
import os
from datetime import datetime
from pathlib import Path

from flipsync.errors import NotWritable, StartOverRefused, StateUnusable

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100
START_OVER = "flipsync -c CONFIG init --start-over"


def unusable(path: Path, problem: str) -> StateUnusable:
    """The refusal for a state file that is not a whole flipsync state DB."""
    return StateUnusable(
        f"state file {path} {problem}. flipsync will not treat it as a fresh start, which "
        "would lose the inbox, the checkpoint and the decision history. Restore it from a "
        f"backup, or start over on purpose with `{START_OVER}` (the file is kept beside it "
        f"as {path.name}.unusable-<time>); either way, stop the receiver and cron first."
    )


def header_problem(path: Path) -> str | None:
    """Why an existing file cannot be a whole SQLite database, or None when it may be one.

    Only the 100-byte header and the file size are read, so this costs nothing on a
    big state DB. While a -wal file holds pages not yet copied back, the main file may
    legitimately lag behind its header, so the size check is skipped then.
    """
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes): it was truncated or replaced"
    with path.open("rb") as fh:
        header = fh.read(HEADER_BYTES)
    if not header.startswith(SQLITE_MAGIC):
        return "is not an SQLite database (a foreign or damaged file)"
    if len(header) < HEADER_BYTES:
        return f"is truncated ({size} bytes, shorter than an SQLite header)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_valid = header[24:28] == header[92:96]
    wal = path.with_name(path.name + "-wal")
    if page_size < 512 or page_size & (page_size - 1):
        return "has a damaged SQLite header"
    if wal.exists() and wal.stat().st_size > 0:
        return None
    if size % page_size:
        return f"is truncated ({size} bytes, not a whole number of {page_size}-byte pages)"
    if header_valid and pages and size < pages * page_size:
        return f"is truncated ({size} bytes; its header says {pages * page_size})"
    return None


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry
        return f"uid {os.geteuid()}"


def not_writable(target: Path, what: str) -> NotWritable:
    """The message for a folder or file this user cannot write, with the fix."""
    folder = target if what.endswith("folder") else target.parent
    return NotWritable(
        f"{what} {target} is not writable by {_who()}. Run flipsync as the user that owns "
        f"it (for example `sudo -u flipsync flipsync ...`), or give that user the folder: "
        f"`chown -R <user> {folder} && chmod 700 {folder}`."
    )


def require_writable(path: Path) -> None:
    """Raise NotWritable when the state file or its folder cannot be written (WAL needs both)."""
    folder = path.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise not_writable(probe, "state folder")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise not_writable(path, "state file")


def require_readable(path: Path) -> None:
    """Raise NotWritable-style advice when the state file cannot even be read by this user."""
    if path.exists() and not os.access(path, os.R_OK):
        raise NotWritable(
            f"state file {path} is not readable by {_who()}. Run flipsync as the user that "
            "owns it (for example `sudo -u flipsync flipsync ...`)."
        )


def readonly_uri_query(path: Path) -> str:
    """SQLite URI parameters to read a state DB without writing anything beside it.

    A WAL database normally needs its -shm file, which a folder this user cannot write
    does not allow. With no -wal content there is nothing beyond the main file, so it is
    read as immutable; a process that could write the folder would have made a -wal.
    """
    wal = path.with_name(path.name + "-wal")
    has_wal = wal.exists() and wal.stat().st_size > 0
    if not has_wal and not os.access(path.parent, os.W_OK | os.X_OK):
        return "mode=ro&immutable=1"
    return "mode=ro"


# SQLite's unix VFS: every open connection to a WAL database holds a shared POSIX lock on
# this byte of the -shm file for as long as it is open (its "dead man switch").
_SHM_DMS_BYTE = 128


def in_use_elsewhere(path: Path) -> bool:
    """True when another process has this WAL state DB open (it holds the -shm's DMS lock).

    Only for a file this process has no connection to (init's unusable file): closing our
    probe drops this process's own POSIX locks on the -shm, which then are none.
    """
    shm = path.with_name(path.name + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except OSError:
        return False  # no -shm, or not ours to open: no connection can be using it
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE)
        return False
    finally:
        os.close(fd)


def move_aside(path: Path, now: datetime) -> Path:
    """Rename an unusable state file (and its -wal/-shm) out of the way; returns the new name."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.unusable-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return target


def initialize(path: Path, *, start_over: bool, now: datetime) -> str:
    """`flipsync init`: create the state DB, or replace an unusable one when asked to.

    A healthy state DB is never replaced, with or without --start-over: losing it means
    losing the inbox and the record of every decision. Returns what was done.
    """
    from flipsync.state import StateDB  # state imports this module

    if not path.exists():
        StateDB.open(path).close()
        return f"created the state DB {path} (mode 0600)"
    try:
        with StateDB.open(path, create=False) as db:
            checkpoint, payloads = db.checkpoint, db.inbox_count()
    except StateUnusable:
        if not start_over:
            raise
        if in_use_elsewhere(path):
            raise StartOverRefused(
                f"state file {path} is unusable but another process still has it open (the "
                "webhook receiver, or a run): moving it now would leave that process writing "
                "into the moved file. Stop the receiver and cron (for example `systemctl stop "
                "flipsync-receiver@<org>`), then run this again."
            ) from None
        kept = move_aside(path, now)
        StateDB.open(path).close()
        return (
            f"moved the unusable state file to {kept} and created a new, empty state DB at "
            f"{path}. Ingest saved payloads or CSV exports again to rebuild the inbox."
        )
    if start_over:
        raise StartOverRefused(
            f"state DB {path} is healthy (checkpoint {checkpoint}, {payloads} payloads); "
            "--start-over only replaces an unusable state file. To discard this one on "
            "purpose, stop the receiver and cron and move the file away yourself."
        )
    return (
        f"state DB {path} is already set up (checkpoint {checkpoint}, {payloads} payloads); "
        "nothing changed"
    )
