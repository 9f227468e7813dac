"""Contacts: seeding and the write endpoints (POST, sign-up form, PUT, DELETE)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping

from flipsync.sandbox import validate
from flipsync.sandbox.core import ALL_INCLUDES, SandboxCore
from flipsync.sandbox.model import (
    MAX_ADDRESSES,
    MAX_CUSTOM_FIELDS_PER_CONTACT,
    MAX_LISTS_PER_CONTACT,
    MAX_PHONES,
    PERMISSIONS,
    Address,
    Contact,
    Phone,
    contact_json,
)
from flipsync.sandbox.wire import (
    CONFLICT,
    NOT_FOUND,
    ApiError,
    SandboxRequest,
    SandboxResponse,
    json_response,
    validation,
)


class ContactsMixin(SandboxCore):
    """Creating and changing contacts, by the Python API and by ``/v3/contacts``."""

    def add_contact(
        self,
        email: str,
        *,
        permission: str = "implicit",
        list_ids: Iterable[str] = (),
        first_name: str | None = None,
        last_name: str | None = None,
        job_title: str | None = None,
        company_name: str | None = None,
        deleted: bool = False,
        phone: str | None = None,
        phone_kind: str = "home",
        street: str | None = None,
        city: str | None = None,
        state: str | None = None,
        postal_code: str | None = None,
        country: str | None = None,
        address_kind: str = "home",
        custom_fields: Mapping[str, str] | None = None,
        create_source: str = "Account",
        opt_out_source: str = "Contact",
        opt_out_reason: str | None = None,
        contact_id: str | None = None,
    ) -> str:
        """Create a contact directly (no API call, no request log) and return its id.

        ``list_ids`` and ``custom_fields`` keys may be ids or names. A deleted contact
        keeps ``permission`` but loses its list memberships, like one deleted in the UI.

        Raises:
            ValueError: the email exists or a value is not allowed.
            KeyError: a list or custom field does not exist.
        """
        if permission not in PERMISSIONS:
            raise ValueError(f"permission must be one of {PERMISSIONS}")
        with self._lock:
            address = email.strip()
            if address.lower() in self._by_email:
                raise ValueError(f"a contact with email {address!r} already exists")
            lists = [self._resolve_list(ref) for ref in list_ids]
            fields = {self._resolve_field(k): v for k, v in (custom_fields or {}).items()}
            stamp = self._stamp()
            contact = self._new_contact(
                address,
                permission=permission,
                source=create_source,
                opt_in_source="Contact" if permission == "explicit" else "Account",
                stamp=stamp,
                contact_id=contact_id,
            )
            contact.first_name = first_name
            contact.last_name = last_name
            contact.job_title = job_title
            contact.company_name = company_name
            if permission == "unsubscribed":
                contact.opt_out_source = opt_out_source
                contact.opt_out_us = stamp
                contact.opt_out_reason = opt_out_reason
            if phone:
                contact.phones.append(
                    Phone(str(uuid.uuid4()), phone, phone_kind, stamp, stamp, create_source)
                )
            parts = {
                "street": street,
                "city": city,
                "state": state,
                "postal_code": postal_code,
                "country": country,
            }
            if any(parts.values()):
                contact.addresses.append(
                    Address(str(uuid.uuid4()), address_kind, stamp, stamp, **parts)
                )
            contact.custom_fields.update(fields)
            contact.list_ids = list(dict.fromkeys(lists))
            if deleted:
                contact.deleted_us = stamp
                contact.list_ids = []
            return contact.contact_id

    def unsubscribe(
        self,
        email: str,
        *,
        source: str = "Contact",
        reason: str | None = None,
        touch: bool = True,
    ) -> None:
        """Unsubscribe a contact as if they clicked "unsubscribe" (or the account did it).

        ``touch=False`` leaves the contact's ``updated_at`` alone: Constant Contact does not
        document that an opt-out bumps it, so a careful client must not depend on it.
        """
        with self._lock:
            contact = self._require_contact(email)
            stamp = self._stamp()
            self._set_permission(contact, "unsubscribed", stamp, source=source, reason=reason)
            contact.update_source = source
            if touch:
                contact.updated_us = stamp

    def delete_contact(self, email_or_id: str) -> None:
        """Delete a contact as the UI does: ``deleted_at`` set, list memberships removed."""
        with self._lock:
            contact = self._require_contact(email_or_id)
            stamp = self._stamp()
            contact.deleted_us = stamp
            contact.list_ids = []
            contact.updated_us = stamp

    def remove_from_list(self, email: str, list_ref: str) -> None:
        """Take a contact off a list as a list move in the UI does: ``updated_at`` stays.

        Constant Contact does not bump a contact's ``updated_at`` for list moves (a known
        trap for incremental syncs), so this change is invisible to ``updated_after``.
        """
        with self._lock:
            contact = self._require_contact(email)
            list_id = self._resolve_list(list_ref)
            contact.list_ids = [i for i in contact.list_ids if i != list_id]

    def _new_contact(
        self,
        email: str,
        *,
        permission: str,
        source: str,
        opt_in_source: str | None,
        stamp: int,
        contact_id: str | None = None,
    ) -> Contact:
        new_id = contact_id or str(uuid.uuid4())
        if new_id in self._by_id:
            raise ValueError(f"contact id {new_id!r} already exists")
        opted_in = permission in ("explicit", "implicit", "pending_confirmation")
        contact = Contact(
            contact_id=new_id,
            seq=len(self._contacts),
            email=email,
            permission=permission,
            created_us=stamp,
            updated_us=stamp,
            email_created_us=stamp,
            email_updated_us=stamp,
            create_source=source,
            update_source=source,
            opt_in_source=opt_in_source if opted_in else None,
            opt_in_us=stamp if permission in ("explicit", "implicit") else None,
            confirm_status="pending" if permission == "pending_confirmation" else "off",
        )
        self._contacts.append(contact)
        self._by_id[new_id] = contact
        self._by_email[email.lower()] = contact
        return contact

    @staticmethod
    def _set_permission(
        contact: Contact, permission: str, stamp: int, *, source: str, reason: str | None = None
    ) -> None:
        """Change ``permission_to_send`` and the opt-in/opt-out facts that go with it."""
        if permission == contact.permission:
            return
        if permission == "unsubscribed":
            contact.opt_out_source = source
            contact.opt_out_us = stamp
            contact.opt_out_reason = reason
        else:
            contact.opt_out_source = None
            contact.opt_out_us = None
            contact.opt_out_reason = None
            if permission in ("explicit", "implicit"):
                contact.opt_in_us = stamp
                contact.opt_in_source = contact.opt_in_source or source
        contact.confirm_status = "pending" if permission == "pending_confirmation" else "off"
        contact.permission = permission
        contact.email_updated_us = stamp

    @staticmethod
    def _merge_phones(
        contact: Contact, phones: list[tuple[str, str]], stamp: int, source: str
    ) -> None:
        """Update the phone of the same kind, else add one while there are fewer than 3."""
        for kind, number in phones:
            existing = next((p for p in contact.phones if p.kind == kind), None)
            if existing is not None:
                existing.phone_number = number
                existing.updated_us = stamp
            elif len(contact.phones) < MAX_PHONES:
                contact.phones.append(Phone(str(uuid.uuid4()), number, kind, stamp, stamp, source))

    @staticmethod
    def _merge_address(contact: Contact, kind: str, parts: Mapping[str, str], stamp: int) -> None:
        """Update the given parts of the address of the same kind, else add one (max 3)."""
        existing = next((a for a in contact.addresses if a.kind == kind), None)
        if existing is None:
            if len(contact.addresses) >= MAX_ADDRESSES:
                return
            existing = Address(str(uuid.uuid4()), kind, stamp, stamp)
            contact.addresses.append(existing)
        for name, value in parts.items():
            if name != "kind":
                setattr(existing, name, value)
        existing.updated_us = stamp

    @staticmethod
    def _merge_custom_fields(contact: Contact, values: Mapping[str, str]) -> None:
        """Update existing values; add new ones while the contact has fewer than 25."""
        for field_id, value in values.items():
            if (
                field_id in contact.custom_fields
                or len(contact.custom_fields) < MAX_CUSTOM_FIELDS_PER_CONTACT
            ):
                contact.custom_fields[field_id] = value

    @staticmethod
    def _append_lists(contact: Contact, list_ids: Iterable[str]) -> None:
        """Add list memberships (never removing any), up to 50 per contact."""
        for list_id in list_ids:
            if list_id not in contact.list_ids and len(contact.list_ids) < MAX_LISTS_PER_CONTACT:
                contact.list_ids.append(list_id)

    def _conflict(self, contact: Contact) -> ApiError:
        return ApiError(
            409,
            CONFLICT,
            f"Validation failed: Email already exists for contact {contact.contact_id}",
        )

    def _post_contact(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /contacts``: 409 when the email exists, deleted contacts included."""
        data = validate.contact_post(self._json_body(request), self._lists, self._fields)
        if data.email is None:
            raise validation("email_address is required by this sandbox (no SMS-only contacts)")
        existing = self._by_email.get(data.email.lower())
        if existing is not None:
            raise self._conflict(existing)
        permission = data.permission or "not_set"
        source = data.create_source or "Account"
        stamp = self._stamp()
        contact = self._new_contact(
            data.email, permission=permission, source=source, opt_in_source=source, stamp=stamp
        )
        if permission == "unsubscribed":
            contact.opt_out_source = source
            contact.opt_out_us = stamp
        self._apply_input(contact, data, stamp, source, replace=True)
        return json_response(201, contact_json(contact, ALL_INCLUDES))

    def _apply_input(
        self,
        contact: Contact,
        data: validate.ContactInput,
        stamp: int,
        source: str,
        *,
        replace: bool,
    ) -> None:
        """Write checked fields and sub-resources; ``replace`` swaps given sub-resource arrays."""
        for name, value in (data.fields or {}).items():
            setattr(contact, name, value)
        if data.phones is not None:
            if replace:
                contact.phones = [
                    Phone(str(uuid.uuid4()), number, kind, stamp, stamp, source)
                    for kind, number in data.phones
                ]
            else:
                self._merge_phones(contact, data.phones, stamp, source)
        if data.addresses is not None:
            if replace:
                contact.addresses = []
            for item in data.addresses:
                if replace:
                    parts = {k: v for k, v in item.items() if k != "kind"}
                    contact.addresses.append(
                        Address(str(uuid.uuid4()), item["kind"], stamp, stamp, **parts)
                    )
                else:
                    self._merge_address(contact, item["kind"], item, stamp)
        if data.custom_fields is not None:
            if replace:
                contact.custom_fields = dict(data.custom_fields)
            else:
                self._merge_custom_fields(contact, data.custom_fields)
        if data.list_ids is not None:
            if replace:
                contact.list_ids = list(data.list_ids)
            else:
                self._append_lists(contact, data.list_ids)
        if data.taggings is not None:
            contact.taggings = list(data.taggings)
        if data.notes is not None:
            contact.notes = [dict(n) for n in data.notes]

    def _post_sign_up(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /contacts/sign_up_form``: create (201) or update (200) by email.

        New contacts are ``explicit`` (opt_in_source Contact), or ``pending_confirmation``
        when Confirmed Opt-In is on. Existing contacts, unsubscribed and deleted ones
        included, are set to ``explicit`` (deleted ones are restored); given fields are
        updated and lists and custom fields appended. Under Confirmed Opt-In a contact
        still ``pending_confirmation`` stays so: only the person's own confirmation ends
        it [inferred: the spec says nothing of pending contacts].
        """
        data = validate.sign_up(self._json_body(request), self._lists, self._fields)
        assert data.email is not None
        stamp = self._stamp()
        contact = self._by_email.get(data.email.lower())
        if contact is None:
            permission = "pending_confirmation" if self.config.confirmed_opt_in else "explicit"
            contact = self._new_contact(
                data.email,
                permission=permission,
                source="Contact",
                opt_in_source="Contact",
                stamp=stamp,
            )
            self._apply_input(contact, data, stamp, "Contact", replace=False)
            return json_response(201, {"contact_id": contact.contact_id, "action": "created"})
        contact.deleted_us = None
        awaiting = self.config.confirmed_opt_in and contact.permission == "pending_confirmation"
        if not awaiting:
            self._set_permission(contact, "explicit", stamp, source="Contact")
        contact.update_source = "Contact"
        self._apply_input(contact, data, stamp, "Contact", replace=False)
        contact.updated_us = stamp
        return json_response(200, {"contact_id": contact.contact_id, "action": "updated"})

    def _put_contact(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``PUT /contacts/{id}``: full replace of top-level properties.

        Omitted top-level properties become null; omitted sub-resources are kept, given ones
        replace the existing arrays. An omitted ``email_address`` keeps the address and
        permission. A deleted contact is revived, which needs ``update_source: Account``.
        """
        contact = self._by_id.get(match["id"])
        if contact is None:
            raise ApiError(404, NOT_FOUND, "The contact_id was not found.")
        data = validate.contact_put(self._json_body(request), self._lists, self._fields)
        source = data.update_source or "Account"
        if contact.deleted and source != "Account":
            raise validation("update_source must be Account to restore a deleted contact")
        if data.email is not None and data.email.lower() != contact.email.lower():
            other = self._by_email.get(data.email.lower())
            if other is not None:
                raise self._conflict(other)
        stamp = self._stamp()
        if data.email is not None:
            if data.email != contact.email:
                del self._by_email[contact.email.lower()]
                contact.email = data.email
                self._by_email[data.email.lower()] = contact
                contact.email_updated_us = stamp
            if data.permission is not None:
                self._set_permission(
                    contact, data.permission, stamp, source=source, reason=data.opt_out_reason
                )
        for name in validate.NAME_FIELDS:
            setattr(contact, name, None)
        contact.birthday_month = contact.birthday_day = None
        contact.anniversary = None
        self._apply_input(contact, data, stamp, source, replace=True)
        contact.deleted_us = None
        contact.update_source = source
        contact.updated_us = stamp
        return json_response(200, contact_json(contact, ALL_INCLUDES))

    def _delete(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``DELETE /contacts/{id}``: 204; deleting a deleted contact is also 204."""
        contact = self._by_id.get(match["id"])
        if contact is None:
            raise ApiError(404, NOT_FOUND, "The contact_id was not found.")
        if not contact.deleted:
            stamp = self._stamp()
            contact.deleted_us = stamp
            contact.list_ids = []
            contact.updated_us = stamp
        return SandboxResponse(204)
