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


_report_as_event = False
_use_json = False


def _processors(use_json: bool) -> list[Any]:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
        renderer,
        *([] if use_json else [_terminal_safe]),
    ]


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for the process. `fmt` is json, console or auto (by TTY).

    It also decides how run reports go out (see `reports_as_events`) and forgets what an
    earlier command in this process bound (run id, organization).
    """
    global _report_as_event, _use_json
    _use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    _report_as_event = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    structlog.contextvars.clear_contextvars()
    structlog.configure(
        processors=_processors(_use_json),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def bind(**values: str) -> None:
    """Add fields (organization, run_id) to every log line that follows in this context."""
    structlog.contextvars.bind_contextvars(**values)


def reports_as_events() -> bool:
    """True in JSON log mode, or when stdout is no terminal (cron): reports become log events.

    A report in a log file must be one line a machine can read, with counts and no
    personal data; people at a terminal (or `--log-format console`) get the text.
    """
    return _report_as_event


def emit(event: str, *, level: str = "info", **fields: Any) -> None:
    """Write one event in the log format to stdout, whatever --log-level says.

    This is how a command's report reaches a cron log: it is the command's output, not a
    diagnostic, so the level filter does not drop it. Bound fields (run_id, organization)
    are included like in every log line.
    """
    logger = structlog.wrap_logger(
        structlog.PrintLogger(file=sys.stdout),
        processors=_processors(_use_json),
        wrapper_class=structlog.BoundLogger,
    )
    getattr(logger, level)(event, **fields)
