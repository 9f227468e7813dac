"""The interface the core needs from Constant Contact, kept apart from HTTP.

`flipsync.ctct.client.ConstantContactClient` implements it; the core (sync, push, mirror)
sees only this, so it never depends on requests and can be driven by any stand-in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from flipsync.ctct.types import (
    ActivityStatus,
    ContactList,
    CustomField,
    RemoteContact,
    SignUpResult,
)


class ConstantContactAPI(Protocol):
    """What a run asks of Constant Contact."""

    @property
    def request_counts(self) -> Counter[str]:
        """Requests sent so far, by kind (including retries)."""
        ...

    def list_lists(self) -> list[ContactList]:
        """Every contact list of the account."""
        ...

    def list_custom_fields(self) -> list[CustomField]:
        """Every custom field of the account."""
        ...

    def lookup_contact(self, email: str) -> RemoteContact | None:
        """One contact by email, deleted ones included."""
        ...

    def count_contacts(self) -> int:
        """How many contacts the account has, deleted ones included."""
        ...

    def iter_contacts(
        self, updated_after: datetime | None = None, *, optout_after: datetime | None = None
    ) -> Iterator[list[RemoteContact]]:
        """Pages of contacts changed (or unsubscribed) after a moment; all when both are None."""
        ...

    def server_now(self) -> datetime:
        """Constant Contact's clock as best measured (ours when nothing was measured)."""
        ...

    def start_json_import(
        self,
        import_data: list[dict[str, Any]],
        list_ids: list[str],
        *,
        exclude: Collection[str] = (),
    ) -> str:
        """Start a bulk JSON import; returns the activity id.

        After an unanswered POST, an activity is adopted only with proof that it is this
        POST's; ``exclude`` names every activity flipsync already owns.
        """
        ...

    def start_contact_export(self, status: str | None = None) -> str:
        """Queue a CSV export of the account's contacts; returns the activity id."""
        ...

    def iter_export_rows(self, results_href: str) -> Iterator[dict[str, str]]:
        """The rows of a completed export, streamed."""
        ...

    def get_activity(self, activity_id: str) -> ActivityStatus:
        """The status of a bulk activity."""
        ...

    def recent_activities(self, state: str | None = None, limit: int = 50) -> list[ActivityStatus]:
        """Activities of the last 10 days, newest first."""
        ...

    def find_import(self, sent_at: datetime, people: int, exclude: Collection[str]) -> str | None:
        """The import activity an unanswered POST of `people` rows sent at `sent_at` made."""
        ...

    def sign_up(self, body: dict[str, Any]) -> SignUpResult:
        """POST /contacts/sign_up_form."""
        ...

    def create_contact(self, body: dict[str, Any]) -> str:
        """POST /contacts; raises ContactExists on 409."""
        ...

    def delete_contacts(self, contact_ids: Sequence[str]) -> str:
        """POST /activities/contact_delete (at most 500 ids); returns the activity id."""
        ...
