"""Process-level chores of the CLI, kept out of cli.py so it stays wiring only.

Global options may come after the subcommand (`flipsync status -c org.yaml`), a reader
that closes stdout early (`flipsync status | head -1`) ends the command quietly, and
OS errors on files become one sentence naming the file and the fix.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence

# Options of the top-level group that take a value, and those that do not.
GLOBAL_VALUE_OPTIONS = ("-c", "--config", "--log-level", "--log-format")
EXIT_CLOSED_STDOUT = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


def hoist_global_options(args: Sequence[str], subcommands: Sequence[str]) -> list[str]:
    """Move global options found after the subcommand to the front, so both orders work.

    Only tokens after the first subcommand name are moved, each with its value; `--`
    ends the scan so a literal argument is never taken for an option.
    """
    args = list(args)
    start = None
    i = 0
    while i < len(args):
        if args[i] in GLOBAL_VALUE_OPTIONS:
            i += 2  # the option and its value (a config file may well be named "run")
            continue
        if args[i] in subcommands:
            start = i
            break
        i += 1
    if start is None:
        return args
    head, tail = args[: start + 1], args[start + 1 :]
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(tail):
        arg = tail[i]
        if arg == "--":
            rest.extend(tail[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_VALUE_OPTIONS and "=" in arg and arg.startswith("--"):
            moved.append(arg)
        elif arg in GLOBAL_VALUE_OPTIONS and i + 1 < len(tail):
            moved.extend(tail[i : i + 2])
            i += 1
        elif arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--"):
            moved.append(arg)  # -cPATH
        else:
            rest.append(arg)
        i += 1
    return moved + head + rest


def silence_stdout() -> None:
    """After a reader closed stdout: point it at /dev/null so the final flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real descriptor (a test runner's buffer)
        pass
    finally:
        os.close(devnull)


def describe_os_error(exc: OSError) -> str:
    """One sentence for a file flipsync could not use: which file, why, and what to do."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{reason}: another process listens on that port; choose another (0 picks a free one)."
        )
    if exc.filename is None:
        return f"{reason}."
    target = exc.filename
    if isinstance(exc, PermissionError):
        return (
            f"cannot use {target}: {reason}. Run flipsync as the user that owns the "
            "organization's files (for example `sudo -u flipsync flipsync ...`), or fix the "
            "permissions of that file and its folder."
        )
    if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return f"cannot write {target}: {reason}. Free space or remount it writable."
    return f"cannot use {target}: {reason}."
