"""Constant Contact clients built from an organization's settings: the one place that wires them.

`flipsync run`, `check`, `cleanup-test-contacts`, `auth login` and the fleet all reach
Constant Contact through these functions, so every one of them sees the same client
settings (rate, timeout, secret from its environment variable) and the same machine-wide
request budget. The HTTP stack is imported inside the functions: commands that never talk
to Constant Contact (status, ingest, explain) do not load requests at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flipsync.clock import SYSTEM_CLOCK, Clock
from flipsync.config import secret_from_env
from flipsync.settings import Settings

if TYPE_CHECKING:
    import requests
    from requests.adapters import BaseAdapter

    from flipsync.ctct.budget import KeyBudget
    from flipsync.ctct.client import ConstantContactClient
    from flipsync.ctct.http import RetryPolicy
    from flipsync.ctct.types import ClientSettings


_transports: dict[str, BaseAdapter] = {}
_transports_lock = threading.Lock()


def mount_transport(prefix: str, adapter: BaseAdapter) -> Callable[[], None]:
    """Send requests for URLs under ``prefix`` through ``adapter``; returns the undo.

    The one injection point for the transport: every session built here from now on (the
    client's, the token manager's, the login's) mounts it. Nothing is mounted in
    production; the tests mount ``flipsync.sandbox.inprocess.SandboxAdapter`` to answer
    from a sandbox in this process instead of over a socket.
    """
    with _transports_lock:
        _transports[prefix] = adapter

    def unmount() -> None:
        with _transports_lock:
            if _transports.get(prefix) is adapter:
                del _transports[prefix]

    return unmount


def new_session(user_agent: str) -> requests.Session:
    """The HTTP session for Constant Contact and its OAuth server, with mounted transports."""
    from flipsync.ctct.http import make_session

    session = make_session(user_agent)
    with _transports_lock:
        mounted = list(_transports.items())
    for prefix, adapter in mounted:
        session.mount(prefix, adapter)
    return session


def client_settings(settings: Settings) -> ClientSettings:
    """What the Constant Contact client takes from the config (the secret from its env var)."""
    from flipsync.ctct.types import ClientSettings

    cc = settings.constant_contact
    return ClientSettings(
        api_base_url=cc.api_base_url,
        oauth_base_url=cc.oauth_base_url,
        client_id=cc.client_id,
        client_secret=secret_from_env(cc.client_secret_env),
        token_file=cc.token_file,
        requests_per_second=cc.requests_per_second,
        timeout_seconds=cc.timeout_seconds,
    )


def build_client(
    settings: Settings, *, retry: RetryPolicy | None = None, clock: Clock = SYSTEM_CLOCK
) -> ConstantContactClient:
    """The Constant Contact client for one organization (no request is sent here).

    ``retry`` replaces the default retry policy of API and token requests (tests pass
    ``RetryPolicy.no_wait()`` to run fault scenarios end to end without sleeping). Every
    wait (rate spacing, retries, token expiry, the token lock) reads and sleeps on
    ``clock``; tests pass a ``VirtualClock``.
    """
    from flipsync.ctct.auth import TokenManager
    from flipsync.ctct.client import ConstantContactClient
    from flipsync.ctct.http import RetryPolicy, process_limiter

    wanted = client_settings(settings)
    session = new_session(wanted.user_agent)
    tokens = TokenManager(
        wanted,
        session,
        clock=clock.now,
        sleep=clock.sleep,
        limiter=process_limiter(1.0, key="token", clock=clock),
        retry=retry if retry is not None else RetryPolicy(max_attempts=3, sleep=clock.sleep),
    )
    return ConstantContactClient(
        wanted,
        tokens,
        session=session,
        retry=(
            retry
            if retry is not None
            else RetryPolicy(max_attempts=wanted.max_attempts, sleep=clock.sleep)
        ),
        limiter=key_budget(settings, clock),
        clock=clock.now,
    )


def key_budget(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> KeyBudget:
    """The machine-wide request budget of this organization's application key."""
    from flipsync.ctct.budget import KeyBudget, default_budget_file

    cc = settings.constant_contact
    return KeyBudget(
        cc.budget_file or default_budget_file(cc.client_id),
        organization=settings.organization,
        rate_per_second=cc.requests_per_second,
        daily_limit=cc.daily_request_budget,
        organization_daily_limit=cc.organization_daily_request_budget,
        wall_clock=clock.time,
        sleep=clock.sleep,
    )


def key_usage(settings: Settings) -> dict[str, Any]:
    """Today's requests of the application key and of this organization, with their budgets."""
    usage = key_budget(settings).usage()
    cc = settings.constant_contact
    return {
        "day_utc": usage.day,
        "application_key": usage.key_total,
        "application_key_budget": cc.daily_request_budget,
        "organization": usage.organization,
        "organization_budget": cc.organization_daily_request_budget,
    }


def usage_today(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> tuple[int, int]:
    """Requests sent today by the whole application key and by this organization."""
    used = key_budget(settings, clock).usage()
    return used.key_total, used.organization
