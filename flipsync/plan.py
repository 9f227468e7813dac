"""From decisions to requests: JSON-import batches per list set, sign-ups, creates.

The plan is what `--dry-run` shows and what a live run journals before sending.
It enforces Constant Contact's field limits before anything is sent: a name too
long is truncated (noted in the reason), a phone or address that does not fit
is left out (noted), never sent to be refused or silently cut by the API.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from flipsync.ctct.limits import (
    CUSTOM_FIELD_VALUE_MAX,
    NAME_LIMITS,
    PHONE_LIMITS,
    STREET_ADDRESS_LIMITS,
    check_fields,
    split_import,
    truncate,
)
from flipsync.people import Person
from flipsync.policy import Action, Decision, Endpoint, unchanged_status

MAX_LISTS = 50


@dataclass(frozen=True)
class Op:
    """One request to Constant Contact and the people it carries."""

    op_id: str
    kind: str
    body: dict[str, Any]
    email_keys: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Plain data for the journal."""
        return {
            "op_id": self.op_id,
            "kind": self.kind,
            "body": self.body,
            "email_keys": list(self.email_keys),
        }


@dataclass(frozen=True)
class Plan:
    """Every decision of a batch and the requests that carry the ones that write."""

    decisions: tuple[Decision, ...]
    ops: tuple[Op, ...]
    op_of: Mapping[str, str]


@dataclass(frozen=True)
class Fitted:
    """A person's values cut to what the endpoint accepts, with notes on what was changed."""

    values: dict[str, Any]
    notes: tuple[str, ...]


def fit_values(person: Person, fields: tuple[str, ...], endpoint: Endpoint) -> Fitted:
    """The values a decision writes, within Constant Contact's limits for this endpoint.

    Names are display text, so a long one is cut (noted). A phone or address that does
    not fit would be wrong if cut, so it is left out (noted) and the person still synced.
    """
    values: dict[str, Any] = {}
    notes: list[str] = []
    for name in ("first_name", "last_name", "company_name"):
        value = getattr(person, name)
        if name in fields and value:
            limit = NAME_LIMITS[name]
            if len(value) > limit:
                notes.append(f"{name} truncated to {limit} characters")
                value = truncate(value, limit)
            values[name] = value
    if "phone" in fields and person.phone:
        limit = PHONE_LIMITS[endpoint.value]
        if len(person.phone) > limit:
            notes.append(f"phone left out: longer than {limit} characters")
        else:
            values["phone"] = person.phone
    if "address" in fields and not person.address.is_empty():
        a = person.address
        parts = {
            "street": a.street,
            "city": a.city,
            "state": a.state,
            "postal_code": a.postal_code,
            "country": a.country,
        }
        too_long = [k for k, v in parts.items() if v and len(v) > STREET_ADDRESS_LIMITS[k]]
        if too_long:
            notes.append(f"address left out: {', '.join(too_long)} too long for Constant Contact")
        else:
            values["address"] = parts
    if "custom_fields" in fields and person.custom_fields:
        custom = {}
        for cf_name, value in person.custom_fields.items():
            if len(value) > CUSTOM_FIELD_VALUE_MAX:
                notes.append(
                    f"custom field {cf_name} left out: longer than {CUSTOM_FIELD_VALUE_MAX} characters"
                )
                continue
            custom[cf_name] = value
        if custom:
            values["custom_fields"] = custom
    return Fitted(values=values, notes=tuple(notes))


def import_row(email: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """A JsonImportContact row (the spec's property names)."""
    row: dict[str, Any] = {"email": email}
    for name in ("first_name", "last_name", "company_name"):
        if name in values:
            row[name] = values[name]
    if "phone" in values:
        row["phone"] = values["phone"]
    address = values.get("address")
    if address:
        mapping = {
            "street": "street",
            "city": "city",
            "state": "state",
            "postal_code": "zip",
            "country": "country",
        }
        for ours, theirs in mapping.items():
            if address.get(ours):
                row[theirs] = address[ours]
    for cf_name, value in values.get("custom_fields", {}).items():
        row[f"cf:{cf_name}"] = value
    return row


def _custom_list(values: Mapping[str, Any], field_ids: Mapping[str, str]) -> list[dict[str, str]]:
    return [
        {"custom_field_id": field_ids[name], "value": value}
        for name, value in values.get("custom_fields", {}).items()
        if name in field_ids
    ]


def sign_up_body(
    email: str, values: Mapping[str, Any], list_ids: list[str], field_ids: Mapping[str, str]
) -> dict[str, Any]:
    """A ContactCreateOrUpdateInput body (email is a plain string here)."""
    body: dict[str, Any] = {"email_address": email, "list_memberships": list_ids}
    for name in ("first_name", "last_name", "company_name"):
        if name in values:
            body[name] = values[name]
    if "phone" in values:
        body["phone_number"] = values["phone"]
    address = values.get("address")
    if address:
        body["street_address"] = {"kind": "home", **{k: v for k, v in address.items() if v}}
    custom = _custom_list(values, field_ids)
    if custom:
        body["custom_fields"] = custom
    return body


def create_body(
    email: str,
    values: Mapping[str, Any],
    list_ids: list[str],
    field_ids: Mapping[str, str],
    permission: str,
) -> dict[str, Any]:
    """A ContactPostRequest body; create_source Account because the organization adds them."""
    body: dict[str, Any] = {
        "email_address": {"address": email, "permission_to_send": permission},
        "create_source": "Account",
        "list_memberships": list_ids,
    }
    for name in ("first_name", "last_name", "company_name"):
        if name in values:
            body[name] = values[name]
    if "phone" in values:
        body["phone_numbers"] = [{"phone_number": values["phone"], "kind": "other"}]
    address = values.get("address")
    if address:
        body["street_addresses"] = [{"kind": "home", **{k: v for k, v in address.items() if v}}]
    custom = _custom_list(values, field_ids)
    if custom:
        body["custom_fields"] = custom
    return body


def _op_id(batch_id: str, kind: str, keys: tuple[str, ...]) -> str:
    digest = hashlib.sha256("\n".join((batch_id, kind, *keys)).encode()).hexdigest()[:16]
    return f"{kind}:{digest}"


def build_plan(
    decisions: list[Decision],
    *,
    batch_id: str,
    list_ids: Mapping[str, str],
    field_ids: Mapping[str, str],
    max_contacts_per_import: int,
) -> Plan:
    """Turn decisions into requests. Decisions that cannot be sent become rejections."""
    final: list[Decision] = []
    imports: dict[tuple[str, ...], list[tuple[Decision, dict[str, Any]]]] = {}
    singles: list[tuple[Decision, dict[str, Any]]] = []
    for decision in decisions:
        if not decision.writes:
            final.append(decision)
            continue
        ids = list(dict.fromkeys(list_ids[ref] for ref in decision.lists))
        if not ids:
            final.append(
                _reject(decision, "no list to add this contact to (every write needs one)")
            )
            continue
        if len(ids) > MAX_LISTS:
            final.append(
                _reject(decision, f"{len(ids)} lists; a contact can be on at most {MAX_LISTS}")
            )
            continue
        fitted = fit_values(decision.person, decision.fields, decision.endpoint)
        if fitted.notes:
            decision = replace(decision, reason=decision.reason + "; " + "; ".join(fitted.notes))
        decision = replace(decision, fields=tuple(fitted.values))
        email = decision.person.email
        body: dict[str, Any]
        if decision.endpoint is Endpoint.JSON_IMPORT:
            body = import_row(email, fitted.values)
        elif decision.endpoint is Endpoint.SIGN_UP_FORM:
            body = sign_up_body(email, fitted.values, ids, field_ids)
        else:
            body = create_body(
                email, fitted.values, ids, field_ids, decision.status_after or "not_set"
            )
        problems = check_fields(body, decision.endpoint.value)
        if problems:
            final.append(_reject(decision, "cannot be sent: " + "; ".join(problems)))
            continue
        if decision.endpoint is Endpoint.JSON_IMPORT:
            imports.setdefault(tuple(sorted(ids)), []).append((decision, body))
        else:
            singles.append((decision, body))
        final.append(decision)

    ops: list[Op] = []
    op_of: dict[str, str] = {}
    for ids_key, entries in imports.items():
        rows = [row for _, row in entries]
        keys_by_row = [d.person.email_key for d, _ in entries]
        start = 0
        for chunk in split_import(rows, list_ids=ids_key, max_contacts=max_contacts_per_import):
            keys = tuple(keys_by_row[start : start + len(chunk)])
            start += len(chunk)
            op = Op(
                op_id=_op_id(batch_id, "json_import", keys),
                kind=Endpoint.JSON_IMPORT.value,
                body={"import_data": [dict(row) for row in chunk], "list_ids": list(ids_key)},
                email_keys=keys,
            )
            ops.append(op)
            op_of.update(dict.fromkeys(keys, op.op_id))
    for decision, body in singles:
        keys = (decision.person.email_key,)
        op = Op(
            _op_id(batch_id, decision.endpoint.value, keys), decision.endpoint.value, body, keys
        )
        ops.append(op)
        op_of[decision.person.email_key] = op.op_id
    return Plan(decisions=tuple(final), ops=tuple(ops), op_of=op_of)


def _reject(decision: Decision, reason: str) -> Decision:
    return replace(
        decision,
        action=Action.REJECT,
        endpoint=Endpoint.NONE,
        status_after=unchanged_status(decision.status_before),
        lists=(),
        fields=(),
        reason=reason,
    )
