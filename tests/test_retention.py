"""Retention: old payloads, outcomes, run reports and rejects go; unfinished work and consent facts stay."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, timedelta
from pathlib import Path

from flipsync.cli import build_client
from flipsync.errors import ExitCode
from flipsync.lock import hold_lock
from flipsync.retention import prune, unfinished_backfills
from flipsync.state import Journal, StateDB, utcnow
from flipsync.sync import Syncer
from tests.conftest import Org
from tests.helpers import config_dict, payload, settings_from

LATER = timedelta(days=400)  # "now" for prune: everything written during the test is old


def count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def run_and_verify(org: Org) -> None:
    """A run, then the run an hour later that checks its writes reached Constant Contact."""
    assert org.run().status == "ok"
    verify(org)


def verify(org: Org) -> None:
    """The run an hour later that proves earlier writes (so their records are no longer needed)."""
    org.run(clock=lambda: utcnow() + timedelta(hours=1))
    with org.state() as state:
        assert state.pending_expectations() == []


def test_prune_removes_old_data_and_keeps_unfinished_work_and_consent_facts(org: Org) -> None:
    signup = payload("sub@example.org", activity="Mailing List", txn="T-sub", amount="")
    donation = payload("sub@example.org", txn="T-sub")
    synced = [signup, donation, payload("old@example.org"), payload("retry@example.org")]
    org.ingest(synced)
    with org.state() as state:
        state.add_intake_rejects([("file:x", "x: line 1", "not valid JSON")])
    run_and_verify(org)
    waiting = payload("waiting@example.org")
    org.ingest([waiting])  # after the checkpoint: not synced yet
    db = org.settings().state_file
    with org.state() as state:
        assert state.checkpoint == 4
        state.commit_batch(  # seq 4 goes back to the retry queue
            batch_id=None, run_id="r", outcomes=[], checkpoint=None, requeue={4: "test"}
        )
        facts_before = state.transactions_for(["T-sub"])
        mirror_before = state.mirror_count()
        report = prune(state, days=365, now=utcnow() + LATER)
    assert facts_before == {("T-sub", "sub@example.org"): (True, True)}
    c = report.counts
    assert (c.payloads, c.outcomes, c.runs, c.intake_rejects) == (3, 3, 2, 1)
    with org.state() as state:
        rows = {r.seq: r.payload for r in state.inbox_after(0, 100)}
        assert set(rows) == {1, 2, 3, 4, 5}  # tombstones keep their record keys
        assert all(set(rows[s]) == {"flipsync_pruned_before"} for s in (1, 2, 3))
        assert rows[4]["PD_email"] == "retry@example.org"  # in the retry queue
        assert rows[5]["PD_email"] == "waiting@example.org"  # after the checkpoint
        assert state.outcomes_for("old@example.org") == []
        assert state.recent_runs() == []
        assert state.transactions_for(["T-sub"]) == facts_before  # consent facts stay
        assert state.mirror_count() == mirror_before
    assert count(db, "intake_rejects") == 0
    assert any("retry queue" in k for k in report.kept)

    # A tombstone still dedupes: the old payloads sent again are not stored or synced again.
    again = org.ingest(synced)
    assert (again.added, again.duplicates) == (0, 4)
    with org.state() as state:
        nothing_new = prune(state, days=365, now=utcnow() + LATER)
    assert (nothing_new.counts.payloads, nothing_new.counts.outcomes) == (0, 0)


def test_dry_run_counts_and_removes_nothing(org: Org) -> None:
    org.ingest([payload("a@example.org")])
    run_and_verify(org)
    with org.state() as state:
        report = prune(state, days=30, now=utcnow() + LATER, dry_run=True)
        assert (report.counts.payloads, report.counts.outcomes) == (1, 1)
        assert state.outcomes_for("a@example.org") != []
    assert "would remove 1 payload(s), 1 outcome(s), 2 run report(s)" in report.render()


def test_payloads_of_writes_not_yet_seen_in_constant_contact_are_kept(org: Org) -> None:
    """Until the next read proves a write, its records may have to be sent again."""
    org.ingest([payload("unproven@example.org")])
    assert org.run().status == "ok"
    with org.state() as state:
        assert [e.seqs for e in state.pending_expectations()] == [(1,)]
        report = prune(state, days=30, now=utcnow() + LATER)
        assert report.counts.payloads == 0
        assert state.inbox_after(0, 1)[0].payload["PD_email"] == "unproven@example.org"
    assert any("writes not yet seen in Constant Contact" in k for k in report.kept)
    verify(org)
    with org.state() as state:
        assert prune(state, days=30, now=utcnow() + LATER).counts.payloads == 1


def test_recent_data_is_kept(org: Org) -> None:
    org.ingest([payload("new@example.org")])
    org.run()
    with org.state() as state:
        report = prune(state, days=1, now=utcnow())
        assert report.counts == type(report.counts)(0, 0, 0, 0)
        assert len(state.outcomes_for("new@example.org")) == 1


def test_an_open_journal_keeps_its_payloads_and_its_run(tmp_path: Path) -> None:
    settings = settings_from(config_dict(), tmp_path)
    with StateDB.open(settings.state_file) as state:
        state.add_payloads([(f"k{i}", {"n": i}) for i in range(5)], source="t", id_field="x")
        state.commit_batch(batch_id=None, run_id="r0", outcomes=[], checkpoint=5)
        state.start_run("r1", "run", utcnow())
        state.write_journal(
            Journal("b1", "r1", "run", "2026-01-01T00:00:00Z", 3, 5, {"outcomes": []}, ())
        )
        report = prune(state, days=30, now=utcnow() + LATER)
        assert report.counts.payloads == 2 and report.counts.runs == 0
        assert report.keep_from_seq == 3
        assert [r.payload for r in state.inbox_after(2, 10)] == [{"n": 2}, {"n": 3}, {"n": 4}]


def test_an_unfinished_backfill_keeps_what_it_has_not_read(org: Org) -> None:
    """A finished backfill marks itself done; an interrupted one holds back what is after it."""
    org.ingest([payload(f"b{i}@example.org", AD_transaction_date="2026-03-01") for i in range(4)])
    run_and_verify(org)
    settings = org.settings()
    with org.state() as state:
        Syncer(
            settings,
            state,
            build_client(settings, clock=org.clock),
            sleep=org.clock.sleep,
            clock=org.clock.now,
        ).backfill(date(2026, 3, 1), None)
    verify(org)
    with org.state() as state:
        assert unfinished_backfills(state) == {}
        state.set_meta("backfill:2026-01-01:2026-01-31", "2")  # stopped after seq 2
        assert unfinished_backfills(state) == {"2026-01-01:2026-01-31": 2}
        report = prune(state, days=30, now=utcnow() + LATER)
        assert report.counts.payloads == 2 and report.keep_from_seq == 3
        assert any(
            "flipsync backfill --since 2026-01-01 --until 2026-01-31" in k for k in report.kept
        )


def test_a_backfill_over_pruned_payloads_syncs_nothing_and_says_why(org: Org) -> None:
    org.ingest([payload("gone@example.org")])
    run_and_verify(org)
    with org.state() as state:
        prune(state, days=30, now=utcnow() + LATER)
    org.sandbox.clear_request_log()
    result = org.cli("backfill", "--since", "2000-01-01", "--json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)["not_synced"]
    assert "payload removed by retention" in entry["reason"]
    assert not any(e.method == "POST" for e in org.api_requests())


def test_prune_command_uses_the_configured_default_and_the_lock(org: Org) -> None:
    org.write_config(run={"retention_days": 7})
    org.ingest([payload("c@example.org")])
    org.run()
    result = org.cli("--log-format", "console", "prune")  # as at a terminal
    assert result.exit_code == 0, result.output
    assert result.output.startswith("prune (older than 7 days, before ")
    assert "removed 0 payload(s)" in result.output  # nothing is 7 days old yet
    as_json = json.loads(org.cli("prune", "--older-than", "30", "--json").output)
    assert as_json["retention_days"] == 30 and as_json["removed"]["payloads"] == 0
    with hold_lock(org.settings().lock_file, "run"):
        assert org.cli("prune").exit_code == ExitCode.LOCKED


def test_retention_days_is_validated(tmp_path: Path) -> None:
    from flipsync.errors import ConfigError

    try:
        settings_from(config_dict(run={"retention_days": 0}), tmp_path)
    except ConfigError as exc:
        assert "`run.retention_days`: must be a whole number of days" in str(exc)
    else:
        raise AssertionError("retention_days 0 was accepted")
    assert settings_from(config_dict(), tmp_path).run.retention_days == 365


def test_crontab_prunes_only_after_a_good_run(tmp_path: Path) -> None:
    """Each crontab.example line runs `prune` after `run` exits 0, and not after a failure."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    lines = [
        line
        for line in (root / "crontab.example").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#") and "flipsync -c" in line
    ]
    assert len(lines) >= 1
    calls = tmp_path / "calls"
    stub = tmp_path / "flipsync"
    stub.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *" run") exit "$RUN_EXIT";; esac\n'
    )
    stub.chmod(0o755)
    for name in ("example-food-bank", "another-org"):
        (tmp_path / f"{name}.run.env").write_text("")
    for line in lines:
        command = line.split(None, 6)[6]  # after the five time fields and the user
        command = command.replace("/opt/flipsync/.venv/bin/flipsync", str(stub))
        command = command.replace("/etc/flipsync/", f"{tmp_path}/").replace(
            "/var/log/flipsync/", f"{tmp_path}/"
        )
        for run_exit, expect_prune in (("0", True), ("3", False), ("4", False)):
            calls.write_text("")
            subprocess.run(["sh", "-c", command], env={"RUN_EXIT": run_exit}, check=False)
            made = calls.read_text().splitlines()
            assert made[0].endswith(" run")
            assert any(c.endswith(" prune") for c in made) is expect_prune, (run_exit, made)
