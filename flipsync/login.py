"""Logging in to Constant Contact and reading the token file: `flipsync auth login` and `status`.

The client settings come from `flipsync.clients.client_settings`, the same function a
run uses, so a login reaches the same servers with the same timeouts a run will.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flipsync.clients import client_settings, new_session
from flipsync.clock import SYSTEM_CLOCK, Clock
from flipsync.errors import ConfigError
from flipsync.settings import Settings

if TYPE_CHECKING:
    from flipsync.ctct.types import DevicePrompt


def authorization_link(settings: Settings, redirect_uri: str) -> str:
    """The URL to open for the authorization-code flow (a fresh state value each time).

    The secret is checked first: without it the code the person brings back cannot be used.
    """
    from flipsync.ctct.auth import authorization_url

    wanted = client_settings(settings)
    _require_secret(settings, wanted.client_secret)
    return authorization_url(wanted, redirect_uri, secrets.token_urlsafe(16))


def _require_secret(settings: Settings, secret: str | None) -> None:
    """ConfigError naming the key and the fix when the authorization-code flow has no secret."""
    if secret:
        return
    name = settings.constant_contact.client_secret_env
    problem = (
        f"the environment variable {name} (constant_contact.client_secret_env) is not set"
        if name
        else "constant_contact.client_secret_env is not set"
    )
    raise ConfigError(
        "Constant Contact settings",
        [
            f"{problem}: the authorization-code login (--print-url, --code) needs the "
            "application's client secret. Name the variable under "
            "constant_contact.client_secret_env and set it, or log in with the device flow "
            "(`flipsync auth login` with no options), which needs no secret"
        ],
    )


def login(
    settings: Settings,
    *,
    code: str | None,
    redirect_uri: str,
    on_prompt: Callable[[DevicePrompt], None],
    clock: Clock = SYSTEM_CLOCK,
) -> Path:
    """Get a token set (from ``code``, else by device flow) and write the token file (0600).

    ``on_prompt`` shows the person what to open and which code to enter (device flow).
    Returns the token file's path.
    """
    from flipsync.ctct.auth import device_login, exchange_code, write_token_file

    wanted = client_settings(settings)
    session = new_session(wanted.user_agent)
    if code:
        _require_secret(settings, wanted.client_secret)
        token_set = exchange_code(
            wanted, session, code, redirect_uri, clock=clock.now, sleep=clock.sleep
        )
    else:
        token_set = device_login(
            wanted, session, on_prompt=on_prompt, sleep=clock.sleep, clock=clock.now
        )
    write_token_file(wanted.token_file, token_set)
    return wanted.token_file


def auth_status(settings: Settings, now: datetime) -> dict[str, Any]:
    """When the access token expires and how long the refresh token has left, seen at ``now``."""
    from flipsync.ctct.auth import read_token_file, token_status

    return token_status(read_token_file(settings.constant_contact.token_file), now)
