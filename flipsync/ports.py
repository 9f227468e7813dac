"""The interfaces the core needs from Constant Contact and from the state DB.

`flipsync.ctct.client.ConstantContactClient` implements `ConstantContactAPI` and
`flipsync.state.StateDB` implements the state protocols; the core (sync, push, mirror,
reconcile) sees only these, so it never depends on requests or SQLite details and can be
driven by any stand-in. Each part of the core names the narrowest protocol it needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from flipsync.ctct.types import (
    ActivityStatus,
    ContactList,
    CustomField,
    RemoteContact,
    SignUpResult,
)
from flipsync.json_fields import JSONObject
from flipsync.state import Expectation, InboxBatch, InboxRow, Journal, MirrorEntry

if TYPE_CHECKING:  # outcomes imports records, which imports flipsync.state
    from flipsync.outcomes import Outcome


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


class MirrorStore(Protocol):
    """What `Knowledge` keeps of the account: the mirror of contacts and its meta marks."""

    def get_meta(self, key: str) -> str | None:
        """A value from the meta table, or None."""
        ...

    def mirror_get(self, email_keys: Iterable[str]) -> dict[str, MirrorEntry]:
        """Mirror rows for these emails (normalised keys)."""
        ...

    def save_mirror(
        self,
        entries: Iterable[MirrorEntry],
        meta: Mapping[str, str] | None = None,
        *,
        replace_all: bool = False,
    ) -> None:
        """Remember what a read of the account found (and meta, in the same commit)."""
        ...

    def replace_mirror(
        self,
        active: Iterable[MirrorEntry],
        deleted: Iterable[MirrorEntry],
        meta: Mapping[str, str],
    ) -> int:
        """Swap in a full export of the account; how many rows it replaced."""
        ...


class ExpectationStore(Protocol):
    """What the `Reconciler` checks: writes not yet seen in Constant Contact."""

    def pending_expectations(self) -> list[Expectation]:
        """Writes not yet seen in Constant Contact, oldest first."""
        ...

    def settle_expectations(self, settled: Iterable[str], resend: Mapping[int, str]) -> None:
        """Drop checked expectations; queue the records of lost writes to be sent again."""
        ...

    def save_mirror(
        self,
        entries: Iterable[MirrorEntry],
        meta: Mapping[str, str] | None = None,
        *,
        replace_all: bool = False,
    ) -> None:
        """Remember what a read of the account found."""
        ...


class BatchStore(Protocol):
    """What the `Pusher` records around its requests: journal ops, then one commit per batch."""

    def known_activity_ids(self) -> set[str]:
        """Every activity flipsync owned lately (never adopted as another POST's)."""
        ...

    def mirror_get(self, email_keys: Iterable[str]) -> dict[str, MirrorEntry]:
        """Mirror rows for these emails (normalised keys)."""
        ...

    def save_mirror(
        self,
        entries: Iterable[MirrorEntry],
        meta: Mapping[str, str] | None = None,
        *,
        replace_all: bool = False,
    ) -> None:
        """Remember what a request taught about contacts."""
        ...

    def update_op(
        self,
        op_id: str,
        *,
        state: str,
        activity_id: str | None = None,
        posted_at: str | None = None,
        result: JSONObject | None = None,
    ) -> None:
        """Move one journaled request along (posted, its activity, its result)."""
        ...

    def commit_batch(
        self,
        *,
        batch_id: str | None,
        run_id: str,
        outcomes: Sequence[Outcome],
        checkpoint: int | None,
        done_retry_seqs: Iterable[int] = (),
        requeue: Mapping[int, str] | None = None,
        attempts: Mapping[int, int] | None = None,
        transactions: Iterable[tuple[str, str, bool, bool]] = (),
        mirror: Iterable[MirrorEntry] = (),
        meta: Mapping[str, str] | None = None,
        expect: Iterable[Expectation] = (),
    ) -> None:
        """Outcomes, checkpoint, retries, knowledge and journal removal in one transaction."""
        ...


class SyncState(MirrorStore, ExpectationStore, BatchStore, Protocol):
    """Everything a `Syncer` run reads and writes: the inbox, its checkpoint, runs, journals."""

    @property
    def checkpoint(self) -> int:
        """The highest inbox seq whose work Constant Contact confirmed."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Set a meta value (backfill progress)."""
        ...

    def inbox_after(self, seq: int, limit: int) -> list[InboxRow]:
        """The next `limit` payloads after `seq`, in arrival order."""
        ...

    def inbox_batch_after(self, seq: int, limit: int) -> InboxBatch:
        """The next `limit` payloads after `seq`, parsed only as each is read."""
        ...

    def inbox_batch_by_seqs(self, seqs: Sequence[int]) -> InboxBatch:
        """Payloads by seq, parsed only as each is read."""
        ...

    def inbox_count(self) -> int:
        """How many payloads the inbox holds (a backfill's progress total)."""
        ...

    def inbox_pending_count(self) -> int:
        """How many payloads wait after the checkpoint (a run's progress total)."""
        ...

    def retry_seqs(self) -> dict[int, int]:
        """Inbox seqs to process again, with how often they were tried."""
        ...

    def test_marked(self, record_keys: Iterable[str]) -> set[str]:
        """Which of these inbox records were marked as tests."""
        ...

    def transactions_for(self, txn_ids: Iterable[str]) -> dict[tuple[str, str], tuple[bool, bool]]:
        """(transaction, email) -> (signed up, contact created by flipsync)."""
        ...

    def oldest_expectation_at(self) -> str | None:
        """When the oldest unproven write was committed, or None."""
        ...

    def open_journals(self, kind: str | None = None) -> list[Journal]:
        """Batches left uncommitted by this or an earlier run, oldest first."""
        ...

    def write_journal(self, journal: Journal) -> None:
        """Record a batch and its planned requests before the first request is sent."""
        ...

    def start_run(self, run_id: str, kind: str, started_at: datetime) -> None:
        """Record that a run began."""
        ...

    def finish_run(self, run_id: str, status: str, report: Mapping[str, Any]) -> None:
        """Record how a run ended and its report."""
        ...
