"""The sandbox's POST /activities/contact_delete, over real HTTP (but one), as the spec describes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from flipsync.sandbox import RunningSandbox
from flipsync.sandbox.inprocess import InProcessSandbox
from tests.sandbox_fixture import sandbox_config, sandbox_inprocess, sandbox_server

FIXTURES = (sandbox_config, sandbox_inprocess, sandbox_server)


@pytest.fixture
def api(sandbox_server: RunningSandbox) -> Iterator[requests.Session]:
    with requests.Session() as session:
        token = sandbox_server.sandbox.issue_tokens()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"
        yield session


def _delete(
    api: requests.Session, running: RunningSandbox | InProcessSandbox, body: Any
) -> requests.Response:
    return api.post(f"{running.api_base_url}/activities/contact_delete", json=body, timeout=5)


def test_contact_delete_is_an_activity_that_deletes_on_completion(
    sandbox_server: RunningSandbox, api: requests.Session
) -> None:
    """201 queued; nothing changes while processing; on completion deleted_at, no lists."""
    box = sandbox_server.sandbox
    donors = box.add_list("Donors")
    keep = box.add_contact("keep@example.org", list_ids=[donors])
    gone = box.add_contact("gone@example.org", list_ids=[donors], permission="explicit")
    before = box.contact(gone)
    assert before is not None
    box.hold_activities(True)
    answer = _delete(api, sandbox_server, {"contact_ids": [gone, gone]})
    assert answer.status_code == 201
    activity = answer.json()
    assert activity["state"] == "initialized"
    assert activity["status"] == {"items_total_count": 1, "items_completed_count": 0}
    status_url = f"{sandbox_server.base_url}{activity['_links']['self']['href']}"
    assert api.get(status_url, timeout=5).json()["state"] == "processing"
    assert "deleted_at" not in (box.contact(gone) or {})

    box.hold_activities(False)
    done = api.get(status_url, timeout=5).json()
    assert done["state"] == "completed"
    assert done["percent_done"] == 100
    assert done["status"] == {"items_total_count": 1, "items_completed_count": 1}
    assert done["activity_errors"] == []
    after = box.contact(gone)
    assert after is not None
    assert "deleted_at" in after
    assert after.get("list_memberships", []) == []
    assert after["email_address"]["permission_to_send"] == "explicit"
    assert after["updated_at"] > before["updated_at"]
    assert "deleted_at" not in (box.contact(keep) or {})
    listed = api.get(
        f"{sandbox_server.api_base_url}/contacts", params={"status": "deleted"}, timeout=5
    ).json()
    assert [c["contact_id"] for c in listed["contacts"]] == [gone]
    in_list = api.get(f"{sandbox_server.api_base_url}/activities", timeout=5).json()
    assert in_list["activities"][0]["activity_id"] == activity["activity_id"]


def test_contact_delete_reports_unknown_ids_and_counts_deleted_ones(
    sandbox_server: RunningSandbox, api: requests.Session
) -> None:
    """An id that names no contact is an activity error; an already deleted contact counts."""
    box = sandbox_server.sandbox
    old = box.add_contact("old@example.org", deleted=True)
    old_stamp = (box.contact(old) or {})["updated_at"]
    nobody = str(uuid.uuid4())
    answer = _delete(api, sandbox_server, {"contact_ids": [old, nobody]})
    assert answer.status_code == 201
    done = api.get(
        f"{sandbox_server.api_base_url}/activities/{answer.json()['activity_id']}", timeout=5
    ).json()
    assert done["state"] == "completed"
    assert done["status"] == {"items_total_count": 2, "items_completed_count": 1}
    assert done["activity_errors"] == [f"contact_id {nobody} was not found"]
    assert (box.contact(old) or {})["updated_at"] == old_stamp


def test_contact_delete_by_list_deletes_every_member(
    sandbox_server: RunningSandbox, api: requests.Session
) -> None:
    box = sandbox_server.sandbox
    trial, other = box.add_list("Trial"), box.add_list("Other")
    a = box.add_contact("a@example.org", list_ids=[trial, other])
    b = box.add_contact("b@example.org", list_ids=[other])
    answer = _delete(api, sandbox_server, {"list_ids": [trial]})
    assert answer.status_code == 201
    done = api.get(
        f"{sandbox_server.api_base_url}/activities/{answer.json()['activity_id']}", timeout=5
    ).json()
    assert done["status"] == {"list_count": 1, "items_total_count": 1, "items_completed_count": 1}
    assert "deleted_at" in (box.contact(a) or {})
    assert "deleted_at" not in (box.contact(b) or {})


@pytest.mark.parametrize(
    "body",
    [
        {},
        [],
        {"contact_ids": []},
        {"contact_ids": "not-a-list"},
        {"contact_ids": [42]},
        {"contact_ids": ["not-a-uuid"]},
        {"contact_ids": [str(uuid.uuid4()) for _ in range(501)]},
        {"contact_ids": [str(uuid.uuid4())], "list_ids": [str(uuid.uuid4())]},
        {"contact_ids": [str(uuid.uuid4())], "extra": True},
        {"list_ids": [str(uuid.uuid4())]},  # no such list
        {"list_ids": [str(uuid.uuid4()) for _ in range(51)]},
    ],
)
def test_contact_delete_refuses_bad_bodies_before_queueing(
    sandbox_server: RunningSandbox, api: requests.Session, body: Any
) -> None:
    """Neither or both keys, empty, over 500 (or 50 lists), not UUIDs: 400, nothing queued."""
    answer = _delete(api, sandbox_server, body)
    assert answer.status_code == 400
    assert answer.json()[0]["error_key"] == "contacts.api.validation.error"
    assert sandbox_server.sandbox.activities() == []


def test_contact_delete_takes_exactly_500_ids_and_needs_json(
    sandbox_server: RunningSandbox, api: requests.Session
) -> None:
    box = sandbox_server.sandbox
    ids = [box.add_contact(f"c{i}@example.org") for i in range(500)]
    answer = _delete(api, sandbox_server, {"contact_ids": ids})
    assert answer.status_code == 201
    assert answer.json()["status"]["items_total_count"] == 500
    assert all("deleted_at" in c for c in box.contacts())
    as_text = api.post(
        f"{sandbox_server.api_base_url}/activities/contact_delete",
        data='{"contact_ids": []}',
        headers={"Content-Type": "text/plain"},
        timeout=5,
    )
    assert as_text.status_code == 415


def test_contact_delete_shares_the_queue_cap_with_imports(
    sandbox_inprocess: InProcessSandbox,
) -> None:
    """1,000 queued activities: the next delete is a 429, as the spec says.

    In process (the same ``Sandbox.handle`` as over the wire): 1,001 requests on a socket
    would cost seconds and test nothing more than the tests above do.
    """
    box = sandbox_inprocess.sandbox
    target = box.add_contact("q@example.org")
    box.hold_activities(True)
    with sandbox_inprocess.session() as api:
        api.headers["Authorization"] = f"Bearer {box.issue_tokens()['access_token']}"
        for _ in range(1000):
            assert _delete(api, sandbox_inprocess, {"contact_ids": [target]}).status_code == 201
        refused = _delete(api, sandbox_inprocess, {"contact_ids": [target]})
    assert refused.status_code == 429
