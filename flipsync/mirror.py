"""Knowing who exists in Constant Contact, at the lowest request cost.

Two ways to learn a contact's state:

- the mirror: every contact of the account (email -> id, status, lists, updated_at)
  kept in the state DB. Building it costs one request per 500 contacts; once
  built, each run refreshes it once with `updated_after` (status=all, so deletions
  and unsubscribes show), usually one request. Later batches of the same run read
  nothing back: what flipsync wrote is in the mirror from the commit. Before a batch
  that would send an existing contact to the sign-up form (the one write that could
  resubscribe someone), the opt-outs since the last such check are asked for with
  `optout_after`, which does not depend on `updated_at` being bumped.
- per-email lookups: one request per email, with no upkeep.

With `lookup_strategy: auto`, a warm mirror is refreshed; a cold one is built only
when that is cheaper than looking up this batch's emails one by one (the account
size comes from one counting request, remembered afterwards).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from flipsync import mirror_export
from flipsync.ctct.types import RemoteContact
from flipsync.emails import normalize_email
from flipsync.errors import RequestRefused, TransientError, UnexpectedResponse
from flipsync.mirror_export import ExportUnusable
from flipsync.policy import Known
from flipsync.ports import ConstantContactAPI, MirrorStore
from flipsync.progress import Progress, no_progress
from flipsync.state import MirrorEntry, iso

log = structlog.get_logger(__name__)

PAGE_SIZE = 500
# Re-read a little before the watermark: updated_at stamps are the server's, but a
# change committed while the previous refresh was paging could carry an earlier stamp.
OVERLAP = timedelta(minutes=2)
MIRROR_COMPLETE = "mirror_complete"
MIRROR_WATERMARK = "mirror_watermark"
ACCOUNT_SIZE = "account_contacts"
OPTOUTS_CHECKED = "optouts_checked_at"
# With no record of an opt-out check (a mirror from an older flipsync), look this far back.
OPTOUT_LOOKBACK = timedelta(days=30)
LOOKUPS_WITHOUT_COUNT = 25
# Above this many pages, two exports (about 8 requests) are cheaper than paging.
EXPORT_MIN_PAGES = 10


@dataclass(frozen=True)
class KnowledgeResult:
    """Known state per email key, and how it was learnt (for the run report)."""

    known: dict[str, Known]
    method: str
    requests: int


def entry_from_remote(contact: RemoteContact, now: datetime) -> MirrorEntry | None:
    """A mirror row from an API contact; None when the contact has no email."""
    if not contact.email:
        return None
    return MirrorEntry(
        email_key=normalize_email(contact.email),
        contact_id=contact.contact_id,
        permission=contact.permission or "not_set",
        deleted=contact.deleted,
        list_ids=contact.list_ids,
        updated_at=iso(contact.updated_at) if contact.updated_at else None,
        seen_at=iso(now),
    )


def known_from_entry(entry: MirrorEntry) -> Known:
    """What the policy needs from a mirror row."""
    return Known(permission=entry.permission, deleted=entry.deleted, contact_id=entry.contact_id)


class Knowledge:
    """Answers "what does Constant Contact have for these emails?" for one run."""

    def __init__(
        self,
        state: MirrorStore,
        api: ConstantContactAPI,
        *,
        strategy: str = "auto",
        clock: Callable[[], datetime],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.state = state
        self.api = api
        self.strategy = strategy
        self.clock = clock
        self.sleep = sleep
        self.warnings: list[str] = []
        # Called with every fresh read of contacts (email key -> entry): the run checks there
        # that its earlier writes landed (flipsync.reconcile). None in dry runs.
        self.on_read: Callable[[Mapping[str, MirrorEntry]], None] | None = None
        self._read_this_run = False
        self.progress: Progress = no_progress
        # List name -> id of the run's catalog (the lists the policy names, which are the ones
        # the mirror's memberships are checked against); None: an export reads the lists.
        self.list_ids_by_name: Mapping[str, str] | None = None

    @property
    def mirror_complete(self) -> bool:
        """True once the whole account has been read into the mirror."""
        return self.state.get_meta(MIRROR_COMPLETE) == "1"

    def known_for(self, email_keys: Iterable[str]) -> KnowledgeResult:
        """State for each email; an email absent from the result is not in Constant Contact."""
        keys = list(dict.fromkeys(email_keys))
        if not keys:
            return KnowledgeResult({}, "none", 0)
        if self.strategy == "lookup":
            return self._lookups(keys)
        if self.mirror_complete:
            if self._read_this_run:
                # This run read the account already and committed its own writes to the
                # mirror; opt-outs since are asked for separately (check_optouts).
                return self._from_mirror(keys, "mirror", 0)
            requests = self.refresh()
            return self._from_mirror(keys, "mirror refresh", requests)
        if self.strategy == "mirror" or not self._lookups_cheaper(len(keys)):
            requests = self.build()
            return self._from_mirror(keys, "mirror build", requests)
        return self._lookups(keys)

    def from_mirror(self, email_keys: Iterable[str]) -> dict[str, Known]:
        """What the mirror holds now, with no request (after check_optouts, for example)."""
        rows = self.state.mirror_get(email_keys)
        return {k: known_from_entry(e) for k, e in rows.items()}

    def check_optouts(self) -> int:
        """Read who unsubscribed since the last check into the mirror; returns pages read.

        The window starts at the previous check (or the mirror build), in Constant
        Contact's clock, less the overlap; it does not rely on ``updated_at``.
        """
        started = self.api.server_now()
        mark = self.state.get_meta(OPTOUTS_CHECKED)
        since = datetime.fromisoformat(mark) - OVERLAP if mark else started - OPTOUT_LOOKBACK
        now = self.clock()
        entries: list[MirrorEntry] = []
        pages = 0
        for page in self.api.iter_contacts(optout_after=since):
            pages += 1
            entries += [e for c in page if (e := entry_from_remote(c, now)) is not None]
        self.state.save_mirror(entries, {OPTOUTS_CHECKED: iso(started)})
        log.info("optouts_checked", pages=pages, unsubscribed=len(entries))
        return pages

    def _lookups_cheaper(self, count: int) -> bool:
        if count <= 2:
            return True
        size = self.state.get_meta(ACCOUNT_SIZE)
        if size is None:
            try:
                total = self.api.count_contacts()
            except UnexpectedResponse:
                # No usable count: look up a handful, build the mirror for more.
                log.warning("contact_count_unavailable", emails=count)
                return count <= LOOKUPS_WITHOUT_COUNT
            self.state.save_mirror([], {ACCOUNT_SIZE: str(total)})
        else:
            total = int(size)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        log.info("knowledge_cost", emails=count, build_pages=pages)
        return count <= pages

    def _from_mirror(self, keys: list[str], method: str, requests: int) -> KnowledgeResult:
        rows = self.state.mirror_get(keys)
        return KnowledgeResult({k: known_from_entry(e) for k, e in rows.items()}, method, requests)

    def _lookups(self, keys: list[str]) -> KnowledgeResult:
        now = self.clock()
        found: dict[str, Known] = {}
        entries = []
        for key in keys:
            contact = self.api.lookup_contact(key)
            entry = entry_from_remote(contact, now) if contact else None
            if entry is not None and entry.email_key == key:
                entries.append(entry)
                found[key] = known_from_entry(entry)
        self._check_expectations(entries)
        self.state.save_mirror(entries)
        self._seen(entries)
        return KnowledgeResult(found, "per-email lookups", len(keys))

    def _seen(self, entries: Iterable[MirrorEntry]) -> None:
        if self.on_read is not None:
            self.on_read({e.email_key: e for e in entries})

    def _check_expectations(self, entries: list[MirrorEntry]) -> None:
        """Compare what flipsync expected after its sign-ups with what Constant Contact shows.

        Mirror rows flipsync wrote itself (no updated_at yet) hold the status it expected.
        A sign-up that ended pending_confirmation where explicit was expected (or the
        reverse) means the confirmed_opt_in setting does not match the account.
        """
        expected = self.state.mirror_get(e.email_key for e in entries)
        for entry in entries:
            old = expected.get(entry.email_key)
            if old is None or old.updated_at is not None or old.permission == entry.permission:
                continue
            if (old.permission, entry.permission) == ("explicit", "pending_confirmation"):
                self._warn(
                    "sign-ups end pending_confirmation: the account uses Confirmed Opt-In; set "
                    "constant_contact.confirmed_opt_in: true so reports show it"
                )
            elif (old.permission, entry.permission) == ("pending_confirmation", "explicit"):
                self._warn(
                    "sign-ups end explicit: the account does not use Confirmed Opt-In; set "
                    "constant_contact.confirmed_opt_in: false so reports show it"
                )

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            log.warning("setting_mismatch", detail=text)

    def build(self) -> int:
        """Read every contact of the account into the mirror; returns the requests it took.

        A large account is read through two contact exports (a few requests whatever its
        size); a small one, or one whose export cannot be used, page by page.
        """
        if self._export_pays():
            try:
                return self._build_by_export()
            except (ExportUnusable, UnexpectedResponse, RequestRefused, TransientError) as exc:
                log.warning("mirror_export_unusable", reason=str(exc))
                self._warn(
                    f"the contact export could not be used ({exc}); the mirror was read page "
                    "by page instead"
                )
        return self._read(None, complete=True)

    def _export_pays(self) -> bool:
        size = self.state.get_meta(ACCOUNT_SIZE)
        if size is None:
            try:
                total = self.api.count_contacts()
            except UnexpectedResponse:
                return False
            self.state.save_mirror([], {ACCOUNT_SIZE: str(total)})
        else:
            total = int(size)
        return math.ceil(total / PAGE_SIZE) > EXPORT_MIN_PAGES

    def _build_by_export(self) -> int:
        before = sum(self.api.request_counts.values())
        started = self.api.server_now()
        now = self.clock()
        by_name = (
            dict(self.list_ids_by_name)
            if self.list_ids_by_name is not None
            else {lst.name: lst.list_id for lst in self.api.list_lists()}
        )
        # Both exports are queued before either is read: Constant Contact works on them
        # side by side, and the second is usually ready when the first file is read.
        live = self.api.start_contact_export(None)
        deleted = self.api.start_contact_export("removed")
        rows = self.state.replace_mirror(
            self._counted(
                mirror_export.entries(
                    mirror_export.export_rows(self.api, live, self.sleep),
                    deleted=False,
                    list_ids_by_name=by_name,
                    now=now,
                )
            ),
            mirror_export.entries(
                mirror_export.export_rows(self.api, deleted, self.sleep, look_first=True),
                deleted=True,
                list_ids_by_name=by_name,
                now=now,
            ),
            {
                MIRROR_WATERMARK: iso(started),
                MIRROR_COMPLETE: "1",
                OPTOUTS_CHECKED: iso(started),
            },
        )
        self._read_this_run = True
        requests = sum(self.api.request_counts.values()) - before
        log.info("mirror_exported", contacts=rows, requests=requests)
        return requests

    def refresh(self) -> int:
        """Read contacts changed since the watermark; returns pages read."""
        mark = self.state.get_meta(MIRROR_WATERMARK)
        since = datetime.fromisoformat(mark) - OVERLAP if mark else None
        return self._read(since, complete=False)

    def _counted(self, entries: Iterator[MirrorEntry]) -> Iterator[MirrorEntry]:
        for n, entry in enumerate(entries, 1):
            if n % 5000 == 0:
                self.progress("contacts read", n, None)
            yield entry

    def _read(self, since: datetime | None, *, complete: bool) -> int:
        now = self.clock()
        started = self.api.server_now()
        self._read_this_run = True
        entries: list[MirrorEntry] = []
        pages = 0
        newest = self.state.get_meta(MIRROR_WATERMARK)
        for page in self.api.iter_contacts(since):
            pages += 1
            if complete:
                self.progress("contacts read", len(entries) + len(page), None)
            for contact in page:
                entry = entry_from_remote(contact, now)
                if entry is None:
                    continue
                entries.append(entry)
                if entry.updated_at and (newest is None or entry.updated_at > newest):
                    newest = entry.updated_at
        meta = {}
        if newest is None and complete:
            newest = iso(now)  # an empty account: changes from now on are what matters
        if newest:
            meta[MIRROR_WATERMARK] = newest
        if complete:
            meta[MIRROR_COMPLETE] = "1"
            meta[ACCOUNT_SIZE] = str(len(entries))
            # A full read shows every status: opt-outs before it are in the mirror.
            meta[OPTOUTS_CHECKED] = iso(started)
        self._check_expectations(entries)
        self.state.save_mirror(entries, meta, replace_all=complete)
        self._seen(entries)
        log.info("mirror_read", pages=pages, contacts=len(entries), full=complete)
        return pages
