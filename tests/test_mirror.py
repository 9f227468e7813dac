"""Knowing who exists: the cheaper of per-email lookups and the mirror, chosen automatically."""

from __future__ import annotations

from tests.conftest import Org
from tests.helpers import payload


def kinds(report_requests: object) -> dict[str, int]:
    return dict(report_requests)  # type: ignore[call-overload]


def test_few_emails_on_a_cold_mirror_are_looked_up(org: Org) -> None:
    """Two emails, no mirror: two lookups, no counting, no paging."""
    org.sandbox.add_contact("known@example.org", permission="explicit")
    org.ingest([payload("known@example.org"), payload("fresh@example.org")])
    report = org.run()
    assert report.knowledge == ["per-email lookups"]
    assert kinds(report.requests).get("contact_lookup") == 2
    assert "contacts_page" not in report.requests


def seed_over_time(org: Org, count: int) -> None:
    """An account whose contacts changed over hours, as real ones did (not all in one second)."""
    for i in range(count):
        if i % 100 == 0:
            org.sandbox.advance_clock(600)
        org.sandbox.add_contact(f"c{i}@example.org", permission="implicit")
    org.sandbox.advance_clock(600)


def test_mirror_is_built_when_paging_is_cheaper(org: Org) -> None:
    """Five emails against 1,200 contacts: one count, then three pages beat five lookups."""
    seed_over_time(org, 1200)
    org.ingest([payload(f"c{i}@example.org") for i in range(5)])
    report = org.run()
    assert report.knowledge == ["mirror build"]
    assert kinds(report.requests)["contact_count"] == 1
    assert kinds(report.requests)["contacts_page"] == 3

    # three new emails later: the mirror is warm, so one incremental page is enough
    # (it re-reads only what changed since the previous read, with a 2-minute overlap)
    org.ingest([payload(f"n{i}@example.org") for i in range(3)])
    second = org.run()
    assert second.knowledge == ["mirror refresh"]
    assert kinds(second.requests)["contacts_page"] == 1
    assert "contact_count" not in second.requests and "contact_lookup" not in second.requests


def test_three_emails_in_a_large_account_use_lookups(org: Org) -> None:
    """Three emails against 2,000 contacts (4 pages): the count says lookups are cheaper."""
    seed_over_time(org, 2000)
    org.ingest([payload(f"c{i}@example.org") for i in range(3)])
    report = org.run()
    assert report.knowledge == ["per-email lookups"]
    assert kinds(report.requests)["contact_count"] == 1
    assert kinds(report.requests)["contact_lookup"] == 3
    # the account size is remembered: the next small run needs no count
    org.ingest([payload(f"c{i}@example.org") for i in range(3, 6)])
    again = org.run()
    assert "contact_count" not in again.requests


def test_refresh_sees_unsubscribes_and_deletes_made_in_constant_contact(org: Org) -> None:
    """status=all + updated_after: changes made in CC since the last run protect people."""
    org.write_config(run={"lookup_strategy": "mirror"})
    org.ingest([payload("a@example.org"), payload("b@example.org")])
    org.run()
    org.sandbox.unsubscribe("a@example.org")
    org.sandbox.delete_contact("b@example.org")
    org.ingest([payload("a@example.org", first="Again"), payload("b@example.org", first="Again")])
    report = org.run()
    reasons = {o.email: o.reason for o in report.outcomes}
    assert reasons["a@example.org"] == "unsubscribed in Constant Contact: never updated"
    assert reasons["b@example.org"].startswith("deleted in Constant Contact")
    assert org.contact("a@example.org")["first_name"] != "Again"  # type: ignore[index]


def test_lookup_strategy_lookup_never_pages(org: Org) -> None:
    """lookup_strategy: lookup always asks per email."""
    org.write_config(run={"lookup_strategy": "lookup"})
    org.ingest([payload(f"x{i}@example.org") for i in range(6)])
    report = org.run()
    assert kinds(report.requests)["contact_lookup"] == 6
    assert "contacts_page" not in report.requests


def test_a_missing_count_falls_back_instead_of_failing(org: Org) -> None:
    """A server that sends no contacts_count costs a guess, not the run."""
    from unittest import mock

    from flipsync.ctct.client import ConstantContactClient
    from flipsync.errors import UnexpectedResponse

    org.ingest([payload(f"m{i}@example.org") for i in range(4)])
    with mock.patch.object(
        ConstantContactClient, "count_contacts", side_effect=UnexpectedResponse("no count")
    ):
        report = org.run()
    assert report.status == "ok"
    assert report.knowledge == ["per-email lookups"]
