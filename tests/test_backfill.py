"""Backfills: a date window processed again, beside cron, resumable, the live checkpoint untouched."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import pytest

from flipsync.cli import build_client
from flipsync.clock import VirtualClock
from flipsync.lock import RUN_LOCK_POLL_SECONDS, hold_lock
from flipsync.sync import Syncer
from tests.conftest import Org
from tests.helpers import payload


def dated(email: str, day: str) -> dict[str, str]:
    return payload(email, AD_transaction_date=day)


def test_backfill_window_leaves_live_checkpoint(org: Org) -> None:
    """Only records of the window are processed again; the live checkpoint does not move."""
    org.ingest(
        [
            dated("jan@example.org", "2026-01-15"),
            dated("feb@example.org", "2026-02-03"),
            payload("nodate@example.org"),
        ]
    )
    org.run()
    org.sandbox.clear_request_log()
    org.ingest([dated("later@example.org", "2026-02-20")])  # waits for the live run
    result = org.cli("backfill", "--since", "2026-02-01", "--until", "2026-02-28", "--json")
    assert result.exit_code == 0, result.output
    imports = [e for e in org.sandbox.request_log() if e.path.endswith("contacts_json_import")]
    emails = sorted(r["email"] for e in imports for r in e.body["import_data"])
    assert emails == ["feb@example.org", "later@example.org"]
    with org.state() as state:
        assert state.checkpoint == 3
        runs = state.recent_runs()
        assert runs[0]["kind"] == "backfill" and runs[0]["status"] == "ok"
        assert [o.action for o in state.outcomes_for("feb@example.org")] == ["create", "update"]


def test_interrupted_backfill_resumes_where_it_stopped(org: Org) -> None:
    """A backfill killed between batches goes on from its last committed batch."""
    org.write_config(run={"batch_size": 2})
    org.ingest([dated(f"b{i}@example.org", "2026-03-01") for i in range(6)])
    settings = org.settings()
    calls = {"n": 0}

    @contextmanager
    def flaky_guard() -> Iterator[None]:
        calls["n"] += 1
        if calls["n"] == 3:  # the guard before the third thing it protects: crash
            raise KeyboardInterrupt
        yield

    with org.state() as state, pytest.raises(KeyboardInterrupt):
        Syncer(
            settings,
            state,
            build_client(settings, clock=org.clock),
            sleep=org.clock.sleep,
            clock=org.clock.now,
        ).backfill(date(2026, 3, 1), None, batch_guard=flaky_guard)
    first = org.sandbox.count_requests("POST", "/v3/activities/contacts_json_import")
    assert first == 1
    with org.state() as state:
        report = Syncer(
            settings,
            state,
            build_client(settings, clock=org.clock),
            sleep=org.clock.sleep,
            clock=org.clock.now,
        ).backfill(date(2026, 3, 1), None)
    assert report.records_read == 4  # the 2 already done are not read again
    assert org.sandbox.count_requests("POST", "/v3/activities/contacts_json_import") == first + 2
    assert len(org.sandbox.contacts()) == 6


def test_a_finished_window_runs_again_from_the_start_as_its_dry_run_plans(org: Org) -> None:
    """After a policy change, the same window again: every record, as the dry run promised."""
    org.ingest([dated(f"w{i}@example.org", "2026-03-01") for i in range(3)])
    assert org.cli("backfill", "--since", "2026-03-01").exit_code == 0
    assert org.sandbox.count_requests("POST", "/v3/activities/contacts_json_import") == 1
    org.write_config(
        policy={
            "setup": "all_contacts_uniform",
            "new_contact_status": "implicit",
            "lists": {"new": ["Donors", "Major"], "existing": ["Donors"]},
        }
    )
    planned = org.cli("backfill", "--since", "2026-03-01", "--dry-run", "--json")
    assert planned.exit_code == 0, planned.output
    again = org.cli("backfill", "--since", "2026-03-01", "--json")
    assert again.exit_code == 0, again.output
    assert "runs again from the start" in again.output
    assert org.sandbox.count_requests("POST", "/v3/activities/contacts_json_import") == 2
    for i in range(3):
        contact = org.contact(f"w{i}@example.org")
        # still new (flipsync created them from these very records), now also on Major
        assert contact is not None and org.list_names(contact) == {"Donors", "Major"}
    with org.state() as state:
        assert [o.action for o in state.outcomes_for("w0@example.org")] == ["create", "update"]
    # finished again: a third time starts over too; an interrupted one would resume
    assert "runs again" in org.cli("backfill", "--since", "2026-03-01", "--json").output


class ReleasesWhenWaitedOn(VirtualClock):
    """Virtual time; the first wait for the organization's lock ends the cron run holding it."""

    def __init__(self, release: threading.Event, worker: threading.Thread) -> None:
        super().__init__()
        self.release, self.worker = release, worker
        self.lock_waits = 0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if seconds == RUN_LOCK_POLL_SECONDS:
            self.lock_waits += 1
            self.release.set()
            self.worker.join()


def test_backfill_waits_for_a_running_cron_job(org: Org) -> None:
    """Each batch takes the organization lock: a backfill waits for a run in progress."""
    org.ingest([dated("w@example.org", "2026-04-01")])
    lock_file = org.settings().lock_file
    held, release = threading.Event(), threading.Event()
    imports_while_held: list[int] = []

    def cron_run() -> None:
        with hold_lock(lock_file, "run"):
            held.set()
            release.wait(30)
            imports_while_held.append(
                org.sandbox.count_requests("POST", "/v3/activities/contacts_json_import")
            )

    worker = threading.Thread(target=cron_run)
    worker.start()
    assert held.wait(5)
    org.clock = ReleasesWhenWaitedOn(release, worker)
    result = org.cli("backfill", "--since", "2026-04-01")
    worker.join()
    assert result.exit_code == 0, result.output
    assert org.clock.lock_waits >= 1  # it waited for the lock instead of giving up
    assert imports_while_held == [0]  # and sent nothing while the run held it
    assert org.contact("w@example.org") is not None


def test_dry_run_backfill_writes_nothing(org: Org) -> None:
    """--dry-run shows the window's plan and leaves CC and the progress alone."""
    org.ingest([dated("d@example.org", "2026-05-05")])
    result = org.cli("backfill", "--since", "2026-05-01", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "d***@example.org" in result.output  # the printed plan shortens emails
    assert {e.method for e in org.sandbox.request_log()} <= {"GET"}
    with org.state() as state:
        assert state.recent_runs() == []
