"""Faults and limits: scripted and seeded random faults, throttling and the daily quota."""

from __future__ import annotations

from flipsync.sandbox.config import SCRIPTED_FAULT_KINDS
from flipsync.sandbox.core import SandboxCore
from flipsync.sandbox.oauth import DEFAULT_CLIENT_ID
from flipsync.sandbox.wire import (
    QUOTA_BODY,
    THROTTLED_BODY,
    SandboxResponse,
    error_array,
    json_response,
)

PRE_FAULTS = frozenset({"500", "503", "drop", "throttle"})


def fault_response(kind: str) -> SandboxResponse:
    """The answer a fault of ``kind`` produces (a drop produces none)."""
    if kind in ("drop", "drop_after"):
        return SandboxResponse(0, drop=True)
    if kind == "throttle":
        return json_response(429, THROTTLED_BODY)
    if kind == "503":
        return error_array(
            503, "service_unavailable", "Our internal service is temporarily unavailable."
        )
    return error_array(500, "server_error", "There was a problem with our internal service.")


class FaultsMixin(SandboxCore):
    """What goes wrong on purpose or by excess: faults, the rate window and the daily quota."""

    def fail_next(self, n: int, kind: str, path_prefix: str = "/v3") -> None:
        """Give the next ``n`` requests whose path starts with ``path_prefix`` a fault.

        Kinds: "500", "503", "drop", "500_after", "drop_after", "throttle". Scripted
        faults also work on ``/oauth2`` paths, and are used before any random fault.
        """
        if kind not in SCRIPTED_FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use {sorted(SCRIPTED_FAULT_KINDS)}")
        if n < 0:
            raise ValueError("n must not be negative")
        with self._lock:
            self._scripted.extend((kind, path_prefix) for _ in range(n))

    def set_quota_used(self, n: int, client_id: str | None = None) -> None:
        """Pretend ``n`` API requests were made today (by one client, or by every client)."""
        with self._lock:
            now = self.now()
            targets = [client_id] if client_id is not None else list(self._oauth.clients)
            for target in targets:
                self._quota.set_used(target, n, now)

    def quota_used(self, client_id: str = DEFAULT_CLIENT_ID) -> int:
        """API requests counted today against ``client_id``'s daily quota."""
        with self._lock:
            return self._quota.used(client_id, self.now())

    def _next_fault(self, path: str) -> str | None:
        """Scripted faults first (in order, matching prefix), then the seeded random ones."""
        scripted = self._take_scripted(path)
        if scripted is not None:
            return scripted
        if (
            path.startswith("/v3")
            and self.config.fault_rate > 0
            and self._rng.random() < self.config.fault_rate
        ):
            return self._rng.choice(self._fault_kinds)
        return None

    def _over_limit(self, client_id: str, now: float) -> SandboxResponse | None:
        """The daily quota (429 ``quota_exceeded``), then the per-second rate (429 ``throttled``).

        A request within both counts against today's quota; a refused one does not.
        """
        if self._quota.exceeded(client_id, now):
            return json_response(429, QUOTA_BODY)
        if not self._rate.allow(client_id, now):
            return json_response(429, THROTTLED_BODY)
        self._quota.count(client_id, now)
        return None

    def _take_scripted(self, path: str) -> str | None:
        """The first scripted fault whose prefix matches ``path``, removed from the queue."""
        for index, (kind, prefix) in enumerate(self._scripted):
            if path.startswith(prefix):
                del self._scripted[index]
                return kind
        return None
