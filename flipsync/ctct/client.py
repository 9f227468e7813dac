"""The Constant Contact V3 API methods flipsync uses.

This module owns the URLs, query parameters and pagination of each call, and the rules that
keep writes from being sent twice blindly. Transport and retries live in ``http``, error
mapping in ``answers``, answer parsing in ``parse``, tokens in ``auth``.

No blind re-posts
-----------------
CC has no idempotency keys. A POST that fails with a 5xx, a timeout or a broken connection may
have taken effect anyway (``OutcomeUnknown``), so it is never simply sent again:

* ``start_json_import``: after such a failure the client waits one backoff, reads
  ``GET /activities`` (newest first) and adopts an activity only with proof that this POST
  made it (the rule in ``flipsync.ctct.matching``); otherwise it posts again, at most
  ``MAX_UNCERTAIN_POSTS`` posts in all, and then gives up (the caller defers the batch;
  nothing is committed as done).
* ``create_contact``: re-posting is safe because a duplicate answers 409, which is raised as
  ``ContactExists`` with ``after_uncertain_post=True`` so the caller can decide.
* ``sign_up``: an upsert by email, so it is retried like a GET (and on 409 "simultaneous
  requests"). After an uncertain first attempt, ``created`` reflects the last answer.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import quote, urljoin, urlsplit

import requests
import structlog

from flipsync.ctct.auth import TokenManager
from flipsync.ctct.http import (
    HttpClient,
    Limiter,
    OutcomeUnknown,
    RetryPolicy,
    process_limiter,
    utc_now,
)
from flipsync.ctct.limits import (
    MAX_DELETE_CONTACTS,
    MAX_IMPORT_BYTES,
    MAX_IMPORT_CONTACTS,
    MAX_LIST_IDS,
    contact_delete_body,
    encode_json,
    import_body,
)
from flipsync.ctct.matching import CLOCK_RESOLUTION, import_matches
from flipsync.ctct.parse import (
    _activity,
    _contact,
    _iso_param,
    _items,
    _json,
    _req_str,
    _text_lines,
)
from flipsync.ctct.types import (
    ActivityStatus,
    ClientSettings,
    ContactList,
    CustomField,
    RemoteContact,
    SignUpResult,
)
from flipsync.emails import normalize_email
from flipsync.errors import ContactExists, RequestRefused, TransientError, UnexpectedResponse

log = structlog.get_logger(__name__)

MAX_UNCERTAIN_POSTS: Final = 3
_JSON: Final = {"Content-Type": "application/json"}
_EXISTING_ID = re.compile(r"exists for contact\s+([0-9A-Za-z-]+)", re.IGNORECASE)


class ConstantContactClient:
    """Constant Contact as flipsync sees it: lists, fields, contacts, imports, activities."""

    def __init__(
        self,
        settings: ClientSettings,
        tokens: TokenManager,
        *,
        session: requests.Session | None = None,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """Build a client; ``retry`` defaults to RetryPolicy(max_attempts=settings.max_attempts).

        ``session`` defaults to the token manager's; ``limiter`` to the process-wide limiter at
        ``settings.requests_per_second``.
        """
        self.settings = settings
        self._tokens = tokens
        self._clock = clock
        self._base = settings.api_base_url.rstrip("/")
        self._http = HttpClient(
            session if session is not None else tokens.session,
            timeout=settings.timeout_seconds,
            limiter=(
                limiter if limiter is not None else process_limiter(settings.requests_per_second)
            ),
            retry=retry if retry is not None else RetryPolicy(max_attempts=settings.max_attempts),
            clock=clock,
        )
        self._claimed_activities: set[str] = set()

    @property
    def request_counts(self) -> Counter[str]:
        """Every HTTP request sent so far, retries included, by kind (token requests too)."""
        counts = Counter(self._http.request_counts)
        counts.update(self._tokens.request_counts)
        return counts

    # --- reads --------------------------------------------------------------------------

    def check_token(self) -> None:
        """Prove the token works with the cheapest authenticated call."""
        self._get("lists", self._url("/contact_lists"), {"limit": 1})

    def list_lists(self) -> list[ContactList]:
        """Every contact list of the account."""
        lists = []
        for page in self._pages("lists", "/contact_lists", {"limit": 500}, "lists"):
            lists += [ContactList(_req_str(i, "list_id"), str(i.get("name") or "")) for i in page]
        return lists

    def list_custom_fields(self) -> list[CustomField]:
        """Every custom field of the account."""
        fields = []
        pages = self._pages(
            "custom_fields", "/contact_custom_fields", {"limit": 100}, "custom_fields"
        )
        for page in pages:
            fields += [
                CustomField(
                    custom_field_id=_req_str(item, "custom_field_id"),
                    name=str(item.get("name") or ""),
                    label=str(item.get("label") or ""),
                    type=str(item.get("type") or ""),
                )
                for item in page
            ]
        return fields

    def lookup_contact(self, email: str) -> RemoteContact | None:
        """The contact with this email, deleted and unsubscribed ones included; None if absent."""
        params: dict[str, str | int] = {
            "email": email,
            "status": "all",
            "include": "list_memberships",
        }
        data = self._get("contact_lookup", self._url("/contacts"), params)
        contacts = [_contact(item) for item in _items(data, "contacts")]
        wanted = normalize_email(email)
        # A stand-in that searches loosely must not hand us somebody else.
        return next((c for c in contacts if normalize_email(c.email or "") == wanted), None)

    def count_contacts(self) -> int:
        """How many contacts the account has, in every status."""
        params: dict[str, str | int] = {"status": "all", "limit": 1, "include_count": "true"}
        data = self._get("contact_count", self._url("/contacts"), params)
        count = data.get("contacts_count")
        if not isinstance(count, int):
            raise UnexpectedResponse("GET /contacts sent no contacts_count")
        return count

    def iter_contacts(
        self, updated_after: datetime | None = None, *, optout_after: datetime | None = None
    ) -> Iterator[list[RemoteContact]]:
        """Contacts page by page (500 each), all statuses.

        ``updated_after`` keeps those changed since; ``optout_after`` those who unsubscribed
        since, whether or not the change bumped ``updated_at``.
        """
        params: dict[str, str | int] = {
            "status": "all",
            "include": "list_memberships",
            "limit": 500,
        }
        if updated_after is not None:
            params["updated_after"] = _iso_param(updated_after)
        if optout_after is not None:
            params["optout_after"] = _iso_param(optout_after)
        for page in self._pages("contacts_page", "/contacts", params, "contacts"):
            yield [_contact(item) for item in page]

    def server_now(self) -> datetime:
        """Constant Contact's clock, at the latest it can be: ours plus the measured offset.

        Watermarks for CC's own filters (``optout_after``) are set from it; before any
        answer was measured it is our clock.
        """
        offset = self._http.server_clock.lower
        return self._clock() + (offset if offset is not None else timedelta(0))

    def get_activity(self, activity_id: str) -> ActivityStatus:
        """The current status of one bulk activity."""
        url = self._url(f"/activities/{quote(activity_id, safe='')}")
        return _activity(self._get("activity", url, None))

    def recent_activities(self, state: str | None = None, limit: int = 50) -> list[ActivityStatus]:
        """Bulk activities of the past 10 days, newest first (one page of up to ``limit``)."""
        return [_activity(item) for item in self._recent_activities(state, limit)]

    # --- writes -------------------------------------------------------------------------

    def start_json_import(
        self,
        import_data: Sequence[Mapping[str, Any]],
        list_ids: Sequence[str],
        *,
        exclude: Collection[str] = (),
    ) -> str:
        """Start a contacts JSON import and return its activity_id; never re-posts blindly.

        Cut the rows with ``limits.split_import`` first; a body over the caps is refused here
        before anything is sent. ``exclude`` names every activity flipsync already knows
        (journal and history), which can never be this POST's. See the module docstring for
        the matching rule.
        """
        if not import_data:
            raise ValueError("an import needs at least one row")
        if not 1 <= len(list_ids) <= MAX_LIST_IDS:
            raise ValueError(f"an import needs 1 to {MAX_LIST_IDS} list ids")
        if len(import_data) > MAX_IMPORT_CONTACTS:
            raise ValueError(f"an import takes at most {MAX_IMPORT_CONTACTS} rows")
        body = encode_json(import_body(import_data, list_ids))
        if len(body) >= MAX_IMPORT_BYTES:
            raise ValueError(f"import body of {len(body)} bytes; cut it with split_import")
        url = self._url("/activities/contacts_json_import")
        people = len(import_data)
        posts = max(1, min(MAX_UNCERTAIN_POSTS, self._http.retry.max_attempts))
        for post in range(1, posts + 1):
            sent_at = self._clock()
            try:
                response = self._http.call(
                    "json_import",
                    "POST",
                    url,
                    tokens=self._tokens,
                    idempotent=False,
                    data=body,
                    headers=_JSON,
                )
                activity_id = _json(response).get("activity_id")
                if not isinstance(activity_id, str) or not activity_id:
                    raise OutcomeUnknown("no activity_id in the answer")
            except OutcomeUnknown as exc:
                log.warning("import_outcome_unknown", reason=exc.reason, post=post, contacts=people)
                self._http.retry.sleep(self._http.retry.wait_seconds(post))
                found = self._find_import(sent_at, people, exclude)
                if found is not None:
                    self._claimed_activities.add(found)
                    log.info("import_found_after_failure", activity_id=found, contacts=people)
                    return found
                continue
            self._claimed_activities.add(activity_id)
            log.info(
                "import_started", activity_id=activity_id, contacts=people, lists=len(list_ids)
            )
            return activity_id
        raise TransientError(
            f"Constant Contact did not confirm a JSON import of {people} contacts after {posts} "
            "posts, and no matching activity was found; the next run tries again"
        )

    def start_contact_export(self, status: str | None = None) -> str:
        """Queue an export of every contact (or those of one status); returns the activity id.

        Exports change nothing, so a POST whose answer was lost is simply sent again.
        """
        body: dict[str, Any] = {} if status is None else {"status": status}
        response = self._http.call(
            "contact_export",
            "POST",
            self._url("/activities/contact_exports"),
            tokens=self._tokens,
            idempotent=True,
            data=encode_json(body),
            headers=_JSON,
        )
        return _req_str(_json(response), "activity_id")

    def iter_export_rows(self, results_href: str) -> Iterator[dict[str, str]]:
        """The rows of a completed export's CSV file, read as they arrive (never held whole)."""
        response = self._http.call(
            "export_file",
            "GET",
            self._resolve(results_href),
            tokens=self._tokens,
            idempotent=True,
            headers={"Accept": "text/csv"},
            stream=True,
        )
        try:
            for row in csv.DictReader(_text_lines(response.iter_content(chunk_size=1 << 16))):
                yield {str(k): (v if isinstance(v, str) else "") for k, v in row.items()}
        finally:
            response.close()

    def sign_up(self, body: Mapping[str, Any]) -> SignUpResult:
        """Create or update one contact through POST /contacts/sign_up_form (an upsert)."""
        response = self._http.call(
            "sign_up_form",
            "POST",
            self._url("/contacts/sign_up_form"),
            tokens=self._tokens,
            idempotent=True,
            retry_conflict=True,
            data=encode_json(body),
            headers=_JSON,
        )
        data = _json(response)
        if response.status_code in (200, 201):
            created = response.status_code == 201
        else:
            created = str(data.get("action") or "").lower() == "created"
        return SignUpResult(contact_id=_req_str(data, "contact_id"), created=created)

    def create_contact(self, body: Mapping[str, Any]) -> str:
        """Create one contact through POST /contacts and return its id.

        Raises:
            ContactExists: the email is taken (409), maybe by a deleted contact, or by this very
                create when an earlier attempt got no answer (``after_uncertain_post``).
        """
        url = self._url("/contacts")
        data = encode_json(body)
        uncertain = False
        posts = max(1, min(MAX_UNCERTAIN_POSTS, self._http.retry.max_attempts))
        for post in range(1, posts + 1):
            try:
                response = self._http.call(
                    "create_contact",
                    "POST",
                    url,
                    tokens=self._tokens,
                    idempotent=False,
                    data=data,
                    headers=_JSON,
                )
                contact_id = _json(response).get("contact_id")
                if not isinstance(contact_id, str) or not contact_id:
                    raise OutcomeUnknown("no contact_id in the answer")
                return contact_id
            except OutcomeUnknown as exc:
                # Safe to post again: if the first one landed, CC answers 409 with the id.
                uncertain = True
                log.warning("create_contact_outcome_unknown", reason=exc.reason, post=post)
                self._http.retry.sleep(self._http.retry.wait_seconds(post))
            except RequestRefused as exc:
                if exc.status != 409:
                    raise
                match = _EXISTING_ID.search(exc.body)
                contact_id = match.group(1) if match else None
                raise ContactExists(
                    contact_id,
                    message=(
                        "Constant Contact already has a contact with this email "
                        f"(contact {contact_id or 'id not given'}; it may be deleted)"
                    ),
                    body=exc.body,
                    after_uncertain_post=uncertain,
                ) from None
        raise TransientError(
            f"Constant Contact did not answer POST /contacts after {posts} posts; "
            "the next run tries again"
        )

    def delete_contacts(self, contact_ids: Sequence[str]) -> str:
        """Start a bulk delete (``POST /activities/contact_delete``); returns the activity id.

        Sent like a read (retried after an unanswered post): deleting a deleted contact
        changes nothing, so a second activity for the same ids costs a request, not data.
        """
        ids = list(dict.fromkeys(contact_ids))
        if not 1 <= len(ids) <= MAX_DELETE_CONTACTS:
            raise ValueError(f"a bulk delete takes 1 to {MAX_DELETE_CONTACTS} contact ids")
        response = self._http.call(
            "contact_delete",
            "POST",
            self._url("/activities/contact_delete"),
            tokens=self._tokens,
            idempotent=True,
            data=encode_json(contact_delete_body(ids)),
            headers=_JSON,
        )
        activity_id = _req_str(_json(response), "activity_id")
        # Never to be taken for an import this client lost the answer to.
        self._claimed_activities.add(activity_id)
        log.info("contact_delete_started", activity_id=activity_id, contacts=len(ids))
        return activity_id

    # --- plumbing -----------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._base + path

    def _resolve(self, href: str) -> str:
        """Turn a ``_links.next.href`` (path-relative, "/v3/...") into a URL on our API host.

        CC's hrefs start with its own base path ("/v3/contacts?cursor=..."). When the API is
        reached under a longer path (a stand-in or proxy at ``https://host/cc/v3``), that
        prefix is kept, so the link lands on the configured API and not beside it.
        """
        base = urlsplit(self._base)
        if href.startswith("/"):
            base_path = base.path.rstrip("/")
            if (
                base_path.endswith("/v3")
                and href.startswith("/v3/")
                and not href.startswith(base_path + "/")
            ):
                href = base_path[: -len("/v3")] + href
            url = urljoin(f"{base.scheme}://{base.netloc}/", href)
        else:
            url = urljoin(self._base + "/", href)
        target = urlsplit(url)
        if (target.scheme, target.netloc) != (base.scheme, base.netloc):
            # Following it would send the access token to another host.
            raise UnexpectedResponse(
                f"Constant Contact sent a next link to another host ({target.netloc}); not followed"
            )
        return url

    def _get(self, kind: str, url: str, params: Mapping[str, str | int] | None) -> dict[str, Any]:
        response = self._http.call(
            kind, "GET", url, tokens=self._tokens, idempotent=True, params=params
        )
        return _json(response)

    def _pages(
        self, kind: str, path: str, params: Mapping[str, str | int], key: str
    ) -> Iterator[list[dict[str, Any]]]:
        """Follow ``_links.next`` from ``path``; a next link seen before raises (a loop)."""
        url: str = self._url(path)
        query: Mapping[str, str | int] | None = params
        seen: set[str] = set()
        while True:
            data = self._get(kind, url, query)
            yield _items(data, key)
            links = data.get("_links")
            next_link = links.get("next") if isinstance(links, dict) else None
            href = next_link.get("href") if isinstance(next_link, dict) else None
            if not isinstance(href, str) or not href:
                return
            url, query = self._resolve(href), None
            if url in seen:
                raise UnexpectedResponse(
                    f"Constant Contact repeated a next link while paging {path}; stopped to "
                    "avoid a loop"
                )
            seen.add(url)

    def _recent_activities(self, state: str | None, limit: int) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {"limit": limit}
        if state is not None:
            params["state"] = state
        return _items(self._get("activities_list", self._url("/activities"), params), "activities")

    def _find_import(
        self, sent_at: datetime, people: int, exclude: Collection[str] = ()
    ) -> str | None:
        """The id of the import that the uncertain POST sent at ``sent_at`` made, if proven."""
        # Read first: this answer's Date header is itself a fresh measurement of the offset.
        recent = self._recent_activities(None, 50)
        offset = self._http.server_clock.lower
        if offset is None:
            log.warning("import_match_unprovable", reason="no Date header measured yet")
            return None
        since = sent_at + offset - CLOCK_RESOLUTION
        claimed = self._claimed_activities | set(exclude)
        found = [
            str(raw["activity_id"])
            for raw in recent
            if import_matches(raw, people=people, since=since, claimed=claimed)
        ]
        if len(found) > 1:
            log.warning("import_match_ambiguous", candidates=len(found), contacts=people)
            return None
        return found[0] if found else None

    def find_import(self, sent_at: datetime, people: int, exclude: Collection[str]) -> str | None:
        """After a crash between an import POST and its answer: the activity it made, if any.

        Same rule as the in-process search (module docstring); ``exclude`` names every
        activity flipsync has recorded, in this run or any earlier one.
        """
        found = self._find_import(sent_at, people, exclude)
        if found is not None:
            self._claimed_activities.add(found)
        return found
