"""The fleet: directory and check, add, the scheduler (due, idle, isolation, budget), status."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from flipsync import fleet_plan
from flipsync.cli import cli
from flipsync.errors import ConfigError
from flipsync.fleet import load_org, org_names, parse_fleet, read_env_file
from flipsync.fleet_run import load_fleet_state
from flipsync.fleet_status import fleet_status
from tests.fleet_helpers import KEY, FleetBox, max_in_one_second
from tests.helpers import payload

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fb(tmp_path: Path) -> Iterator[FleetBox]:
    box = FleetBox(tmp_path / "fleet")
    box.root.mkdir()
    box.write_fleet()
    yield box
    box.close()


def fleet_cli(fb: FleetBox, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["fleet", "--fleet", str(fb.root), *args])
    return result.exit_code, result.output


# -- fleet.yaml, check, add ---------------------------------------------------------------------


def test_fleet_yaml_problems_are_reported_all_at_once(tmp_path: Path) -> None:
    raw = {
        "daily_request_budget": 0,
        "requests_per_second": 10,
        "max_concurent_orgs": 2,
        "receiver": {"port": "x"},
    }
    with pytest.raises(ConfigError) as err:
        parse_fleet(raw, tmp_path)
    text = str(err.value)
    for key in (
        "application_key",
        "daily_request_budget",
        "requests_per_second",
        "max_concurent_orgs",
        "receiver.port",
    ):
        assert f"`{key}`" in text


def test_fleet_check_names_the_organization_with_each_problem(fb: FleetBox) -> None:
    fb.add("good")
    fb.add("typo", run={"batch_sise": 5})
    fb.add("other-key", constant_contact={"client_id": "another-key"})
    fb.add("no-secret")
    (fb.root / "orgs" / "no-secret" / "flipsync.env").write_text("", encoding="utf-8")
    code, out = fleet_cli(fb, "check")
    assert code == 2
    lines = out.splitlines()
    assert "good: ok" in lines
    assert any(line.startswith("typo: `run.batch_sise`: unknown key") for line in lines)
    assert any(line.startswith("other-key: `constant_contact.client_id`") for line in lines)
    assert any(line.startswith("no-secret: `intake.webhook_secret_env`") for line in lines)
    assert "4 organization(s), 3 with problems" in out


def test_fleet_add_scaffolds_an_org_that_checks_ok(fb: FleetBox) -> None:
    code, out = fleet_cli(
        fb, "add", "riverside-food-bank", "--template", str(ROOT / "config.example.yaml")
    )
    assert code == 0, out
    directory = fb.root / "orgs" / "riverside-food-bank"
    env = directory / "flipsync.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    secret = read_env_file(env)["FLIPSYNC_WEBHOOK_SECRET"]
    assert len(secret) >= 32
    assert f"https://hooks.example.org/riverside-food-bank/flipcause/{secret}" in out
    org = load_org(fb.fleet(), "riverside-food-bank")
    assert org.settings.organization == "riverside-food-bank"
    assert org.settings.constant_contact.client_id == KEY
    assert org.settings.state_file == directory / "state" / "riverside-food-bank.db"
    assert "# the application's API key" in (directory / "flipsync.yaml").read_text()
    code, out = fleet_cli(fb, "check")
    assert code == 2
    assert "riverside-food-bank: login: No Constant Contact token file" in out
    # the fix as it can be pasted from the fleet directory: with the organization's config
    assert f"`flipsync -c {directory / 'flipsync.yaml'} auth login`" in out
    fb.add("other")  # only for its valid token file
    (directory / "state" / "riverside-food-bank.tokens.json").write_bytes(
        (fb.root / "orgs" / "other" / "state" / "tokens.json").read_bytes()
    )
    code, out = fleet_cli(fb, "check")
    assert code == 0, out
    assert "riverside-food-bank: ok" in out
    # Adding it twice changes nothing; a name unfit for a URL is refused with the rule.
    code, out = fleet_cli(
        fb, "add", "riverside-food-bank", "--template", str(ROOT / "config.example.yaml")
    )
    assert code == 2 and "already exists" in out
    assert read_env_file(env)["FLIPSYNC_WEBHOOK_SECRET"] == secret
    code, out = fleet_cli(fb, "add", "Bad_Name", "--template", str(ROOT / "config.example.yaml"))
    assert code == 2 and "lowercase letters, digits and dashes" in out
    assert org_names(fb.fleet()) == ["other", "riverside-food-bank"]


def test_an_org_uses_the_key_budget_of_the_fleet_whatever_its_own_config_says(
    fb: FleetBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    fb.write_fleet(daily_request_budget=5000, requests_per_second=2)
    fb.add("a")
    cc = load_org(fb.fleet(), "a").settings.constant_contact
    assert cc.budget_file == fb.root / "key-budget.json"
    assert cc.daily_request_budget == 5000
    assert cc.requests_per_second == 2
    # Without budget_file: the machine's file of the key, as `flipsync run` of the key uses,
    # never the organization's own (its config says own-budget-ignored-in-a-fleet.json).
    monkeypatch.setenv("XDG_STATE_HOME", str(fb.root / "xdg"))
    fb.write_fleet(budget_file=None)
    cc = load_org(fb.fleet(), "a").settings.constant_contact
    assert cc.budget_file == fb.root / "xdg" / "flipsync" / f"key-{KEY}.json"


# -- the scheduler ------------------------------------------------------------------------------


def test_two_organizations_records_never_mix(fb: FleetBox) -> None:
    fb.add("north")
    fb.add("south")
    fb.ingest("north", [payload("ann@north.example"), payload("nils@north.example")])
    fb.ingest("south", [payload("sam@south.example")])
    report = fb.runner().cycle()
    assert {r.name: r.status for r in report.results} == {"north": "ok", "south": "ok"}
    north, south = fb.boxes["north"].sandbox, fb.boxes["south"].sandbox
    assert sorted(c["email_address"]["address"] for c in north.contacts()) == [
        "ann@north.example",
        "nils@north.example",
    ]
    assert [c["email_address"]["address"] for c in south.contacts()] == ["sam@south.example"]
    with fb.state("north") as state:
        assert state.outcomes_for("sam@south.example") == []
        assert len(state.outcomes_for("ann@north.example")) == 1
    with fb.state("south") as state:
        assert state.outcomes_for("ann@north.example") == []
        assert len(state.outcomes_for("sam@south.example")) == 1


def test_a_broken_config_or_revoked_login_never_stops_another_org(fb: FleetBox) -> None:
    fb.add("broken")
    (fb.root / "orgs" / "broken" / "flipsync.yaml").write_text("policy: [\n", encoding="utf-8")
    fb.add("revoked")
    fb.add("fine")
    fb.ingest("revoked", [payload("rita@example.org")])
    fb.ingest("fine", [payload("fay@example.org")])
    revoked = fb.boxes["revoked"].sandbox
    revoked.expire_access_tokens()
    revoked.revoke_refresh_tokens()
    report = fb.runner().cycle()
    status = {r.name: r.status for r in report.results}
    assert status == {"broken": "config", "revoked": "reauth", "fine": "ok"}
    assert fb.boxes["fine"].sandbox.contact_by_email("fay@example.org") is not None
    assert {r.name for r in report.failures} == {"broken", "revoked"}
    memory = load_fleet_state(fb.root / "fleet-state.json")["orgs"]
    assert memory["revoked"]["runs"] == {"reauth": 1}
    assert memory["fine"]["runs"] == {"ok": 1}
    assert memory["fine"]["requests"]
    # fleet status --check names both, and exits 8.
    code, out = fleet_cli(fb, "status", "--check")
    assert code == 8
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert any(line.startswith("problem: broken: config:") for line in problems)
    assert any(line.startswith("problem: revoked: ") for line in problems)
    assert not any(line.startswith("problem: fine:") for line in problems)


def test_idle_orgs_build_no_client_and_send_nothing(fb: FleetBox) -> None:
    for i in range(6):
        fb.add(f"idle-{i}")
    fb.add("busy")
    for i in range(6):
        fb.ingest(f"idle-{i}", [])  # a state DB with nothing waiting
    fb.ingest("busy", [payload("bo@example.org")])
    report = fb.runner().cycle()
    assert [s.organization for s in fb.built] == ["busy"]
    for i in range(6):
        box = fb.boxes[f"idle-{i}"].sandbox
        assert [e for e in box.request_log() if e.path.startswith("/v3")] == []
    counts = report.counts()
    assert counts == {"idle": 6, "ok": 1}
    # A second cycle at the same time finds nobody due; after the cadence everyone is.
    again = fb.runner().cycle()
    assert again.counts() == {"not_due": 7}
    fb.offset = timedelta(minutes=15)
    later = fb.runner().cycle()
    assert later.counts() == {"idle": 7}
    assert len(fb.built) == 1


def test_slots_spread_orgs_over_the_cadence_and_each_runs_once_per_slot() -> None:
    names = [f"org-{i}" for i in range(500)]
    offsets = [fleet_plan.offset_seconds(n, 900) for n in names]
    assert offsets == [fleet_plan.offset_seconds(n, 900) for n in names]  # stable
    per_minute = [0] * 15
    for offset in offsets:
        per_minute[offset // 60] += 1
    assert min(per_minute) > 15 and max(per_minute) < 55  # about 33 a minute, not 500 at :00
    # Cron every 5 minutes for two hours: every org runs exactly once per 15-minute slot.
    runs = dict.fromkeys(names, 0)
    last: dict[str, int | None] = dict.fromkeys(names)
    start = 1_800_000_000
    for tick in range(0, 7200, 300):
        for n in names:
            if fleet_plan.is_due(n, 900, start + tick, last[n]):
                runs[n] += 1
                last[n] = fleet_plan.slot(n, 900, start + tick)
    assert set(runs.values()) <= {8, 9}


def test_many_orgs_at_once_stay_under_four_requests_a_second_against_the_key(
    fb: FleetBox,
) -> None:
    for name in ("a", "b", "c"):
        fb.add(name)
        fb.ingest(name, [payload(f"{name}{i}@example.org", txn=f"{name}T{i}") for i in range(5)])
    report = fb.runner().cycle()
    assert report.counts() == {"ok": 3}
    assert len(fb.starts) == sum(sum(r.requests.values()) for r in report.results) >= 6
    assert max_in_one_second(fb.starts) <= 4
    gaps = [b - a for a, b in zip(sorted(fb.starts), sorted(fb.starts)[1:], strict=False)]
    assert min(gaps) >= 0.25  # 1.05 / 4 s between starts, whichever thread sends them


# -- the budget rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remaining", "used", "backlog", "minimum", "expected"),
    [
        # a minimum each, the rest by backlog
        (
            1000,
            {"a": 0, "b": 0, "c": 0},
            {"a": 300, "b": 100, "c": 0},
            100,
            {"a": 625, "b": 275, "c": 100},
        ),
        # what an org already used today counts against its minimum
        (1000, {"a": 80, "b": 0}, {"a": 1, "b": 1}, 100, {"a": 20 + 440, "b": 100 + 440}),
        # no backlog anywhere: only the minimums
        (1000, {"a": 0, "b": 0}, {}, 10, {"a": 10, "b": 10}),
        # the key cannot cover every minimum: split in proportion, never more than is left
        (50, {"a": 0, "b": 50, "c": 0}, {"a": 9}, 100, {"a": 20, "b": 10, "c": 20}),
        (0, {"a": 0}, {"a": 10}, 10, {"a": 0}),
    ],
)
def test_budget_shares_a_minimum_each_then_by_backlog(
    remaining: int,
    used: dict[str, int],
    backlog: dict[str, int],
    minimum: int,
    expected: dict[str, int],
) -> None:
    got = fleet_plan.shares(remaining=remaining, used=used, backlog=backlog, minimum=minimum)
    assert got == expected
    assert sum(got.values()) <= remaining


def test_forecast_stretches_the_largest_backlogs_first() -> None:
    fc = fleet_plan.forecast(used=6000, budget=10_000, seconds_into_day=6 * 3600)
    assert fc.short and fc.projected == 24_000 and fc.factor == 3
    cadences = {"big": 15, "bigger": 15, "small": 15}
    backlog = {"big": 2000, "bigger": 6000, "small": 40}
    assert fleet_plan.stretched_cadences(cadences, backlog, fc) == {
        "big": 30,
        "bigger": 45,
        "small": 15,
    }
    fine = fleet_plan.forecast(used=2000, budget=10_000, seconds_into_day=12 * 3600)
    assert not fine.short
    assert fleet_plan.stretched_cadences(cadences, backlog, fine) == cadences


def test_each_org_runs_under_its_share_of_the_day(fb: FleetBox) -> None:
    fb.write_fleet(daily_request_budget=200, minimum_daily_requests_per_org=20)
    fb.add("large")
    fb.add("small")
    fb.add("idle")
    fb.ingest("large", [payload(f"l{i}@example.org", txn=f"L{i}") for i in range(30)])
    fb.ingest("small", [payload("s@example.org")])
    fb.ingest("idle", [])
    report = fb.runner().cycle()
    caps = {s.organization: s.constant_contact.organization_daily_request_budget for s in fb.built}
    # 200 left: 20 each reserved (60), 140 by backlog 30:1:0 -> 135 and 4.
    assert caps == {"large": 20 + 135, "small": 20 + 4}
    assert {r.name: r.share for r in report.results} == {"large": 155, "small": 24, "idle": 20}


def test_a_spent_share_stops_that_org_cleanly_and_not_the_others(fb: FleetBox) -> None:
    fb.write_fleet(daily_request_budget=8, minimum_daily_requests_per_org=4)
    fb.add("large")
    fb.add("small")
    fb.ingest("large", [payload(f"l{i}@example.org", txn=f"L{i}") for i in range(30)])
    fb.ingest("small", [payload("s@example.org")])
    report = fb.runner().cycle()
    status = {r.name: r.status for r in report.results}
    assert status["small"] == "ok"
    assert status["large"] == "quota"
    assert sum(sum(r.requests.values()) for r in report.results) <= 8


# -- status -------------------------------------------------------------------------------------


def test_fleet_status_rows_and_key_totals(fb: FleetBox) -> None:
    fb.add("a")
    fb.add("b")
    fb.ingest("a", [payload("x@example.org")])
    fb.ingest("b", [])
    fb.runner().cycle()
    fb.ingest("b", [payload("y@example.org")])
    status = fleet_status(fb.fleet(), fb.clock())
    rows = {r.name: r for r in status.rows}
    assert rows["a"].last_result == "ok" and rows["a"].backlog == 0
    assert rows["b"].last_result == "idle" and rows["b"].backlog == 1
    assert rows["a"].requests_today > 0 and rows["b"].requests_today == 0
    assert status.key_requests_today == rows["a"].requests_today
    assert rows["a"].login_expires_in_days is not None
    code, out = fleet_cli(fb, "status", "--json")
    assert code == 0
    data = json.loads(out)
    assert [o["organization"] for o in data["organizations"]] == ["a", "b"]
    assert data["application_key_budget"] == 10_000
    code, out = fleet_cli(fb, "status", "--check")
    assert code == 0
    assert out.startswith("ok: 2 organization(s); application key, ")
    assert out.count("\n") == 1  # one line for a monitor, not the table


def test_fleet_run_cli_prints_each_org_and_keeps_its_memory_private(fb: FleetBox) -> None:
    fb.add("a")
    fb.add("b")
    fb.ingest("a", [])
    code, out = fleet_cli(fb, "run", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["counts"] == {"idle": 2}
    mode = os.stat(fb.root / "fleet-state.json").st_mode
    assert stat.S_IMODE(mode) == 0o600
    # --org runs only the ones named and forgets nothing about the others.
    fb.offset = timedelta(minutes=15)
    only = fb.runner().cycle(["a"])
    assert [r.name for r in only.results] == ["a"]
    memory = load_fleet_state(fb.root / "fleet-state.json")["orgs"]
    assert set(memory) == {"a", "b"}
    # An organization removed from the fleet is forgotten.
    import shutil

    shutil.rmtree(fb.root / "orgs" / "b")
    fb.runner().cycle()
    assert set(load_fleet_state(fb.root / "fleet-state.json")["orgs"]) == {"a"}


def test_stopped_cycle_starts_no_org_and_the_next_cycle_runs_them(fb: FleetBox) -> None:
    fb.add("waiting")
    fb.add("quiet")
    fb.ingest("waiting", [payload("w@example.org")])
    fb.ingest("quiet", [])
    runner = fb.runner()
    runner.stop.set()  # what SIGTERM does in `fleet run`
    report = runner.cycle()
    assert report.interrupted
    assert {r.name: r.status for r in report.results} == {"waiting": "not_started", "quiet": "idle"}
    assert fb.built == []
    again = fb.runner().cycle()  # same slot: the org that did not start is still due
    assert {r.name: r.status for r in again.results} == {"waiting": "ok", "quiet": "not_due"}


def test_a_short_budget_stretches_large_backlogs_first_and_status_says_so(fb: FleetBox) -> None:
    from datetime import UTC, datetime

    fb.write_fleet(daily_request_budget=50)
    fb.add("large")
    fb.add("small")
    fb.ingest("large", [payload(f"l{i}@example.org", txn=f"L{i}") for i in range(1000)])
    fb.ingest("small", [payload("s@example.org")])
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    (fb.root / "key-budget.json").write_text(
        json.dumps({"day": today.strftime("%Y-%m-%d"), "total": 45, "organizations": {"x": 45}})
    )
    fb.offset = today + timedelta(hours=2) - fb.clock()  # 02:00 UTC: 45 of 50 spent already
    report = fb.runner().cycle()
    assert report.forecast is not None and report.forecast.short
    cadence = {r.name: r.cadence_minutes for r in report.results}
    assert cadence == {"large": 15 * 8, "small": 15}
    status = {r.name: r for r in fleet_status(fb.fleet(), fb.clock()).rows}
    assert status["large"].stretched and not status["small"].stretched
    assert "cadence stretched to 120 min" in status["large"].notes[0]
    code, out = fleet_cli(fb, "status")
    assert code == 0
    assert "note: large: cadence stretched to 120 min" in out
    memory = load_fleet_state(fb.root / "fleet-state.json")["orgs"]["large"]
    assert memory["base_cadence_minutes"] == 15 and memory["cadence_stretched"] is True
    fb.write_fleet(daily_request_budget=50, cadence_minutes=10)  # a stretch from another base
    status = {r.name: r for r in fleet_status(fb.fleet(), fb.clock()).rows}
    assert not status["large"].stretched and status["large"].cadence_minutes == 10


def test_retention_applies_once_a_day_per_org_as_run_and_prune_does_in_cron(
    fb: FleetBox,
) -> None:
    fb.add("a")
    fb.add("b")
    fb.ingest("a", [payload("x@example.org")])
    fb.ingest("b", [])
    first = fb.runner().cycle()
    assert {r.name: r.status for r in first.results} == {"a": "ok", "b": "idle"}
    memory = load_fleet_state(fb.root / "fleet-state.json")["orgs"]
    today = fb.clock().strftime("%Y-%m-%d")
    assert memory["a"]["pruned_day"] == memory["b"]["pruned_day"] == today
    with fb.state("a") as state:
        assert len(state.recent_runs()) == 1
        assert len(state.outcomes_for("x@example.org")) == 1  # recent: kept
    fb.offset = timedelta(days=400)  # a year later: the first run's records are past retention
    fb.runner().cycle()
    memory = load_fleet_state(fb.root / "fleet-state.json")["orgs"]
    assert memory["a"]["pruned_day"] == fb.clock().strftime("%Y-%m-%d")
    with fb.state("a") as state:
        assert state.outcomes_for("x@example.org") == []
        assert all(r["started_at"][:10] != today for r in state.recent_runs())


def test_an_unreadable_state_db_is_reported_as_such_and_stops_nobody(fb: FleetBox) -> None:
    fb.add("torn")
    fb.add("fine")
    fb.ingest("fine", [payload("f@example.org")])
    (fb.root / "orgs" / "torn" / "state" / "torn.db").write_bytes(b"not a database at all" * 10)
    report = fb.runner().cycle()
    status = {r.name: r for r in report.results}
    assert status["fine"].status == "ok"
    assert status["torn"].status == "state"
    assert "torn.db" in (status["torn"].message or "")


def test_a_missing_or_broken_fleet_yaml_names_the_file_and_the_fix(fb: FleetBox) -> None:
    (fb.root / "fleet.yaml").write_text("application_key: [\n", encoding="utf-8")
    code, out = fleet_cli(fb, "status")
    assert code == 2 and "fleet.yaml" in out and "not valid YAML at line" in out
    (fb.root / "fleet.yaml").unlink()
    code, out = fleet_cli(fb, "run")
    assert code == 2 and "contrib/fleet/fleet.example.yaml" in out


def test_two_orgs_sharing_a_state_file_are_refused_so_records_cannot_mix(fb: FleetBox) -> None:
    fb.add("one")
    fb.add("two", state_file="../one/state/one.db")
    fb.add("three")
    fb.ingest("one", [payload("o@example.org")])
    fb.ingest("three", [payload("t@example.org")])
    code, out = fleet_cli(fb, "check")
    assert code == 2
    assert any(
        line.startswith("one: `state_file`") and "is also two's" in line
        for line in out.splitlines()
    )
    assert any(line.startswith("two: `state_file`") for line in out.splitlines())
    report = fb.runner().cycle()
    status = {r.name: r.status for r in report.results}
    assert status == {"one": "config", "two": "config", "three": "ok"}
    assert fb.boxes["one"].sandbox.contacts() == []
    assert fb.boxes["two"].sandbox.contacts() == []


def test_an_org_still_running_from_an_earlier_cycle_is_locked_not_failed_and_stays_due(
    fb: FleetBox,
) -> None:
    from flipsync.lock import hold_lock

    fb.add("busy")
    fb.add("other")
    fb.ingest("busy", [payload("b@example.org")])
    fb.ingest("other", [payload("o@example.org")])
    with hold_lock(fb.root / "orgs" / "busy" / "state" / "busy.db.lock", "run"):
        report = fb.runner().cycle()  # the earlier cycle still holds busy
    assert {r.name: r.status for r in report.results} == {"busy": "locked", "other": "ok"}
    assert report.failures == []
    again = fb.runner().cycle()
    assert {r.name: r.status for r in again.results} == {"busy": "ok", "other": "not_due"}
    memory = load_fleet_state(fb.root / "fleet-state.json")["orgs"]
    assert memory["busy"]["runs"] == {"locked": 1, "ok": 1}
    assert memory["busy"]["consecutive_failures"] == 0


def test_in_cron_each_org_run_and_the_cycle_are_one_json_line_each(fb: FleetBox) -> None:
    fb.write_fleet(requests_per_second=4)
    fb.add("quiet")
    fb.add("broken")
    (fb.root / "orgs" / "broken" / "flipsync.yaml").write_text("policy: [\n", encoding="utf-8")
    fb.ingest("quiet", [])
    result = CliRunner().invoke(
        cli, ["--log-format", "json", "fleet", "--fleet", str(fb.root), "run"]
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    (summary,) = [e for e in events if e["event"] == "fleet_run_finished"]
    assert summary["counts"] == {"config": 1, "idle": 1}
    assert summary["failed"] == {"broken": "config"}
    assert summary["level"] == "error"


def test_each_org_run_is_its_own_run_finished_event_with_its_organization(
    fb: FleetBox, capsys: pytest.CaptureFixture[str]
) -> None:
    from flipsync import logs

    fb.add("north")
    fb.add("south")
    fb.ingest("north", [payload("ann@north.example")])
    fb.ingest("south", [payload("sam@south.example")])
    logs.configure("warning", "json")
    try:
        fb.runner().cycle()
    finally:
        logs.configure("warning", "console")
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finished = {e["organization"]: e for e in events if e["event"] == "run_finished"}
    assert set(finished) == {"north", "south"}
    assert finished["north"]["status"] == "ok" and finished["north"]["records"]["read"] == 1
    assert "ann@north.example" not in json.dumps(events)  # counts and ids, no personal data


def test_a_lowered_cadence_is_no_stretch_only_a_budget_stretch_from_today_s_cadence_is(
    fb: FleetBox,
) -> None:
    fb.write_fleet(cadence_minutes=30)
    fb.add("a")
    fb.ingest("a", [payload("a@example.org")])
    fb.runner().cycle()
    memory = load_fleet_state(fb.root / "fleet-state.json")["orgs"]["a"]
    assert (memory["cadence_minutes"], memory["base_cadence_minutes"]) == (30, 30)
    assert memory["cadence_stretched"] is False
    fb.write_fleet(cadence_minutes=15)  # the operator lowers the cadence; usage is tiny
    (row,) = fleet_status(fb.fleet(), fb.clock()).rows
    assert (row.cadence_minutes, row.stretched, row.notes) == (15, False, [])
    code, out = fleet_cli(fb, "status")
    assert code == 0 and "stretched" not in out
    # Memory written before the base was remembered is still read, and claims no stretch.
    path = fb.root / "fleet-state.json"
    data = json.loads(path.read_text())
    data["orgs"]["a"] = {"cadence_minutes": 120, "last_status": "ok"}
    path.write_text(json.dumps(data))
    (row,) = fleet_status(fb.fleet(), fb.clock()).rows
    assert (row.cadence_minutes, row.stretched, row.last_result) == (15, False, "ok")
    # The next cycle plans again from the configured cadence.
    fb.offset = timedelta(minutes=30)
    fb.runner().cycle()
    memory = load_fleet_state(path)["orgs"]["a"]
    assert (memory["cadence_minutes"], memory["base_cadence_minutes"]) == (15, 15)


def test_run_with_an_unknown_org_is_a_usage_error_naming_the_known_ones(fb: FleetBox) -> None:
    fb.add("north")
    fb.add("south")
    code, out = fleet_cli(fb, "run", "--org", "nort")
    assert code == 2, out
    assert "no organization of that name" in out and str(fb.root / "orgs") in out
    assert "did you mean 'north'?" in out
    assert "flipsync fleet --fleet" in out and "add nort" in out
    assert "copy config.example.yaml" not in out
    code, out = fleet_cli(fb, "run", "--org", "north", "--org", "zzz-elsewhere")
    assert code == 2
    assert "the fleet's organizations are: north, south." in out
    assert not (fb.root / "fleet-state.json").exists()  # nothing ran


def test_a_placeholder_key_fails_check_and_add_refuses_to_copy_it(fb: FleetBox) -> None:
    fb.write_fleet(application_key="your-application-api-key")
    code, out = fleet_cli(fb, "check")
    assert code == 2, out
    assert "fleet.yaml: `application_key`: 'your-application-api-key' is a placeholder" in out
    code, out = fleet_cli(fb, "add", "new-org", "--template", str(ROOT / "config.example.yaml"))
    assert code == 2, out
    assert "`application_key`: 'your-application-api-key' is a placeholder" in out
    assert not (fb.root / "orgs" / "new-org").exists()


def test_a_foreign_key_offers_both_fixes_and_hides_no_other_problem(fb: FleetBox) -> None:
    directory = fb.add("other-key", constant_contact={"client_id": "another-key"})
    (directory / "state" / "tokens.json").unlink()
    code, out = fleet_cli(fb, "check")
    assert code == 2
    lines = [line for line in out.splitlines() if line.startswith("other-key: ")]
    (key_line,) = [line for line in lines if "`constant_contact.client_id`" in line]
    assert f"set `constant_contact.client_id` to {KEY} in {directory / 'flipsync.yaml'}" in key_line
    assert "move this organization to the fleet of its key" in key_line
    assert any(
        line.startswith("other-key: login: No Constant Contact token file") for line in lines
    )
