"""The Constant Contact client: the only code in flipsync that speaks HTTP to Constant Contact.

It owns OAuth tokens (``auth``), the request rate, retries and error mapping (``http``), the API
calls and their no-blind-repost rules (``client``), and the field and import size limits
(``limits``). Everything it returns is a frozen dataclass from ``types``; every failure is one
of the exceptions in ``flipsync.errors``.

Typical wiring (the CLI does this)::

    session = make_session(settings.user_agent)
    tokens = TokenManager(settings, session)
    client = ConstantContactClient(settings, tokens)
"""

from __future__ import annotations

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
