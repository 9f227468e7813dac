"""The settings of one organization, as frozen values: what the config means, not how it is read.

The core (records, rules, policy, sync, push) takes these types, so they live apart from
``flipsync.config``, which reads the YAML and validates it with pydantic models
(``flipsync.config_schema``); only config loading imports yaml or pydantic.
Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Literal

CONFIG_ENV = "FLIPSYNC_CONFIG"
DEFAULT_API_BASE = "https://api.cc.email/v3"
DEFAULT_OAUTH_BASE = "https://authz.constantcontact.com/oauth2/default/v1"

Setup = Literal["mailing_list_contacts", "all_contacts_uniform", "all_contacts_by_subscription"]
Status = Literal["explicit", "implicit", "not_set"]
SETUPS: tuple[str, ...] = (
    "mailing_list_contacts",
    "all_contacts_uniform",
    "all_contacts_by_subscription",
)
STATUSES: tuple[str, ...] = ("explicit", "implicit", "not_set")
EXISTING_FIELDS: tuple[str, ...] = ("first_name", "last_name", "company_name", "custom_fields")
LOOKUP_STRATEGIES: tuple[str, ...] = ("auto", "lookup", "mirror")
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


@dataclass(frozen=True)
class FieldMap:
    """Flipcause payload field names flipsync reads; each one is configurable.

    The defaults are the names seen in Flipcause's documentation, or the most
    likely guess where the documentation is cut off (see the reference notes).
    """

    webhook_record_id: str = "webhook_record_id"
    trigger_type: str = "webhook_trigger_type"
    activity_type: str = "activity_type"
    activity_id: str = "master_activity_auto_id"
    transaction_id: str = "transaction_id"
    payment_id: str = "AD_payment_id"
    contact_id: str = "AD_contact_id"
    transaction_date: str = "AD_transaction_date"
    campaign_id: str = "AD_campaign_id"
    campaign_title: str = "AD_campaign_title"
    first_name: str = "PD_first_name"
    last_name: str = "PD_last_name"
    business_name: str = "PD_business_name"
    email: str = "PD_email"
    phone: str = "PD_phone"
    street: str = "PD_address"
    city: str = "PD_city"
    state: str = "PD_state"
    postal_code: str = "PD_zip"
    country: str = "PD_country"
    amount: str = "DD_amount"


# Canonical activity kinds and the spellings that map to them. Matching ignores
# case and spacing, and accepts the letter code, the word, or both ("E Registration").
DEFAULT_ACTIVITY_TYPES: dict[str, tuple[str, ...]] = {
    "mailing_list": ("Mailing List", "ML", "Mailing List Sign Up"),
    "donation": ("Donation", "D"),
    "registration": ("E Registration", "Registration", "E"),
    "store_order": ("G Store Order", "Store Order", "G"),
    "volunteer": ("V Volunteer", "Volunteer", "V"),
    "sponsorship": ("R Sponsorship", "Sponsorship", "R"),
    "refund": ("RD Refund", "Refund", "RD"),
    "recurring_setup": ("RS Recurring Setup", "Recurring Setup", "RS"),
}

# Record kinds and the `webhook_trigger_type` spellings that map to them (case, spacing,
# `_` and `-` ignored). Only new_activity and new_transaction are documented; the contact
# and merchant strings are guesses to confirm from real payloads (`flipsync fields` counts
# the records each kind recognises). A refund is a new transaction in Flipcause, so it is
# normally recognised from its activity type (`activity_types.refund`), not its trigger.
RECORD_KINDS: tuple[str, ...] = (
    "activity",
    "transaction",
    "contact",
    "merchant_payment",
    "merchant_credit",
    "refund",
)
DEFAULT_TRIGGER_TYPES: dict[str, tuple[str, ...]] = {
    "activity": ("new_activity",),
    "transaction": ("new_transaction",),
    "contact": ("new_contact",),
    "merchant_payment": (
        "new_merchant_account_payment",
        "new_merchant_payment",
        "merchant_account_payment",
        "merchant_payment",
    ),
    "merchant_credit": (
        "new_merchant_account_credit",
        "new_merchant_credit",
        "merchant_account_credit",
        "merchant_credit",
    ),
    "refund": ("new_refund",),
}


# FieldMap name -> the Flipcause CSV export column(s) that hold it, for
# `flipsync ingest --format flipcause-csv`. The defaults are the contact and transaction
# export headers in the reference notes (third-party sources; exports may have changed).
# Where several columns are listed, the first one present and non-empty in a row wins.
DEFAULT_CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "transaction_id": ("Transaction ID",),
    "transaction_date": ("Transaction Date",),
    "activity_type": ("Transaction Type",),
    "campaign_id": ("Campaign ID",),
    "campaign_title": ("Campaign Title",),
    "first_name": ("First Name",),
    "last_name": ("Last Name",),
    "business_name": ("Business/Organization Name",),
    "email": ("Email",),
    "phone": ("Phone", "Primary Mobile Number", "Primary Home Number"),
    "street": ("Address",),
    "city": ("City",),
    "state": ("State/Province", "State"),
    "postal_code": ("Postal Code",),
    "country": ("Country",),
    "amount": ("Amount",),
}


@dataclass(frozen=True)
class FlipcauseSettings:
    """How Flipcause payloads and CSV exports are read."""

    fields: FieldMap = field(default_factory=FieldMap)
    activity_types: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_ACTIVITY_TYPES)
    )
    # Record kind -> webhook_trigger_type spellings (see DEFAULT_TRIGGER_TYPES).
    trigger_types: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_TRIGGER_TYPES)
    )
    # Flipcause field name -> Constant Contact custom field name (must exist in the account).
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    # FieldMap name -> CSV export column names (see DEFAULT_CSV_COLUMNS).
    csv_columns: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_CSV_COLUMNS)
    )


@dataclass(frozen=True)
class ConstantContactSettings:
    """Where and how to reach Constant Contact. No secret values, only env var names."""

    api_base_url: str = DEFAULT_API_BASE
    oauth_base_url: str = DEFAULT_OAUTH_BASE
    client_id: str = ""
    client_secret_env: str | None = None
    token_file: Path = Path("tokens.json")
    requests_per_second: float = 4.0
    timeout_seconds: float = 30.0
    confirmed_opt_in: bool = False
    activity_wait_seconds: float = 120.0
    max_contacts_per_import: int = 40_000
    # Requests per UTC day for the application key (all organizations on this machine),
    # and for this organization alone; counted in budget_file, shared across processes.
    daily_request_budget: int | None = 10_000
    organization_daily_request_budget: int | None = None
    budget_file: Path | None = None


@dataclass(frozen=True)
class Condition:
    """When a routing or skip rule applies to a Flipcause record. Empty fields match anything."""

    activity_types: tuple[str, ...] = ()
    campaign_ids: tuple[str, ...] = ()
    campaign_titles: tuple[str, ...] = ()
    amount_at_least: Decimal | None = None
    recurring: bool | None = None
    email_patterns: tuple[str, ...] = ()
    trigger_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListRule:
    """Adds lists to a person when one of their records matches."""

    name: str
    when: Condition
    add_lists: tuple[str, ...]


@dataclass(frozen=True)
class SkipRule:
    """Drops a record (not the whole person) when it matches, with the rule's name as reason."""

    name: str
    when: Condition


@dataclass(frozen=True)
class ListSettings:
    """List references (names or ids) per class of person; which apply depends on the setup."""

    new: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()
    new_subscribers: tuple[str, ...] = ()
    new_non_subscribers: tuple[str, ...] = ()

    def all_refs(self) -> tuple[str, ...]:
        """Every list named here, for the up-front existence check."""
        return self.new + self.existing + self.new_subscribers + self.new_non_subscribers


@dataclass(frozen=True)
class PolicySettings:
    """The consent setup and routing: which people, which status, which lists."""

    setup: Setup = "all_contacts_uniform"
    new_contact_status: Status = "implicit"
    new_non_subscriber_status: Status = "implicit"
    lists: ListSettings = field(default_factory=ListSettings)
    existing_contact_fields: tuple[str, ...] = ("first_name", "last_name")
    rules: tuple[ListRule, ...] = ()
    skip: tuple[SkipRule, ...] = ()

    def all_list_refs(self) -> tuple[str, ...]:
        """Every list the policy can write to (setup lists and rule lists)."""
        refs = list(self.lists.all_refs())
        for rule in self.rules:
            refs.extend(rule.add_lists)
        return tuple(dict.fromkeys(refs))


DEFAULT_RETENTION_DAYS = 365


@dataclass(frozen=True)
class RunSettings:
    """How a run walks the inbox."""

    batch_size: int = 25_000
    lookup_strategy: Literal["auto", "lookup", "mirror"] = "auto"
    # `flipsync prune` (cron runs it after each good run) removes payloads, outcomes and
    # run reports older than this; see flipsync/retention.py for what is always kept.
    retention_days: int = DEFAULT_RETENTION_DAYS


@dataclass(frozen=True)
class IntakeSettings:
    """The webhook receiver."""

    webhook_secret_env: str | None = None
    host: str = "127.0.0.1"
    port: int = 8787
    max_body_bytes: int = 256 * 1024


@dataclass(frozen=True)
class TestRecordSettings:
    """Which Flipcause records are tests: made while setting up, removed again at go-live.

    A record is a test when ANY marker matches. `email_matches` are globs, like the
    policy's `email_matches` (`*` any text, `?` one character, `[abc]` one of), compared
    case-insensitively with the whole address.
    """

    __test__ = False  # a settings class, not a pytest test class despite its name

    email_patterns: tuple[str, ...] = ()
    record_ids: tuple[str, ...] = ()
    transaction_ids: tuple[str, ...] = ()
    campaign_ids: tuple[str, ...] = ()
    go_live_date: date | None = None

    @property
    def configured(self) -> bool:
        """True when at least one marker is set."""
        return bool(
            self.email_patterns
            or self.record_ids
            or self.transaction_ids
            or self.campaign_ids
            or self.go_live_date
        )


@dataclass(frozen=True)
class Settings:
    """Everything one organization's config says, validated."""

    config_path: Path
    organization: str
    state_file: Path
    constant_contact: ConstantContactSettings
    flipcause: FlipcauseSettings
    policy: PolicySettings
    run: RunSettings
    intake: IntakeSettings
    test_records: TestRecordSettings = field(default_factory=TestRecordSettings)

    @property
    def lock_file(self) -> Path:
        """One lock per organization, beside its state file."""
        return self.state_file.with_name(self.state_file.name + ".lock")


def spelling_key(text: str) -> str:
    """How trigger type spellings compare: case, spacing, `_` and `-` ignored."""
    return " ".join(re.split(r"[\s_-]+", text.strip())).casefold()


def is_list_id(ref: str) -> bool:
    """A list reference that looks like a Constant Contact list id (a UUID) is an id, else a name."""
    return bool(UUID_RE.match(ref))
