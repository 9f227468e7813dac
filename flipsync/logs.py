"""Logging setup, done once by the CLI: JSON lines for cron, readable lines on a terminal.

Logs go to stderr so stdout stays for reports. Every other module only calls
structlog.get_logger() and logs ids and counts, never tokens or contact data.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from flipsync.safe_text import for_terminal

REDACT_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "client_secret",
        "authorization",
        "code",
        "secret",
        "password",
    }
)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: a secret-named field never reaches the output."""
    for key in list(event):
        if key.lower() in REDACT_KEYS:
            event[key] = "<hidden>"
    return event


def _terminal_safe(_: Any, __: str, line: Any) -> Any:
    """Console lines go to a terminal: escape sequences from payload text are shown, not run.

    (JSON lines need nothing: the JSON renderer escapes every non-ASCII character.)
    """
    return for_terminal(line) if isinstance(line, str) else line


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for the process. `fmt` is json, console or auto (by TTY)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
            *([] if use_json else [_terminal_safe]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
