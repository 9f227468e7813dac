"""Frozen values the Constant Contact client takes and returns.

This module owns the plain data that crosses the client's boundary: the settings
`flipsync.clients` fills from the config, the OAuth token set, and what the API methods
return. No I/O lives here, and `flipsync.ctct` loads its HTTP modules only on first use,
so the core (and its fakes) can use these types without pulling in HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from flipsync import __version__

#: Activity states after which Constant Contact changes nothing any more.
TERMINAL_ACTIVITY_STATES = frozenset({"completed", "cancelled", "failed", "timed_out"})


@dataclass(frozen=True)
class ClientSettings:
    """Everything the client needs from the config; secrets never come from the YAML itself."""

    api_base_url: str = "https://api.cc.email/v3"
    oauth_base_url: str = "https://authz.constantcontact.com/oauth2/default/v1"
    client_id: str = ""
    # From an env var; None for public (device/PKCE) apps. Kept out of repr so it never gets logged.
    client_secret: str | None = field(default=None, repr=False)
    token_file: Path = Path("tokens.json")
    requests_per_second: float = 4.0
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    refresh_margin_seconds: int = 300
    user_agent: str = f"flipsync/{__version__}"


@dataclass(frozen=True)
class TokenSet:
    """One OAuth token set as stored in the token file; the tokens are kept out of repr."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    token_type: str
    scope: str
    expires_at: datetime
    obtained_at: datetime


@dataclass(frozen=True)
class DevicePrompt:
    """What a person needs to approve a device login in a browser."""

    verification_uri: str
    verification_uri_complete: str | None
    user_code: str
    expires_in: int


@dataclass(frozen=True)
class ContactList:
    """A contact list of the account."""

    list_id: str
    name: str


@dataclass(frozen=True)
class CustomField:
    """A custom field of the account; imports address it as ``cf:<name>``."""

    custom_field_id: str
    name: str
    label: str
    type: str


@dataclass(frozen=True)
class RemoteContact:
    """What Constant Contact knows about one contact, as far as the sync needs it."""

    contact_id: str
    email: str | None
    permission: str | None  # email_address.permission_to_send
    opt_out_source: str | None
    deleted: bool
    list_ids: frozenset[str]
    created_at: datetime | None
    updated_at: datetime | None
    first_name: str | None
    last_name: str | None


@dataclass(frozen=True)
class ActivityStatus:
    """The status of one bulk activity (an import, as flipsync uses them)."""

    activity_id: str
    state: str
    percent_done: int
    errors: tuple[str, ...]
    items_total_count: int | None
    items_completed_count: int | None
    person_count: int | None
    error_count: int | None
    correctable_count: int | None
    cannot_add_to_list_count: int | None
    created_at: datetime | None
    results_href: str | None = None  # an export's file, once it completed

    @property
    def finished(self) -> bool:
        """True once Constant Contact will not change this activity any more."""
        return self.state in TERMINAL_ACTIVITY_STATES


@dataclass(frozen=True)
class SignUpResult:
    """The answer of POST /contacts/sign_up_form."""

    contact_id: str
    created: bool
