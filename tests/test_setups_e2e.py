"""Each consent setup end to end against the sandbox, asserting the account's final state."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flipsync.cli import build_client
from flipsync.sandbox import SandboxConfig
from flipsync.sync import Syncer
from tests.conftest import Org
from tests.helpers import payload

EXISTING = {
    "explicit@example.org": "explicit",
    "implicit@example.org": "implicit",
    "notset@example.org": "not_set",
    "pending@example.org": "pending_confirmation",
    "unsub@example.org": "unsubscribed",
}


def seed_account(org: Org) -> None:
    for email, permission in EXISTING.items():
        org.sandbox.add_contact(email, permission=permission, first_name="Old")
    org.sandbox.add_contact("deleted@example.org", permission="implicit", deleted=True)


def batch(signed_up: set[str]) -> list[dict[str, Any]]:
    """A donation per person; a Mailing List activity in the same transaction for sign-ups."""
    emails = ["new-sub@example.org", "new-donor@example.org", *EXISTING, "deleted@example.org"]
    out = []
    for i, email in enumerate(emails):
        txn = f"T{i}"
        out.append(payload(email, txn=txn, first="New"))
        if email in signed_up:
            out.append(payload(email, txn=txn, activity="Mailing List", amount="", first="New"))
    return out


def final(org: Org, email: str) -> tuple[str | None, set[str], bool]:
    contact = org.contact(email)
    if contact is None:
        return (None, set(), False)
    status = (
        "deleted" if contact.get("deleted_at") else contact["email_address"]["permission_to_send"]
    )
    return (status, org.list_names(contact), bool(contact.get("phone_numbers")))


SIGNED = {
    "new-sub@example.org",
    "implicit@example.org",
    "notset@example.org",
    "unsub@example.org",
    "deleted@example.org",
    "pending@example.org",
}


def assert_untouched_unsubscribed(org: Org) -> None:
    bodies = json.dumps([e.body for e in org.sandbox.request_log()])
    assert "unsub@example.org" not in bodies
    assert final(org, "unsub@example.org") == ("unsubscribed", set(), False)


def test_mailing_list_contacts_setup(org: Org) -> None:
    """Only sign-ups and explicit contacts are synced, and they end explicit."""
    org.write_config(
        policy={
            "setup": "mailing_list_contacts",
            "lists": {"new": ["Newsletter"], "existing": ["Existing"]},
        }
    )
    seed_account(org)
    org.ingest(batch(SIGNED))
    report = org.run()
    assert final(org, "new-sub@example.org") == ("explicit", {"Newsletter"}, True)
    assert final(org, "new-donor@example.org") == (None, set(), False)
    assert final(org, "explicit@example.org") == ("explicit", {"Existing"}, False)
    assert final(org, "implicit@example.org") == ("explicit", {"Existing"}, False)
    assert final(org, "notset@example.org") == ("explicit", {"Existing"}, False)
    # a contact who never confirmed an earlier sign-up and signs up again: the sign-up form
    assert final(org, "pending@example.org") == ("explicit", {"Existing"}, False)
    assert final(org, "deleted@example.org") == ("explicit", {"Existing"}, False)
    assert_untouched_unsubscribed(org)
    assert report.counts()["skip"] == 2  # the donor who did not sign up, and the unsubscribed
    (pending,) = [o for o in report.outcomes if o.email == "pending@example.org"]
    assert pending.endpoint == "sign_up_form"
    assert "signed up again" in pending.reason


@pytest.mark.parametrize("status", ["implicit", "explicit", "not_set"])
def test_all_contacts_uniform_setup(org: Org, status: str) -> None:
    """Everyone; new contacts get the configured status, existing ones keep theirs."""
    org.write_config(
        policy={
            "setup": "all_contacts_uniform",
            "new_contact_status": status,
            "lists": {"new": ["Donors"], "existing": ["Existing"]},
        }
    )
    seed_account(org)
    org.ingest(batch(SIGNED))
    org.run()
    assert final(org, "new-sub@example.org") == (status, {"Donors"}, True)
    assert final(org, "new-donor@example.org") == (status, {"Donors"}, True)
    for email, permission in EXISTING.items():
        if permission != "unsubscribed":
            assert final(org, email) == (permission, {"Existing"}, False), email
    assert final(org, "deleted@example.org") == ("deleted", set(), False)
    assert_untouched_unsubscribed(org)
    endpoint = {
        "implicit": "/v3/activities/contacts_json_import",
        "explicit": "/v3/contacts/sign_up_form",
        "not_set": "/v3/contacts",
    }[status]
    assert org.sandbox.count_requests("POST", endpoint) >= 1


@pytest.mark.parametrize("status", ["implicit", "not_set"])
def test_all_contacts_by_subscription_setup(org: Org, status: str) -> None:
    """New subscribers explicit, new non-subscribers the configured status, existing kept."""
    org.write_config(
        policy={
            "setup": "all_contacts_by_subscription",
            "new_non_subscriber_status": status,
            "lists": {
                "new_subscribers": ["Subscribers"],
                "new_non_subscribers": ["NonSubscribers"],
                "existing": ["Existing"],
            },
        }
    )
    seed_account(org)
    org.ingest(batch(SIGNED))
    org.run()
    assert final(org, "new-sub@example.org") == ("explicit", {"Subscribers"}, True)
    assert final(org, "new-donor@example.org") == (status, {"NonSubscribers"}, True)
    for email, permission in EXISTING.items():
        if permission != "unsubscribed":
            assert final(org, email) == (permission, {"Existing"}, False), email
    assert final(org, "deleted@example.org") == ("deleted", set(), False)
    assert_untouched_unsubscribed(org)


def test_sign_up_arriving_in_a_later_batch_still_counts(org: Org) -> None:
    """Donation first (new non-subscriber), Mailing List activity of the same transaction later."""
    org.write_config(
        policy={
            "setup": "all_contacts_by_subscription",
            "new_non_subscriber_status": "implicit",
            "lists": {
                "new_subscribers": ["Subscribers"],
                "new_non_subscribers": ["NonSubscribers"],
                "existing": ["Existing"],
            },
        }
    )
    org.ingest([payload("late@example.org", txn="T77")])
    org.run()
    assert final(org, "late@example.org") == ("implicit", {"NonSubscribers"}, True)
    org.ingest([payload("late@example.org", txn="T77", activity="Mailing List", amount="")])
    report = org.run()
    assert final(org, "late@example.org") == ("explicit", {"NonSubscribers", "Subscribers"}, True)
    (outcome,) = [o for o in report.outcomes if o.email == "late@example.org"]
    assert "counts as new" in outcome.reason
    # a later, different transaction of the same person is an existing contact again
    org.ingest([payload("late@example.org", txn="T78", phone="000")])
    third = org.run()
    (outcome,) = [o for o in third.outcomes if o.email == "late@example.org"]
    assert outcome.endpoint == "json_import" and "phone" not in outcome.fields


@pytest.mark.parametrize(
    "sandbox_config",
    [SandboxConfig(requests_per_second=0, activity_seconds=0, confirmed_opt_in=True)],
)
def test_confirmed_opt_in_account_reports_pending(org: Org, sandbox_config: SandboxConfig) -> None:
    """With Confirmed Opt-In, new sign-ups are reported (and end) pending_confirmation."""
    org.write_config(
        constant_contact={"confirmed_opt_in": True},
        policy={
            "setup": "mailing_list_contacts",
            "lists": {"new": ["Newsletter"], "existing": ["Existing"]},
        },
    )
    seed_account(org)
    org.ingest(batch({"new-sub@example.org", "pending@example.org"}))
    report = org.run()
    (outcome,) = [o for o in report.outcomes if o.email == "new-sub@example.org"]
    assert outcome.status_after == "pending_confirmation"
    assert final(org, "new-sub@example.org")[0] == "pending_confirmation"
    # an unconfirmed contact signing up again goes through the sign-up form and stays pending
    (again,) = [o for o in report.outcomes if o.email == "pending@example.org"]
    assert (again.endpoint, again.status_after) == ("sign_up_form", "pending_confirmation")
    assert final(org, "pending@example.org") == ("pending_confirmation", {"Existing"}, False)
    assert not report.warnings  # what flipsync expected is what the account shows


@pytest.mark.parametrize(
    "sandbox_config",
    [SandboxConfig(requests_per_second=0, activity_seconds=0, confirmed_opt_in=True)],
)
def test_confirmed_opt_in_mismatch_is_detected(org: Org, sandbox_config: SandboxConfig) -> None:
    """Config says no Confirmed Opt-In, the account has it: the next run says which setting to fix."""
    org.write_config(
        run={"lookup_strategy": "mirror"},
        policy={
            "setup": "mailing_list_contacts",
            "lists": {"new": ["Newsletter"], "existing": ["Existing"]},
        },
    )
    org.ingest(batch({"new-sub@example.org"}))
    first = org.run()
    (outcome,) = [o for o in first.outcomes if o.email == "new-sub@example.org"]
    assert outcome.status_after == "explicit"  # what the config led flipsync to expect
    org.ingest([payload("another@example.org", activity="Mailing List", amount="")])
    second = org.run()
    assert any("set constant_contact.confirmed_opt_in: true" in w for w in second.warnings)


def test_unsubscribe_during_a_long_run_is_seen_before_the_next_batch(org: Org) -> None:
    """Each batch re-reads what changed: someone who unsubscribes mid-run is not signed up."""
    org.write_config(
        run={"lookup_strategy": "mirror", "batch_size": 2},
        policy={
            "setup": "mailing_list_contacts",
            "lists": {"new": ["Newsletter"], "existing": ["Existing"]},
        },
    )
    org.sandbox.add_contact("bob@example.org", permission="implicit")
    org.sandbox.add_contact("first@example.org", permission="explicit")  # an import to wait for
    org.ingest(
        [
            payload("first@example.org", txn="T1", activity="Mailing List", amount=""),
            payload("other@example.org", txn="T2", activity="Mailing List", amount=""),
            payload("bob@example.org", txn="T3", activity="Mailing List", amount=""),
        ]
    )
    unsubscribed: list[str] = []

    def sleep(_: float) -> None:  # the first batch waits for its import: bob unsubscribes now
        if not unsubscribed:
            org.sandbox.unsubscribe("bob@example.org")
            unsubscribed.append("bob")

    settings = org.settings()
    with org.state() as state:
        report = Syncer(settings, state, build_client(settings, clock=org.clock), sleep=sleep).run()
    assert unsubscribed == ["bob"]
    (bob,) = [o for o in report.outcomes if o.email == "bob@example.org"]
    assert bob.action == "skip" and "unsubscribed" in bob.reason
    assert final(org, "bob@example.org")[0] == "unsubscribed"
