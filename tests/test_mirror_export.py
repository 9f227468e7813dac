"""Issue 9: a large account's mirror is built from two contact exports, not hundreds of pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from flipsync import mirror_export
from flipsync.mirror_export import ExportUnusable
from tests.conftest import Org
from tests.helpers import payload

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def seed(org: Org, count: int) -> None:
    box = org.sandbox
    for i in range(count):
        if i % 500 == 0:
            box.advance_clock(600)
        permission = ("implicit", "explicit", "unsubscribed", "pending_confirmation")[i % 4]
        box.add_contact(
            f"c{i}@example.org", permission=permission, list_ids=["Donors"] if i % 3 == 0 else []
        )
    box.delete_contact("c7@example.org")
    box.advance_clock(600)


def test_a_large_account_is_mirrored_from_two_exports(org: Org) -> None:
    """6,000 contacts (12 pages): two exports instead; every status and list is right."""
    org.write_config(run={"lookup_strategy": "mirror"})
    seed(org, 6000)
    org.ingest(
        [payload("c1@example.org"), payload("c2@example.org", activity="Mailing List", amount="")]
    )
    report = org.run()
    assert report.knowledge == ["mirror build"]
    by_path = [(e.method, e.path) for e in org.api_requests()]
    assert by_path.count(("POST", "/v3/activities/contact_exports")) == 2
    # both exports are queued before either file is read, so they are processed side by side
    posts = [i for i, (m, p) in enumerate(by_path) if p == "/v3/activities/contact_exports"]
    files = [i for i, (m, p) in enumerate(by_path) if p.startswith("/v3/contact_exports/")]
    assert len(files) == 2 and max(posts) < min(files)
    assert by_path.count(("GET", "/v3/contact_lists")) == 1  # the export reuses the run's lists
    pages = [
        e
        for e in org.api_requests()
        if (e.method, e.path) == ("GET", "/v3/contacts") and "include_count" not in e.query
    ]
    assert pages == []  # no paging at all
    assert sum(report.requests.values()) < 20
    names = {lst["list_id"]: lst["name"] for lst in org.sandbox.lists()}
    with org.state() as state:
        mirror = state.mirror_get(c["email_address"]["address"] for c in org.sandbox.contacts())
        for contact in org.sandbox.contacts():
            entry = mirror[contact["email_address"]["address"]]
            assert entry.deleted == bool(contact.get("deleted_at"))
            if not entry.deleted:
                assert entry.permission == contact["email_address"]["permission_to_send"]
                assert {names[i] for i in entry.list_ids} >= {
                    names[i] for i in contact.get("list_memberships", [])
                }
    # the unsubscribed c2 is never signed up again; the deleted c7 would not be restored
    (c2,) = [o for o in report.outcomes if o.email == "c2@example.org"]
    assert c2.action == "skip"


def test_a_failed_export_falls_back_to_paging(org: Org) -> None:
    """A 500 on the export POST (after retries) costs the run nothing but the pages."""
    org.write_config(run={"lookup_strategy": "mirror"})
    seed(org, 6000)
    org.ingest([payload("c1@example.org")])
    org.sandbox.fail_next(10, "500", "/v3/activities/contact_exports")
    report = org.run()
    assert report.status == "ok"
    assert any("page by page" in w for w in report.warnings)
    pages = [e for e in org.api_requests() if (e.method, e.path) == ("GET", "/v3/contacts")]
    assert len(pages) >= 12


def rows(*data: dict[str, str]) -> Iterator[dict[str, str]]:
    yield from data


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ({"Email": "a@x.org", "First name": "A"}, "no permission column"),
        ({"Email address": "a@x.org", "Email status": "Active"}, "no permission column"),
        ({"Email address": "a@x.org", "Email permission status": "Subscribed"}, "unknown value"),
    ],
)
def test_an_export_flipsync_cannot_read_is_refused(row: dict[str, str], why: str) -> None:
    """A guess about consent is never made: unknown columns or values refuse the export."""
    with pytest.raises(ExportUnusable):
        list(mirror_export.entries(rows(row), deleted=False, list_ids_by_name={}, now=NOW))


def test_export_headers_and_values_are_matched_loosely() -> None:
    """Header case and spacing, permission spelling and list names or ids are all understood."""
    lists = {
        "Donors": "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a",
        "News": "1" * 8 + "-1111-1111-1111-" + "1" * 12,
    }
    (entry,) = mirror_export.entries(
        rows(
            {
                "Email Address": " Ada@Example.org ",
                "Email Permission Status": "Pending Confirmation",
                "Email Lists": "Donors; 11111111-1111-1111-1111-111111111111, Unknown",
                "Updated At": "2026-11-30T10:00:00Z",
            }
        ),
        deleted=False,
        list_ids_by_name=lists,
        now=NOW,
    )
    assert entry.email_key == "ada@example.org"
    assert entry.permission == "pending_confirmation"
    assert entry.list_ids == frozenset(lists.values())
    assert entry.updated_at is not None and entry.updated_at.startswith("2026-11-30T10:00:00")
