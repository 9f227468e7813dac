"""The switches of the Constant Contact sandbox, as one frozen value.

Defaults mirror the real service as constant-contact-v3.md describes it (4 requests/s,
10,000 requests/day, 24 h access tokens, rotating refresh tokens, 1 token request/s), so
a sandbox built with no arguments is as strict as production.
"""

from __future__ import annotations

from dataclasses import dataclass

FAULT_KINDS: frozenset[str] = frozenset({"500", "503", "drop", "500_after", "drop_after"})
"""Random fault kinds. "drop" closes the socket without answering; the "_after" kinds
process the request first (so its effects happen) and then fail or drop the reply."""

SCRIPTED_FAULT_KINDS: frozenset[str] = FAULT_KINDS | {"throttle"}
"""Kinds accepted by ``Sandbox.fail_next``; "throttle" answers 429 ``throttled``."""


@dataclass(frozen=True)
class SandboxConfig:
    """How strict and how flaky the sandbox is.

    Attributes:
        requests_per_second: API requests allowed per application key in a sliding
            1-second window; 0 disables the limit. Over it: 429 ``throttled``.
        daily_quota: API requests per application key per UTC day; 0 disables it.
            Over it: 429 ``quota_exceeded``.
        token_lifetime_seconds: ``expires_in`` of access tokens.
        rotating_refresh_tokens: True: every token set replaces the refresh token and
            invalidates all earlier ones. False ("long lived"): a refresh returns the
            same refresh token.
        confirmed_opt_in: the account's Confirmed Opt-In setting; when on, sign_up_form
            creates new contacts as ``pending_confirmation`` instead of ``explicit``.
        activity_seconds: how long a bulk activity stays initialized/processing before
            it completes and its effects are applied.
        fault_rate: probability that an API request gets a random fault.
        fault_seed: seed of the fault generator, so flaky runs are reproducible.
        fault_kinds: which faults the random generator may pick.
        token_endpoint_per_second: token requests allowed per client id per second;
            0 disables the limit.
        device_interval: polling ``interval`` of the device flow, enforced with
            ``slow_down``.
        device_expires_in: lifetime of a device code in seconds.
    """

    requests_per_second: float = 4
    daily_quota: int = 10000
    token_lifetime_seconds: int = 86400
    rotating_refresh_tokens: bool = True
    confirmed_opt_in: bool = False
    activity_seconds: float = 0.5
    fault_rate: float = 0.0
    fault_seed: int = 0
    fault_kinds: frozenset[str] = FAULT_KINDS
    token_endpoint_per_second: float = 1
    device_interval: int = 5
    device_expires_in: int = 600

    def __post_init__(self) -> None:
        """Reject impossible settings early, with the offending name in the message."""
        # Accept any iterable of kinds (a list from YAML or JSON) but store a frozenset.
        object.__setattr__(self, "fault_kinds", frozenset(self.fault_kinds))
        unknown = sorted(self.fault_kinds - FAULT_KINDS)
        if unknown:
            raise ValueError(f"fault_kinds: unknown kind(s) {unknown}; use {sorted(FAULT_KINDS)}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        if self.fault_rate > 0 and not self.fault_kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        for name in (
            "requests_per_second",
            "daily_quota",
            "activity_seconds",
            "token_endpoint_per_second",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("token_lifetime_seconds", "device_expires_in"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.device_interval < 0:
            raise ValueError("device_interval must not be negative")
