"""Issue 9 and 10: each contact is read once a run, and opt-outs are always seen.

A warm mirror is refreshed once a run (``updated_after``); later batches read nothing back.
Before a batch would send an existing contact to the sign-up form, the opt-outs since the
last check are asked for with ``optout_after``, which does not rely on ``updated_at``.
"""

from __future__ import annotations

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
    """20 batches on a warm mirror: one refresh for the run, none per batch."""
    org.write_config(run={"lookup_strategy": "mirror", "batch_size": 5})
    org.ingest([payload("seed@example.org")])
    assert org.run().status == "ok"  # builds the mirror
    org.sandbox.clear_request_log()
    org.ingest([payload(f"d{i}@example.org", txn=f"T{i}") for i in range(100)])
    report = org.run()
    assert report.knowledge.count("mirror refresh") == 1
    assert len(report.knowledge) == 20
    reads = contact_reads(org)
    assert len(reads) == 1 and "updated_after" in reads[0]
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
