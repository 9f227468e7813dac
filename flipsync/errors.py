"""The exceptions flipsync raises, named for what the operator must do next.

Every error the CLI can meet derives from FlipsyncError and carries the exit code
the CLI maps it to, so cron wrappers and monitors can tell the cases apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit codes, documented in the README."""

    OK = 0
    UNEXPECTED = 1
    CONFIG = 2
    LOCKED = 3
    TRANSIENT = 4
    QUOTA = 5
    REAUTH = 6
    REFUSED = 7
    UNHEALTHY = 8
    INTERRUPTED = 130


class FlipsyncError(Exception):
    """Base class: a message an operator can act on, and an exit code."""

    exit_code: ExitCode = ExitCode.UNEXPECTED


class ConfigError(FlipsyncError):
    """The config is wrong. Carries every problem found, each naming its key and the fix."""

    exit_code = ExitCode.CONFIG

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {len(self.problems)} problem(s):"]
        lines += [f"  - {p}" for p in self.problems]
        lines.append("  See config.example.yaml for every key with a comment.")
        super().__init__("\n".join(lines))


class AccountMismatch(FlipsyncError):
    """The config names something the Constant Contact account does not have (a list, a field)."""

    exit_code = ExitCode.CONFIG


class StateError(FlipsyncError):
    """The state DB is unreadable, from a newer flipsync, or otherwise unsafe to use."""

    exit_code = ExitCode.UNEXPECTED


class StateUnusable(StateError):
    """The state file is empty, truncated or not flipsync's: restore it, or start over on purpose.

    Never treated as a fresh start: that would silently drop the inbox, the checkpoint and
    the decision history. Exit 2, like other problems the message names the fix for.
    """

    exit_code = ExitCode.CONFIG


class StartOverRefused(StateError):
    """`init --start-over` was asked to replace a healthy state DB; it only replaces broken ones."""

    exit_code = ExitCode.CONFIG


class NotWritable(FlipsyncError):
    """A folder or file flipsync must write is read-only for this user; the message names it."""

    exit_code = ExitCode.CONFIG


class LockHeld(FlipsyncError):
    """Another flipsync process holds this organization's lock."""

    exit_code = ExitCode.LOCKED


class InputError(FlipsyncError):
    """An input file cannot be read at all (not found, not UTF-8, unknown format)."""

    exit_code = ExitCode.CONFIG


class ConstantContactError(FlipsyncError):
    """Base for failures talking to Constant Contact."""

    exit_code = ExitCode.TRANSIENT


class TransientError(ConstantContactError):
    """Constant Contact did not answer well after bounded retries; the next run retries."""

    exit_code = ExitCode.TRANSIENT


class QuotaExceeded(ConstantContactError):
    """The daily request quota of the application key is spent; resume after the reset."""

    exit_code = ExitCode.QUOTA

    def __init__(self, message: str, reset_at: datetime) -> None:
        self.reset_at = reset_at
        super().__init__(f"{message} (quota resets at {reset_at.isoformat()})")


class ReauthRequired(ConstantContactError):
    """The refresh token is gone or refused: a person must run `flipsync auth login`."""

    exit_code = ExitCode.REAUTH


class RequestRefused(ConstantContactError):
    """Constant Contact refused a request (400, 403, 404, 409, 415): retrying will not help."""

    exit_code = ExitCode.REFUSED

    def __init__(
        self, message: str, *, status: int, error_key: str | None = None, body: str = ""
    ) -> None:
        self.status = status
        self.error_key = error_key
        self.body = body
        super().__init__(message)


class UnexpectedResponse(TransientError):
    """Constant Contact answered something flipsync cannot use (no JSON, a paging loop).

    A subclass of TransientError: the next run asks again, and a lasting problem shows up as
    the same message run after run.
    """


class LoginFailed(ReauthRequired):
    """An interactive login did not complete (denied, expired, code refused): run it again."""


class ContactExists(RequestRefused):
    """POST /contacts answered 409: the email already belongs to a contact (maybe a deleted one).

    ``contact_id`` is parsed from "Email already exists for contact <id>" when present.
    ``after_uncertain_post`` is True when an earlier attempt of the same create failed without an
    answer, so the existing contact may be the one this very call created; the caller decides.
    """

    def __init__(
        self,
        contact_id: str | None,
        *,
        message: str = "",
        body: str = "",
        after_uncertain_post: bool = False,
    ) -> None:
        self.contact_id = contact_id
        self.after_uncertain_post = after_uncertain_post
        text = message or f"The email already belongs to contact {contact_id or '(id not given)'}"
        super().__init__(text, status=409, error_key="contacts.api.conflict", body=body)


def with_config(message: str, config: str | Path | None) -> str:
    """A message's `flipsync auth login` completed with the config it is about.

    The error comes from deep in the client, which knows no config path; the command (or
    the fleet, which runs many organizations from one directory) does, and a fix that
    cannot be pasted as it stands is half a fix.
    """
    if config is None:
        return message
    return message.replace("`flipsync auth login`", f"`flipsync -c {config} auth login`")
