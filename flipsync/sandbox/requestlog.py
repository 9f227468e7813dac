"""The sandbox's record of every API and OAuth request, for tests and benchmarks.

Entries are frozen and keep the raw body, so nothing a reader does can change the log;
``body`` parses a fresh copy on each access.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from flipsync.sandbox.wire import iso_from_micros


@dataclass(frozen=True)
class RequestLogEntry:
    """One request as the sandbox saw and answered it.

    Attributes:
        timestamp: sandbox-clock seconds (epoch) when the request arrived.
        method, path: as received; ``query`` holds the first value of each parameter.
        status: the status sent, or None when the connection was dropped.
        error_key: ``error_key`` (API) or ``error`` (OAuth) of an error answer.
        fault: the injected fault kind ("500", "503", "drop", "500_after",
            "drop_after", "throttle"), if any.
        rejected: True when the request was refused before it was processed (401,
            429, or a fault that is not an "_after" kind); its effects did not happen.
        client_id: the application key the request was made for, when known.
    """

    timestamp: float
    method: str
    path: str
    query: Mapping[str, str]
    status: int | None
    error_key: str | None
    fault: str | None
    rejected: bool
    client_id: str | None
    content_type: str = ""
    raw_body: bytes = field(default=b"", repr=False)

    @property
    def body(self) -> Any:
        """The JSON body (a fresh copy), or None when the body is empty or not JSON."""
        if not self.raw_body or "json" not in self.content_type:
            return None
        try:
            return json.loads(self.raw_body)
        except ValueError:
            return None

    @property
    def form(self) -> dict[str, str] | None:
        """The form fields of an application/x-www-form-urlencoded body (OAuth requests)."""
        if "x-www-form-urlencoded" not in self.content_type:
            return None
        parsed = parse_qs(self.raw_body.decode("utf-8", errors="replace"), keep_blank_values=True)
        return {name: values[0] for name, values in parsed.items()}

    @property
    def dropped(self) -> bool:
        """True when the client got no answer at all."""
        return self.status is None

    def to_json(self) -> dict[str, Any]:
        """The entry as plain JSON (the admin endpoint ``GET /__sandbox/requests``)."""
        return {
            "timestamp": self.timestamp,
            "at": iso_from_micros(int(self.timestamp * 1_000_000)),
            "method": self.method,
            "path": self.path,
            "query": dict(self.query),
            "body": self.body,
            "form": self.form,
            "body_bytes": len(self.raw_body),
            "status": self.status,
            "error_key": self.error_key,
            "fault": self.fault,
            "rejected": self.rejected,
            "client_id": self.client_id,
        }
