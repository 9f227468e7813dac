"""End to end: payloads -> ingest -> run against the sandbox -> contacts, statuses, lists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flipsync.cli import build_client
from flipsync.errors import ExitCode
from flipsync.lock import hold_lock
from flipsync.outcomes import RunReport
from flipsync.sync import Syncer
from tests.conftest import Org
from tests.helpers import payload

# The end-to-end tests keep the real HTTP path (sockets, keep-alive, Date headers), and one
# SIGKILLs a `flipsync run` subprocess, which can only reach a real port.
pytestmark = pytest.mark.real_http


def seeded(org: Org) -> dict[str, Any]:
    """Existing contacts of every kind, and the payloads of one Flipcause batch."""
    box = org.sandbox
    box.add_contact(
        "existing@example.org", permission="implicit", first_name="Old", last_name="Name"
    )
    box.add_contact("gone@example.org", permission="unsubscribed")
    box.add_contact("deleted@example.org", permission="implicit", deleted=True)
    payloads = [
        payload("new@example.org", first="Nia", last="New"),
        payload("existing@example.org", first="Ex", last="Isting"),
        payload("gone@example.org", first="Gone", last="Away"),
        payload("deleted@example.org"),
        payload("signup@example.org", activity="Mailing List", amount=""),
        payload("not-an-email"),
        {"webhook_record_id": "merchant-1", "DD_amount": "99"},
    ]
    return {"payloads": payloads}


def test_first_sync_writes_expected_contacts(org: Org) -> None:
    """New people are created implicit with phone and address; existing keep status, get names only."""
    data = seeded(org)
    assert org.ingest(data["payloads"]).added == 7
    report = org.run()

    new = org.contact("new@example.org")
    assert new is not None
    assert new["email_address"]["permission_to_send"] == "implicit"
    assert org.list_names(new) == {"Donors"}
    assert new["phone_numbers"] and new["street_addresses"]

    existing = org.contact("existing@example.org")
    assert existing is not None
    assert existing["email_address"]["permission_to_send"] == "implicit"
    assert (existing["first_name"], existing["last_name"]) == ("Ex", "Isting")
    assert org.list_names(existing) == {"Donors"}
    assert not existing.get("phone_numbers") and not existing.get("street_addresses")

    gone = org.contact("gone@example.org")
    assert gone is not None and gone["email_address"]["permission_to_send"] == "unsubscribed"
    assert not gone.get("list_memberships")
    deleted = org.contact("deleted@example.org")
    assert deleted is not None and deleted.get("deleted_at")
    bodies = json.dumps([e.body for e in org.api_requests()])
    assert "gone@example.org" not in bodies and "deleted@example.org" not in bodies

    assert report.counts() == {"create": 2, "update": 1, "skip": 3, "reject": 1, "deferred": 0}
    reasons = {o.email or o.record_keys[0]: o.reason for o in report.outcomes}
    assert reasons["gone@example.org"] == "unsubscribed in Constant Contact: never updated"
    assert "invalid email" in reasons["not-an-email"]
    assert "no person" in reasons["wh:merchant-1"]
    with org.state() as state:
        assert state.checkpoint == 7
        assert state.open_journals() == []


def test_second_run_without_new_payloads_sends_nothing(org: Org) -> None:
    """An idle run costs zero requests, and re-ingesting the same payloads adds nothing."""
    data = seeded(org)
    org.ingest(data["payloads"])
    org.run()
    contacts_after_first = org.sandbox.contacts()
    org.sandbox.clear_request_log()

    again = org.run()
    assert org.sandbox.request_log() == []
    assert sum(again.requests.values()) == 0 and again.status == "idle"

    assert org.ingest(data["payloads"]).added == 0
    org.run()
    assert org.sandbox.request_log() == []
    assert org.sandbox.contacts() == contacts_after_first


def test_run_report_requests_equal_sandbox_log(org: Org) -> None:
    """The run report's request counts are exactly what the server received."""
    org.ingest(seeded(org)["payloads"])
    org.sandbox.clear_request_log()
    report = org.run()
    assert sum(report.requests.values()) == len(org.sandbox.request_log())


def test_dry_run_leaves_sandbox_and_checkpoint_untouched(org: Org) -> None:
    """A dry run reads, decides and shows the plan; no write request, no checkpoint, no outcome."""
    org.ingest(seeded(org)["payloads"])
    before = org.sandbox.contacts()
    report = org.run(dry_run=True)
    assert {e.method for e in org.sandbox.request_log()} <= {"GET"}
    assert org.sandbox.contacts() == before
    assert org.sandbox.activities() == []
    with org.state() as state:
        assert state.checkpoint == 0
        assert state.recent_runs() == []
    assert dict(report.planned_writes) == {"json_import": 1}  # the forecast of a live run
    planned = {o.email: (o.action, o.endpoint) for o in report.outcomes if o.email}
    assert planned["new@example.org"] == ("create", "json_import")
    # the live run that follows does what the dry run showed
    live = org.run()
    assert {o.email: (o.action, o.endpoint) for o in live.outcomes if o.email} == planned


def test_dry_run_cli_writes_csv_and_json(org: Org) -> None:
    """--output writes the decision record; --json prints a machine-readable plan."""
    org.ingest(seeded(org)["payloads"])
    out = org.tmp / "plan.csv"
    result = org.cli("run", "--dry-run", "--output", str(out))
    assert result.exit_code == 0, result.output
    # The printed plan shortens emails; the --output file has them in full.
    assert "n***@example.org" in result.output and "REASON" in result.output
    assert "new@example.org" not in result.output
    text = out.read_text()
    assert "new@example.org" in text
    assert text.splitlines()[0].startswith("email,action,endpoint")
    assert "unsubscribed in Constant Contact: never updated" in text
    result = org.cli("run", "--dry-run", "--json")
    data = json.loads(result.output)
    assert data["dry_run"] is True and len(data["outcomes"]) == 7


def test_missing_list_stops_before_any_write(org: Org) -> None:
    """A list the account lacks stops the run with its name; nothing is written."""
    org.write_config(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["Donors", "Nope"], "existing": ["Donors"]},
        }
    )
    org.ingest([payload("a@example.org")])
    result = org.cli("run")
    assert result.exit_code == ExitCode.CONFIG
    assert "'Nope'" in result.output and "Nothing was written" in result.output
    assert {e.method for e in org.sandbox.request_log()} <= {"GET"}
    with org.state() as state:
        assert state.checkpoint == 0


def test_second_run_while_one_holds_the_lock_exits_at_once(org: Org) -> None:
    """Two runs never overlap: the second exits with its own code and a clear message."""
    org.ingest([payload("a@example.org")])
    with hold_lock(org.settings().lock_file, "run"):
        result = org.cli("run")
    assert result.exit_code == ExitCode.LOCKED
    assert "another flipsync process" in result.output
    assert org.sandbox.request_log() == []


def test_import_still_processing_keeps_checkpoint_and_finishes_next_run(org: Org) -> None:
    """An import that outlives the run's wait is finished (not re-posted) by the next run."""
    org.write_config(constant_contact={"activity_wait_seconds": 0.001})
    org.ingest([payload("slow@example.org")])
    org.sandbox.hold_activities(True)
    first = org.run()
    assert first.status == "waiting"
    with org.state() as state:
        assert state.checkpoint == 0 and len(state.open_journals()) == 1
    org.sandbox.hold_activities(False)
    org.write_config(constant_contact={"activity_wait_seconds": 30})
    second = org.run()
    assert second.status == "ok"
    imports = org.sandbox.count_requests("POST", "/v3/activities/contacts_json_import")
    assert imports == 1
    assert org.contact("slow@example.org") is not None
    with org.state() as state:
        assert state.checkpoint == 1 and state.open_journals() == []


def test_crash_after_import_accepted_ends_in_the_same_state(org: Org) -> None:
    """Killed after CC accepted the import and before the commit: no duplicate, no loss."""
    payloads = [payload(f"p{i}@example.org") for i in range(5)]
    org.ingest(payloads)
    org.sandbox.hold_activities(True)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flipsync", "-c", str(org.config_path), "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            polled = [
                e
                for e in org.sandbox.request_log()
                if e.path.startswith("/v3/activities/") and e.method == "GET"
            ]
            if polled:
                break
            time.sleep(0.05)
        assert polled, proc.communicate(timeout=5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with org.state() as state:
        assert state.checkpoint == 0
        assert [op.state for j in state.open_journals() for op in j.ops] == ["posted"]
    org.sandbox.hold_activities(False)
    report = org.run()
    assert report.status == "ok"
    assert org.sandbox.count_requests("POST", "/v3/activities/contacts_json_import") == 1
    emails = sorted(c["email_address"]["address"] for c in org.sandbox.contacts())
    assert emails == sorted(p["PD_email"] for p in payloads)
    with org.state() as state:
        assert state.checkpoint == 5 and state.open_journals() == []
        assert all(state.outcomes_for(p["PD_email"]) for p in payloads)


def test_stuck_or_forgotten_import_is_retried_not_waited_on_for_ever(org: Org) -> None:
    """An import still processing after hours sends its people to the retry queue, retried at once."""
    org.write_config(constant_contact={"activity_wait_seconds": 0.001})
    org.ingest([payload("stuck@example.org")])
    org.sandbox.hold_activities(True)
    assert org.run().status == "waiting"
    later = org.run(clock=lambda: datetime.now(UTC) + timedelta(hours=7))
    abandoned = [o for o in later.outcomes if o.action == "deferred"]
    assert len(abandoned) == 1 and "did not finish within 6 hours" in abandoned[0].reason
    assert later.records_retried == 1 and later.status == "waiting"  # a fresh import, held too
    with org.state() as state:
        assert state.checkpoint == 1
        assert [op.state for j in state.open_journals() for op in j.ops] == ["posted"]
    org.sandbox.hold_activities(False)
    org.write_config(constant_contact={"activity_wait_seconds": 30})
    assert org.run().status == "ok"
    assert [c["email_address"]["address"] for c in org.sandbox.contacts()] == ["stuck@example.org"]
    with org.state() as state:
        assert state.retry_seqs() == {} and state.open_journals() == []
        actions = [o.action for o in state.outcomes_for("stuck@example.org")]
    assert actions[0] == "deferred" and actions[-1] in ("create", "update")


def test_activity_unknown_to_constant_contact_is_retried(org: Org) -> None:
    """A 404 for a recorded activity (CC forgets them after 10 days) is not a crash."""
    org.write_config(constant_contact={"activity_wait_seconds": 0.001})
    org.ingest([payload("lost@example.org")])
    org.sandbox.hold_activities(True)
    org.run()
    with org.state() as state:
        (journal,) = state.open_journals()
        state.update_op(journal.ops[0].op_id, state="posted", activity_id=str(uuid.uuid4()))
    org.write_config(constant_contact={"activity_wait_seconds": 30})
    report = org.run()
    (outcome,) = report.outcomes
    assert outcome.action == "deferred" and "no longer known" in outcome.reason


def test_import_row_errors_become_per_person_outcomes(org: Org) -> None:
    """An import row Constant Contact refuses is that person's rejection, with CC's message."""
    org.ingest([payload("good@example.org"), payload("bad@example.org")])
    settings = org.settings()
    with org.state() as state:
        syncer = Syncer(
            settings,
            state,
            build_client(settings, clock=org.clock),
            sleep=org.clock.sleep,
            clock=org.clock.now,
        )
        rows = state.inbox_after(0, 10)
        # Plan as usual, then spoil one row the way only CC could judge it (our own limits
        # would have caught a long name): the mapping from CC's text to the person is tested.
        report = syncer.report = RunReport(
            run_id=syncer.run_id, kind="live", dry_run=False, started_at=""
        )
        original = state.write_journal

        def spoil(journal: Any) -> None:
            op = journal.ops[0]
            op.body["import_data"][1]["cf:unknown_field"] = "x"
            original(journal)

        state.write_journal = spoil  # type: ignore[method-assign]
        assert syncer.process_rows(rows, report, kind="live", dry_run=False, checkpoint=2)
    by_email = {o.email: o for o in report.outcomes}
    assert by_email["good@example.org"].action == "create"
    bad = by_email["bad@example.org"]
    assert bad.action == "reject"
    assert (
        bad.reason
        == "Constant Contact import error: Line 3: Custom field 'unknown_field' does not exist"
    )
    assert org.contact("bad@example.org") is None and org.contact("good@example.org") is not None
