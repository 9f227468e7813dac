"""The in-process sandbox transport answers like the HTTP server, so tests may use either."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import pytest
import requests

from flipsync.clients import mount_transport, new_session
from flipsync.clock import VirtualClock
from flipsync.ctct.http import HttpClient, OutcomeUnknown, RetryPolicy
from flipsync.sandbox import Sandbox, SandboxConfig, start_in_thread
from flipsync.sandbox.inprocess import InProcessSandbox, SandboxDropped, start_in_process

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FAST = SandboxConfig(requests_per_second=0, activity_seconds=0)


@pytest.fixture
def twins() -> Iterator[tuple[requests.Session, str, requests.Session, str, Sandbox, Sandbox]]:
    """The same account twice: one served over HTTP, one in process, on one virtual clock."""
    clock = VirtualClock()
    boxes = (Sandbox(FAST, clock=clock.time), Sandbox(FAST, clock=clock.time))
    for box in boxes:
        box.add_list("Donors")
        box.add_contact("ann@example.org", permission="implicit")
    with start_in_thread(boxes[0]) as wire, start_in_process(boxes[1]) as inproc:
        yield (
            requests.Session(),
            wire.api_base_url,
            new_session("test"),
            inproc.api_base_url,
            *boxes,
        )


def _exchange(
    session: requests.Session, base: str, box: Sandbox
) -> list[tuple[int, str, set[str]]]:
    token = box.issue_tokens()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    answers = [
        session.get(f"{base}/contact_lists", headers=auth, timeout=5),
        session.get(f"{base}/contacts", params={"email": "ann@example.org"}, timeout=5),
        session.get(f"{base}/nope", headers=auth, timeout=5),
        session.post(f"{base}/contacts", data=b"{not json", headers=auth, timeout=5),
        session.head(f"{base}/contact_lists", headers=auth, timeout=5),
    ]
    return [
        (
            answer.status_code,
            UUID.sub("ID", answer.text) if answer.request.method != "HEAD" else answer.text,
            {name.lower() for name in answer.headers},
        )
        for answer in answers
    ]


def test_in_process_answers_match_the_http_server(
    twins: tuple[requests.Session, str, requests.Session, str, Sandbox, Sandbox],
) -> None:
    """Status, body and header names (Date, Content-Length, Content-Type) are the server's."""
    wire_session, wire_base, inproc_session, inproc_base, wire_box, inproc_box = twins
    over_wire = _exchange(wire_session, wire_base, wire_box)
    in_process = _exchange(inproc_session, inproc_base, inproc_box)
    assert [status for status, _, _ in in_process] == [200, 401, 404, 415, 405]
    assert in_process == over_wire
    assert all({"date", "content-length"} <= names for _, _, names in in_process)


def test_date_header_is_the_sandbox_clock() -> None:
    clock = VirtualClock()
    clock.sleep(3 * 86400)
    with start_in_process(Sandbox(FAST, clock=clock.time)) as inproc:
        answer = new_session("test").get(inproc.base_url + "/v3/contact_lists", timeout=5)
    date = parsedate_to_datetime(answer.headers["Date"])
    assert abs(date.timestamp() - clock.time()) < 1


def test_a_drop_fault_is_a_lost_connection_and_a_post_becomes_outcome_unknown() -> None:
    """Like a socket closed mid-request: ConnectionError, the effect of drop_after kept."""
    box = Sandbox(FAST, clock=VirtualClock().time)
    with start_in_process(box) as inproc:
        token = box.issue_tokens()["access_token"]
        donors = box.add_list("Donors")
        box.fail_next(1, "drop_after", "/v3/contacts/sign_up_form")
        session = new_session("test")
        body = f'{{"email_address": "bo@example.org", "list_memberships": ["{donors}"]}}'.encode()
        with pytest.raises(SandboxDropped) as dropped:
            session.post(
                inproc.api_base_url + "/contacts/sign_up_form",
                data=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=5,
            )
        assert isinstance(dropped.value, requests.ConnectionError)
        assert box.contact_by_email("bo@example.org") is not None  # applied, then dropped
        box.fail_next(1, "drop", "/v3/contacts/sign_up_form")
        client = HttpClient(session, timeout=5, retry=RetryPolicy.no_wait())
        with pytest.raises(OutcomeUnknown):
            client.call(
                "api",
                "POST",
                inproc.api_base_url + "/contacts/sign_up_form",
                tokens=None,
                idempotent=False,
                data=body.replace(b"bo@", b"cy@"),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
        assert box.contact_by_email("cy@example.org") is None  # dropped before the effect


def test_a_streamed_body_is_read_in_chunks() -> None:
    box = Sandbox(FAST, clock=VirtualClock().time)
    for i in range(50):
        box.add_contact(f"p{i}@example.org", permission="implicit")
    with start_in_process(box) as inproc:
        token = box.issue_tokens()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        answer = new_session("test").get(
            inproc.base_url + "/v3/contacts",
            params={"limit": 50},
            headers=auth,
            stream=True,
            timeout=5,
        )
        chunks = list(answer.iter_content(chunk_size=64))
        whole = new_session("test").get(
            inproc.base_url + "/v3/contacts", params={"limit": 50}, headers=auth, timeout=5
        )
    assert len(chunks) > 10 and all(len(chunk) <= 64 for chunk in chunks)
    assert b"".join(chunks) == whole.content and b"p49@example.org" in whole.content


def test_unmounted_after_stop_and_never_for_other_sessions() -> None:
    """Only sessions built while it runs reach it; afterwards its URL is refused, not rerouted."""
    box = Sandbox(FAST, clock=VirtualClock().time)
    inproc = start_in_process(box)
    assert isinstance(inproc, InProcessSandbox)
    assert new_session("t").get(inproc.base_url + "/v3/contact_lists", timeout=5).status_code == 401
    inproc.stop()
    with pytest.raises(requests.ConnectionError) as refused:
        new_session("t").get(inproc.base_url + "/v3/contact_lists", timeout=5)
    assert not isinstance(refused.value, SandboxDropped)
    undo = mount_transport("http://127.0.0.1:1/", inproc.adapter)
    undo()
    undo()  # idempotent
