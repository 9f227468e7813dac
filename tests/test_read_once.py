"""Issue 9 and 10: each contact is read once a run, and opt-outs are always seen.

A warm mirror is refreshed once a run (``updated_after``); later batches read nothing back.
Before a batch would send an existing contact to the sign-up form, the opt-outs since the
last check are asked for with ``optout_after``, which does not rely on ``updated_at``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from flipsync.cli import build_client
from flipsync.sync import Syncer
from tests.conftest import Org
from tests.helpers import payload

SIGN_UP = "/v3/contacts/sign_up_form"


def contact_reads(org: Org) -> list[str]:
    return [
        e.query
        for e in org.api_requests()
        if e.method == "GET" and e.path == "/v3/contacts" and "email" not in e.query
    ]


def test_a_run_of_twenty_batches_reads_no_contact_page_twice(org: Org) -> None:
    """20 batches on a warm mirror: one refresh for the run; per later batch, only the opt-out
    check (who unsubscribed since the previous one), so no page is read twice."""
    org.write_config(run={"lookup_strategy": "mirror", "batch_size": 5})
    org.ingest([payload("seed@example.org")])
    assert org.run().status == "ok"  # builds the mirror
    org.sandbox.clear_request_log()
    org.ingest([payload(f"d{i}@example.org", txn=f"T{i}") for i in range(100)])
    report = org.run()
    assert report.knowledge.count("mirror refresh") == 1
    assert len(report.knowledge) == 20
    reads = contact_reads(org)
    assert len([q for q in reads if "updated_after" in q]) == 1 and "updated_after" in reads[0]
    assert len([q for q in reads if "optout_after" in q]) == 19
    assert len(reads) == 20 and len({str(sorted(q.items())) for q in reads}) == 20  # each once
    assert report.counts()["create"] == 100


def test_an_opt_out_that_does_not_bump_updated_at_is_seen_before_a_sign_up(org: Org) -> None:
    """Bob unsubscribes without a change of updated_at: no sign-up is ever sent for him."""
    org.write_config(
        run={"lookup_strategy": "mirror"},
        policy={
            "setup": "mailing_list_contacts",
            "lists": {"new": ["Newsletter"], "existing": ["Existing"]},
        },
    )
    org.sandbox.add_contact("bob@example.org", permission="implicit")
    org.sandbox.advance_clock(600)
    org.ingest([payload("first@example.org", activity="Mailing List", amount="")])
    assert org.run().status == "ok"  # the mirror now knows bob as implicit
    org.sandbox.advance_clock(600)
    org.ingest([payload("second@example.org", activity="Mailing List", amount="")])
    assert org.run().status == "ok"  # the refresh watermark moves past bob's last change
    org.sandbox.unsubscribe("bob@example.org", touch=False)
    org.sandbox.clear_request_log()
    org.ingest([payload("bob@example.org", activity="Mailing List", amount="", txn="B")])
    report = org.run()
    (bob,) = [o for o in report.outcomes if o.email == "bob@example.org"]
    assert bob.action == "skip" and "unsubscribed" in bob.reason
    assert not [e for e in org.api_requests() if e.path == SIGN_UP]
    assert any("optout_after" in q for q in contact_reads(org))
    assert org.contact("bob@example.org")["email_address"]["permission_to_send"] == "unsubscribed"  # type: ignore[index]


def test_no_opt_out_check_without_a_sign_up_of_an_existing_contact(org: Org) -> None:
    """Imports never resubscribe anyone, so a batch of donors pays for no opt-out check."""
    org.write_config(run={"lookup_strategy": "mirror"})
    org.sandbox.add_contact("known@example.org", permission="implicit")
    org.ingest([payload("seed@example.org")])
    org.run()
    org.sandbox.clear_request_log()
    org.ingest([payload("known@example.org", txn="K"), payload("new@example.org", txn="N")])
    org.run()
    assert not any("optout_after" in q for q in contact_reads(org))


def _run_changing_the_account_after_batch_1(org: Org, change: Callable[[], None]) -> None:
    """A live run of several batches; `change` happens in Constant Contact after the first."""
    settings = org.settings()
    calls = {"n": 0}

    def progress(*_args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            change()

    with org.state() as state:
        Syncer(
            settings,
            state,
            build_client(settings, clock=org.clock),
            sleep=org.clock.sleep,
            clock=org.clock.now,
            progress=progress,
        ).run()
    assert calls["n"] >= 2  # the change came between batches of one run


def _bodies_naming(org: Org, email: str) -> list[str]:
    return [
        f"{e.method} {e.path}"
        for e in org.api_requests()
        if e.method == "POST" and email in json.dumps(e.body)
    ]


def test_a_contact_created_unsubscribed_mid_run_is_never_signed_up(org: Org) -> None:
    """Added in Constant Contact as unsubscribed while the run is between batches: skipped."""
    org.write_config(
        run={"lookup_strategy": "mirror", "batch_size": 1},
        policy={
            "setup": "mailing_list_contacts",
            "lists": {"new": ["Newsletter"], "existing": ["Existing"]},
        },
    )
    org.ingest([payload("other@example.org", activity="Mailing List", amount="")])
    assert org.run().status == "ok"  # the mirror is built
    org.ingest(
        [
            payload("x1@example.org", activity="Mailing List", amount="", txn="X1"),
            payload("n@example.org", activity="Mailing List", amount="", txn="N"),
        ]
    )
    org.sandbox.clear_request_log()
    _run_changing_the_account_after_batch_1(
        org, lambda: org.sandbox.add_contact("n@example.org", permission="unsubscribed")
    )
    assert _bodies_naming(org, "n@example.org") == []
    contact = org.contact("n@example.org")
    assert contact is not None
    assert contact["email_address"]["permission_to_send"] == "unsubscribed"


def test_a_contact_unsubscribing_mid_run_gets_no_request_at_all(org: Org) -> None:
    """Implicit, then unsubscribed between batches of one run: left out of the next import."""
    org.write_config(run={"lookup_strategy": "mirror", "batch_size": 1})
    org.sandbox.add_contact("e@example.org", permission="implicit")
    org.ingest([payload("other@example.org")])
    assert org.run().status == "ok"
    org.ingest([payload("x1@example.org", txn="X1"), payload("e@example.org", txn="E")])
    org.sandbox.clear_request_log()
    _run_changing_the_account_after_batch_1(org, lambda: org.sandbox.unsubscribe("e@example.org"))
    assert _bodies_naming(org, "e@example.org") == []
    assert any("optout_after" in q for q in contact_reads(org))
