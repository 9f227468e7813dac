"""Schema checks for the single-contact and list/field request bodies.

Each check follows the spec definition it names (ContactPostRequest, ContactPutRequest,
ContactCreateOrUpdateInput, ListInput, CustomFieldRequest): unknown property names, wrong
types, values over ``maxLength`` and unknown list or custom field ids are a synchronous
400 ``contacts.api.validation.error``. The sandbox is deliberately strict: a payload it
accepts is one the real service accepts too.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flipsync.sandbox.model import (
    ADDRESS_KINDS,
    MAX_ADDRESSES,
    MAX_CUSTOM_FIELDS_PER_CONTACT,
    MAX_LISTS_PER_CONTACT,
    MAX_PHONES,
    PERMISSIONS,
    PHONE_KINDS,
    SOURCES,
)
from flipsync.sandbox.wire import is_valid_anniversary, is_valid_email, validation

NAME_FIELDS: dict[str, int] = {
    "first_name": 50,
    "last_name": 50,
    "job_title": 50,
    "company_name": 50,
}
_ADDRESS_LIMITS: dict[str, int] = {
    "street": 255,
    "city": 50,
    "state": 50,
    "postal_code": 50,
    "country": 50,
}


@dataclass
class ContactInput:
    """The checked content of a contact body; None/absent means "not given"."""

    email: str | None = None
    permission: str | None = None
    opt_out_reason: str | None = None
    create_source: str | None = None
    update_source: str | None = None
    fields: dict[str, Any] | None = None
    custom_fields: dict[str, str] | None = None
    phones: list[tuple[str, str]] | None = None
    addresses: list[dict[str, str]] | None = None
    list_ids: list[str] | None = None
    taggings: list[str] | None = None
    notes: list[dict[str, Any]] | None = None


def require_object(body: Any) -> dict[str, Any]:
    """The body must be a JSON object."""
    if not isinstance(body, dict):
        raise validation("The request body must be a JSON object")
    return body


def reject_unknown(body: Mapping[str, Any], allowed: Iterable[str], where: str = "") -> None:
    """Unknown property names are an error, so a typo never silently drops data."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise validation(f"Unknown property: {where}{unknown[0]}")


def string(
    body: Mapping[str, Any], name: str, limit: int, where: str = "", *, required: bool = False
) -> str | None:
    """A string property within ``limit`` characters."""
    value = body.get(name)
    if value is None:
        if required:
            raise validation(f"{where}{name} is required")
        return None
    if not isinstance(value, str):
        raise validation(f"{where}{name} must be a string")
    if len(value) > limit:
        raise validation(f"{where}{name} exceeds the maximum length of {limit} characters")
    return value


def email_value(value: str, name: str, limit: int) -> str:
    """An email address: trimmed, within ``limit``, syntactically valid."""
    address = value.strip()
    if len(address) > limit:
        raise validation(f"{name} exceeds the maximum length of {limit} characters")
    if not is_valid_email(address):
        raise validation(f"{name} is not a valid email address")
    return address


def source(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    """``create_source`` / ``update_source``: Contact or Account."""
    value = body.get(name)
    if value is None:
        if required:
            raise validation(f"{name} is required")
        return None
    if value not in SOURCES:
        raise validation(f"{name} must be one of {', '.join(SOURCES)}")
    return str(value)


def name_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """first/last name, job title, company, birthday and anniversary that are present."""
    out: dict[str, Any] = {}
    for name, limit in NAME_FIELDS.items():
        value = string(body, name, limit)
        if value is not None:
            out[name] = value
    month, day = body.get("birthday_month"), body.get("birthday_day")
    if month is not None or day is not None:
        for name, value, top in (("birthday_month", month, 12), ("birthday_day", day, 31)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise validation(
                    "birthday_month and birthday_day must be given together, as integers"
                )
            if not 1 <= value <= top:
                raise validation(f"{name} must be between 1 and {top}")
        out["birthday_month"] = month
        out["birthday_day"] = day
    anniversary = string(body, "anniversary", 10)
    if anniversary is not None:
        if not is_valid_anniversary(anniversary):
            raise validation("anniversary is not in a supported date format")
        out["anniversary"] = anniversary
    return out


def list_ids(value: Any, known: Container[str], name: str, *, minimum: int = 0) -> list[str]:
    """An array of existing list ids, ``minimum``..50 of them."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise validation(f"{name} must be an array of list ids")
    if not minimum <= len(value) <= MAX_LISTS_PER_CONTACT:
        raise validation(f"{name} must contain between {minimum} and {MAX_LISTS_PER_CONTACT} ids")
    for list_id in value:
        if list_id not in known:
            raise validation(f"{name} contains an unknown list id: {list_id}")
    return list(dict.fromkeys(value))


def custom_fields(value: Any, known: Container[str], *, max_items: int) -> dict[str, str]:
    """``[{custom_field_id, value}]`` with existing ids and values up to 255 characters."""
    if not isinstance(value, list):
        raise validation("custom_fields must be an array")
    if len(value) > max_items:
        raise validation(f"custom_fields cannot contain more than {max_items} items")
    out: dict[str, str] = {}
    for index, item in enumerate(value):
        where = f"custom_fields[{index}]."
        if not isinstance(item, dict):
            raise validation(f"custom_fields[{index}] must be an object")
        reject_unknown(item, ("custom_field_id", "value", "choice_ids"), where)
        field_id = string(item, "custom_field_id", 64, where, required=True)
        assert field_id is not None
        if field_id not in known:
            raise validation(f"{where}custom_field_id is not a custom field of this account")
        out[field_id] = string(item, "value", 255, where) or ""
    if len(out) > MAX_CUSTOM_FIELDS_PER_CONTACT:
        raise validation(
            f"A contact can have at most {MAX_CUSTOM_FIELDS_PER_CONTACT} custom fields"
        )
    return out


def phones(value: Any) -> list[tuple[str, str]]:
    """``phone_numbers``: at most 3 ``{phone_number <= 25, kind}``."""
    if not isinstance(value, list):
        raise validation("phone_numbers must be an array")
    if len(value) > MAX_PHONES:
        raise validation(f"phone_numbers cannot contain more than {MAX_PHONES} items")
    out: list[tuple[str, str]] = []
    for index, item in enumerate(value):
        where = f"phone_numbers[{index}]."
        if not isinstance(item, dict):
            raise validation(f"phone_numbers[{index}] must be an object")
        reject_unknown(
            item,
            (
                "phone_number",
                "kind",
                "phone_number_id",
                "created_at",
                "updated_at",
                "update_source",
                "create_source",
            ),
            where,
        )
        number = string(item, "phone_number", 25, where, required=True)
        kind = item.get("kind", "other")
        if kind not in PHONE_KINDS:
            raise validation(f"{where}kind must be one of {', '.join(PHONE_KINDS)}")
        assert number is not None
        out.append((str(kind), number))
    return out


def address(item: Any, where: str) -> dict[str, str]:
    """One street address: ``kind`` required, parts within their limits."""
    if not isinstance(item, dict):
        raise validation(f"{where.rstrip('.')} must be an object")
    reject_unknown(
        item,
        ("kind", *_ADDRESS_LIMITS, "street_address_id", "created_at", "updated_at"),
        where,
    )
    kind = item.get("kind")
    if kind not in ADDRESS_KINDS:
        raise validation(f"{where}kind is required and must be one of {', '.join(ADDRESS_KINDS)}")
    out = {"kind": str(kind)}
    for name, limit in _ADDRESS_LIMITS.items():
        value = string(item, name, limit, where)
        if value is not None:
            out[name] = value
    return out


def addresses(value: Any) -> list[dict[str, str]]:
    """``street_addresses``: at most 3."""
    if not isinstance(value, list):
        raise validation("street_addresses must be an array")
    if len(value) > MAX_ADDRESSES:
        raise validation(f"street_addresses cannot contain more than {MAX_ADDRESSES} items")
    return [address(item, f"street_addresses[{i}].") for i, item in enumerate(value)]


def string_ids(value: Any, name: str, limit: int) -> list[str]:
    """An array of up to ``limit`` strings (``taggings``)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise validation(f"{name} must be an array of strings")
    if len(value) > limit:
        raise validation(f"{name} cannot contain more than {limit} items")
    return list(value)


def notes(value: Any) -> list[dict[str, Any]]:
    """``notes``: up to 150 ``{note_id, created_at, content <= 2000}``."""
    if not isinstance(value, list):
        raise validation("notes must be an array")
    if len(value) > 150:
        raise validation("notes cannot contain more than 150 items")
    out: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        where = f"notes[{index}]."
        if not isinstance(item, dict):
            raise validation(f"notes[{index}] must be an object")
        reject_unknown(item, ("note_id", "created_at", "content"), where)
        string(item, "content", 2000, where)
        out.append(dict(item))
    return out


def permission(value: Any, name: str) -> str:
    """One of the six ``permission_to_send`` values."""
    if value not in PERMISSIONS:
        raise validation(f"{name} must be one of {', '.join(PERMISSIONS)}")
    return str(value)


def _sub_resources(
    body: Mapping[str, Any],
    out: ContactInput,
    known_lists: Container[str],
    known_fields: Container[str],
) -> None:
    if "custom_fields" in body:
        out.custom_fields = custom_fields(
            body["custom_fields"], known_fields, max_items=MAX_CUSTOM_FIELDS_PER_CONTACT
        )
    if "phone_numbers" in body:
        out.phones = phones(body["phone_numbers"])
    if "street_addresses" in body:
        out.addresses = addresses(body["street_addresses"])
    if "list_memberships" in body:
        out.list_ids = list_ids(body["list_memberships"], known_lists, "list_memberships")
    if "taggings" in body:
        out.taggings = string_ids(body["taggings"], "taggings", 50)
    if "notes" in body:
        out.notes = notes(body["notes"])
    if body.get("sms_channel") is not None:
        raise validation("sms_channel is not supported by this sandbox")


_POST_PROPERTIES = (
    "email_address",
    *NAME_FIELDS,
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
    "sms_channel",
)


def _email_object(email: Any, allowed: tuple[str, ...], out: ContactInput) -> None:
    """The ``email_address`` object of POST and PUT /contacts: address (80) and permission."""
    if email is None:
        return
    if not isinstance(email, dict):
        raise validation("email_address must be an object")
    reject_unknown(email, allowed, "email_address.")
    address_value = string(email, "address", 80, "email_address.", required=True)
    assert address_value is not None
    out.email = email_value(address_value, "email_address.address", 80)
    if email.get("permission_to_send") is not None:
        out.permission = permission(email["permission_to_send"], "email_address.permission_to_send")


def contact_post(
    raw: Any, known_lists: Container[str], known_fields: Container[str]
) -> ContactInput:
    """``ContactPostRequest``: ``create_source`` plus a name, an email or an SMS channel."""
    body = require_object(raw)
    reject_unknown(body, _POST_PROPERTIES)
    out = ContactInput(create_source=source(body, "create_source", required=True))
    out.fields = name_fields(body)
    _email_object(body.get("email_address"), ("address", "permission_to_send"), out)
    _sub_resources(body, out, known_lists, known_fields)
    if out.email is None and not any(k in out.fields for k in ("first_name", "last_name")):
        raise validation("At least one of first_name, last_name, email_address is required")
    return out


_PUT_PROPERTIES = (*(p for p in _POST_PROPERTIES if p != "create_source"), "update_source")
_EMAIL_PUT_PROPERTIES = (
    "address",
    "permission_to_send",
    "created_at",
    "updated_at",
    "opt_in_date",
    "opt_in_source",
    "opt_out_source",
    "opt_out_date",
    "opt_out_reason",
    "confirm_status",
)


def contact_put(
    raw: Any, known_lists: Container[str], known_fields: Container[str]
) -> ContactInput:
    """``ContactPutRequest``: ``update_source`` required; read-only email fields ignored."""
    body = require_object(raw)
    reject_unknown(body, _PUT_PROPERTIES)
    out = ContactInput(update_source=source(body, "update_source", required=True))
    out.fields = name_fields(body)
    email = body.get("email_address")
    _email_object(email, _EMAIL_PUT_PROPERTIES, out)
    if isinstance(email, dict):
        out.opt_out_reason = string(email, "opt_out_reason", 255, "email_address.")
    _sub_resources(body, out, known_lists, known_fields)
    return out


_SIGN_UP_PROPERTIES = (
    "email_address",
    *NAME_FIELDS,
    "phone_number",
    "list_memberships",
    "custom_fields",
    "anniversary",
    "birthday_month",
    "birthday_day",
    "street_address",
    "sms_channel",
)


def sign_up(raw: Any, known_lists: Container[str], known_fields: Container[str]) -> ContactInput:
    """``ContactCreateOrUpdateInput``: a plain-string email (<= 50) and 1-50 lists."""
    body = require_object(raw)
    reject_unknown(body, _SIGN_UP_PROPERTIES)
    if body.get("sms_channel") is not None:
        raise validation("sms_channel is not supported by this sandbox")
    out = ContactInput()
    email = string(body, "email_address", 50, required=True)
    assert email is not None
    out.email = email_value(email, "email_address", 50)
    if "list_memberships" not in body:
        raise validation("list_memberships is required")
    out.list_ids = list_ids(body["list_memberships"], known_lists, "list_memberships", minimum=1)
    out.fields = name_fields(body)
    phone = string(body, "phone_number", 25)
    if phone is not None:
        out.phones = [("other", phone)]
    if body.get("street_address") is not None:
        out.addresses = [address(body["street_address"], "street_address.")]
    if "custom_fields" in body:
        out.custom_fields = custom_fields(body["custom_fields"], known_fields, max_items=50)
    return out


def list_input(raw: Any) -> tuple[str, str | None, bool]:
    """``ListInput`` (name required, <= 255; favorite; description)."""
    body = require_object(raw)
    reject_unknown(body, ("name", "favorite", "description"))
    name = string(body, "name", 255, required=True)
    assert name is not None
    if not name.strip():
        raise validation("name must not be blank")
    favorite = body.get("favorite", False)
    if not isinstance(favorite, bool):
        raise validation("favorite must be a boolean")
    description = string(body, "description", 2000)
    return name, description, favorite


def custom_field_input(raw: Any, types: Iterable[str]) -> tuple[str, str]:
    """``CustomFieldRequest`` (label <= 50 and a known type are required)."""
    body = require_object(raw)
    reject_unknown(body, ("label", "type", "metadata", "choices", "version"))
    label = string(body, "label", 50, required=True)
    kind = string(body, "type", 20, required=True)
    assert label is not None and kind is not None
    if not label.strip():
        raise validation("label must not be blank")
    if kind not in set(types):
        raise validation("type does not have a valid value")
    return label, kind
