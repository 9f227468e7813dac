"""Issue 13: an uncertain import POST never adopts an activity it cannot prove is its own.

Each scenario has an import activity of the same size in the account that is *not* the
answer to the failed POST: an earlier run's completed import, a foreign import (staff in
Constant Contact's UI), an unfinished one without counts. The import POST then fails with a
500 that applied nothing. Every person must land on their lists in the sandbox; the report
alone is not trusted.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from flipsync.state import utcnow
from tests.conftest import Org
from tests.helpers import payload
from tests.test_faults import IMPORT_PATH, FaultOnFirstCall, run_once, run_until_idle

FIRST = [f"first{i}@example.org" for i in range(4)]
SECOND = [f"second{i}@example.org" for i in range(4)]


def configure(org: Org, **run: Any) -> None:
    org.write_config(
        policy={
            "setup": "all_contacts_uniform",
            "new_contact_status": "implicit",
            "lists": {"new": ["Donors"], "existing": ["Existing"]},
        },
        run={"batch_size": 10, **run},
    )


def lists_of(org: Org, email: str) -> set[str]:
    contact = org.contact(email)
    assert contact is not None, f"{email} never reached Constant Contact"
    return org.list_names(contact)


def import_posts(org: Org) -> list[Any]:
    return [e for e in org.sandbox.request_log() if e.method == "POST" and e.path == IMPORT_PATH]


def assert_everyone_landed(org: Org, emails: list[str]) -> None:
    for email in emails:
        assert lists_of(org, email) == {"Donors"}, email
    with org.state() as state:
        assert state.open_journals() == []
        assert state.retry_seqs() == {}


# -- proof before claim, in process ------------------------------------------------------------


def test_an_earlier_completed_import_of_the_same_size_is_not_adopted(org: Org) -> None:
    """The reported bug: run B's failed POST must not take run A's activity as its own."""
    configure(org)
    org.ingest([payload(e, txn=e) for e in FIRST])
    assert run_once(org).status == "ok"
    org.ingest([payload(e, txn=e) for e in SECOND])
    # A 500 that applied nothing, seconds after run A's import of the same size completed.
    report = run_once(
        org, wrap=FaultOnFirstCall(org.sandbox, "start_json_import", "500", IMPORT_PATH)
    )
    assert report.status == "ok"
    assert len(import_posts(org)) == 3  # run A's, the failed one, and its re-post
    assert_everyone_landed(org, FIRST + SECOND)


@pytest.mark.parametrize(
    ("counts", "finish"),
    [(True, True), (True, False), (False, False)],
    ids=["done", "processing", "no-counts"],
)
def test_a_foreign_import_of_the_same_size_is_not_adopted(
    org: Org, counts: bool, finish: bool
) -> None:
    """Staff imported 4 rows in the UI just before: our failed 4-row import is re-sent."""
    configure(org)
    org.sandbox.add_import_activity(
        [f"staff{i}@example.org" for i in range(4)],
        ["Newsletter"],
        age_seconds=20,
        counts=counts,
        finish=finish,
    )
    org.ingest([payload(e, txn=e) for e in SECOND])
    report = run_once(
        org, wrap=FaultOnFirstCall(org.sandbox, "start_json_import", "500", IMPORT_PATH)
    )
    assert report.status == "ok"
    assert len(import_posts(org)) == 2
    assert_everyone_landed(org, SECOND)


def test_an_unfinished_activity_without_counts_created_after_the_post_is_not_adopted(
    org: Org,
) -> None:
    """Even in the window, an activity with no counts proves nothing: re-post, never assume."""
    configure(org)
    org.ingest([payload(e, txn=e) for e in SECOND])
    box = org.sandbox

    class ForeignDuringPost:
        """Right after the failed POST, someone else's import appears (counts not known yet)."""

        def __call__(self, client: Any) -> Any:
            class Wrapped:
                def __getattr__(self, name: str) -> Any:
                    attr = getattr(client, name)
                    if name != "start_json_import":
                        return attr

                    def call(*args: Any, **kwargs: Any) -> Any:
                        box.fail_next(1, "500", IMPORT_PATH)
                        original = client._find_import

                        def find(*a: Any, **k: Any) -> Any:
                            box.add_import_activity(
                                [f"x{i}@example.org" for i in range(4)],
                                ["Newsletter"],
                                counts=False,
                            )
                            client._find_import = original
                            return original(*a, **k)

                        client._find_import = find
                        return attr(*args, **kwargs)

                    return call

            return Wrapped()

    assert run_once(org, wrap=ForeignDuringPost()).status == "ok"
    assert len(import_posts(org)) == 2
    assert_everyone_landed(org, SECOND)


def test_a_lost_answer_is_still_adopted_when_the_server_clock_is_far_off(org: Org) -> None:
    """CC's clock 10 minutes ahead of ours: the Date header places the window; one POST only."""
    configure(org)
    org.sandbox.advance_clock(600)
    org.ingest([payload(e, txn=e) for e in SECOND])
    report = run_once(
        org, wrap=FaultOnFirstCall(org.sandbox, "start_json_import", "500_after", IMPORT_PATH)
    )
    assert report.status == "ok"
    assert len(import_posts(org)) == 1  # processed, answer lost, proven, adopted
    assert_everyone_landed(org, SECOND)


# -- proof before claim, after a crash ---------------------------------------------------------


class DiesAfterPosting:
    """The import POST leaves and fails (a 500 that applied nothing); the process dies before
    it can search for the activity, leaving the op journaled as posting."""

    def __init__(self, org: Org) -> None:
        self.org = org

    def __call__(self, client: Any) -> Any:
        box = self.org.sandbox

        def die(*_args: Any, **_kwargs: Any) -> Any:
            raise KeyboardInterrupt  # SIGINT-like death between the POST and its answer

        class Wrapped:
            def __getattr__(self, name: str) -> Any:
                attr = getattr(client, name)
                if name != "start_json_import":
                    return attr

                def post_then_die(*args: Any, **kwargs: Any) -> Any:
                    box.fail_next(1, "500", IMPORT_PATH)
                    client._find_import = die
                    return attr(*args, **kwargs)

                return post_then_die

        return Wrapped()


@pytest.mark.parametrize("other", ["earlier-run", "foreign"])
def test_after_a_crash_a_same_size_activity_is_not_adopted(org: Org, other: str) -> None:
    """find_import for a journaled POST without answer follows the same proof rule."""
    configure(org)
    if other == "earlier-run":
        org.ingest([payload(e, txn=e) for e in FIRST])
        assert run_once(org).status == "ok"
    org.ingest([payload(e, txn=e) for e in SECOND])
    with pytest.raises(KeyboardInterrupt):
        run_once(org, wrap=DiesAfterPosting(org))
    if other == "foreign":
        # Someone else's 4-row import, finished just before our dead run's POST.
        org.sandbox.add_import_activity(
            [f"staff{i}@example.org" for i in range(4)], ["Newsletter"], age_seconds=5
        )
    with org.state() as state:
        (journal,) = state.open_journals()
        assert [op.state for op in journal.ops] == ["posting"]
    statuses = run_until_idle(org)
    assert statuses[-1] == "idle"
    assert_everyone_landed(org, SECOND + (FIRST if other == "earlier-run" else []))


def test_every_owned_activity_is_remembered_across_runs(org: Org) -> None:
    """The exclusion list is the state DB's, not the process's."""
    configure(org)
    org.ingest([payload(e, txn=e) for e in FIRST])
    run_once(org)
    activity_ids = {a["activity_id"] for a in org.sandbox.activities()}
    with org.state() as state:
        assert activity_ids and activity_ids <= state.known_activity_ids()


# -- reconciliation -----------------------------------------------------------------------------


def test_a_list_membership_removed_behind_flipsyncs_back_is_repaired(org: Org) -> None:
    """Written, then taken off the list without an updated_at bump: warned, re-sent, repaired."""
    configure(org, lookup_strategy="mirror")
    org.ingest([payload(e, txn=e) for e in FIRST])
    assert org.run().status == "ok"
    org.sandbox.remove_from_list(FIRST[1], "Donors")
    org.ingest([payload("later@example.org", txn="later")])
    second = org.run()
    assert second.writes_resent == 1
    assert any("1 of 4 people" in w and "sent again" in w for w in second.warnings)
    with org.state() as state:
        assert len(state.retry_seqs()) == 1
    third = org.run()
    assert third.records_retried == 1
    assert_everyone_landed(org, [*FIRST, "later@example.org"])


def test_a_second_write_of_a_person_keeps_the_first_ones_lists_to_verify(org: Org) -> None:
    """Two batches write ada: the first write's lists are still checked (and repaired).

    The unproven write of batch 1 (Donors) is not replaced by batch 2's (Existing): if
    batch 1's membership did not stick, the next read sees it missing and sends it again.
    """
    org.write_config(
        policy={
            "setup": "all_contacts_uniform",
            "new_contact_status": "implicit",
            "lists": {"new": ["Donors"], "existing": ["Existing"]},
        },
        run={"batch_size": 1, "lookup_strategy": "mirror"},
    )
    ada = "ada@example.org"
    org.ingest([payload(ada, txn="T1"), payload(ada, first="Ada2", txn="T2")])
    imports = {"n": 0}

    class FirstWriteDoesNotStick:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def start_json_import(self, *args: Any, **kwargs: Any) -> Any:
            imports["n"] += 1
            if imports["n"] == 2:  # batch 1's Donors membership is gone before batch 2
                org.sandbox.remove_from_list(ada, "Donors")
            return self._inner.start_json_import(*args, **kwargs)

    assert run_once(org, wrap=FirstWriteDoesNotStick).status == "ok"
    assert imports["n"] == 2
    with org.state() as state:
        (pending,) = state.pending_expectations()
    names = {lst["list_id"]: lst["name"] for lst in org.sandbox.lists()}
    assert {names[i] for i in pending.list_ids} == {"Donors", "Existing"}
    assert len(pending.seqs) == 2
    org.clock.advance(7200)  # past the wait before a write is checked
    second = run_once(org)
    assert second.writes_resent == 1, second.warnings
    run_until_idle(org)
    contact = org.contact(ada)
    assert contact is not None and "Donors" in org.list_names(contact)


def test_a_wholly_lost_import_is_found_by_one_lookup_and_resent(org: Org) -> None:
    """Lookup strategy, no mirror: one lookup per import decides; a lost one is re-sent whole."""
    configure(org, lookup_strategy="lookup")
    org.ingest([payload(e, txn=e) for e in FIRST])
    assert org.run().status == "ok"
    for email in FIRST:  # as if the import had never been applied to the lists
        org.sandbox.remove_from_list(email, "Donors")
    org.ingest([payload("later@example.org", txn="later")])
    second = org.run()
    assert second.writes_resent == 4
    lookups = second.requests.get("contact_lookup", 0)
    assert lookups == 2  # one for the new person, one to check the earlier import
    org.run()
    assert_everyone_landed(org, [*FIRST, "later@example.org"])


def test_idle_runs_stay_free_and_a_later_one_verifies(org: Org) -> None:
    """No work after a write: the run 30 minutes later pays one refresh and settles it."""
    configure(org, lookup_strategy="mirror")
    org.ingest([payload(e, txn=e) for e in FIRST])
    first = org.run()
    assert first.status == "ok"
    org.sandbox.remove_from_list(FIRST[0], "Donors")
    assert sum(org.run().requests.values()) == 0  # idle right after: nothing sent
    later = org.run(clock=lambda: utcnow() + timedelta(minutes=31))
    assert later.writes_resent == 1 and sum(later.requests.values()) == 1
    org.run()
    assert_everyone_landed(org, FIRST)
