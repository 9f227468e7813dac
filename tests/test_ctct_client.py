"""The Constant Contact API methods (flipsync.ctct.client), against `responses`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from structlog.testing import capture_logs

from flipsync.ctct.auth import TokenManager, read_token_file, write_token_file
from flipsync.ctct.client import ConstantContactClient, import_matches
from flipsync.ctct.http import RateLimiter, RetryPolicy
from flipsync.ctct.limits import encode_json
from flipsync.ctct.types import ActivityStatus, ClientSettings, ContactList, CustomField, TokenSet
from flipsync.errors import (
    ContactExists,
    ReauthRequired,
    RequestRefused,
    TransientError,
    UnexpectedResponse,
)

# A stand-in host and port, not the default base URL, so every URL must honour the settings.
HOST = "http://127.0.0.1:8765"
API = f"{HOST}/v3"
OAUTH = f"{HOST}/oauth2/default/v1"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIST_ID = "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"
IMPORT_URL = f"{API}/activities/contacts_json_import"
ACTIVITIES_URL = f"{API}/activities"


@pytest.fixture(name="rsps")
def fixture_rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture(name="settings")
def fixture_settings(tmp_path: Path) -> ClientSettings:
    settings = ClientSettings(
        api_base_url=API,
        oauth_base_url=OAUTH,
        client_id="client-123",
        token_file=tmp_path / "tokens.json",
    )
    write_token_file(settings.token_file, _tokens("access-1", expires_in=86400))
    return settings


def _tokens(access: str, *, expires_in: int) -> TokenSet:
    return TokenSet(
        access_token=access,
        refresh_token="refresh-1",
        token_type="Bearer",
        scope="contact_data offline_access",
        expires_at=NOW + timedelta(seconds=expires_in),
        obtained_at=NOW + timedelta(seconds=expires_in) - timedelta(days=1),  # a 24 h token
    )


def make_client(settings: ClientSettings, *, attempts: int = 3) -> ConstantContactClient:
    clock = lambda: NOW  # noqa: E731
    tokens = TokenManager(
        settings,
        requests.Session(),
        clock=clock,
        limiter=RateLimiter(0),
        retry=RetryPolicy.no_wait(),
    )
    return ConstantContactClient(
        settings,
        tokens,
        limiter=RateLimiter(0),
        retry=RetryPolicy.no_wait(max_attempts=attempts),
        clock=clock,
    )


def http_date(moment: datetime) -> dict[str, str]:
    """A ``Date`` header: how the client measures Constant Contact's clock."""
    return {"Date": format_datetime(moment.astimezone(UTC), usegmt=True)}


DATE = http_date(NOW)


def query(call: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query).items()}


def contact(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "contact_id": f"c{n}",
        "email_address": {"address": f"donor{n}@example.org", "permission_to_send": "implicit"},
        "first_name": f"First{n}",
        "list_memberships": [LIST_ID],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-02-01T10:00:00.123Z",
        **extra,
    }


def activity(
    activity_id: str, *, created: datetime, people: int | None, **extra: Any
) -> dict[str, Any]:
    status = {} if people is None else {"person_count": people, "items_total_count": people + 1}
    return {
        "activity_id": activity_id,
        "state": "initialized",
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "percent_done": 0,
        "activity_errors": [],
        "status": status,
        **extra,
    }


class TestPagination:
    def test_lists_follow_path_relative_next_links(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """'/v3/...' next hrefs resolve against the configured host, not api.cc.email."""
        rsps.get(
            f"{API}/contact_lists",
            json={
                "lists": [{"list_id": "l1", "name": "Donors"}],
                "_links": {"next": {"href": "/v3/contact_lists?cursor=abc"}},
            },
        )
        rsps.get(f"{API}/contact_lists", json={"lists": [{"list_id": "l2", "name": "Monthly"}]})
        client = make_client(settings)
        assert [ContactList("l1", "Donors"), ContactList("l2", "Monthly")] == client.list_lists()
        assert query(rsps.calls[0]) == {"limit": "500"}
        assert f"{HOST}/v3/contact_lists?cursor=abc" == rsps.calls[1].request.url
        assert rsps.calls[1].request.headers["Authorization"] == "Bearer access-1"

    def test_next_links_keep_a_base_path_prefix(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """Behind a proxy or stand-in at /cc/v3, a '/v3/...' next href stays under /cc."""
        prefixed = replace(settings, api_base_url=f"{HOST}/cc/v3")
        rsps.get(
            f"{HOST}/cc/v3/contact_lists",
            json={
                "lists": [{"list_id": "l1", "name": "Donors"}],
                "_links": {"next": {"href": "/v3/contact_lists?cursor=abc"}},
            },
        )
        rsps.get(f"{HOST}/cc/v3/contact_lists", json={"lists": [{"list_id": "l2", "name": "B"}]})
        assert len(make_client(prefixed).list_lists()) == 2
        assert rsps.calls[1].request.url == f"{HOST}/cc/v3/contact_lists?cursor=abc"

    def test_custom_fields(self, settings: ClientSettings, rsps: responses.RequestsMock) -> None:
        """Custom fields are read 100 per page."""
        field = {"custom_field_id": "f1", "name": "donor_id", "label": "Donor ID", "type": "string"}
        rsps.get(f"{API}/contact_custom_fields", json={"custom_fields": [field]})
        assert [CustomField("f1", "donor_id", "Donor ID", "string")] == make_client(
            settings
        ).list_custom_fields()
        assert query(rsps.calls[0]) == {"limit": "100"}

    def test_iter_contacts_pages_and_parses(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """One list per page, all statuses, with list memberships and updated_after in UTC."""
        rsps.get(
            f"{API}/contacts",
            json={
                "contacts": [contact(1), contact(2)],
                "_links": {"next": {"href": "/v3/contacts?cursor=p2"}},
            },
        )
        deleted = contact(
            3,
            deleted_at="2026-02-02",
            email_address={
                "address": "donor3@example.org",
                "permission_to_send": "unsubscribed",
                "opt_out_source": "Contact",
            },
            list_memberships=[],
        )
        rsps.get(f"{API}/contacts", json={"contacts": [deleted]})
        since = datetime.fromisoformat("2026-02-01T05:00:00.123456-05:00")
        pages = list(make_client(settings).iter_contacts(updated_after=since))
        assert [len(page) for page in pages] == [2, 1]
        assert query(rsps.calls[0]) == {
            "status": "all",
            "include": "list_memberships",
            "limit": "500",
            "updated_after": "2026-02-01T10:00:00.123Z",
        }
        first, last = pages[0][0], pages[1][0]
        assert (
            first.contact_id,
            first.email,
            first.permission,
            first.deleted,
        ) == ("c1", "donor1@example.org", "implicit", False)
        assert frozenset({LIST_ID}) == first.list_ids
        assert datetime(2026, 2, 1, 10, 0, 0, 123000, tzinfo=UTC) == first.updated_at
        assert (True, "unsubscribed", "Contact", frozenset()) == (
            last.deleted,
            last.permission,
            last.opt_out_source,
            last.list_ids,
        )

    def test_naive_updated_after_is_refused(self, settings: ClientSettings) -> None:
        """A naive datetime has no zone; refusing it beats guessing."""
        with pytest.raises(ValueError, match="timezone"):
            next(make_client(settings).iter_contacts(updated_after=datetime(2026, 1, 1)))

    def test_repeated_next_link_is_a_loop(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """A next href seen before raises instead of paging forever."""
        page = {"contacts": [contact(1)], "_links": {"next": {"href": "/v3/contacts?cursor=same"}}}
        rsps.get(f"{API}/contacts", json=page)
        pages = make_client(settings).iter_contacts(None)
        with pytest.raises(UnexpectedResponse, match="loop"):
            list(pages)
        assert len(rsps.calls) == 2

    def test_next_link_to_another_host_is_not_followed(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """The access token never goes to a host other than the configured API."""
        rsps.get(
            f"{API}/contact_lists",
            json={
                "lists": [],
                "_links": {"next": {"href": "https://evil.example/v3/contact_lists"}},
            },
        )
        with pytest.raises(UnexpectedResponse, match="another host"):
            make_client(settings).list_lists()
        assert len(rsps.calls) == 1


class TestReads:
    def test_lookup_contact(self, settings: ClientSettings, rsps: responses.RequestsMock) -> None:
        """Lookup asks for every status and list memberships; no contact gives None."""
        rsps.get(f"{API}/contacts", json={"contacts": [contact(1)]})
        rsps.get(f"{API}/contacts", json={"contacts": []})
        client = make_client(settings)
        found = client.lookup_contact("Donor1@Example.org")
        assert found is not None and found.contact_id == "c1"
        assert query(rsps.calls[0]) == {
            "email": "Donor1@Example.org",
            "status": "all",
            "include": "list_memberships",
        }
        assert client.lookup_contact("nobody@example.org") is None
        assert client.request_counts["contact_lookup"] == 2

    def test_count_contacts(self, settings: ClientSettings, rsps: responses.RequestsMock) -> None:
        """The count comes from include_count over all statuses, one contact per page."""
        rsps.get(f"{API}/contacts", json={"contacts": [contact(1)], "contacts_count": 1234})
        assert make_client(settings).count_contacts() == 1234
        assert query(rsps.calls[0]) == {"status": "all", "limit": "1", "include_count": "true"}

    def test_activity_status(self, settings: ClientSettings, rsps: responses.RequestsMock) -> None:
        """An activity's state, errors and counts are returned as a frozen value."""
        rsps.get(
            f"{ACTIVITIES_URL}/a1",
            json={
                "activity_id": "a1",
                "state": "completed",
                "percent_done": 100,
                "activity_errors": ["Row 3: bad email"],
                "created_at": "2026-03-01T11:59:00Z",
                "status": {
                    "items_total_count": 4,
                    "items_completed_count": 4,
                    "person_count": 3,
                    "error_count": 1,
                    "correctable_count": 0,
                    "cannot_add_to_list_count": 1,
                },
            },
        )
        assert ActivityStatus(
            activity_id="a1",
            state="completed",
            percent_done=100,
            errors=("Row 3: bad email",),
            items_total_count=4,
            items_completed_count=4,
            person_count=3,
            error_count=1,
            correctable_count=0,
            cannot_add_to_list_count=1,
            created_at=datetime(2026, 3, 1, 11, 59, tzinfo=UTC),
        ) == make_client(settings).get_activity("a1")

    def test_recent_activities(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """The activity list takes state and limit."""
        rsps.get(ACTIVITIES_URL, json={"activities": [activity("a1", created=NOW, people=3)]})
        result = make_client(settings).recent_activities(state="processing", limit=10)
        assert [a.activity_id for a in result] == ["a1"]
        assert query(rsps.calls[0]) == {"state": "processing", "limit": "10"}

    def test_check_token(self, settings: ClientSettings, rsps: responses.RequestsMock) -> None:
        """check_token is one cheap authenticated GET."""
        rsps.get(f"{API}/contact_lists", json={"lists": []})
        make_client(settings).check_token()
        assert query(rsps.calls[0]) == {"limit": "1"}


class TestJsonImport:
    rows = [{"email": "a@example.org", "first_name": "Ádá"}, {"email": "b@example.org"}]

    def test_start_import(self, settings: ClientSettings, rsps: responses.RequestsMock) -> None:
        """The body is sent exactly as limits.encode_json serializes it."""
        rsps.post(IMPORT_URL, status=201, json={"activity_id": "a1", "state": "initialized"})
        assert make_client(settings).start_json_import(self.rows, [LIST_ID]) == "a1"
        sent = rsps.calls[0].request
        assert encode_json({"import_data": self.rows, "list_ids": [LIST_ID]}) == sent.body
        assert sent.headers["Content-Type"] == "application/json"

    @pytest.mark.parametrize(
        "failure", [{"status": 500, "headers": DATE}, {"body": requests.ReadTimeout()}]
    )
    def test_after_a_failure_the_created_activity_is_found_and_not_posted_again(
        self, settings: ClientSettings, rsps: responses.RequestsMock, failure: dict[str, Any]
    ) -> None:
        """A 500 or timeout on POST: GET /activities proves the import; no second POST."""
        rsps.post(IMPORT_URL, **failure)
        rsps.get(
            ACTIVITIES_URL,
            headers=DATE,
            json={
                "activities": [
                    activity("other-size", created=NOW, people=5),
                    activity("ours", created=NOW + timedelta(milliseconds=300), people=2),
                    activity("old", created=NOW - timedelta(hours=1), people=2),
                ]
            },
        )
        client = make_client(settings)
        assert client.start_json_import(self.rows, [LIST_ID]) == "ours"
        assert client.request_counts["json_import"] == 1
        assert client.request_counts["activities_list"] == 1
        assert [c.request.method for c in rsps.calls] == ["POST", "GET"]

    def test_after_a_failure_without_a_match_it_posts_once_more(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """No matching activity: post again, once, and return the new id."""
        rsps.post(IMPORT_URL, status=500, headers=DATE)
        rsps.post(IMPORT_URL, status=201, json={"activity_id": "a2"})
        rsps.get(
            ACTIVITIES_URL,
            headers=DATE,
            json={"activities": [activity("old", created=NOW - timedelta(hours=1), people=2)]},
        )
        client = make_client(settings)
        assert client.start_json_import(self.rows, [LIST_ID]) == "a2"
        assert [c.request.method for c in rsps.calls] == ["POST", "GET", "POST"]
        assert dict(client.request_counts) == {"json_import": 2, "activities_list": 1}

    @pytest.mark.parametrize(
        ("listed", "why"),
        [
            # the lost-import bug: a completed import of the same size 90 s before the POST
            ([activity("earlier", created=NOW - timedelta(seconds=90), people=2)], "before"),
            # created after the POST, but flipsync recorded it in an earlier run
            ([activity("known", created=NOW, people=2)], "known"),
            # unfinished, no counts yet: nothing proves it holds our rows
            ([activity("uncounted", created=NOW, people=None)], "no counts"),
            # two that fit: neither is proven to be ours
            (
                [activity("x", created=NOW, people=2), activity("y", created=NOW, people=2)],
                "ambiguous",
            ),
        ],
    )
    def test_an_activity_without_proof_is_never_adopted(
        self,
        settings: ClientSettings,
        rsps: responses.RequestsMock,
        listed: list[dict[str, Any]],
        why: str,
    ) -> None:
        """Anything short of proof: the import is posted again (an upsert), never assumed."""
        rsps.post(IMPORT_URL, status=500, headers=DATE)
        rsps.get(ACTIVITIES_URL, headers=DATE, json={"activities": listed})
        rsps.post(IMPORT_URL, status=201, json={"activity_id": "reposted"})
        client = make_client(settings)
        assert client.start_json_import(self.rows, [LIST_ID], exclude={"known"}) == "reposted", why
        assert client.request_counts["json_import"] == 2

    def test_without_a_measured_server_clock_nothing_is_adopted(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """No Date header on any answer: the window cannot be placed, so the import is re-sent."""
        rsps.post(IMPORT_URL, body=requests.ReadTimeout())
        rsps.get(ACTIVITIES_URL, json={"activities": [activity("fits", created=NOW, people=2)]})
        rsps.post(IMPORT_URL, status=201, json={"activity_id": "reposted"})
        assert make_client(settings).start_json_import(self.rows, [LIST_ID]) == "reposted"

    @pytest.mark.parametrize(
        ("server_ahead", "created_after_post", "adopted"),
        [
            (timedelta(minutes=10), timedelta(milliseconds=200), True),
            (timedelta(minutes=10), -timedelta(seconds=5), False),
            (-timedelta(minutes=10), timedelta(milliseconds=200), True),
            (-timedelta(minutes=10), -timedelta(seconds=5), False),
        ],
    )
    def test_the_window_follows_the_measured_clock_offset(
        self,
        settings: ClientSettings,
        rsps: responses.RequestsMock,
        server_ahead: timedelta,
        created_after_post: timedelta,
        adopted: bool,
    ) -> None:
        """CC's clock 10 minutes off ours: the window moves with it, by the Date header."""
        server_now = NOW + server_ahead
        rsps.post(IMPORT_URL, status=500, headers=http_date(server_now))
        rsps.get(
            ACTIVITIES_URL,
            headers=http_date(server_now),
            json={"activities": [activity("a", created=server_now + created_after_post, people=2)]},
        )
        if not adopted:
            rsps.post(IMPORT_URL, status=201, json={"activity_id": "reposted"})
        found = make_client(settings).start_json_import(self.rows, [LIST_ID])
        assert found == ("a" if adopted else "reposted")

    def test_an_earlier_import_of_this_run_is_not_mistaken_for_this_one(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """Two same-sized imports: the second's failure does not adopt the first's id."""
        rsps.post(IMPORT_URL, status=201, json={"activity_id": "first"}, headers=DATE)
        rsps.post(IMPORT_URL, status=503, headers=DATE)
        rsps.post(IMPORT_URL, status=201, json={"activity_id": "second"})
        rsps.get(
            ACTIVITIES_URL,
            headers=DATE,
            json={"activities": [activity("first", created=NOW, people=2)]},
        )
        client = make_client(settings)
        assert client.start_json_import(self.rows, [LIST_ID]) == "first"
        assert client.start_json_import(self.rows, [LIST_ID]) == "second"

    def test_gives_up_after_bounded_posts(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """Every post uncertain and nothing found: TransientError after 3 posts."""
        rsps.post(IMPORT_URL, status=502)
        rsps.get(ACTIVITIES_URL, json={"activities": []})
        client = make_client(settings, attempts=5)
        with pytest.raises(TransientError, match="no matching activity"):
            client.start_json_import(self.rows, [LIST_ID])
        assert client.request_counts["json_import"] == 3

    def test_oversized_or_listless_imports_are_refused_before_sending(
        self, settings: ClientSettings
    ) -> None:
        """Caps are checked locally; nothing is sent."""
        client = make_client(settings)
        with pytest.raises(ValueError, match="list ids"):
            client.start_json_import(self.rows, [])
        with pytest.raises(ValueError, match="split_import"):
            client.start_json_import([{"email": "a@x.io", "cf:x": "y" * 4_000_000}], [LIST_ID])
        assert sum(client.request_counts.values()) == 0


class TestImportMatches:
    since = NOW - timedelta(minutes=2)

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (activity("a", created=NOW, people=2), True),
            (activity("a", created=NOW, people=3), False),
            (activity("a", created=NOW - timedelta(minutes=3), people=2), False),
            (activity("claimed", created=NOW, people=2), False),
            (activity("a", created=NOW, people=None), False),  # not counted yet: no proof
            (activity("a", created=NOW, people=None, state="completed"), False),
            ({**activity("a", created=NOW, people=None), "status": {"items_total_count": 3}}, True),
            ({**activity("a", created=NOW, people=None), "status": {"list_count": 1}}, False),
            (
                {**activity("a", created=NOW, people=None), "_links": {"results": {"href": "/x"}}},
                False,
            ),
            ({**activity("a", created=NOW, people=2), "created_at": None}, False),
        ],
    )
    def test_rule(self, raw: dict[str, Any], expected: bool) -> None:
        """The documented matching rule, case by case."""
        assert expected == import_matches(raw, people=2, since=self.since, claimed={"claimed"})


class TestContactWrites:
    body = {"email_address": {"address": "a@example.org"}, "create_source": "Account"}

    def test_create_contact(self, settings: ClientSettings, rsps: responses.RequestsMock) -> None:
        """201 gives the new contact id."""
        rsps.post(f"{API}/contacts", status=201, json={"contact_id": "c9"})
        assert make_client(settings).create_contact(self.body) == "c9"

    def test_existing_email_is_contact_exists(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """409 becomes ContactExists with the id parsed from CC's message."""
        rsps.post(
            f"{API}/contacts",
            status=409,
            json=[
                {
                    "error_key": "contacts.api.conflict",
                    "error_message": "Validation failed: Email already exists for contact 1618ae62-4752-11e9-9c8a-fa163e6b01c1",
                }
            ],
        )
        with pytest.raises(ContactExists) as caught:
            make_client(settings).create_contact(self.body)
        assert caught.value.contact_id == "1618ae62-4752-11e9-9c8a-fa163e6b01c1"
        assert caught.value.after_uncertain_post is False
        assert isinstance(caught.value, RequestRefused) and caught.value.status == 409
        assert len(rsps.calls) == 1

    def test_create_after_a_failure_reports_the_duplicate(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """A 500 then 409: the repost met our own contact, and says so."""
        rsps.post(f"{API}/contacts", status=500)
        rsps.post(
            f"{API}/contacts",
            status=409,
            json=[{"error_message": "Email already exists for contact c9"}],
        )
        with pytest.raises(ContactExists) as caught:
            make_client(settings).create_contact(self.body)
        assert (caught.value.contact_id, caught.value.after_uncertain_post) == ("c9", True)

    def test_other_refusals_pass_through(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """A 400 on create is a plain RequestRefused."""
        rsps.post(
            f"{API}/contacts", status=400, json=[{"error_key": "contacts.api.validation.error"}]
        )
        with pytest.raises(RequestRefused) as caught:
            make_client(settings).create_contact(self.body)
        assert not isinstance(caught.value, ContactExists)

    @pytest.mark.parametrize(("status", "created"), [(201, True), (200, False)])
    def test_sign_up(
        self, settings: ClientSettings, rsps: responses.RequestsMock, status: int, created: bool
    ) -> None:
        """201 means created, 200 updated."""
        rsps.post(
            f"{API}/contacts/sign_up_form", status=status, json={"contact_id": "c1", "action": "x"}
        )
        result = make_client(settings).sign_up(
            {"email_address": "a@example.org", "list_memberships": [LIST_ID]}
        )
        assert ("c1", created) == (result.contact_id, result.created)

    def test_sign_up_retries_simultaneous_requests(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """409 'simultaneous requests' is retried after a backoff."""
        url = f"{API}/contacts/sign_up_form"
        rsps.post(url, status=409, json=[{"error_key": "contacts.api.conflict"}])
        rsps.post(url, status=200, json={"contact_id": "c1"})
        assert make_client(settings).sign_up({"email_address": "a@example.org"}).contact_id == "c1"
        assert len(rsps.calls) == 2


class TestAuthAndAccounting:
    def test_expiring_token_is_refreshed_and_saved_before_use(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """When CC first sees the new token, the token file already holds it."""
        write_token_file(settings.token_file, _tokens("access-1", expires_in=60))
        rsps.post(
            f"{OAUTH}/token",
            json={"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 86400},
        )
        seen: list[tuple[str, str]] = []

        def lists(request: Any) -> tuple[int, dict[str, str], str]:
            on_disk = read_token_file(settings.token_file)
            seen.append((request.headers["Authorization"], on_disk.access_token))
            return 200, {}, json.dumps({"lists": []})

        rsps.add_callback(responses.GET, f"{API}/contact_lists", callback=lists)
        make_client(settings).list_lists()
        assert seen == [("Bearer access-2", "access-2")]

    def test_401_refresh_retry_then_reauth(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """401: one refresh and one retry; a second 401 is ReauthRequired."""
        rsps.get(f"{API}/contact_lists", status=401, json={"error_key": "unauthorized"})
        rsps.post(
            f"{OAUTH}/token",
            json={"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 86400},
        )
        client = make_client(settings)
        with pytest.raises(ReauthRequired, match="flipsync auth login"):
            client.list_lists()
        assert [
            c.request.headers["Authorization"] for c in rsps.calls if c.request.method == "GET"
        ] == ["Bearer access-1", "Bearer access-2"]
        assert dict(client.request_counts) == {"lists": 2, "token": 1}

    def test_request_counts_equal_the_requests_sent(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """A mixed session: the counts add up to exactly what the server saw."""
        write_token_file(settings.token_file, _tokens("access-1", expires_in=60))
        rsps.post(
            f"{OAUTH}/token",
            json={"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 86400},
        )
        rsps.get(f"{API}/contact_lists", status=503)
        rsps.get(
            f"{API}/contact_lists",
            json={"lists": [], "_links": {"next": {"href": "/v3/contact_lists?c=2"}}},
        )
        rsps.get(f"{API}/contact_lists", json={"lists": []})
        rsps.get(f"{API}/contacts", json={"contacts": [], "contacts_count": 0})
        rsps.post(IMPORT_URL, status=500)
        rsps.post(IMPORT_URL, status=201, json={"activity_id": "a1"})
        rsps.get(ACTIVITIES_URL, json={"activities": []})
        rsps.get(f"{ACTIVITIES_URL}/a1", json={"activity_id": "a1", "state": "completed"})
        client = make_client(settings)
        client.list_lists()
        client.count_contacts()
        client.start_json_import([{"email": "a@example.org"}], [LIST_ID])
        client.get_activity("a1")
        assert dict(client.request_counts) == {
            "token": 1,
            "lists": 3,
            "contact_count": 1,
            "json_import": 2,
            "activities_list": 1,
            "activity": 1,
        }
        assert len(rsps.calls) == sum(client.request_counts.values())

    def test_no_secret_token_or_email_in_logs_or_errors(
        self, tmp_path: Path, rsps: responses.RequestsMock
    ) -> None:
        """Through a refresh, retries, an uncertain import and a refusal, nothing sensitive leaks."""
        settings = ClientSettings(
            api_base_url=API,
            oauth_base_url=OAUTH,
            client_id="client-123",
            client_secret="very-secret-value",
            token_file=tmp_path / "tokens.json",
        )
        write_token_file(settings.token_file, _tokens("access-1", expires_in=0))
        rsps.post(
            f"{OAUTH}/token",
            json={"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 86400},
        )
        rsps.get(
            f"{API}/contacts",
            body=requests.ConnectionError("http://x/v3/contacts?email=ada%40example.org"),
        )
        rsps.get(f"{API}/contacts", json={"contacts": []})
        rsps.post(IMPORT_URL, status=500, headers=DATE)
        rsps.get(ACTIVITIES_URL, json={"activities": [activity("a1", created=NOW, people=1)]})
        rsps.get(
            f"{API}/contact_lists",
            status=403,
            json={"error_key": "forbidden", "error_message": "no scope"},
        )
        client = make_client(settings)
        with capture_logs() as logs:
            client.lookup_contact("ada@example.org")
            client.start_json_import([{"email": "ada@example.org"}], [LIST_ID])
            with pytest.raises(RequestRefused) as caught:
                client.check_token()
        text = repr(logs) + str(caught.value) + repr(caught.value)
        for sensitive in (
            "access-1",
            "access-2",
            "refresh-1",
            "refresh-2",
            "very-secret-value",
            "ada@",
            "example.org",
        ):
            assert sensitive not in text
        assert {
            "token_refreshed",
            "ctct_retry",
            "import_outcome_unknown",
            "import_found_after_failure",
        } <= {e["event"] for e in logs}


class TestContactExport:
    def test_export_rows_stream_with_bom_quotes_and_newlines(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """The CSV is read as it arrives: a BOM, quoted commas and a field spanning two lines."""
        body = (
            "\ufeffemail_address,first_name,email_lists\r\n"
            'a@example.org,"Ada, Countess","Donors, News"\r\n'
            'b@example.org,"two\nlines",\r\n'
        ).encode()
        rsps.get(f"{API}/contact_exports/f1", body=body, content_type="text/csv")
        rows = list(make_client(settings).iter_export_rows("/v3/contact_exports/f1"))
        assert rows == [
            {
                "email_address": "a@example.org",
                "first_name": "Ada, Countess",
                "email_lists": "Donors, News",
            },
            {"email_address": "b@example.org", "first_name": "two\nlines", "email_lists": ""},
        ]

    def test_start_export_posts_the_status_filter(
        self, settings: ClientSettings, rsps: responses.RequestsMock
    ) -> None:
        """``status: removed`` asks for deleted contacts only."""
        rsps.post(f"{API}/activities/contact_exports", status=201, json={"activity_id": "x1"})
        assert make_client(settings).start_contact_export("removed") == "x1"
        assert json.loads(rsps.calls[0].request.body) == {"status": "removed"}
