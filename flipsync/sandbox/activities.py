"""Bulk activities: settling them, listing and polling, exports and bulk deletes."""

from __future__ import annotations

import re
import uuid
from typing import Any

from flipsync.sandbox.core import decode_cursor
from flipsync.sandbox.deletes import DeleteActivity, delete_activity_json, parse_delete_body
from flipsync.sandbox.exports import ExportJob, export_json, parse_export_body, render_csv, selected
from flipsync.sandbox.import_activity import ImportActivityMixin
from flipsync.sandbox.model import Activity, activity_json
from flipsync.sandbox.wire import (
    MICROS,
    NOT_FOUND,
    ApiError,
    SandboxRequest,
    SandboxResponse,
    json_response,
    validation,
)

ACTIVITY_WINDOW_SECONDS = 10 * 86400
ACTIVITY_STATES = ("processing", "completed", "cancelled", "failed", "timed_out")


class ActivitiesMixin(ImportActivityMixin):
    """Every activity kind's clock: ``_settle`` completes what is due, oldest first."""

    def hold_activities(self, hold: bool = True) -> None:
        """While held, activities stay ``processing`` and nothing is applied.

        Activities already due when the hold starts complete first, as they would have in
        a real account.
        """
        with self._lock:
            self._settle()
            self._held = hold

    def activities(self) -> list[dict[str, Any]]:
        """Every activity, oldest first, as ``ActivityImport`` plus a ``sandbox`` key.

        ``sandbox`` holds what tests need and the API never shows: ``truncated`` (the
        4 MB cut happened), ``received_rows``, ``dropped_rows``, ``list_ids``,
        ``created_contacts``, ``updated_contacts`` and ``client_id``.
        """
        with self._lock:
            self._settle()
            return [self._activity_with_internals(a) for a in self._activities]

    def _activity_with_internals(self, activity: Activity | DeleteActivity) -> dict[str, Any]:
        out = self._activity_view(activity, self.now())
        if isinstance(activity, DeleteActivity):
            out["sandbox"] = {
                "kind": "contact_delete",
                "contact_ids": list(activity.contact_ids),
                "list_ids": list(activity.list_ids),
                "client_id": activity.client_id,
            }
            return out
        out["sandbox"] = {
            "kind": "contacts_json_import",
            "truncated": activity.truncated,
            "received_rows": activity.received_rows,
            "dropped_rows": activity.dropped_rows,
            "list_ids": list(activity.list_ids),
            "created_contacts": activity.created_contacts,
            "updated_contacts": activity.updated_contacts,
            "client_id": activity.client_id,
        }
        return out

    def _settle(self) -> None:
        """Complete every due activity, oldest first (nothing happens while held)."""
        if self._held:
            return
        now = self.now()
        for activity in self._activities:
            if not activity.completed and activity.due_s <= now:
                if isinstance(activity, DeleteActivity):
                    self._complete_delete(activity)
                else:
                    self._complete(activity)
        for job in self._exports:
            if job.completed_us is None and job.due_s <= now:
                names = {i: lst.name for i, lst in self._lists.items()}
                job.csv, job.rows = render_csv(
                    (c for c in self._contacts if selected(job, c)), names
                )
                job.completed_us = self._stamp()

    def _post_contact_delete(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /activities/contact_delete``: validate now, delete on completion (deletes.py)."""
        wanted = parse_delete_body(self._json_body(request))
        for list_id in wanted.list_ids:
            if list_id not in self._lists:
                raise validation(f"list_ids contains an unknown list id: {list_id}")
        self._check_activity_queue()
        members = {c.contact_id for c in self._contacts if set(c.list_ids) & set(wanted.list_ids)}
        activity = DeleteActivity(
            activity_id=str(uuid.uuid4()),
            created_us=self._stamp(),
            due_s=self.now() + self.config.activity_seconds,
            contact_ids=wanted.contact_ids,
            list_ids=wanted.list_ids,
            items_total=len(wanted.contact_ids) + len(members),
            client_id=self._client,
        )
        self._activities.append(activity)
        # The 201 shows the activity as just queued, whatever the sandbox clock says.
        return json_response(
            201, delete_activity_json(activity, now_s=activity.created_us / MICROS, duration_s=1)
        )

    def _complete_delete(self, activity: DeleteActivity) -> None:
        """Delete the named contacts (or every member of the named lists) now."""
        if activity.list_ids:
            wanted = set(activity.list_ids)
            targets = [c for c in self._contacts if set(c.list_ids) & wanted]
        else:
            targets = []
            for contact_id in activity.contact_ids:
                contact = self._by_id.get(contact_id)
                if contact is None:
                    activity.errors.append(f"contact_id {contact_id} was not found")
                else:
                    targets.append(contact)
        for contact in targets:
            if not contact.deleted:
                stamp = self._stamp()
                contact.deleted_us = stamp
                contact.list_ids = []
                contact.updated_us = stamp
            activity.deleted += 1
        activity.completed_us = self._stamp()
        activity.updated_us = activity.completed_us

    def _post_export(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``POST /activities/contact_exports``: queue an export; the file exists when done."""
        status, list_ids, contact_ids = parse_export_body(self._json_body(request))
        for list_id in list_ids:
            if list_id not in self._lists:
                raise validation(f"list_ids contains an unknown list id: {list_id}")
        job = ExportJob(
            activity_id=str(uuid.uuid4()),
            file_export_id=str(uuid.uuid4()),
            created_us=self._stamp(),
            due_s=self.now() + self.config.activity_seconds,
            status=status,
            list_ids=list_ids,
            contact_ids=contact_ids,
        )
        self._exports.append(job)
        return json_response(201, export_json(job, now_s=self.now()))

    def _get_export_file(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /contact_exports/{file_export_id}``: the CSV of a completed export."""
        job = next((j for j in self._exports if j.file_export_id == match["id"]), None)
        if job is None or job.csv is None:
            raise ApiError(404, NOT_FOUND, "The requested resource was not found.")
        return SandboxResponse(200, job.csv, (("Content-Type", "text/csv"),))

    def _activity_view(self, activity: Activity | DeleteActivity, now: float) -> dict[str, Any]:
        """The API's JSON for either kind of activity."""
        duration = self.config.activity_seconds
        if isinstance(activity, DeleteActivity):
            return delete_activity_json(activity, now_s=now, duration_s=duration)
        return activity_json(activity, now_s=now, duration_s=duration)

    def _get_activities(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /activities``: the last 10 days, newest first, optional ``state`` filter."""
        params = dict(query)
        if "cursor" in params:
            params, _ = decode_cursor(params["cursor"])
        state = params.get("state")
        if state is not None and state not in ACTIVITY_STATES:
            raise validation("state does not have a valid value")
        now = self.now()
        views = []
        for activity in reversed(self._activities):
            if activity.created_us / MICROS < now - ACTIVITY_WINDOW_SECONDS:
                continue
            view = self._activity_view(activity, now)
            shown = "processing" if view["state"] == "initialized" else view["state"]
            if state is None or shown == state:
                views.append(view)
        for job in reversed(self._exports):
            if job.created_us / MICROS < now - ACTIVITY_WINDOW_SECONDS:
                continue
            view = export_json(job, now_s=now)
            if state is None or view["state"] == state:
                views.append(view)
        views.sort(key=lambda v: str(v["created_at"]), reverse=True)
        page, _, next_href = self._page("/v3/activities", query, views, default=50, maximum=500)
        out: dict[str, Any] = {"activities": page}
        if next_href:
            out["_links"] = {"next": {"href": next_href}}
        return json_response(200, out)

    def _get_activity(
        self, request: SandboxRequest, query: dict[str, str], match: re.Match[str]
    ) -> SandboxResponse:
        """``GET /activities/{id}`` (``ActivityImport``)."""
        job = next((j for j in self._exports if j.activity_id == match["id"]), None)
        if job is not None:
            return json_response(200, export_json(job, now_s=self.now()))
        activity = next((a for a in self._activities if a.activity_id == match["id"]), None)
        if activity is None:
            raise ApiError(404, NOT_FOUND, "Resource not found for the activity_id provided.")
        return json_response(200, self._activity_view(activity, self.now()))
