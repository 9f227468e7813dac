"""From a stored Flipcause payload to a FlipcauseRecord, or a reason it cannot be one.

Every field name comes from the config's field map, because Flipcause's payload
documentation is incomplete; fields the map does not name are kept in `extra`.
Values are cleaned (trimmed, control characters removed) but never invented.

Each payload is first given its kind (Flipcause's event model), from the trigger type
and the activity type: merchant account payments and credits are the organization's
own money, never a supporter, so they never become a person whatever names they carry.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from flipsync.emails import normalize_email
from flipsync.settings import FieldMap, FlipcauseSettings, spelling_key
from flipsync.state import PRUNED_KEY

CID_RE = re.compile(r"\(CID([0-9]+-[0-9]+)\)")
# Deliberately strict: an address Constant Contact would refuse is better rejected here, with
# a reason, than lost inside an import activity's error count.
_LOCAL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
MAX_EMAIL = 50  # Constant Contact's JSON import and sign-up form both cap email at 50


class RecordKind(StrEnum):
    """What a Flipcause webhook record is, from its trigger type and activity type.

    The values are config.RECORD_KINDS, the keys of `flipcause.trigger_types`.
    """

    ACTIVITY = "activity"
    TRANSACTION = "transaction"
    CONTACT = "contact"
    MERCHANT_PAYMENT = "merchant_payment"
    MERCHANT_CREDIT = "merchant_credit"
    REFUND = "refund"


UNRECOGNISED = "unrecognised"  # how reports name the kind of a payload no trigger spelling lists
MERCHANT_KINDS = frozenset({RecordKind.MERCHANT_PAYMENT, RecordKind.MERCHANT_CREDIT})
MERCHANT_REASON = {
    RecordKind.MERCHANT_PAYMENT: "merchant account payment",
    RecordKind.MERCHANT_CREDIT: "merchant account credit",
}


@dataclass(frozen=True)
class Address:
    """A street address as Flipcause gives it."""

    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None

    def is_empty(self) -> bool:
        """True when no part is set (then nothing is written)."""
        return not any((self.street, self.city, self.state, self.postal_code, self.country))


@dataclass(frozen=True)
class FlipcauseRecord:
    """One Flipcause webhook record, parsed. `email_key` is the match key (flipsync.emails)."""

    seq: int
    record_key: str
    kind: RecordKind
    webhook_record_id: str | None
    trigger_type: str | None
    activity_type: str | None
    activity_kind: str | None
    activity_id: str | None
    transaction_id: str | None
    payment_id: str | None
    flipcause_contact_id: str | None
    campaign_id: str | None
    campaign_title: str | None
    transaction_date: str | None
    amount: Decimal | None
    email: str
    email_key: str
    first_name: str | None
    last_name: str | None
    company_name: str | None
    phone: str | None
    address: Address
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def is_mailing_list(self) -> bool:
        """A Mailing List activity is Flipcause's only opt-in signal; never on a refund.

        A refund reverses a transaction: whatever activity type it repeats, it is no one
        asking to be emailed, so it is no evidence of consent.
        """
        return self.activity_kind == "mailing_list" and self.kind is not RecordKind.REFUND

    @property
    def is_recurring(self) -> bool:
        """Recurring donations arrive as a Recurring Setup activity."""
        return self.activity_kind == "recurring_setup"

    @property
    def is_refund(self) -> bool:
        """A refund is a new transaction: its person is a supporter, its amount is no gift."""
        return self.kind is RecordKind.REFUND

    def flipcause_ids(self) -> dict[str, str]:
        """The Flipcause identifiers a person reading a report would search for."""
        ids = {
            "webhook_record_id": self.webhook_record_id,
            "transaction_id": self.transaction_id,
            "activity_id": self.activity_id,
            "payment_id": self.payment_id,
            "contact_id": self.flipcause_contact_id,
        }
        return {k: v for k, v in ids.items() if v}


@dataclass(frozen=True)
class Unusable:
    """A payload that yields no record: `rejected` (bad data) or skipped (nothing to sync)."""

    seq: int
    record_key: str
    rejected: bool
    reason: str
    ids: Mapping[str, str] = field(default_factory=dict)
    email: str | None = None
    kind: RecordKind | None = None


def clean_text(value: Any) -> str | None:
    """A scalar as tidy text: NFC, control characters dropped, whitespace collapsed; else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        value = str(value)
    if not isinstance(value, str):
        return None
    if value.isascii():
        # The common case, without a look-up per character: ASCII is already NFC, and its
        # only control characters are these.
        if value.isprintable():
            if "  " not in value and value[:1] != " " and value[-1:] != " ":
                return value or None  # already tidy: the usual field
        else:
            value = _ASCII_CONTROLS.sub("", value)
    else:
        value = unicodedata.normalize("NFC", value)
        value = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C" or ch in "\t\n ")
    value = " ".join(value.split())
    return value or None


# Category C in ASCII, less the tab and newline that the whitespace collapse turns to blanks.
_ASCII_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def check_email(raw: Any) -> tuple[str | None, str | None]:
    """(trimmed email, None) when usable, else (None, reason)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None, "no email address"
    if not isinstance(raw, str):
        return None, f"email is not text ({type(raw).__name__})"
    email = raw.strip()
    if len(email) > MAX_EMAIL:
        return None, (
            f"email is {len(email)} characters; Constant Contact accepts at most {MAX_EMAIL}"
        )
    if email.count("@") != 1:
        return None, "invalid email address (needs exactly one @)"
    local, domain = email.split("@")
    if not local or len(local) > 64 or not _LOCAL_RE.match(local):
        return None, "invalid email address (bad characters before the @)"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.match(lbl) for lbl in labels):
        return None, "invalid email address (bad domain)"
    if not re.match(r"^[A-Za-z]{2,63}$", labels[-1]):
        return None, "invalid email address (bad top-level domain)"
    return email, None


def normalize_kind(raw: str | None, kinds: Mapping[str, tuple[str, ...]]) -> str | None:
    """Map an activity_type spelling to its canonical kind; unknown spellings map to None."""
    if not raw:
        return None
    return _index(kinds, _activity_key).get(_activity_key(raw))


def trigger_kind(raw: str | None, kinds: Mapping[str, tuple[str, ...]]) -> str | None:
    """Map a webhook_trigger_type spelling to its record kind; unknown spellings map to None."""
    if not raw:
        return None
    return _index(kinds, spelling_key).get(spelling_key(raw))


_MAPPED: dict[int, tuple[object, frozenset[str]]] = {}


def _mapped_fields(settings: FlipcauseSettings) -> frozenset[str]:
    """The payload keys some setting reads (built once per settings object)."""
    cached = _MAPPED.get(id(settings))
    if cached is not None and cached[0] is settings:
        return cached[1]
    f = settings.fields
    names = frozenset(
        {getattr(f, name) for name in f.__dataclass_fields__} | set(settings.custom_fields)
    )
    _MAPPED[id(settings)] = (settings, names)
    return names


def _activity_key(text: str) -> str:
    return " ".join(text.split()).casefold()


# spelling -> kind, built once per settings mapping (settings are frozen and long-lived): a
# record is classified with two dict look-ups, not a scan of every spelling.
_INDEXES: dict[tuple[int, Callable[[str], str]], tuple[object, dict[str, str]]] = {}


def _index(kinds: Mapping[str, tuple[str, ...]], key: Callable[[str], str]) -> dict[str, str]:
    cached = _INDEXES.get((id(kinds), key))
    if cached is not None and cached[0] is kinds:
        return cached[1]
    table: dict[str, str] = {}
    for kind, spellings in kinds.items():
        for spelling in spellings:
            table.setdefault(key(spelling), kind)
    _INDEXES[(id(kinds), key)] = (kinds, table)
    return table


def record_kind(
    payload: Mapping[str, Any], settings: FlipcauseSettings
) -> tuple[RecordKind | None, str | None]:
    """(kind, trigger type text) of a payload; kind None when the trigger type is not known.

    Merchant kinds win over everything. A refund is recognised from either the trigger
    or the activity type (Flipcause sends a refund as a new transaction or activity).
    Payloads without a trigger type (CSV exports, saved files) are activities when they
    name an activity type, transactions when they carry a transaction id, else contacts.
    """
    f = settings.fields
    trigger = clean_text(payload.get(f.trigger_type))
    activity_type = clean_text(payload.get(f.activity_type))
    by_trigger = trigger_kind(trigger, settings.trigger_types)
    if trigger and by_trigger is None:
        return None, trigger
    if by_trigger in MERCHANT_KINDS or by_trigger == RecordKind.REFUND:
        return RecordKind(by_trigger), trigger
    if normalize_kind(activity_type, settings.activity_types) == "refund":
        return RecordKind.REFUND, trigger
    if by_trigger is not None:
        return RecordKind(by_trigger), trigger
    if activity_type:
        return RecordKind.ACTIVITY, trigger
    if clean_text(payload.get(f.transaction_id)):
        return RecordKind.TRANSACTION, trigger
    return RecordKind.CONTACT, trigger


def _amount(raw: str | None) -> Decimal | None:
    if not raw:
        return None
    text = raw.replace("$", "").replace(",", "").strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def parse_record(
    seq: int,
    record_key: str,
    payload: Mapping[str, Any],
    settings: FlipcauseSettings,
    *,
    keep_extra: bool = True,
) -> FlipcauseRecord | Unusable:
    """Turn one inbox payload into a record, or say why it cannot be synced.

    ``keep_extra=False`` leaves out the fields no setting maps: a run never reads them (the
    inbox keeps every payload whole), and a batch of 40,000 records would carry them all.
    """
    if set(payload) == {PRUNED_KEY}:
        return Unusable(
            seq,
            record_key,
            rejected=False,
            reason=f"payload removed by retention (older than {payload[PRUNED_KEY]}); "
            "nothing left to sync",
        )
    f: FieldMap = settings.fields
    notes: list[str] = []

    def text(name: str) -> str | None:
        value = payload.get(name)
        cleaned = clean_text(value)
        if value is not None and cleaned is None and not (isinstance(value, str)):
            notes.append(f"field {name!r} ignored: not text")
        return cleaned

    ids = {
        "webhook_record_id": text(f.webhook_record_id),
        "transaction_id": text(f.transaction_id),
        "activity_id": text(f.activity_id),
        "payment_id": text(f.payment_id),
    }
    contact_display = text(f.contact_id)
    cid_match = CID_RE.search(contact_display or "")
    if cid_match:
        ids["contact_id"] = f"CID{cid_match.group(1)}"
    clean_ids = {k: v for k, v in ids.items() if v}

    kind, trigger = record_kind(payload, settings)
    if kind is None:
        return Unusable(
            seq,
            record_key,
            rejected=False,
            email=check_email(payload.get(f.email))[0],  # shown, so the person can be found
            reason=(
                f"unrecognised trigger type {(trigger or '')[:40]!r}: not synced, since it may "
                "be a merchant record; add its spelling to the right kind under "
                "flipcause.trigger_types, then `flipsync backfill` syncs it"
            ),
            ids=clean_ids,
        )
    if kind in MERCHANT_KINDS:
        return Unusable(
            seq,
            record_key,
            rejected=False,
            reason=(
                f"{MERCHANT_REASON[kind]}: the organization's own money, not a supporter; "
                "never creates or changes a contact"
            ),
            ids=clean_ids,
            kind=kind,
        )

    first, last = text(f.first_name), text(f.last_name)
    business = text(f.business_name)
    raw_email = payload.get(f.email)
    if raw_email is None and not any((first, last, business)):
        return Unusable(
            seq,
            record_key,
            rejected=False,
            reason="no person in this record (no email and no name)",
            ids=clean_ids,
            kind=kind,
        )
    email, problem = check_email(raw_email)
    if email is None:
        shown = raw_email.strip()[:80] if isinstance(raw_email, str) else None
        return Unusable(
            seq,
            record_key,
            rejected=True,
            reason=problem or "",
            ids=clean_ids,
            email=shown,
            kind=kind,
        )

    activity_type = text(f.activity_type)
    custom: dict[str, str] = {}
    for source_field, cc_name in settings.custom_fields.items():
        value = text(source_field)
        if value:
            custom[cc_name] = value
    known = _mapped_fields(settings)
    extra = {k: v for k, v in payload.items() if k not in known} if keep_extra else {}
    return FlipcauseRecord(
        seq=seq,
        record_key=record_key,
        kind=kind,
        webhook_record_id=ids["webhook_record_id"],
        trigger_type=trigger,
        activity_type=activity_type,
        activity_kind=normalize_kind(activity_type, settings.activity_types),
        activity_id=ids["activity_id"],
        transaction_id=ids["transaction_id"],
        payment_id=ids["payment_id"],
        flipcause_contact_id=ids.get("contact_id"),
        campaign_id=text(f.campaign_id),
        campaign_title=text(f.campaign_title),
        transaction_date=text(f.transaction_date),
        amount=_amount(text(f.amount)),
        email=email,
        email_key=normalize_email(email),
        first_name=first,
        last_name=last,
        company_name=business,
        phone=text(f.phone),
        address=Address(
            street=text(f.street),
            city=text(f.city),
            state=text(f.state),
            postal_code=text(f.postal_code),
            country=text(f.country),
        ),
        custom_fields=custom,
        extra=extra,
        notes=tuple(notes),
    )
