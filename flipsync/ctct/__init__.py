"""The Constant Contact client: the only code in flipsync that speaks HTTP to Constant Contact.

It owns OAuth tokens (``auth``), the request rate, retries and error mapping (``http``), the API
calls and their no-blind-repost rules (``client``), and the field and import size limits
(``limits``). Everything it returns is a frozen dataclass from ``types``; every failure is one
of the exceptions in ``flipsync.errors``.

The names below are loaded on first use, not on import: the core imports
``flipsync.ctct.types`` and ``flipsync.ctct.limits`` (plain data, no I/O), and importing
those must not load requests, urllib3 or tenacity through this package.

Typical wiring (``flipsync.clients.build_client`` does this)::

    session = make_session(settings.user_agent)
    tokens = TokenManager(settings, session)
    client = ConstantContactClient(settings, tokens)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flipsync.ctct.auth import (
        TokenManager,
        authorization_url,
        device_login,
        exchange_code,
        read_token_file,
        token_set_from_response,
        token_status,
        write_token_file,
    )
    from flipsync.ctct.client import ConstantContactClient
    from flipsync.ctct.http import RateLimiter, RetryPolicy, make_session, process_limiter
    from flipsync.ctct.limits import ImportRowTooLarge, check_fields, split_import, truncate
    from flipsync.ctct.types import (
        ActivityStatus,
        ClientSettings,
        ContactList,
        CustomField,
        DevicePrompt,
        RemoteContact,
        SignUpResult,
        TokenSet,
    )

# Public name -> the submodule that defines it.
_HOMES = {
    "TokenManager": "auth",
    "authorization_url": "auth",
    "device_login": "auth",
    "exchange_code": "auth",
    "read_token_file": "auth",
    "token_set_from_response": "auth",
    "token_status": "auth",
    "write_token_file": "auth",
    "ConstantContactClient": "client",
    "RateLimiter": "http",
    "RetryPolicy": "http",
    "make_session": "http",
    "process_limiter": "http",
    "ImportRowTooLarge": "limits",
    "check_fields": "limits",
    "split_import": "limits",
    "truncate": "limits",
    "ActivityStatus": "types",
    "ClientSettings": "types",
    "ContactList": "types",
    "CustomField": "types",
    "DevicePrompt": "types",
    "RemoteContact": "types",
    "SignUpResult": "types",
    "TokenSet": "types",
}

__all__ = [
    "ActivityStatus",
    "ClientSettings",
    "ConstantContactClient",
    "ContactList",
    "CustomField",
    "DevicePrompt",
    "ImportRowTooLarge",
    "RateLimiter",
    "RemoteContact",
    "RetryPolicy",
    "SignUpResult",
    "TokenManager",
    "TokenSet",
    "authorization_url",
    "check_fields",
    "device_login",
    "exchange_code",
    "make_session",
    "process_limiter",
    "read_token_file",
    "split_import",
    "token_set_from_response",
    "token_status",
    "truncate",
    "write_token_file",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` the first time someone asks for it."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
