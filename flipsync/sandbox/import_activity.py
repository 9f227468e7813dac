"""The ``contacts_json_import`` activity: queueing it and applying its rows on completion.

Parsing and checking the payload is imports.py's; this module owns the activity's life.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from flipsync.sandbox.contacts import ContactsMixin
from flipsync.sandbox.imports import RowChanges, RowProblem, check_row, parse_import_payload
from flipsync.sandbox.model import Activity, ImportRow, initialized_activity_json
from flipsync.sandbox.wire import MICROS, SandboxRequest, SandboxResponse, json_response, validation


class ImportActivityMixin(ContactsMixin):
    """Import activities: the POST endpoint, seeded foreign imports, and completion."""

    def add_import_activity(
        self,
        emails: Sequence[str],
        list_refs: Sequence[str],
        *,
        age_seconds: float = 0.0,
        counts: bool = True,
        finish: bool = True,
    ) -> str:
        """A contacts import that flipsync did not make (staff importing a spreadsheet).

        ``age_seconds`` back-dates it; ``counts=False`` keeps it unfinished and shows no
        counts (as an activity CC has only just registered); ``finish=False`` alone keeps it
        processing with its counts. Returns the activity id.
        """
        with self._lock:
            list_ids = [self._resolve_list(ref) for ref in list_refs]
            stamp = self._stamp() - int(age_seconds * MICROS)
            unfinished = not counts or not finish
            activity = Activity(
                activity_id=str(uuid.uuid4()),
                created_us=stamp,
                due_s=float("inf") if unfinished else self.now(),
                list_ids=list_ids,
                rows=[ImportRow(i + 2, {"email": e}) for i, e in enumerate(emails)],
                received_rows=len(emails),
                truncated=False,
                dropped_rows=0,
                client_id=None,
                counts_hidden=not counts,
            )
            self._activities.append(activity)
            self._settle()
            return activity.activity_id

    def _post_import(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /activities/contacts_json_import``: validate now, apply on completion."""
        payload = parse_import_payload(request.body)
        for list_id in payload.list_ids:
            if list_id not in self._lists:
                raise validation(f"list_ids contains an unknown list id: {list_id}")
        self._check_activity_queue()
        stamp = self._stamp()
        activity = Activity(
            activity_id=str(uuid.uuid4()),
            created_us=stamp,
            # Due by the clock, not by the stamp: stamps run ahead of it after a burst of
            # writes (strictly increasing milliseconds), which would delay the activity.
            due_s=self.now() + self.config.activity_seconds,
            list_ids=payload.list_ids,
            rows=[ImportRow(index + 2, row) for index, row in enumerate(payload.rows)],
            received_rows=payload.received_rows,
            truncated=payload.truncated,
            dropped_rows=payload.received_rows - len(payload.rows),
            client_id=self._client,
        )
        self._activities.append(activity)
        return json_response(201, initialized_activity_json(activity))

    def _complete(self, activity: Activity) -> None:
        """Apply an import's rows in order and fill its status counters."""
        names = {f.name: f.custom_field_id for f in self._fields.values()}
        for row in activity.rows:
            result = check_row(row.line, row.data, names)
            if isinstance(result, RowProblem):
                if result.kind == "correctable":
                    activity.correctable_count += 1
                else:
                    activity.error_count += 1
                activity.errors.append(result.message)
                continue
            self._import_row(activity, result)
        activity.completed_us = self._stamp()
        activity.updated_us = activity.completed_us

    def _import_row(self, activity: Activity, changes: RowChanges) -> None:
        """One valid row: create (implicit, Account) or update only the given properties.

        Existing contacts keep their permission. Deleted contacts are restored. Unsubscribed
        contacts are updated but not added to lists (``cannot_add_to_list_count``).
        """
        stamp = self._stamp()
        contact = self._by_email.get(changes.email.lower())
        if contact is None:
            contact = self._new_contact(
                changes.email,
                permission="implicit",
                source="Account",
                opt_in_source="Account",
                stamp=stamp,
            )
            activity.created_contacts += 1
        else:
            activity.updated_contacts += 1
            contact.deleted_us = None
            contact.update_source = "Account"
        for name, value in changes.fields.items():
            setattr(contact, name, value)
        self._merge_phones(contact, changes.phones, stamp, "Account")
        for kind, parts in changes.addresses.items():
            self._merge_address(contact, kind, parts, stamp)
        self._merge_custom_fields(contact, changes.custom_fields)
        if contact.permission == "unsubscribed":
            activity.cannot_add_to_list_count += 1
        else:
            self._append_lists(contact, activity.list_ids)
        contact.updated_us = stamp
        activity.person_count += 1
