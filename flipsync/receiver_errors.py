"""The answers waitress gives by itself (body too large, malformed HTTP), made JSON like the rest.

waitress refuses a body over its limit (a Content-Length above it, or a chunked body
that grows past it) and malformed requests before the receiver sees them, with a
plain-text page. The README promises a small JSON body for every answer, and a log
line and an intake_rejects row for every refused body: this error task keeps that
promise, and never echoes waitress's own text (which may quote the request line,
and with it the secret in the path).
"""

from __future__ import annotations

import json
from typing import Any

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask


def reason_for(code: int, max_body_bytes: int | None) -> str:
    """A short, fixed reason per status: nothing from the request is repeated."""
    if code == 413:
        limit = f"the limit is {max_body_bytes} bytes (intake.max_body_bytes)"
        return f"body is too large; {limit}" if max_body_bytes else "body is too large"
    if code == 431:
        return "request headers are too large"
    if code == 501:
        return "transfer encoding not supported"
    if code == 400:
        return "malformed HTTP request"
    return "request refused"


class JsonErrorTask(ErrorTask):  # type: ignore[misc]  # waitress is untyped
    """waitress's error answer as `{"error": "..."}`, logged and recorded by `sink`."""

    sink: Any = None  # the Receiver; set per server by use_json_errors

    def execute(self) -> None:
        error = self.request.error
        code = int(getattr(error, "code", 500))
        app = self.sink
        reason = reason_for(code, getattr(app, "max_body_bytes", None))
        body = json.dumps({"error": reason}, separators=(",", ":")).encode("utf-8")
        self.status = f"{code} {getattr(error, 'reason', 'Error')}"
        self.response_headers.extend(
            [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        )
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)
        note = getattr(app, "refused_by_server", None)
        if note is not None:
            request = self.request
            size = int(getattr(request, "content_length", 0) or 0) or int(
                getattr(request, "body_bytes_received", 0) or 0
            )
            headers = getattr(request, "headers", {}) or {}
            note(
                code,
                reason,
                size,
                str(getattr(request, "path", "") or ""),
                headers.get("X_FLIPSYNC_SECRET"),
            )


def use_json_errors(server: Any, sink: Any) -> Any:
    """Make a waitress server answer its own errors in JSON, told to `sink`; returns the server.

    `sink` is the Receiver (waitress wraps the application it was given, so it is passed
    here rather than found on the server).
    """
    task = type("JsonErrorTaskFor", (JsonErrorTask,), {"sink": sink})
    server.channel_class = type("JsonErrorChannel", (HTTPChannel,), {"error_task_class": task})
    return server
