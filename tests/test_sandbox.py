"""The Constant Contact sandbox, driven over real HTTP on 127.0.0.1 with requests."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from flipsync.clock import VirtualClock
from flipsync.sandbox import RunningSandbox, Sandbox, SandboxConfig, start_in_thread
from flipsync.sandbox.imports import MAX_IMPORT_BYTES
from tests.sandbox_fixture import sandbox_config, sandbox_server

# Imported so pytest finds the fixtures here even without a conftest registering them.
FIXTURES = (sandbox_config, sandbox_server)

UNAUTHORIZED = b'{"error_key":"unauthorized","error_message":"Unauthorized"}'
INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The refresh token is invalid or expired.",
}
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _session(running: RunningSandbox, client_id: str = "flipsync-sandbox") -> requests.Session:
    session = requests.Session()
    token = running.sandbox.issue_tokens(client_id)["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session


@pytest.fixture
def api(sandbox_server: RunningSandbox) -> Iterator[requests.Session]:
    """An authorized session against the fixture sandbox."""
    with _session(sandbox_server) as session:
        yield session


@pytest.fixture
def make_sandbox() -> Iterator[Any]:
    """Start sandboxes with a specific config; all are stopped at the end."""
    started: list[RunningSandbox] = []

    def make(*, clock: VirtualClock | None = None, **changes: Any) -> RunningSandbox:
        config = dataclasses.replace(
            SandboxConfig(requests_per_second=0, activity_seconds=0), **changes
        )
        running = start_in_thread(Sandbox(config, clock=clock.time if clock else time.time))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def _import(
    api: requests.Session, running: RunningSandbox, rows: list[dict[str, Any]], lists: list[str]
) -> requests.Response:
    return api.post(
        f"{running.api_base_url}/activities/contacts_json_import",
        json={"import_data": rows, "list_ids": lists},
    )


def _token(running: RunningSandbox, **form: str) -> requests.Response:
    return requests.post(f"{running.oauth_base_url}/token", data=form, timeout=5)


# --- auth, limits, routing --------------------------------------------------------------------


def test_api_without_valid_token_is_401_with_exact_body(sandbox_server: RunningSandbox) -> None:
    """Missing, unknown and expired tokens all get the object-shaped 401 and its header."""
    url = f"{sandbox_server.api_base_url}/contacts"
    token = sandbox_server.sandbox.issue_tokens()["access_token"]
    answers = [
        requests.get(url, timeout=5),
        requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5),
        requests.get(url, headers={"Authorization": f"Basic {token}"}, timeout=5),
    ]
    sandbox_server.sandbox.expire_access_tokens()
    answers.append(requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5))
    for answer in answers:
        assert answer.status_code == 401
        assert answer.content == UNAUTHORIZED
        assert answer.headers["Content-Length"] == "59"
        assert answer.headers["WWW-Authenticate"] == "Bearer realm=api.cc.email"


def test_access_token_is_jwt_shaped(sandbox_server: RunningSandbox) -> None:
    """Clients may decode exp from the token, as the CC docs suggest."""
    tokens = sandbox_server.sandbox.issue_tokens()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 86400
    assert tokens["scope"] == "contact_data offline_access"
    header, payload, signature = tokens["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["exp"] - claims["iat"] == 86400
    assert claims["cid"] == "flipsync-sandbox"
    assert claims["sub"] and signature and header


def test_unknown_path_wrong_method_and_media_type(
    sandbox_server: RunningSandbox,
    api: requests.Session,
) -> None:
    """404 for unknown paths, 405 for known paths, 415 for non-JSON writes; errors are arrays."""
    base = sandbox_server.api_base_url
    missing = api.get(f"{base}/nothing_here")
    assert missing.status_code == 404
    assert missing.json()[0]["error_key"] == "contacts.api.not_found"
    assert api.delete(f"{base}/contact_lists").status_code == 405
    form = api.post(f"{base}/contacts", data="a=b")
    assert form.status_code == 415
    assert isinstance(form.json(), list)
    bare = api.post(f"{base}/contacts", data=b'{"x":1}')
    assert bare.status_code == 415
    bad_json = api.post(
        f"{base}/contacts", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert bad_json.json()[0]["error_key"] == "contacts.api.validation.error"


def test_throttled_at_four_requests_per_second(make_sandbox: Any) -> None:
    """The fifth request inside one second is 429 throttled; the window slides."""
    running = make_sandbox(requests_per_second=4)
    with _session(running) as api:
        url = f"{running.api_base_url}/contact_lists"
        codes = [api.get(url).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 200, 429]
        answer = api.get(url)
        assert answer.content == b'{"error_key":"throttled","error_message":"Too Many Requests"}'
        running.sandbox.advance_clock(1.01)
        assert api.get(url).status_code == 200
        # A second application key has its own window.
        running.sandbox.register_client("other-app")
        with _session(running, "other-app") as other:
            assert other.get(url).status_code == 200
    rejected = [e for e in running.sandbox.request_log() if e.rejected]
    assert [e.error_key for e in rejected] == ["throttled", "throttled"]


def test_daily_quota_is_per_key_and_resets_at_midnight_utc(make_sandbox: Any) -> None:
    """Over 10,000 a day answers quota_exceeded until the next UTC day."""
    running = make_sandbox()
    sandbox = running.sandbox
    with _session(running) as api:
        url = f"{running.api_base_url}/contact_lists"
        sandbox.set_quota_used(9999)
        assert api.get(url).status_code == 200
        over = api.get(url)
        assert over.status_code == 429
        assert over.content == b'{"error_key":"quota_exceeded","error_message":"Limit Exceeded"}'
        assert sandbox.quota_used() == 10000
        seconds_to_midnight = 86400 - (sandbox.now() % 86400) + 1
        sandbox.advance_clock(seconds_to_midnight)
        with _session(running) as fresh:  # the old token may have expired meanwhile
            assert fresh.get(url).status_code == 200
        assert sandbox.quota_used() == 1


# --- OAuth ------------------------------------------------------------------------------------


def test_rotating_refresh_tokens_invalidate_all_previous(sandbox_server: RunningSandbox) -> None:
    """Each refresh returns a new refresh token; every older one is then invalid_grant."""
    sandbox = sandbox_server.sandbox
    first = sandbox.issue_tokens()["refresh_token"]
    second = sandbox.issue_tokens()["refresh_token"]  # a new grant also rotates
    refreshed = _token(
        sandbox_server,
        grant_type="refresh_token",
        refresh_token=second,
        client_id="flipsync-sandbox",
    )
    assert refreshed.status_code == 200
    body = refreshed.json()
    assert set(body) == {"access_token", "refresh_token", "expires_in", "token_type", "scope"}
    third = body["refresh_token"]
    assert third not in (first, second)
    for old in (first, second):
        sandbox.advance_clock(1.1)  # the token endpoint allows one request per second
        stale = _token(
            sandbox_server,
            grant_type="refresh_token",
            refresh_token=old,
            client_id="flipsync-sandbox",
        )
        assert stale.status_code == 400
        assert stale.json() == INVALID_GRANT
    sandbox.advance_clock(1.1)
    with requests.Session() as api:
        api.headers["Authorization"] = f"Bearer {body['access_token']}"
        assert api.get(f"{sandbox_server.api_base_url}/contact_lists").status_code == 200
    ok = _token(
        sandbox_server,
        grant_type="refresh_token",
        refresh_token=third,
        client_id="flipsync-sandbox",
    )
    assert ok.status_code == 200
    sandbox.revoke_refresh_tokens()
    sandbox.advance_clock(1.1)
    revoked = _token(
        sandbox_server,
        grant_type="refresh_token",
        refresh_token=ok.json()["refresh_token"],
        client_id="flipsync-sandbox",
    )
    assert revoked.json() == INVALID_GRANT


def test_long_lived_refresh_token_comes_back_unchanged(make_sandbox: Any) -> None:
    """With long-lived tokens the same refresh token is returned and stays usable."""
    running = make_sandbox(rotating_refresh_tokens=False, token_endpoint_per_second=0)
    token = running.sandbox.issue_tokens()["refresh_token"]
    for _ in range(2):
        answer = _token(
            running, grant_type="refresh_token", refresh_token=token, client_id="flipsync-sandbox"
        )
        assert answer.status_code == 200
        assert answer.json()["refresh_token"] == token


def test_token_endpoint_rate_limit_and_client_auth(sandbox_server: RunningSandbox) -> None:
    """One token request per second per client; confidential clients need their secret."""
    sandbox = sandbox_server.sandbox
    sandbox.register_client("server-app", secret="s3cret")
    tokens = sandbox.issue_tokens("server-app")
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    no_secret = _token(sandbox_server, client_id="server-app", **form)
    assert no_secret.status_code == 401
    assert no_secret.json()["error"] == "invalid_client"
    too_fast = requests.post(
        f"{sandbox_server.oauth_base_url}/token",
        data=form,
        auth=("server-app", "s3cret"),
        timeout=5,
    )
    assert too_fast.status_code == 429
    assert too_fast.json()["error_key"] == "throttled"
    sandbox.advance_clock(1.1)
    ok = requests.post(
        f"{sandbox_server.oauth_base_url}/token",
        data=form,
        auth=("server-app", "s3cret"),
        timeout=5,
    )
    assert ok.status_code == 200
    sandbox.advance_clock(1.1)
    wrong_client = _token(sandbox_server, client_id="flipsync-sandbox", **form)
    assert wrong_client.json() == INVALID_GRANT
    sandbox.advance_clock(1.1)
    no_offline = sandbox.issue_tokens(scope="contact_data")
    assert "refresh_token" not in no_offline


def test_device_flow_states(make_sandbox: Any) -> None:
    """authorization_pending, slow_down, approval via /activate, single use, denied, expired."""
    running = make_sandbox(token_endpoint_per_second=0)
    sandbox = running.sandbox

    def authorize() -> dict[str, Any]:
        answer = requests.post(
            f"{running.oauth_base_url}/device/authorize",
            data={"client_id": "flipsync-sandbox", "scope": "contact_data offline_access"},
            timeout=5,
        )
        assert answer.status_code == 200
        return dict(answer.json())

    def poll(device_code: str) -> requests.Response:
        return _token(
            running, grant_type=DEVICE_GRANT, device_code=device_code, client_id="flipsync-sandbox"
        )

    grant = authorize()
    assert grant["verification_uri"] == f"{running.base_url}/activate"
    assert grant["verification_uri_complete"].endswith(grant["user_code"])
    assert (grant["interval"], grant["expires_in"]) == (5, 600)
    assert poll(grant["device_code"]).json()["error"] == "authorization_pending"
    assert poll(grant["device_code"]).json()["error"] == "slow_down"
    sandbox.advance_clock(5)
    assert poll(grant["device_code"]).json()["error"] == "authorization_pending"
    page = requests.get(grant["verification_uri_complete"], timeout=5)
    assert page.status_code == 200
    assert grant["user_code"] in page.text
    approved = requests.post(
        f"{running.base_url}/activate",
        data={"user_code": grant["user_code"].lower(), "decision": "approve"},
        timeout=5,
    )
    assert approved.status_code == 200
    tokens = poll(grant["device_code"])
    assert tokens.status_code == 200
    assert {"access_token", "refresh_token"} <= set(tokens.json())
    assert poll(grant["device_code"]).json()["error"] == "invalid_grant"

    denied = authorize()
    sandbox.deny_device(denied["user_code"])
    assert poll(denied["device_code"]).json()["error"] == "access_denied"

    expired = authorize()
    sandbox.advance_clock(601)
    assert poll(expired["device_code"]).json()["error"] == "expired_token"
    with pytest.raises(KeyError):
        sandbox.approve_device(expired["user_code"])


def test_authorization_code_flow_single_use_and_pkce(make_sandbox: Any) -> None:
    """Codes are single use and bound to redirect_uri; public clients must use PKCE."""
    running = make_sandbox(token_endpoint_per_second=0)
    sandbox = running.sandbox
    sandbox.register_client("web-app", secret="pw")
    code = sandbox.issue_auth_code("web-app", "https://localhost/cb")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "https://localhost/cb",
    }
    url = f"{running.oauth_base_url}/token"
    first = requests.post(url, data=form, auth=("web-app", "pw"), timeout=5)
    assert first.status_code == 200
    assert "refresh_token" in first.json()
    again = requests.post(url, data=form, auth=("web-app", "pw"), timeout=5)
    assert again.json()["error"] == "invalid_grant"
    wrong_uri = dict(form, code=sandbox.issue_auth_code("web-app", "https://localhost/cb"))
    wrong_uri["redirect_uri"] = "https://elsewhere/cb"
    assert requests.post(url, data=wrong_uri, auth=("web-app", "pw"), timeout=5).status_code == 400

    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    pkce_code = sandbox.issue_auth_code(
        "flipsync-sandbox", "http://127.0.0.1/cb", code_challenge=challenge.decode()
    )
    pkce = requests.post(
        url,
        data={
            "grant_type": "authorization_code",
            "code": pkce_code,
            "redirect_uri": "http://127.0.0.1/cb",
            "client_id": "flipsync-sandbox",
            "code_verifier": verifier,
        },
        timeout=5,
    )
    assert pkce.status_code == 200
    expired = sandbox.issue_auth_code("web-app", "https://localhost/cb")
    sandbox.advance_clock(301)
    late = requests.post(url, data=dict(form, code=expired), auth=("web-app", "pw"), timeout=5)
    assert late.json()["error"] == "invalid_grant"


def test_consent_page_redirects_with_code(sandbox_server: RunningSandbox) -> None:
    """GET /authorize shows a consent form; approving redirects with code and state."""
    params = {
        "client_id": "flipsync-sandbox",
        "redirect_uri": "http://127.0.0.1:9/cb",
        "response_type": "code",
        "scope": "contact_data offline_access",
        "state": "xyz",
    }
    url = f"{sandbox_server.oauth_base_url}/authorize"
    assert requests.get(url, params=params, timeout=5).status_code == 200
    answer = requests.post(
        url, data=dict(params, decision="approve"), allow_redirects=False, timeout=5
    )
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("http://127.0.0.1:9/cb?code=")
    assert answer.headers["Location"].endswith("&state=xyz")


# --- contacts ---------------------------------------------------------------------------------


def test_cursor_pagination_survives_changes_between_pages(
    sandbox_server: RunningSandbox,
    api: requests.Session,
) -> None:
    """Every contact appears exactly once even when contacts change between pages."""
    sandbox = sandbox_server.sandbox
    donors = sandbox.add_list("Donors")
    emails = [f"p{i}@example.org" for i in range(7)]
    for email in emails:
        sandbox.add_contact(email, list_ids=[donors])
    first = api.get(
        f"{sandbox_server.api_base_url}/contacts", params={"limit": "3", "include_count": "true"}
    ).json()
    assert first["contacts_count"] == 7
    seen = [c["email_address"]["address"] for c in first["contacts"]]
    href = first["_links"]["next"]["href"]
    assert href.startswith("/v3/contacts?cursor=")
    # Change a contact already served and one not yet served.
    for email in (emails[0], emails[5]):
        changed = api.post(
            f"{sandbox_server.api_base_url}/contacts/sign_up_form",
            json={"email_address": email, "list_memberships": [donors], "first_name": "New"},
        )
        assert changed.status_code == 200
    while href:
        page = api.get(f"{sandbox_server.base_url}{href}").json()
        seen += [c["email_address"]["address"] for c in page["contacts"]]
        href = page.get("_links", {}).get("next", {}).get("href")
    assert seen == emails
    assert (
        api.get(f"{sandbox_server.api_base_url}/contacts", params={"cursor": "junk"}).status_code
        == 400
    )


def test_contact_filters_includes_and_validation(
    sandbox_server: RunningSandbox,
    api: requests.Session,
) -> None:
    """status, email, updated_after (strict), include and limit behave as the spec says."""
    sandbox = sandbox_server.sandbox
    donors = sandbox.add_list("Donors")
    sandbox.add_custom_field("donor_id")
    sandbox.add_contact(
        "Ada@Example.org",
        list_ids=["Donors"],
        phone="555-0100",
        street="1 Main St",
        city="Boston",
        custom_fields={"donor_id": "D-1"},
    )
    sandbox.add_contact("gone@example.org", deleted=True, list_ids=[donors])
    sandbox.add_contact("out@example.org", permission="unsubscribed")
    sandbox.add_contact("pending@example.org", permission="pending_confirmation")
    url = f"{sandbox_server.api_base_url}/contacts"

    def emails(**params: str) -> list[str]:
        answer = api.get(url, params=params)
        assert answer.status_code == 200, answer.text
        return [c["email_address"]["address"] for c in answer.json()["contacts"]]

    assert "gone@example.org" not in emails()
    assert emails(status="all")[1] == "gone@example.org"
    assert emails(status="deleted") == ["gone@example.org"]
    assert emails(status="active") == ["Ada@Example.org"]
    assert emails(status="unsubscribed,pending_confirmation") == [
        "out@example.org",
        "pending@example.org",
    ]
    assert emails(email="ada@EXAMPLE.org") == ["Ada@Example.org"]
    assert emails(email="gone@example.org") == []
    assert emails(email="gone@example.org", status="all") == ["gone@example.org"]

    plain = api.get(url, params={"email": "ada@example.org"}).json()["contacts"][0]
    for name in ("custom_fields", "list_memberships", "phone_numbers", "street_addresses"):
        assert name not in plain
    full = api.get(
        url,
        params={
            "email": "ada@example.org",
            "include": "custom_fields,list_memberships,phone_numbers,street_addresses",
        },
    ).json()["contacts"][0]
    assert full["list_memberships"] == [donors]
    assert full["custom_fields"][0]["value"] == "D-1"
    assert full["phone_numbers"][0]["phone_number"] == "555-0100"
    assert full["street_addresses"][0]["city"] == "Boston"
    assert full["created_at"].endswith("Z")

    deleted = api.get(url, params={"status": "all", "email": "gone@example.org"}).json()
    assert "deleted_at" in deleted["contacts"][0]

    stamp = full["updated_at"]
    assert "Ada@Example.org" not in emails(updated_after=stamp, status="all")
    assert emails(updated_before=stamp) == []
    for bad in ({"status": "explicit"}, {"limit": "0"}, {"limit": "501"}, {"include": "x"}):
        answer = api.get(url, params=bad)
        assert answer.status_code == 400
        assert answer.json()[0]["error_key"] == "contacts.api.validation.error"
    assert api.get(url, params={"updated_after": "yesterday"}).status_code == 400


def test_updated_at_is_strictly_increasing(
    sandbox_server: RunningSandbox, api: requests.Session
) -> None:
    """Two changes never share an updated_at, so updated_after never loses a tie."""
    donors = sandbox_server.sandbox.add_list("Donors")
    rows = [{"email": f"t{i}@example.org"} for i in range(200)]
    assert _import(api, sandbox_server, rows, [donors]).status_code == 201
    stamps = [c["updated_at"] for c in sandbox_server.sandbox.contacts()]
    assert len(set(stamps)) == 200
    assert stamps == sorted(stamps)


def test_post_contact_permission_and_conflict_including_deleted(
    sandbox_server: RunningSandbox,
    api: requests.Session,
) -> None:
    """POST /contacts keeps the permission sent (not_set by default) and 409s on any existing email."""
    sandbox = sandbox_server.sandbox
    donors = sandbox.add_list("Donors")
    url = f"{sandbox_server.api_base_url}/contacts"
    created = api.post(
        url,
        json={
            "email_address": {"address": "new@example.org", "permission_to_send": "implicit"},
            "create_source": "Account",
            "first_name": "New",
            "list_memberships": [donors],
        },
    )
    assert created.status_code == 201
    body = created.json()
    assert body["email_address"]["permission_to_send"] == "implicit"
    assert body["create_source"] == "Account"
    assert body["list_memberships"] == [donors]
    plain = api.post(
        url, json={"email_address": {"address": "plain@example.org"}, "create_source": "Contact"}
    )
    assert plain.json()["email_address"]["permission_to_send"] == "not_set"

    deleted_id = sandbox.add_contact("gone@example.org", deleted=True)
    conflict = api.post(
        url, json={"email_address": {"address": "GONE@example.org"}, "create_source": "Account"}
    )
    assert conflict.status_code == 409
    assert conflict.json() == [
        {
            "error_key": "contacts.api.conflict",
            "error_message": f"Validation failed: Email already exists for contact {deleted_id}",
        }
    ]
    for bad in (
        {"email_address": {"address": "x@example.org"}},  # no create_source
        {"email_address": {"address": "not-an-email"}, "create_source": "Account"},
        {"email_address": {"address": "y@example.org"}, "create_source": "Account", "foo": 1},
        {"first_name": "x" * 51, "create_source": "Account"},
        {
            "email_address": {"address": "z@example.org"},
            "create_source": "Account",
            "list_memberships": ["no-such-list"],
        },
    ):
        answer = api.post(url, json=bad)
        assert answer.status_code == 400, bad


def test_sign_up_form_permission_rules(make_sandbox: Any) -> None:
    """New → explicit (or pending with COI); existing, even unsubscribed or deleted → explicit."""
    running = make_sandbox()
    sandbox = running.sandbox
    donors = sandbox.add_list("Donors")
    news = sandbox.add_list("News")
    sandbox.add_contact("out@example.org", permission="unsubscribed", list_ids=[news])
    sandbox.add_contact("gone@example.org", deleted=True)
    sandbox.add_contact("imp@example.org", list_ids=[news], first_name="Old", last_name="Keep")
    url = f"{running.api_base_url}/contacts/sign_up_form"
    with _session(running) as api:
        created = api.post(
            url, json={"email_address": "new@example.org", "list_memberships": [donors]}
        )
        assert created.status_code == 201
        assert created.json()["action"] == "created"
        new = sandbox.contact_by_email("new@example.org")
        assert new is not None
        assert new["email_address"]["permission_to_send"] == "explicit"
        assert new["email_address"]["opt_in_source"] == "Contact"
        for email in ("out@example.org", "gone@example.org", "imp@example.org"):
            answer = api.post(
                url,
                json={"email_address": email, "list_memberships": [donors], "first_name": "New"},
            )
            assert answer.status_code == 200
            assert answer.json()["action"] == "updated"
            contact = sandbox.contact_by_email(email)
            assert contact is not None
            assert contact["email_address"]["permission_to_send"] == "explicit"
            assert "deleted_at" not in contact
            assert contact["first_name"] == "New"
        kept = sandbox.contact_by_email("imp@example.org")
        assert kept is not None
        assert kept["last_name"] == "Keep"
        assert kept["list_memberships"] == [news, donors]
        for bad in (
            {"email_address": "x@example.org"},
            {"email_address": "x@example.org", "list_memberships": []},
            {"email_address": "a" * 40 + "@example.org", "list_memberships": [donors]},
        ):
            assert api.post(url, json=bad).status_code == 400

    coi = make_sandbox(confirmed_opt_in=True)
    coi.sandbox.add_list("Donors", list_id="L1")
    with _session(coi) as api:
        answer = api.post(
            f"{coi.api_base_url}/contacts/sign_up_form",
            json={"email_address": "coi@example.org", "list_memberships": ["L1"]},
        )
        assert answer.status_code == 201
    contact = coi.sandbox.contact_by_email("coi@example.org")
    assert contact is not None
    assert contact["email_address"]["permission_to_send"] == "pending_confirmation"


def test_delete_put_and_counts(sandbox_server: RunningSandbox, api: requests.Session) -> None:
    """DELETE keeps the email reserved; PUT with update_source Account revives; counts skip deleted."""
    sandbox = sandbox_server.sandbox
    donors = sandbox.add_list("Donors")
    contact_id = sandbox.add_contact("a@example.org", list_ids=[donors], first_name="A")
    sandbox.add_contact("b@example.org", permission="explicit")
    base = sandbox_server.api_base_url
    assert api.delete(f"{base}/contacts/{contact_id}").status_code == 204
    gone = api.get(f"{base}/contacts/{contact_id}", params={"include": "list_memberships"}).json()
    assert gone["list_memberships"] == []
    assert len(gone["deleted_at"]) == 10  # a date, as the spec types it
    counts = api.get(f"{base}/contacts/counts").json()
    assert counts == {"total": 1, "explicit": 1, "implicit": 0, "pending": 0, "unsubscribed": 0}
    put = {
        "email_address": {"address": "a@example.org"},
        "update_source": "Contact",
        "list_memberships": [donors],
    }
    assert api.put(f"{base}/contacts/{contact_id}", json=put).status_code == 400
    revived = api.put(f"{base}/contacts/{contact_id}", json=dict(put, update_source="Account"))
    assert revived.status_code == 200
    body = revived.json()
    assert "deleted_at" not in body
    assert "first_name" not in body  # omitted top-level properties become null
    assert body["list_memberships"] == [donors]
    assert api.get(f"{base}/contacts/00000000-0000-0000-0000-000000000000").status_code == 404


# --- bulk import ------------------------------------------------------------------------------


def test_import_completes_asynchronously_with_counts(make_sandbox: Any) -> None:
    """Effects land at completion; permissions, lists and status counters follow the spec."""
    clock = VirtualClock()
    running = make_sandbox(activity_seconds=0.3, clock=clock)
    sandbox = running.sandbox
    donors = sandbox.add_list("Donors")
    news = sandbox.add_list("News")
    sandbox.add_custom_field("donor_id")
    sandbox.add_contact("exp@example.org", permission="explicit", list_ids=[news], last_name="Keep")
    sandbox.add_contact("out@example.org", permission="unsubscribed", list_ids=[news])
    sandbox.add_contact("gone@example.org", deleted=True)
    rows = [
        {"email": "new@example.org", "first_name": "Nia", "cf:donor_id": "D-1", "phone": "555"},
        {"email": "not an email"},
        {"email": "exp@example.org", "first_name": "Eve"},
        {"email": "out@example.org", "first_name": "Otto"},
        {"email": "gone@example.org"},
        {"email": "long@example.org", "first_name": "x" * 51},
        {"email": "cf@example.org", "cf:unknown": "v"},
        {"first_name": "No email"},
    ]
    with _session(running) as api:
        posted = _import(api, running, rows, [donors])
        assert posted.status_code == 201
        activity = posted.json()
        assert activity["state"] == "initialized"
        assert activity["_links"]["self"]["href"] == f"/v3/activities/{activity['activity_id']}"
        assert sandbox.contact_by_email("new@example.org") is None
        status_url = f"{running.base_url}{activity['_links']['self']['href']}"
        during = api.get(status_url).json()
        assert during["state"] in ("initialized", "processing")
        clock.advance(0.35)
        done = api.get(status_url).json()
    assert done["state"] == "completed"
    assert done["percent_done"] == 100
    assert done["status"] == {
        "items_total_count": 9,
        "items_completed_count": 9,
        "person_count": 4,
        "error_count": 2,
        "correctable_count": 2,
        "cannot_add_to_list_count": 1,
    }
    assert done["activity_errors"] == [
        "Line 3: Invalid email address",
        "Line 7: first_name exceeds the maximum length of 50 characters",
        "Line 8: Custom field 'unknown' does not exist",
        "Line 9: Missing email address",
    ]
    new = sandbox.contact_by_email("new@example.org")
    assert new is not None
    assert new["email_address"]["permission_to_send"] == "implicit"
    assert new["email_address"]["opt_in_source"] == "Account"
    assert new["create_source"] == "Account"
    assert new["list_memberships"] == [donors]
    assert new["custom_fields"][0]["value"] == "D-1"
    assert new["phone_numbers"][0]["kind"] == "other"
    existing = sandbox.contact_by_email("exp@example.org")
    assert existing is not None
    assert existing["email_address"]["permission_to_send"] == "explicit"
    assert (existing["first_name"], existing["last_name"]) == ("Eve", "Keep")
    assert existing["list_memberships"] == [news, donors]
    out = sandbox.contact_by_email("out@example.org")
    assert out is not None
    assert out["email_address"]["permission_to_send"] == "unsubscribed"
    assert out["list_memberships"] == [news]
    restored = sandbox.contact_by_email("gone@example.org")
    assert restored is not None
    assert "deleted_at" not in restored
    assert restored["list_memberships"] == [donors]
    assert sandbox.contact_by_email("long@example.org") is None


def test_import_rejects_bad_payloads_synchronously(
    sandbox_server: RunningSandbox,
    api: requests.Session,
) -> None:
    """Unknown lists, missing list_ids, schema errors and > 40,000 contacts are 400s."""
    donors = sandbox_server.sandbox.add_list("Donors")
    row = {"email": "a@example.org"}
    cases: list[tuple[list[dict[str, Any]], list[str]]] = [
        ([row], ["no-such-list"]),
        ([row], []),
        ([row], [donors] * 51),
        ([], [donors]),
        ([{"email": "a@example.org", "zip": 2110}], [donors]),
        ([{"email": "a@example.org", "nickname": "x"}], [donors]),
        ([row] * 40_001, [donors]),
    ]
    for rows, lists in cases:
        answer = _import(api, sandbox_server, rows, lists)
        assert answer.status_code == 400, (rows[:1], lists[:1])
        assert answer.json()[0]["error_key"] == "contacts.api.validation.error"
    assert sandbox_server.sandbox.activities() == []


def test_import_over_4_mb_keeps_only_the_first_4_mb(
    sandbox_server: RunningSandbox,
    api: requests.Session,
) -> None:
    """Contacts beyond the first 4 MB are silently dropped; the activity records it."""
    sandbox = sandbox_server.sandbox
    donors = sandbox.add_list("Donors")
    filler = "x" * 250
    rows = [
        {
            "email": f"big{i}@example.org",
            **{f"{kind}street": filler for kind in ("", "work_", "other_")},
            **{f"{kind}street2": filler for kind in ("", "work_", "other_")},
        }
        for i in range(2_700)
    ]
    body = json.dumps({"list_ids": [donors], "import_data": rows}).encode()
    assert len(body) > MAX_IMPORT_BYTES
    # Which rows end within the first 4 MB of this exact serialization?
    fitting = 0
    offset = body.index(b"[", body.index(b'"import_data"'))
    for row in rows:
        offset = body.index(json.dumps(row).encode(), offset) + len(json.dumps(row))
        if offset > MAX_IMPORT_BYTES:
            break
        fitting += 1
    answer = api.post(
        f"{sandbox_server.api_base_url}/activities/contacts_json_import",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 201
    activity = sandbox.activities()[0]
    assert activity["state"] == "completed"
    assert activity["sandbox"]["truncated"] is True
    assert activity["sandbox"]["received_rows"] == 2_700
    assert activity["sandbox"]["dropped_rows"] == 2_700 - fitting
    assert activity["status"]["person_count"] == fitting
    assert activity["activity_errors"] == []
    assert (
        "truncated"
        not in api.get(f"{sandbox_server.api_base_url}/activities/{activity['activity_id']}").json()
    )
    emails = {c["email_address"]["address"] for c in sandbox.contacts()}
    assert emails == {f"big{i}@example.org" for i in range(fitting)}


def test_activity_collection_hold_and_window(make_sandbox: Any) -> None:
    """GET /activities lists the last 10 days newest first; held activities stay processing."""
    running = make_sandbox()
    sandbox = running.sandbox
    donors = sandbox.add_list("Donors")
    with _session(running) as api:
        first = _import(api, running, [{"email": "a@example.org"}], [donors]).json()
        sandbox.hold_activities(True)
        second = _import(api, running, [{"email": "b@example.org"}], [donors]).json()
        url = f"{running.api_base_url}/activities"
        listed = api.get(url).json()["activities"]
        assert [a["activity_id"] for a in listed] == [second["activity_id"], first["activity_id"]]
        assert [a["state"] for a in listed] == ["processing", "completed"]
        assert sandbox.contact_by_email("b@example.org") is None
        processing = api.get(url, params={"state": "processing"}).json()["activities"]
        assert [a["activity_id"] for a in processing] == [second["activity_id"]]
        assert api.get(url, params={"state": "initialized"}).status_code == 400
        sandbox.hold_activities(False)
        assert api.get(url, params={"state": "completed"}).json()["activities"][0]["state"] == (
            "completed"
        )
        assert sandbox.contact_by_email("b@example.org") is not None
    sandbox.advance_clock(11 * 86400)
    with _session(running) as api:
        assert api.get(f"{running.api_base_url}/activities").json()["activities"] == []


# --- lists and custom fields ------------------------------------------------------------------


def test_lists_and_custom_fields(sandbox_server: RunningSandbox, api: requests.Session) -> None:
    """Create, 409 on duplicates, name filter, membership counts and pagination."""
    sandbox = sandbox_server.sandbox
    base = sandbox_server.api_base_url
    created = api.post(f"{base}/contact_lists", json={"name": "Donors", "favorite": True})
    assert created.status_code == 201
    donors = created.json()["list_id"]
    duplicate = api.post(f"{base}/contact_lists", json={"name": "donors"})
    assert duplicate.status_code == 409
    assert duplicate.json()[0]["error_key"] == "contacts.api.conflict"
    for name in ("A", "B"):
        sandbox.add_list(name)
    sandbox.add_contact("m@example.org", list_ids=[donors])
    sandbox.add_contact("u@example.org", list_ids=[donors], permission="unsubscribed")
    found = api.get(
        f"{base}/contact_lists", params={"name": "DONORS", "include_membership_count": "all"}
    ).json()
    assert [x["membership_count"] for x in found["lists"]] == [2]
    active = api.get(
        f"{base}/contact_lists", params={"name": "Donors", "include_membership_count": "active"}
    ).json()
    assert active["lists"][0]["membership_count"] == 1
    names: list[str] = []
    href: str | None = "/v3/contact_lists?limit=2&include_count=true"
    while href:
        page = api.get(f"{sandbox_server.base_url}{href}").json()
        assert page["lists_count"] == 3
        names += [x["name"] for x in page["lists"]]
        href = page.get("_links", {}).get("next", {}).get("href")
    assert names == ["Donors", "A", "B"]

    field = api.post(f"{base}/contact_custom_fields", json={"label": "Donor ID", "type": "string"})
    assert field.status_code == 201
    assert field.json()["name"] == "Donor_ID"
    assert (
        api.post(
            f"{base}/contact_custom_fields", json={"label": "Donor ID", "type": "string"}
        ).status_code
        == 409
    )
    assert api.get(f"{base}/contact_custom_fields", params={"limit": 101}).status_code == 400
    fields = api.get(f"{base}/contact_custom_fields", params={"limit": 100}).json()
    assert [f["label"] for f in fields["custom_fields"]] == ["Donor ID"]


# --- faults, request log, admin, server --------------------------------------------------------


def test_scripted_faults(sandbox_server: RunningSandbox, api: requests.Session) -> None:
    """500/503/throttle refuse the request; 500_after and drop_after still perform it."""
    sandbox = sandbox_server.sandbox
    donors = sandbox.add_list("Donors")
    rows = [{"email": "a@example.org"}]
    sandbox.fail_next(1, "500")
    assert _import(api, sandbox_server, rows, [donors]).status_code == 500
    assert sandbox.activities() == []
    sandbox.fail_next(1, "500_after")
    failed = _import(api, sandbox_server, rows, [donors])
    assert failed.status_code == 500
    assert isinstance(failed.json(), list)
    assert len(sandbox.activities()) == 1  # processed although the client saw a 500
    sandbox.fail_next(1, "drop")
    with pytest.raises(requests.ConnectionError):
        _import(api, sandbox_server, rows, [donors])
    assert len(sandbox.activities()) == 1
    sandbox.fail_next(1, "drop_after")
    with pytest.raises(requests.ConnectionError):
        _import(api, sandbox_server, rows, [donors])
    assert len(sandbox.activities()) == 2
    sandbox.fail_next(1, "503")
    sandbox.fail_next(1, "throttle")
    assert api.get(f"{sandbox_server.api_base_url}/contact_lists").status_code == 503
    assert (
        api.get(f"{sandbox_server.api_base_url}/contact_lists").json()["error_key"] == "throttled"
    )
    assert api.get(f"{sandbox_server.api_base_url}/contact_lists").status_code == 200
    faults = [(e.fault, e.status, e.rejected) for e in sandbox.request_log() if e.fault]
    assert faults == [
        ("500", 500, True),
        ("500_after", 500, False),
        ("drop", None, True),
        ("drop_after", None, False),
        ("503", 503, True),
        ("throttle", 429, True),
    ]
    # A fault can also hit the token endpoint, e.g. a refresh that rotates but never answers.
    refresh = sandbox.issue_tokens()["refresh_token"]
    sandbox.fail_next(1, "drop_after", path_prefix="/oauth2")
    with pytest.raises(requests.ConnectionError):
        _token(
            sandbox_server,
            grant_type="refresh_token",
            refresh_token=refresh,
            client_id="flipsync-sandbox",
        )
    sandbox.advance_clock(1.1)
    again = _token(
        sandbox_server,
        grant_type="refresh_token",
        refresh_token=refresh,
        client_id="flipsync-sandbox",
    )
    assert again.json() == INVALID_GRANT


def test_random_faults_are_reproducible(make_sandbox: Any) -> None:
    """The same fault_seed gives the same fault sequence."""

    def run() -> list[int | None]:
        running = make_sandbox(fault_rate=0.5, fault_seed=7, fault_kinds={"500", "503"})
        with _session(running) as api:
            for _ in range(12):
                api.get(f"{running.api_base_url}/contact_lists")
        return [e.status for e in running.sandbox.request_log()]

    first, second = run(), run()
    assert first == second
    assert {500, 503, 200} <= set(first)


def test_request_log_covers_api_and_oauth_but_not_admin(
    sandbox_server: RunningSandbox,
    api: requests.Session,
) -> None:
    """Entries are immutable, include rejected requests, and can be counted and cleared."""
    sandbox = sandbox_server.sandbox
    donors = sandbox.add_list("Donors")
    requests.get(f"{sandbox_server.api_base_url}/contacts", params={"limit": "5"}, timeout=5)
    _import(api, sandbox_server, [{"email": "a@example.org"}], [donors])
    _token(
        sandbox_server, grant_type="refresh_token", refresh_token="x", client_id="flipsync-sandbox"
    )
    requests.get(f"{sandbox_server.base_url}/__sandbox/state", timeout=5)
    log = sandbox.request_log()
    assert [(e.method, e.path, e.status) for e in log] == [
        ("GET", "/v3/contacts", 401),
        ("POST", "/v3/activities/contacts_json_import", 201),
        ("POST", "/oauth2/default/v1/token", 400),
    ]
    unauthorized, imported, token = log
    assert unauthorized.rejected and unauthorized.error_key == "unauthorized"
    assert unauthorized.query == {"limit": "5"}
    assert imported.body == {"import_data": [{"email": "a@example.org"}], "list_ids": [donors]}
    assert imported.client_id == "flipsync-sandbox" and not imported.rejected
    assert token.error_key == "invalid_grant"
    assert token.form is not None and token.form["grant_type"] == "refresh_token"
    with pytest.raises(dataclasses.FrozenInstanceError):
        imported.status = 500  # type: ignore[misc]
    imported.body["list_ids"].append("mutated")
    assert sandbox.request_log()[1].body["list_ids"] == [donors]
    assert sandbox.count_requests() == 3
    assert sandbox.count_requests("POST", "/v3") == 1
    assert sandbox.count_requests(path_prefix="/v3", include_rejected=False) == 1
    sandbox.clear_request_log()
    assert sandbox.count_requests() == 0


def test_admin_endpoints(sandbox_server: RunningSandbox) -> None:
    """Seed, tokens, state, requests and device approval work over HTTP without a token."""
    base = f"{sandbox_server.base_url}/__sandbox"
    seeded = requests.post(
        f"{base}/seed",
        json={
            "lists": ["Donors", {"name": "News", "list_id": "news-id"}],
            "custom_fields": ["donor_id"],
            "contacts": [
                {"email": "a@example.org", "lists": ["Donors"], "permission": "explicit"},
                {"email": "b@example.org", "list_ids": ["news-id"], "deleted": True},
            ],
        },
        timeout=5,
    )
    assert seeded.status_code == 200
    assert len(seeded.json()["contacts"]) == 2
    tokens = requests.post(f"{base}/tokens", timeout=5).json()
    with requests.Session() as api:
        api.headers["Authorization"] = f"Bearer {tokens['access_token']}"
        assert api.get(f"{sandbox_server.api_base_url}/contacts").status_code == 200
    state = requests.get(f"{base}/state", timeout=5).json()
    assert [x["name"] for x in state["lists"]] == ["Donors", "News"]
    assert len(state["contacts"]) == 2
    logged = requests.get(f"{base}/requests", timeout=5).json()
    assert [e["path"] for e in logged] == ["/v3/contacts"]
    grant = requests.post(
        f"{sandbox_server.oauth_base_url}/device/authorize",
        data={"client_id": "flipsync-sandbox", "scope": "contact_data offline_access"},
        timeout=5,
    ).json()
    assert requests.post(f"{base}/approve", json={"user_code": grant["user_code"]}, timeout=5).ok
    assert (
        requests.post(f"{base}/approve", json={"user_code": "NOPE"}, timeout=5).status_code == 404
    )
    assert requests.post(f"{base}/seed", json={"bogus": []}, timeout=5).status_code == 400


def test_keep_alive_and_content_length(sandbox_server: RunningSandbox) -> None:
    """Several requests travel over one HTTP/1.1 connection with exact lengths."""
    token = sandbox_server.sandbox.issue_tokens()["access_token"]
    connection = http.client.HTTPConnection(sandbox_server.host, sandbox_server.port, timeout=5)
    try:
        for _ in range(3):
            connection.request(
                "GET", "/v3/contact_lists", headers={"Authorization": f"Bearer {token}"}
            )
            answer = connection.getresponse()
            body = answer.read()
            assert answer.status == 200
            assert answer.version == 11
            assert int(answer.headers["Content-Length"]) == len(body)
            assert not answer.will_close
    finally:
        connection.close()


class TestFixtureConfig:
    """The fixture uses the fast config unless a test overrides sandbox_config."""

    def test_default_is_unthrottled_and_instant(self, sandbox_server: RunningSandbox) -> None:
        """requests_per_second=0 and activity_seconds=0, everything else production-like."""
        config = sandbox_server.sandbox.config
        assert (config.requests_per_second, config.activity_seconds) == (0, 0)
        assert config.daily_quota == 10000 and config.rotating_refresh_tokens
        assert sandbox_server.api_base_url == f"http://127.0.0.1:{sandbox_server.port}/v3"
        assert sandbox_server.oauth_base_url.endswith("/oauth2/default/v1")


class TestFixtureOverride:
    """Overriding sandbox_config changes the served sandbox."""

    @pytest.fixture
    def sandbox_config(self) -> SandboxConfig:
        """Confirmed opt-in on for this class."""
        return SandboxConfig(requests_per_second=0, activity_seconds=0, confirmed_opt_in=True)

    def test_override_applies(self, sandbox_server: RunningSandbox) -> None:
        """The overridden config reaches the sandbox."""
        assert sandbox_server.sandbox.config.confirmed_opt_in


def test_config_rejects_unknown_fault_kinds() -> None:
    """Typos in fault kinds fail loudly."""
    with pytest.raises(ValueError, match="fault_kinds"):
        SandboxConfig(fault_kinds=frozenset({"timeout"}))
    with pytest.raises(ValueError, match="fault kind"):
        Sandbox().fail_next(1, "timeout")


def test_serve_forever_stops_on_sigterm(tmp_path: Path) -> None:
    """The blocking server exits cleanly on SIGTERM and prints nothing."""
    script = tmp_path / "serve.py"
    script.write_text(
        "import sys\n"
        "from flipsync.sandbox import Sandbox, serve_forever\n"
        "serve_forever(Sandbox(), '127.0.0.1', 0,"
        " on_ready=lambda r: sys.stderr.write(str(r.port) + '\\n') or sys.stderr.flush())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stderr is not None
        port = int(process.stderr.readline())
        assert requests.get(f"http://127.0.0.1:{port}/__sandbox/state", timeout=5).ok
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert stdout == b""


def test_cli_sandbox_seeds_writes_tokens_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`flipsync sandbox --seed --token-file` announces its URLs, serves the seed, stops cleanly."""
    seed = tmp_path / "seed.yaml"
    seed.write_text("lists: [Donors]\ncontacts:\n  - email: a@example.org\n")
    tokens = tmp_path / "tokens.json"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flipsync",
            "sandbox",
            "--port",
            "0",
            "--seed",
            str(seed),
            "--token-file",
            str(tokens),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        base = line.split(" listening on ", 1)[1].split()[0]
        state = requests.get(f"{base}/__sandbox/state", timeout=5).json()
        assert [c["email_address"]["address"] for c in state["contacts"]] == ["a@example.org"]
        assert json.loads(tokens.read_text())["token_type"] == "Bearer"
        assert oct(tokens.stat().st_mode & 0o777) == "0o600"
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0


def test_paths_shared_by_two_routes(sandbox_server: RunningSandbox, api: requests.Session) -> None:
    """A fixed segment that is also an id position falls back to the id route."""
    base = sandbox_server.api_base_url
    assert api.get(f"{base}/activities/contacts_json_import").status_code == 404
    assert api.get(f"{base}/contacts/sign_up_form").status_code == 404
    wrong = api.patch(f"{base}/contacts/counts")
    assert wrong.status_code == 405
    assert "GET" in wrong.headers["Allow"]


def test_import_is_due_by_the_clock_after_a_burst_of_writes(make_sandbox: Any) -> None:
    """Thousands of writes in a second push the update stamps ahead; imports still complete on time."""
    running = make_sandbox(activity_seconds=0)
    sandbox = running.sandbox
    donors = sandbox.add_list("Donors")
    for i in range(3000):
        sandbox.add_contact(f"c{i}@example.org")
    with _session(running) as api:
        posted = _import(api, running, [{"email": "new@example.org"}], [donors])
        status = api.get(f"{running.base_url}{posted.json()['_links']['self']['href']}").json()
    assert status["state"] == "completed"
    assert sandbox.contact_by_email("new@example.org") is not None
