"""Constant Contact's field limits and the JSON-import size rules, as pure functions.

This module owns what may be sent (``check_fields``), what may be shortened (``truncate``)
and how import rows are cut into requests (``split_import``). It does no I/O. The limits come
from the V3 OpenAPI spec (see reference/constant-contact-v3.md §6); where the spec contradicts
itself the stricter value is used.

Truncation policy: only ``first_name``, ``last_name``, ``job_title`` and ``company_name`` are ever
shortened. They are display text: a cut-off tail still greets and identifies the person. Nothing
else is truncated: a shortened email, phone number, street, postal code, date or custom field value
(which may be an identifier or an amount) would be wrong data, so those are reported by
``check_fields``; flipsync.plan leaves such a value out (and says so) rather than send it.

Import size: CC takes at most 40,000 contacts and under 4 MB per JSON import, and silently drops
whatever lies beyond 4 MB. ``split_import`` measures the exact bytes of each request body with
``encode_json``, the same serializer the client sends with, so no body can reach the cap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

JSON_IMPORT: Final = "json_import"
SIGN_UP_FORM: Final = "sign_up_form"
CREATE_CONTACT: Final = "create_contact"
ENDPOINTS: Final = frozenset({JSON_IMPORT, SIGN_UP_FORM, CREATE_CONTACT})

MAX_IMPORT_CONTACTS: Final = 40_000
MAX_DELETE_CONTACTS: Final = 500  # contact_ids per POST /activities/contact_delete
#: CC's cap: a body must stay under this many bytes.
MAX_IMPORT_BYTES: Final = 4_000_000
#: The default cap leaves 5% for anything CC counts differently from us.
DEFAULT_MAX_IMPORT_BYTES: Final = 3_800_000
DEFAULT_MAX_IMPORT_CONTACTS: Final = MAX_IMPORT_CONTACTS
MAX_LIST_IDS: Final = 50
MAX_CUSTOM_FIELDS: Final = 25  # per contact; the sign_up_form schema says 50, the docs say 25
MAX_PHONES: Final = 3
MAX_ADDRESSES: Final = 3
CUSTOM_FIELD_VALUE_MAX: Final = 255
CUSTOM_FIELD_NAME_MAX: Final = 50
ANNIVERSARY_MAX: Final = 10

#: Fields whose tail may be cut off without making the data wrong (see module docstring).
TRUNCATABLE_FIELDS: Final = ("first_name", "last_name", "job_title", "company_name")

_NAME_LIMITS: Final = {"first_name": 50, "last_name": 50, "job_title": 50, "company_name": 50}

_IMPORT_PHONES: Final = ("phone", "home_phone", "work_phone", "mobile_phone", "other_phone")
# Address groups of a JSON import row: the unprefixed one (kind home by default) and one per kind.
_IMPORT_ADDRESS_PREFIXES: Final = ("", "home_", "work_", "other_")
_ADDRESS_PART_LIMITS: Final = {
    "street": 255,
    "street2": 255,
    "city": 50,
    "state": 50,
    "zip": 50,
    "country": 50,
}

_IMPORT_LIMITS: Final[dict[str, int]] = {
    "email": 50,
    **_NAME_LIMITS,
    **dict.fromkeys(_IMPORT_PHONES, 50),
    **{
        prefix + part: limit
        for prefix in _IMPORT_ADDRESS_PREFIXES
        for part, limit in _ADDRESS_PART_LIMITS.items()
    },
    "anniversary": ANNIVERSARY_MAX,
    "sms_number": 16,
    "sms_consent_date": 16,
}
_IMPORT_INTS: Final = ("birthday_month", "birthday_day")

_STREET_ADDRESS_LIMITS: Final = {
    "street": 255,
    "city": 50,
    "state": 50,
    "postal_code": 50,
    "country": 50,
}
_ADDRESS_KINDS: Final = frozenset({"home", "work", "other"})

#: Public views for callers that fit values before building bodies (see flipsync.plan).
NAME_LIMITS: Final = _NAME_LIMITS
STREET_ADDRESS_LIMITS: Final = _STREET_ADDRESS_LIMITS
PHONE_LIMITS: Final = {JSON_IMPORT: 50, SIGN_UP_FORM: 25, CREATE_CONTACT: 25}
_PHONE_KINDS: Final = frozenset({"home", "work", "mobile", "other"})

_SIGN_UP_KEYS: Final = frozenset(
    {
        "email_address",
        *_NAME_LIMITS,
        "phone_number",
        "list_memberships",
        "custom_fields",
        "anniversary",
        "birthday_month",
        "birthday_day",
        "street_address",
    }
)
_CREATE_KEYS: Final = frozenset(
    {
        "email_address",
        *_NAME_LIMITS,
        "create_source",
        "birthday_month",
        "birthday_day",
        "anniversary",
        "custom_fields",
        "phone_numbers",
        "street_addresses",
        "list_memberships",
        "taggings",
        "notes",
    }
)


class ImportRowTooLarge(ValueError):
    """One import row alone would make a request body too big; it can never be sent as is.

    Rows that pass ``check_fields`` are at most a few tens of kilobytes, so this means the caller
    skipped that check. The row is named by its index, never by its content.
    """

    def __init__(self, index: int, size: int, limit: int) -> None:
        self.index = index
        self.size = size
        self.limit = limit
        super().__init__(
            f"import row {index} needs a {size}-byte request body on its own; the cap is {limit}"
        )


def encode_json(body: object) -> bytes:
    """Serialize a request body exactly as the client sends it (compact, UTF-8, no escapes)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def import_body(
    import_data: Sequence[Mapping[str, Any]], list_ids: Sequence[str]
) -> dict[str, Any]:
    """The body of POST /activities/contacts_json_import."""
    return {"import_data": list(import_data), "list_ids": list(list_ids)}


def truncate(value: str, limit: int) -> str:
    """Cut ``value`` to at most ``limit`` characters, dropping whitespace left at the cut.

    Only for the fields in TRUNCATABLE_FIELDS; never use it on an email or an identifier.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(value) <= limit:
        return value
    return value[:limit].rstrip() or value[:limit]


def check_fields(row: Mapping[str, Any], endpoint: str) -> list[str]:
    """Every reason ``row`` cannot be sent to ``endpoint`` as is; empty when it can.

    ``endpoint`` is one of JSON_IMPORT (a row of ``import_data``), SIGN_UP_FORM or
    CREATE_CONTACT (a whole request body). Problems name the field and the limit, never the
    value, so they can go into logs and outcome reasons.
    """
    _check_endpoint(endpoint)
    if endpoint == JSON_IMPORT:
        return _check_import_row(row)
    if endpoint == SIGN_UP_FORM:
        return _check_sign_up(row)
    return _check_create(row)


def split_import(
    rows: Sequence[Mapping[str, Any]],
    *,
    list_ids: Sequence[str] | None = None,
    max_contacts: int = DEFAULT_MAX_IMPORT_CONTACTS,
    max_bytes: int = DEFAULT_MAX_IMPORT_BYTES,
) -> list[list[Mapping[str, Any]]]:
    """Cut ``rows`` into import requests, in order, each within both caps.

    Each chunk holds at most ``max_contacts`` rows, and its whole request body, as
    ``encode_json(import_body(chunk, list_ids))`` measures it, is at most ``max_bytes``. Without
    ``list_ids`` the room for 50 UUIDs is reserved, the most any import can carry.

    Raises:
        ImportRowTooLarge: a single row cannot fit in any body (nothing is dropped silently).
        ValueError: a cap outside what Constant Contact accepts.
    """
    if not 1 <= max_contacts <= MAX_IMPORT_CONTACTS:
        raise ValueError(f"max_contacts must be between 1 and {MAX_IMPORT_CONTACTS}")
    if not 0 < max_bytes < MAX_IMPORT_BYTES:
        raise ValueError(f"max_bytes must be positive and under {MAX_IMPORT_BYTES}")
    ids = list(list_ids) if list_ids is not None else ["0" * 36] * MAX_LIST_IDS
    # Body = envelope with an empty import_data + the rows + one comma between rows.
    envelope = len(encode_json(import_body([], ids)))
    chunks: list[list[Mapping[str, Any]]] = []
    current: list[Mapping[str, Any]] = []
    size = envelope
    for index, row in enumerate(rows):
        row_size = len(encode_json(row))
        if envelope + row_size > max_bytes:
            raise ImportRowTooLarge(index, envelope + row_size, max_bytes)
        added = row_size + (1 if current else 0)
        if current and (len(current) >= max_contacts or size + added > max_bytes):
            chunks.append(current)
            current, size, added = [], envelope, row_size
        current.append(row)
        size += added
    if current:
        chunks.append(current)
    return chunks


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)}")


def _too_long(key: str, value: object, limit: int) -> str | None:
    if not isinstance(value, str):
        return f"{key}: must be text, not {type(value).__name__}"
    if len(value) > limit:
        return f"{key}: {len(value)} characters, the limit is {limit}"
    return None


def _check_strings(row: Mapping[str, Any], limits: Mapping[str, int], where: str = "") -> list[str]:
    problems = []
    for key, limit in limits.items():
        if key in row and row[key] is not None:
            problem = _too_long(where + key, row[key], limit)
            if problem:
                problems.append(problem)
    return problems


def _check_email(value: object, key: str, limit: int) -> list[str]:
    if value is None or value == "":
        return [f"{key}: missing"]
    problem = _too_long(key, value, limit)
    if problem:
        return [problem]
    assert isinstance(value, str)
    local, _, domain = value.partition("@")
    if not local or "." not in domain or any(c.isspace() for c in value):
        return [f"{key}: not an email address"]
    return []


def _check_birthday(row: Mapping[str, Any]) -> list[str]:
    month, day = row.get("birthday_month"), row.get("birthday_day")
    if month is None and day is None:
        return []
    if month is None or day is None:
        return ["birthday_month and birthday_day: give both or neither"]
    problems = []
    for key, value, top in (("birthday_month", month, 12), ("birthday_day", day, 31)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            problems.append(f"{key}: must be a whole number from 1 to {top}")
    return problems


def _check_list_ids(value: object, key: str, *, required: bool) -> list[str]:
    if value is None:
        return [f"{key}: at least one list is required"] if required else []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return [f"{key}: must be a list of list ids"]
    if required and not value:
        return [f"{key}: at least one list is required"]
    if len(value) > MAX_LIST_IDS:
        return [f"{key}: {len(value)} lists, the limit is {MAX_LIST_IDS}"]
    return []


def _check_custom_field_objects(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        return ["custom_fields: must be a list"]
    problems = []
    if len(value) > MAX_CUSTOM_FIELDS:
        problems.append(f"custom_fields: {len(value)} fields, the limit is {MAX_CUSTOM_FIELDS}")
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or not item.get("custom_field_id"):
            problems.append(f"custom_fields[{i}]: needs a custom_field_id")
            continue
        problem = _too_long(f"custom_fields[{i}].value", item.get("value"), CUSTOM_FIELD_VALUE_MAX)
        if problem:
            problems.append(problem)
    return problems


def _check_street_address(value: object, key: str) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{key}: must be an object"]
    problems = []
    if value.get("kind") not in _ADDRESS_KINDS:
        problems.append(f"{key}.kind: must be one of {', '.join(sorted(_ADDRESS_KINDS))}")
    unknown = set(value) - set(_STREET_ADDRESS_LIMITS) - {"kind"}
    problems += [f"{key}.{name}: unknown field" for name in sorted(unknown)]
    return problems + _check_strings(value, _STREET_ADDRESS_LIMITS, where=f"{key}.")


def _check_import_row(row: Mapping[str, Any]) -> list[str]:
    problems = _check_email(row.get("email"), "email", _IMPORT_LIMITS["email"])
    custom = [key for key in row if key.startswith("cf:")]
    known = set(_IMPORT_LIMITS) | set(_IMPORT_INTS)
    problems += [
        f"{key}: unknown field for a JSON import"
        for key in row
        if key not in known and not key.startswith("cf:")
    ]
    problems += _check_strings(row, {k: v for k, v in _IMPORT_LIMITS.items() if k != "email"})
    problems += _check_birthday(row)
    phones = [key for key in _IMPORT_PHONES if row.get(key)]
    if len(phones) > MAX_PHONES:
        problems.append(f"phones: {len(phones)} phone numbers, the limit is {MAX_PHONES}")
    addresses = [
        prefix
        for prefix in _IMPORT_ADDRESS_PREFIXES
        if any(row.get(prefix + part) for part in _ADDRESS_PART_LIMITS)
    ]
    if len(addresses) > MAX_ADDRESSES:
        problems.append(f"addresses: {len(addresses)} addresses, the limit is {MAX_ADDRESSES}")
    if len(custom) > MAX_CUSTOM_FIELDS:
        problems.append(f"custom fields: {len(custom)} fields, the limit is {MAX_CUSTOM_FIELDS}")
    for key in custom:
        name = key[3:]
        if not name or len(name) > CUSTOM_FIELD_NAME_MAX:
            problems.append(
                f"{key}: a custom field name has 1 to {CUSTOM_FIELD_NAME_MAX} characters"
            )
        problem = _too_long(key, row[key], CUSTOM_FIELD_VALUE_MAX)
        if problem:
            problems.append(problem)
    return problems


def _check_sign_up(body: Mapping[str, Any]) -> list[str]:
    problems = _check_email(body.get("email_address"), "email_address", 50)
    problems += [
        f"{key}: unknown field for sign_up_form" for key in body if key not in _SIGN_UP_KEYS
    ]
    problems += _check_strings(
        body, {**_NAME_LIMITS, "phone_number": 25, "anniversary": ANNIVERSARY_MAX}
    )
    problems += _check_list_ids(body.get("list_memberships"), "list_memberships", required=True)
    problems += _check_custom_field_objects(body.get("custom_fields"))
    if body.get("street_address") is not None:
        problems += _check_street_address(body["street_address"], "street_address")
    return problems + _check_birthday(body)


def _check_create(body: Mapping[str, Any]) -> list[str]:
    email = body.get("email_address")
    if not isinstance(email, Mapping):
        problems = ["email_address: must be an object with an address"]
    else:
        problems = _check_email(email.get("address"), "email_address.address", 80)
    problems += [
        f"{key}: unknown field for POST /contacts" for key in body if key not in _CREATE_KEYS
    ]
    if body.get("create_source") not in ("Contact", "Account"):
        problems.append("create_source: must be Contact or Account")
    problems += _check_strings(body, {**_NAME_LIMITS, "anniversary": ANNIVERSARY_MAX})
    problems += _check_list_ids(body.get("list_memberships"), "list_memberships", required=False)
    problems += _check_custom_field_objects(body.get("custom_fields"))
    phones = body.get("phone_numbers") or []
    if not isinstance(phones, list):
        problems.append("phone_numbers: must be a list")
        phones = []
    if len(phones) > MAX_PHONES:
        problems.append(f"phone_numbers: {len(phones)} numbers, the limit is {MAX_PHONES}")
    for i, phone in enumerate(phones):
        if not isinstance(phone, Mapping):
            problems.append(f"phone_numbers[{i}]: must be an object")
            continue
        if phone.get("kind") not in _PHONE_KINDS:
            problems.append(
                f"phone_numbers[{i}].kind: must be one of {', '.join(sorted(_PHONE_KINDS))}"
            )
        problem = _too_long(f"phone_numbers[{i}].phone_number", phone.get("phone_number"), 25)
        if problem:
            problems.append(problem)
    addresses = body.get("street_addresses") or []
    if not isinstance(addresses, list):
        problems.append("street_addresses: must be a list")
        addresses = []
    if len(addresses) > MAX_ADDRESSES:
        problems.append(
            f"street_addresses: {len(addresses)} addresses, the limit is {MAX_ADDRESSES}"
        )
    for i, address in enumerate(addresses):
        problems += _check_street_address(address, f"street_addresses[{i}]")
    return problems + _check_birthday(body)


def contact_delete_body(contact_ids: Sequence[str]) -> dict[str, Any]:
    """The ContactDelete body: contact ids only (``list_ids`` would delete whole lists)."""
    return {"contact_ids": list(contact_ids)}
