"""Parsing and row rules of ``POST /v3/activities/contacts_json_import`` (``ContactsJsonImport``).

Two stages, as the real service behaves:

* at POST time the payload is checked against the schema (types, known property names,
  1-50 ``list_ids``, at most 40,000 contacts) and a bad payload is a synchronous 400;
* when the activity completes, each row is checked for the problems the spec counts in the
  activity status (invalid email → ``correctable_count``; over-long values, unknown custom
  fields → ``error_count``), each reported as ``"Line N: ..."`` where line 1 is the header
  row the service adds (so ``import_data[0]`` is line 2, matching ``items_total_count``,
  which counts the header).

Payloads over 4 MB are cut: only the contacts that end within the first 4 MB are kept, as the
spec warns ("only imports the first 4 MB and drops the remaining data"), with no error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flipsync.sandbox.model import MAX_CUSTOM_FIELDS_PER_CONTACT, MAX_PHONES
from flipsync.sandbox.wire import is_valid_anniversary, is_valid_email, validation

MAX_IMPORT_BYTES = 4 * 1024 * 1024
MAX_IMPORT_CONTACTS = 40_000
MAX_IMPORT_LISTS = 50

# JsonImportContact string properties and their maxLength.
_STRING_LIMITS: dict[str, int] = {
    "email": 50,
    "first_name": 50,
    "last_name": 50,
    "job_title": 50,
    "company_name": 50,
    "anniversary": 10,
    "phone": 50,
    "home_phone": 50,
    "work_phone": 50,
    "mobile_phone": 50,
    "other_phone": 50,
    "sms_number": 16,
    "sms_consent_date": 16,
}
_ADDRESS_PREFIXES: dict[str, str] = {
    "": "home",
    "home_": "home",
    "work_": "work",
    "other_": "other",
}
_ADDRESS_PARTS: dict[str, int] = {
    "street": 255,
    "street2": 255,
    "city": 50,
    "state": 50,
    "zip": 50,
    "country": 50,
}
for _prefix in _ADDRESS_PREFIXES:
    for _part, _limit in _ADDRESS_PARTS.items():
        _STRING_LIMITS[_prefix + _part] = _limit
# The spec spells the home country property with a space; accept both spellings.
_STRING_LIMITS["home country"] = 50

_INT_PROPERTIES = ("birthday_month", "birthday_day")
_PHONE_KINDS: dict[str, str] = {
    "phone": "other",
    "home_phone": "home",
    "work_phone": "work",
    "mobile_phone": "mobile",
    "other_phone": "other",
}
CUSTOM_FIELD_VALUE_MAX = 255
_WS = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class ImportPayload:
    """A schema-valid import: the rows kept after the 4 MB cut and what was cut."""

    list_ids: list[str]
    rows: list[dict[str, Any]]
    received_rows: int
    truncated: bool


@dataclass(frozen=True)
class RowProblem:
    """Why a row was not imported: ``kind`` is "correctable" or "error"."""

    kind: str
    message: str


@dataclass
class RowChanges:
    """What one valid row asks to set; only properties present in the row are listed."""

    email: str
    fields: dict[str, Any] = field(default_factory=dict)
    phones: list[tuple[str, str]] = field(default_factory=list)
    addresses: dict[str, dict[str, str]] = field(default_factory=dict)
    custom_fields: dict[str, str] = field(default_factory=dict)


def parse_import_payload(raw: bytes) -> ImportPayload:
    """Schema-check a ``ContactsJsonImport`` body and apply the 4 MB cut.

    Raises:
        ApiError: 400 for malformed JSON or any schema violation.
    """
    try:
        text = raw.decode("utf-8")
        body = json.loads(text)
    except ValueError:
        raise validation("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise validation("The request body must be a JSON object")
    unknown = sorted(set(body) - {"import_data", "list_ids", "sms_permission_to_send"})
    if unknown:
        raise validation(f"Unknown property: {unknown[0]}")
    rows = body.get("import_data")
    list_ids = body.get("list_ids")
    if not isinstance(rows, list):
        raise validation("import_data is required and must be an array")
    if not rows:
        raise validation("import_data must contain at least one contact")
    if len(rows) > MAX_IMPORT_CONTACTS:
        raise validation(f"import_data cannot contain more than {MAX_IMPORT_CONTACTS} contacts")
    if not isinstance(list_ids, list) or not all(isinstance(x, str) for x in list_ids):
        raise validation("list_ids is required and must be an array of list ids")
    if not 1 <= len(list_ids) <= MAX_IMPORT_LISTS:
        raise validation(f"list_ids must contain between 1 and {MAX_IMPORT_LISTS} list ids")
    sms = body.get("sms_permission_to_send")
    if sms is not None and sms not in ("explicit", "not_set"):
        raise validation("sms_permission_to_send does not have a valid value")
    for index, row in enumerate(rows):
        _check_row_schema(index, row)
    kept = rows
    if len(raw) > MAX_IMPORT_BYTES:
        cut_chars = len(raw[:MAX_IMPORT_BYTES].decode("utf-8", errors="ignore"))
        ends = _import_row_ends(text)
        keep = sum(1 for end in ends if end <= cut_chars)
        kept = rows[:keep]
    return ImportPayload(
        list_ids=list(dict.fromkeys(list_ids)),
        rows=kept,
        received_rows=len(rows),
        truncated=len(kept) < len(rows),
    )


def _check_row_schema(index: int, row: Any) -> None:
    """Types and property names of one ``JsonImportContact``; lengths are checked later."""
    where = f"import_data[{index}]"
    if not isinstance(row, dict):
        raise validation(f"{where} must be an object")
    for name, value in row.items():
        if name.startswith("cf:") or name in _STRING_LIMITS:
            if not isinstance(value, str):
                raise validation(f"{where}.{name} must be a string")
        elif name in _INT_PROPERTIES:
            if isinstance(value, bool) or not isinstance(value, int):
                raise validation(f"{where}.{name} must be an integer")
        else:
            raise validation(f"{where}: unknown property '{name}'")


def _skip_ws(text: str, index: int) -> int:
    match = _WS.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _import_row_ends(text: str) -> list[int]:
    """Character offsets where each ``import_data`` element ends in the (valid) JSON text.

    Only used for payloads over 4 MB, to decide which contacts lie within the first 4 MB.
    """
    decoder = json.JSONDecoder()
    ends: list[int] = []
    i = _skip_ws(text, 0) + 1  # past "{"
    i = _skip_ws(text, i)
    if text[i] == "}":
        return ends
    while True:
        key, i = decoder.raw_decode(text, i)
        i = _skip_ws(text, i) + 1  # past ":"
        i = _skip_ws(text, i)
        if key == "import_data" and text[i] == "[":
            ends = []
            i = _skip_ws(text, i + 1)
            if text[i] == "]":
                i += 1
            else:
                while True:
                    _, i = decoder.raw_decode(text, i)
                    ends.append(i)
                    i = _skip_ws(text, i)
                    if text[i] == ",":
                        i = _skip_ws(text, i + 1)
                        continue
                    i += 1  # past "]"
                    break
        else:
            _, i = decoder.raw_decode(text, i)
        i = _skip_ws(text, i)
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        return ends


def check_row(
    line: int, row: Mapping[str, Any], custom_field_names: Mapping[str, str]
) -> RowProblem | RowChanges:
    """Apply the completion-time row rules.

    Args:
        line: the row's line number (header = line 1).
        row: the schema-valid row.
        custom_field_names: custom field ``name`` → ``custom_field_id``.

    Returns:
        A ``RowProblem`` for a rejected row, else the row's ``RowChanges``. Empty strings
        count as absent (never as "clear this value").
    """
    present = {k: v for k, v in row.items() if not (isinstance(v, str) and v.strip() == "")}
    email = present.get("email")
    if not isinstance(email, str):
        return RowProblem("correctable", f"Line {line}: Missing email address")
    email = email.strip()
    if len(email) > _STRING_LIMITS["email"]:
        return RowProblem(
            "error", f"Line {line}: email exceeds the maximum length of 50 characters"
        )
    if not is_valid_email(email):
        return RowProblem("correctable", f"Line {line}: Invalid email address")
    for name, value in present.items():
        limit = _STRING_LIMITS.get(name)
        if limit is not None and isinstance(value, str) and len(value) > limit:
            return RowProblem(
                "error", f"Line {line}: {name} exceeds the maximum length of {limit} characters"
            )
    month, day = present.get("birthday_month"), present.get("birthday_day")
    if (month is None) != (day is None):
        return RowProblem("correctable", f"Line {line}: Invalid birthday")
    if (
        isinstance(month, int)
        and isinstance(day, int)
        and not (1 <= month <= 12 and 1 <= day <= 31)
    ):
        return RowProblem("correctable", f"Line {line}: Invalid birthday")
    anniversary = present.get("anniversary")
    if isinstance(anniversary, str) and not is_valid_anniversary(anniversary.strip()):
        return RowProblem("correctable", f"Line {line}: Invalid anniversary date")
    changes = RowChanges(email=email)
    for name in ("first_name", "last_name", "job_title", "company_name", "anniversary"):
        if name in present:
            changes.fields[name] = str(present[name]).strip()
    if isinstance(month, int) and isinstance(day, int):
        changes.fields["birthday_month"] = month
        changes.fields["birthday_day"] = day
    for name, kind in _PHONE_KINDS.items():
        if name in present:
            changes.phones.append((kind, str(present[name]).strip()))
    if len(changes.phones) > MAX_PHONES:
        return RowProblem(
            "error", f"Line {line}: a contact can have at most {MAX_PHONES} phone numbers"
        )
    for prefix, kind in _ADDRESS_PREFIXES.items():
        parts = {
            part: str(present[prefix + part]).strip()
            for part in _ADDRESS_PARTS
            if prefix + part in present
        }
        if kind == "home" and "home country" in present:
            parts.setdefault("country", str(present["home country"]).strip())
        if not parts:
            continue
        address = changes.addresses.setdefault(kind, {})
        street = parts.pop("street", None)
        street2 = parts.pop("street2", None)
        if street is not None or street2 is not None:
            address["street"] = " ".join(s for s in (street, street2) if s)
        if "zip" in parts:
            address["postal_code"] = parts.pop("zip")
        address.update(parts)
    cf_keys = [name for name in present if name.startswith("cf:")]
    if len(cf_keys) > MAX_CUSTOM_FIELDS_PER_CONTACT:
        return RowProblem(
            "error",
            f"Line {line}: a contact can have at most {MAX_CUSTOM_FIELDS_PER_CONTACT} custom fields",
        )
    for key in cf_keys:
        name = key[3:]
        field_id = custom_field_names.get(name)
        if field_id is None:
            return RowProblem("error", f"Line {line}: Custom field '{name}' does not exist")
        value = str(present[key])
        if len(value) > CUSTOM_FIELD_VALUE_MAX:
            return RowProblem(
                "error",
                f"Line {line}: {key} exceeds the maximum length of {CUSTOM_FIELD_VALUE_MAX} characters",
            )
        changes.custom_fields[field_id] = value
    return changes
