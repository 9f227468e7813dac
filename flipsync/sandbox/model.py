"""The sandbox's account data (lists, custom fields, contacts, activities) and their JSON shapes.

Records are plain mutable dataclasses owned by ``Sandbox`` and only touched under its lock;
the ``*_json`` functions render them as the spec's definitions (ContactList, CustomField,
ContactResource, ActivityImport), leaving out absent values as the real API does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flipsync.sandbox.wire import date_from_micros, iso_from_micros

PERMISSIONS = (
    "explicit",
    "implicit",
    "not_set",
    "pending_confirmation",
    "temp_hold",
    "unsubscribed",
)
PHONE_KINDS = ("home", "work", "mobile", "other")
ADDRESS_KINDS = ("home", "work", "other")
SOURCES = ("Contact", "Account")
CUSTOM_FIELD_TYPES = (
    "string",
    "date",
    "datetime",
    "single_select",
    "multi_select",
    "currency",
    "text_area",
    "number",
    "boolean",
)
INCLUDES = (
    "custom_fields",
    "list_memberships",
    "phone_numbers",
    "street_addresses",
    "taggings",
    "notes",
)

MAX_LISTS_PER_CONTACT = 50
MAX_CUSTOM_FIELDS_PER_CONTACT = 25
MAX_PHONES = 3
MAX_ADDRESSES = 3


@dataclass
class ContactList:
    """A contact list (``ContactList``)."""

    list_id: str
    name: str
    created_us: int
    updated_us: int
    description: str | None = None
    favorite: bool = False


@dataclass
class CustomField:
    """An account custom field (``CustomField``); ``name`` is the label with blanks → ``_``."""

    custom_field_id: str
    label: str
    name: str
    type: str
    created_us: int
    updated_us: int


@dataclass
class Phone:
    """One entry of ``phone_numbers``."""

    phone_number_id: str
    phone_number: str
    kind: str
    created_us: int
    updated_us: int
    source: str


@dataclass
class Address:
    """One entry of ``street_addresses``; ``kind`` is home, work or other."""

    street_address_id: str
    kind: str
    created_us: int
    updated_us: int
    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@dataclass
class Contact:
    """A contact. ``seq`` is the creation order, which is also the pagination order."""

    contact_id: str
    seq: int
    email: str
    permission: str
    created_us: int
    updated_us: int
    email_created_us: int
    email_updated_us: int
    create_source: str
    update_source: str
    opt_in_source: str | None = None
    opt_in_us: int | None = None
    opt_out_source: str | None = None
    opt_out_us: int | None = None
    opt_out_reason: str | None = None
    confirm_status: str = "off"
    first_name: str | None = None
    last_name: str | None = None
    job_title: str | None = None
    company_name: str | None = None
    birthday_month: int | None = None
    birthday_day: int | None = None
    anniversary: str | None = None
    deleted_us: int | None = None
    custom_fields: dict[str, str] = field(default_factory=dict)
    phones: list[Phone] = field(default_factory=list)
    addresses: list[Address] = field(default_factory=list)
    list_ids: list[str] = field(default_factory=list)
    taggings: list[str] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def deleted(self) -> bool:
        """Deleted contacts keep their row (and their email stays reserved)."""
        return self.deleted_us is not None


def _put(out: dict[str, Any], name: str, value: Any) -> None:
    """Set only present values: the API leaves absent properties out instead of sending null."""
    if value is not None:
        out[name] = value


def list_json(item: ContactList, membership_count: int | None = None) -> dict[str, Any]:
    """``ContactList``; ``membership_count`` only when it was asked for."""
    out: dict[str, Any] = {"list_id": item.list_id, "name": item.name}
    _put(out, "description", item.description)
    out["favorite"] = item.favorite
    out["created_at"] = iso_from_micros(item.created_us)
    out["updated_at"] = iso_from_micros(item.updated_us)
    _put(out, "membership_count", membership_count)
    return out


def custom_field_json(item: CustomField) -> dict[str, Any]:
    """``CustomField``."""
    return {
        "custom_field_id": item.custom_field_id,
        "label": item.label,
        "name": item.name,
        "type": item.type,
        "created_at": iso_from_micros(item.created_us),
        "updated_at": iso_from_micros(item.updated_us),
    }


def email_json(contact: Contact) -> dict[str, Any]:
    """``EmailAddress``; opt-out fields appear only for unsubscribed contacts."""
    out: dict[str, Any] = {
        "address": contact.email,
        "permission_to_send": contact.permission,
        "created_at": iso_from_micros(contact.email_created_us),
        "updated_at": iso_from_micros(contact.email_updated_us),
    }
    _put(out, "opt_in_source", contact.opt_in_source)
    if contact.opt_in_us is not None:
        out["opt_in_date"] = iso_from_micros(contact.opt_in_us)
    if contact.permission == "unsubscribed":
        _put(out, "opt_out_source", contact.opt_out_source)
        if contact.opt_out_us is not None:
            out["opt_out_date"] = iso_from_micros(contact.opt_out_us)
        _put(out, "opt_out_reason", contact.opt_out_reason)
    out["confirm_status"] = contact.confirm_status
    return out


def phone_json(phone: Phone) -> dict[str, Any]:
    """``PhoneNumber``."""
    return {
        "phone_number_id": phone.phone_number_id,
        "phone_number": phone.phone_number,
        "kind": phone.kind,
        "created_at": iso_from_micros(phone.created_us),
        "updated_at": iso_from_micros(phone.updated_us),
        "update_source": phone.source,
        "create_source": phone.source,
    }


def address_json(address: Address) -> dict[str, Any]:
    """``StreetAddress``."""
    out: dict[str, Any] = {
        "street_address_id": address.street_address_id,
        "kind": address.kind,
    }
    for name in ("street", "city", "state", "postal_code", "country"):
        _put(out, name, getattr(address, name))
    out["created_at"] = iso_from_micros(address.created_us)
    out["updated_at"] = iso_from_micros(address.updated_us)
    return out


def contact_json(contact: Contact, include: frozenset[str] | set[str]) -> dict[str, Any]:
    """``ContactResource``; sub-resources appear only when named in ``include``."""
    out: dict[str, Any] = {"contact_id": contact.contact_id, "email_address": email_json(contact)}
    for name in (
        "first_name",
        "last_name",
        "job_title",
        "company_name",
        "birthday_month",
        "birthday_day",
        "anniversary",
    ):
        _put(out, name, getattr(contact, name))
    out["update_source"] = contact.update_source
    out["create_source"] = contact.create_source
    out["created_at"] = iso_from_micros(contact.created_us)
    out["updated_at"] = iso_from_micros(contact.updated_us)
    if contact.deleted_us is not None:
        out["deleted_at"] = date_from_micros(contact.deleted_us)
    if "custom_fields" in include:
        out["custom_fields"] = [
            {"custom_field_id": key, "value": value} for key, value in contact.custom_fields.items()
        ]
    if "phone_numbers" in include:
        out["phone_numbers"] = [phone_json(p) for p in contact.phones]
    if "street_addresses" in include:
        out["street_addresses"] = [address_json(a) for a in contact.addresses]
    if "list_memberships" in include:
        out["list_memberships"] = list(contact.list_ids)
    if "taggings" in include:
        out["taggings"] = list(contact.taggings)
    if "notes" in include:
        out["notes"] = [dict(n) for n in contact.notes]
    return out


@dataclass
class ImportRow:
    """One ``import_data`` entry kept for processing at completion, with its file line."""

    line: int
    data: dict[str, Any]


@dataclass
class Activity:
    """A bulk ``contacts_json_import`` activity.

    The spec's counters live in ``status``; ``truncated``/``dropped_rows`` record the 4 MB
    cut for tests only and never appear in API responses.
    """

    activity_id: str
    created_us: int
    due_s: float
    list_ids: list[str]
    rows: list[ImportRow]
    received_rows: int
    truncated: bool
    dropped_rows: int
    client_id: str | None
    completed_us: int | None = None
    updated_us: int | None = None
    person_count: int = 0
    error_count: int = 0
    correctable_count: int = 0
    cannot_add_to_list_count: int = 0
    counts_hidden: bool = False
    created_contacts: int = 0
    updated_contacts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        """Effects are applied exactly once, when the activity completes."""
        return self.completed_us is not None


def activity_json(activity: Activity, *, now_s: float, duration_s: float) -> dict[str, Any]:
    """``ActivityImport`` as seen at ``now_s`` (sandbox clock, seconds).

    Pending activities are ``initialized`` for the first fifth of their duration and
    ``processing`` after that, with ``percent_done`` following the elapsed time.
    """
    total_lines = len(activity.rows) + 1  # the spec counts the header row
    created_s = activity.created_us / 1_000_000
    start_s = created_s + duration_s * 0.2
    out: dict[str, Any] = {"activity_id": activity.activity_id}
    if activity.completed_us is not None:
        state, percent, completed_items = "completed", 100, total_lines
    else:
        elapsed = now_s - created_s
        if duration_s > 0 and elapsed < duration_s * 0.2:
            state, percent = "initialized", 0
        else:
            state = "processing"
            fraction = elapsed / duration_s if duration_s > 0 else 0.99
            percent = max(0, min(99, int(fraction * 100)))
        completed_items = min(total_lines - 1, int(total_lines * percent / 100))
    out["state"] = state
    if state != "initialized":
        out["started_at"] = iso_from_micros(int(start_s * 1_000_000))
    if activity.completed_us is not None:
        out["completed_at"] = iso_from_micros(activity.completed_us)
    out["created_at"] = iso_from_micros(activity.created_us)
    out["updated_at"] = iso_from_micros(activity.updated_us or activity.created_us)
    out["percent_done"] = percent
    out["activity_errors"] = list(activity.errors)
    done = activity.completed_us is not None
    out["status"] = {
        "items_total_count": total_lines,
        "items_completed_count": completed_items,
        "person_count": activity.person_count if done else 0,
        "error_count": activity.error_count if done else 0,
        "correctable_count": activity.correctable_count if done else 0,
        "cannot_add_to_list_count": activity.cannot_add_to_list_count if done else 0,
    }
    if activity.counts_hidden and not done:
        out["status"] = {}
    out["_links"] = {"self": {"href": f"/v3/activities/{activity.activity_id}"}}
    return out


def initialized_activity_json(activity: Activity) -> dict[str, Any]:
    """The 201 answer to the import POST: always ``initialized``, nothing counted yet."""
    return {
        "activity_id": activity.activity_id,
        "state": "initialized",
        "created_at": iso_from_micros(activity.created_us),
        "updated_at": iso_from_micros(activity.created_us),
        "percent_done": 0,
        "activity_errors": [],
        "status": {
            "items_total_count": len(activity.rows) + 1,
            "items_completed_count": 0,
            "person_count": 0,
            "error_count": 0,
            "correctable_count": 0,
            "cannot_add_to_list_count": 0,
        },
        "_links": {"self": {"href": f"/v3/activities/{activity.activity_id}"}},
    }
