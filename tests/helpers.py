"""Builders shared by the tests: configs, payloads and people."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import yaml

from flipsync.config import PolicySettings, Settings, parse_settings
from flipsync.people import Person, group_people
from flipsync.policy import Known
from flipsync.records import FlipcauseRecord, parse_record

_ids = itertools.count(5000)

BASE_CONFIG: dict[str, Any] = {
    "organization": "test-org",
    "state_file": "state.db",
    "constant_contact": {
        "client_id": "flipsync-sandbox",
        "token_file": "tokens.json",
        "requests_per_second": 1000,
        "budget_file": "key-budget.json",
        "activity_wait_seconds": 30,
    },
    "policy": {
        "setup": "all_contacts_uniform",
        "new_contact_status": "implicit",
        "lists": {"new": ["Donors"], "existing": ["Donors"]},
    },
}


def config_dict(**overrides: Any) -> dict[str, Any]:
    """The base config with sections replaced (policy) or merged one level (the others)."""
    data = copy.deepcopy(BASE_CONFIG)
    for key, value in overrides.items():
        if key != "policy" and isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    """Write a YAML config into tmp_path and return its path."""
    path = tmp_path / "flipsync.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def settings_from(data: dict[str, Any], tmp_path: Path | None = None) -> Settings:
    """Validated settings from a dict, as if read from tmp_path/flipsync.yaml."""
    base = tmp_path or Path("/nonexistent")
    return parse_settings(data, base / "flipsync.yaml")


def payload(
    email: str | None = "ada@example.org",
    *,
    activity: str = "Donation",
    txn: str | None = None,
    first: str = "Ada",
    last: str = "Lovelace",
    amount: str = "25.00",
    **extra: Any,
) -> dict[str, Any]:
    """A Flipcause new_activity webhook payload with the reference's field names."""
    wid = str(next(_ids))
    data: dict[str, Any] = {
        "webhook_record_id": wid,
        "webhook_trigger_type": "new_activity",
        "master_activity_auto_id": f"9{wid}",
        "activity_type": activity,
        "transaction_id": txn or f"T{wid}",
        "AD_payment_id": f"D{wid}_A",
        "AD_contact_id": f"{first} {last} (CID638-{wid})",
        "AD_campaign_title": "Winter Appeal",
        "AD_campaign_id": "4809",
        "PD_individual_or_bussiness": "Individual",
        "PD_first_name": first,
        "PD_last_name": last,
        "PD_phone": "555-555-0100",
        "PD_address": "1 Main St",
        "PD_city": "Boston",
        "PD_state": "MA",
        "PD_zip": "02110",
        "PD_country": "United States",
        "DD_amount": amount,
    }
    if email is not None:
        data["PD_email"] = email
    data.update(extra)
    return data


def record(data: dict[str, Any], settings: Settings, seq: int = 1) -> FlipcauseRecord:
    """Parse a payload that must be usable."""
    parsed = parse_record(seq, f"wh:{data.get('webhook_record_id')}", data, settings.flipcause)
    assert isinstance(parsed, FlipcauseRecord), parsed
    return parsed


def person(
    settings: Settings,
    *,
    signed_up: bool = False,
    created_by_flipsync: bool = False,
    email: str = "ada@example.org",
) -> Person:
    """One person with a donation, plus a Mailing List activity in the same transaction if signed up."""
    payloads = [payload(email, txn="T1")]
    if signed_up:
        payloads.append(payload(email, activity="Mailing List", txn="T1", amount=""))
    records = [record(p, settings, seq=i + 1) for i, p in enumerate(payloads)]
    known = {("T1", email.lower()): (False, True)} if created_by_flipsync else {}
    (p,) = group_people(records, known)
    return p


def policy_of(settings: Settings) -> PolicySettings:
    """Shorthand."""
    return settings.policy


# The Constant Contact states a person can be in, as the policy tests name them.
CC_STATES = [
    "new",
    "explicit",
    "implicit",
    "not_set",
    "pending_confirmation",
    "unsubscribed",
    "deleted",
]


def known_for(state: str) -> Known | None:
    """What Constant Contact knows for one of CC_STATES (None: the person is new)."""
    if state == "new":
        return None
    if state == "deleted":
        return Known(permission="implicit", deleted=True, contact_id="c-1")
    return Known(permission=state, contact_id="c-1")
