"""Faults against the sandbox: every scenario ends where a fault-free run of the same payloads ends.

Each test runs the same Flipcause payloads twice: once against a fault-free sandbox (the
reference) and once against a sandbox that fails in one way (random 500/503 and dropped
connections, lost answers to the import POST, throttle bursts and the real 4/s limit, access
tokens expiring mid-run, the daily quota, a revoked refresh token, a process killed with
SIGKILL). The faulty side runs again until a run is idle, a bounded number of times, and must
then hold exactly the reference's contacts (email, permission, lists, names, phone and address
presence), with every import row applied as often as in the reference (no duplicate import)
and every payload committed with an outcome (nothing lost).

Runs use the product's own client built by ``build_client``; only its retry policy is swapped
for one without waits (``RetryPolicy.no_wait``), and the organization and its sandbox share a
virtual clock (the ``clock`` fixture), so rate spacing, token expiry and import polls cost no
real time. Runs started as a subprocess (the SIGKILL tests) use the production policy and the
real clock.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from flipsync.cli import build_client
from flipsync.clients import new_session
from flipsync.clock import SYSTEM_CLOCK, Clock, VirtualClock
from flipsync.ctct.auth import (
    TokenManager,
    read_token_file,
    token_set_from_response,
    write_token_file,
)
from flipsync.ctct.http import RetryPolicy, next_utc_midnight, process_limiter
from flipsync.ctct.types import ClientSettings
from flipsync.errors import ExitCode, FlipsyncError, ReauthRequired
from flipsync.outcomes import RunReport
from flipsync.sandbox import (
    FAULT_KINDS,
    RequestLogEntry,
    Sandbox,
    SandboxConfig,
)
from flipsync.sandbox.inprocess import start_in_process
from flipsync.sync import Syncer
from tests.conftest import Org
from tests.helpers import payload

FAST = SandboxConfig(requests_per_second=0, activity_seconds=0)
NO_WAIT = RetryPolicy.no_wait(max_attempts=5)
IMPORT_PATH = "/v3/activities/contacts_json_import"
LISTS = ("Donors", "Major", "Newsletter", "Subscribers", "NonSubscribers", "Existing")
MAX_RUNS = 12


# -- scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Config overrides, the account's contacts before the first run, and the payloads."""

    overrides: dict[str, Any]
    payloads: list[dict[str, Any]]
    existing: dict[str, str] = field(default_factory=dict)
    deleted: tuple[str, ...] = ()

    def seed(self, box: Sandbox) -> None:
        for email, permission in self.existing.items():
            box.add_contact(email, permission=permission, first_name="Old", last_name="Name")
        for email in self.deleted:
            box.add_contact(email, permission="implicit", deleted=True)


def mixed(new_non_subscriber_status: str = "implicit", batch_size: int = 5) -> Scenario:
    """Every endpoint: imports, sign-ups and (with not_set) creates, over several batches."""
    existing = {
        "e-implicit@example.org": "implicit",
        "e-explicit@example.org": "explicit",
        "e-notset@example.org": "not_set",
        "e-unsub@example.org": "unsubscribed",
    }
    payloads = []
    for i in range(4):
        payloads.append(payload(f"donor{i}@example.org", first=f"Dön{i}", last="Ör", txn=f"D{i}"))
    for i in range(2):
        email = f"sub{i}@example.org"
        payloads.append(payload(email, first=f"Sub{i}", txn=f"S{i}"))
        payloads.append(payload(email, activity="Mailing List", amount="", txn=f"S{i}"))
    for i, email in enumerate([*existing, "gone@example.org"]):
        payloads.append(payload(email, first="New", last=f"Name{i}", txn=f"E{i}"))
    return Scenario(
        overrides={
            "policy": {
                "setup": "all_contacts_by_subscription",
                "new_non_subscriber_status": new_non_subscriber_status,
                "lists": {
                    "new_subscribers": ["Subscribers"],
                    "new_non_subscribers": ["NonSubscribers"],
                    "existing": ["Existing"],
                },
            },
            "run": {"batch_size": batch_size},
        },
        payloads=payloads,
        existing=existing,
        deleted=("gone@example.org",),
    )


def donors(count: int = 9, batch_size: int = 3, **cc: Any) -> Scenario:
    """New donors only: one JSON import of the same size per batch."""
    return Scenario(
        overrides={
            "policy": {
                "setup": "all_contacts_uniform",
                "new_contact_status": "implicit",
                "lists": {"new": ["Donors"], "existing": ["Existing"]},
            },
            "run": {"batch_size": batch_size},
            "constant_contact": cc,
        },
        payloads=[payload(f"d{i}@example.org", first=f"D{i}", txn=f"T{i}") for i in range(count)],
    )


# -- running and observing -------------------------------------------------------------------


def run_once(
    org: Org,
    *,
    sleep: Callable[[float], None] = lambda _s: None,
    retry: RetryPolicy = NO_WAIT,
    wrap: Callable[[Any], Any] = lambda client: client,
) -> RunReport:
    """One live run in this process, as `flipsync run` does it, with the given retry policy."""
    settings = org.settings()
    with org.state() as state:
        api = wrap(build_client(settings, retry=retry, clock=org.clock))
        return Syncer(settings, state, api, sleep=sleep, clock=org.clock.now).run()


class FaultOnFirstCall:
    """The real client; right before the first call of `method`, one sandbox fault is scripted.

    Scripted faults match by path prefix only, and GET /v3/contacts (knowledge) comes before
    any POST /v3/contacts: arming the fault at the call puts it on the POST.
    """

    def __init__(self, box: Sandbox, method: str, kind: str, path: str) -> None:
        self.box, self.method, self.kind, self.path = box, method, kind, path
        self.armed = False

    def __call__(self, client: Any) -> Any:
        spec = self

        class Wrapped:
            def __getattr__(self, name: str) -> Any:
                attr = getattr(client, name)
                if name != spec.method or spec.armed:
                    return attr

                def first_call(*args: Any, **kwargs: Any) -> Any:
                    spec.armed = True
                    spec.box.fail_next(1, spec.kind, spec.path)
                    return attr(*args, **kwargs)

                return first_call

        return Wrapped()


def run_until_idle(org: Org, **kwargs: Any) -> list[str]:
    """Run again after every failure until a run finds nothing left to do (bounded)."""
    seen: list[str] = []
    for _ in range(MAX_RUNS):
        try:
            report = run_once(org, **kwargs)
        except FlipsyncError as exc:
            seen.append(type(exc).__name__)
            continue
        seen.append(report.status)
        if report.status == "idle":
            return seen
    raise AssertionError(f"no idle run after {MAX_RUNS} runs: {seen}")


Snapshot = dict[str, tuple[Any, ...]]


def snapshot(box: Sandbox) -> Snapshot:
    """What the account holds per email: status, lists, names, phone and address presence."""
    names = {lst["list_id"]: lst["name"] for lst in box.lists()}
    out: Snapshot = {}
    for contact in box.contacts():
        email = contact["email_address"]["address"].lower()
        assert email not in out, f"{email} is in the account twice"
        status = (
            "deleted"
            if contact.get("deleted_at")
            else contact["email_address"]["permission_to_send"]
        )
        out[email] = (
            status,
            frozenset(names[i] for i in contact.get("list_memberships", [])),
            contact.get("first_name"),
            contact.get("last_name"),
            bool(contact.get("phone_numbers")),
            bool(contact.get("street_addresses")),
        )
    return out


def processed_imports(log: list[RequestLogEntry]) -> list[RequestLogEntry]:
    """Import POSTs the account acted on (answered 201, or processed before a lost answer)."""
    return [
        e
        for e in log
        if e.method == "POST"
        and e.path == IMPORT_PATH
        and not e.rejected
        and (e.status == 201 or e.fault in ("500_after", "drop_after"))
    ]


def imported_rows(log: list[RequestLogEntry]) -> Counter[str]:
    """How many processed import POSTs carried each email."""
    return Counter(
        row["email"].lower() for e in processed_imports(log) for row in e.body["import_data"]
    )


@dataclass(frozen=True)
class Final:
    """The end state a scenario must reach, and the API requests the fault-free run made."""

    contacts: Snapshot
    rows: Counter[str]
    requests: tuple[tuple[str, str], ...]


def new_org(tmp: Path, running: Any, scenario: Scenario, clock: Clock) -> Org:
    """An organization like the `org` fixture's, on the given sandbox and clock."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in LISTS:
        running.sandbox.add_list(name)
    org = Org(tmp, running, tmp / "flipsync.yaml", clock)
    org.write_config(**scenario.overrides)
    write_token_file(
        tmp / "tokens.json", token_set_from_response(running.sandbox.issue_tokens(), clock.now())
    )
    return org


def reference(tmp_path: Path, scenario: Scenario) -> Final:
    """The fault-free end state of a scenario, from its own sandbox (on its own virtual clock)."""
    clock = VirtualClock()
    running = start_in_process(Sandbox(FAST, clock=clock.time))
    try:
        ref = new_org(tmp_path / "reference", running, scenario, clock)
        scenario.seed(ref.sandbox)
        ref.ingest(scenario.payloads)
        assert run_until_idle(ref) == ["ok", "idle"]
        log = ref.sandbox.request_log()
        final = Final(
            snapshot(ref.sandbox),
            imported_rows(log),
            tuple((e.method, e.path) for e in log if e.path.startswith("/v3")),
        )
    finally:
        running.stop()
    assert final.rows and all(n == 1 for n in final.rows.values())
    return final


def prepare(org: Org, scenario: Scenario) -> None:
    """Configure the fixture's organization for a scenario, seed its account, ingest."""
    org.write_config(**scenario.overrides)
    scenario.seed(org.sandbox)
    assert org.ingest(scenario.payloads).added == len(scenario.payloads)


def assert_same_end(org: Org, scenario: Scenario, expected: Final) -> None:
    """Same contacts as the reference, no import row applied twice, every payload committed."""
    assert snapshot(org.sandbox) == expected.contacts
    assert imported_rows(org.sandbox.request_log()) == expected.rows
    with org.state() as state:
        assert state.checkpoint == len(scenario.payloads)
        assert state.open_journals() == []
        assert state.retry_seqs() == {}
        emails = {str(p["PD_email"]).lower() for p in scenario.payloads}
        assert all(state.outcomes_for(e) for e in emails), "a payload has no outcome"


# -- random faults -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["implicit", "not_set"])
@pytest.mark.parametrize(
    "sandbox_config",
    [
        replace(FAST, fault_rate=0.3, fault_seed=1, fault_kinds={"500", "503"}),
        replace(FAST, fault_rate=0.3, fault_seed=2, fault_kinds={"500", "503"}),
        replace(FAST, fault_rate=0.25, fault_seed=3, fault_kinds=FAULT_KINDS),
        replace(FAST, fault_rate=0.25, fault_seed=4, fault_kinds=FAULT_KINDS),
    ],
    ids=["5xx-seed1", "5xx-seed2", "all-kinds-seed3", "all-kinds-seed4"],
)
def test_random_faults_end_like_a_fault_free_run(
    org: Org, tmp_path: Path, sandbox_config: SandboxConfig, status: str
) -> None:
    """Random 500/503 and dropped connections (before or after processing): same end, no duplicate."""
    scenario = mixed(status)
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)
    run_until_idle(org)
    assert_same_end(org, scenario, expected)
    faults = Counter(e.fault for e in org.sandbox.request_log() if e.fault)
    assert sum(faults.values()) >= 3, faults  # the faults really happened


# -- lost answers and refused posts on the write endpoints ----------------------------------


@pytest.mark.parametrize("kind", ["500", "503", "drop", "500_after", "drop_after"])
def test_import_post_failure_is_adopted_or_posted_again_never_twice(
    org: Org, tmp_path: Path, kind: str
) -> None:
    """A processed import whose answer was lost is found and adopted; a refused one is re-posted."""
    scenario = donors(count=4, batch_size=10)
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)
    org.sandbox.fail_next(1, kind, IMPORT_PATH)
    assert run_until_idle(org) == ["ok", "idle"]
    assert_same_end(org, scenario, expected)
    log = org.sandbox.request_log()
    posts = [e for e in log if e.method == "POST" and e.path == IMPORT_PATH]
    if kind.endswith("_after"):
        # processed but unanswered: the client looked at GET /activities instead of re-posting
        assert len(posts) == 1
        after = log[log.index(posts[0]) + 1]
        assert (after.method, after.path) == ("GET", "/v3/activities")
    else:
        assert len(posts) == 2 and posts[0].rejected and not posts[1].rejected


@pytest.mark.parametrize("kind", ["500_after", "drop_after", "503", "drop"])
@pytest.mark.parametrize("path", ["/v3/contacts/sign_up_form", "/v3/contacts"])
def test_single_contact_post_failure_ends_in_the_same_state(
    org: Org, tmp_path: Path, path: str, kind: str
) -> None:
    """Sign-up form and create-contact posts with lost answers: same contacts, each created once."""
    scenario = mixed("not_set", batch_size=50)
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)
    method = "sign_up" if path.endswith("sign_up_form") else "create_contact"
    assert run_until_idle(org, wrap=FaultOnFirstCall(org.sandbox, method, kind, path)) == [
        "ok",
        "idle",
    ]
    assert_same_end(org, scenario, expected)
    log = org.sandbox.request_log()
    hit = next(e for e in log if e.fault == kind)
    assert (hit.method, hit.path) == ("POST", path)
    if path == "/v3/contacts" and kind.endswith("_after"):
        # the create landed; posting it again drew 409, which flipsync took as its own create
        posts = [e for e in log if e.method == "POST" and e.path == path]
        assert posts[posts.index(hit) + 1].status == 409
        assert posts[posts.index(hit) + 1].body == hit.body


# -- throttling --------------------------------------------------------------------------------


@pytest.mark.parametrize(("burst", "runs"), [(3, ["ok", "idle"]), (12, None)])
def test_throttle_bursts_are_waited_out(
    org: Org, tmp_path: Path, burst: int, runs: list[str] | None
) -> None:
    """429 throttled bursts: retried with backoff, or (a long burst) left for the next run."""
    scenario = mixed()
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)
    org.sandbox.fail_next(burst, "throttle")
    seen = run_until_idle(org)
    if runs is not None:
        assert seen == runs
    else:
        assert seen[0] == "TransientError" and seen[-2:] == ["ok", "idle"]
    assert_same_end(org, scenario, expected)
    throttled = [e for e in org.sandbox.request_log() if e.error_key == "throttled"]
    assert len(throttled) == burst


@pytest.mark.parametrize(
    "sandbox_config", [SandboxConfig(requests_per_second=4, activity_seconds=0)], ids=["4-per-s"]
)
def test_client_limiter_keeps_under_the_real_rate_limit(
    org: Org, tmp_path: Path, sandbox_config: SandboxConfig
) -> None:
    """Against the sandbox's real 4 requests/s limit, the client's limiter draws no 429 at all."""
    scenario = mixed(batch_size=50)
    expected = reference(tmp_path, scenario)
    org.write_config(**scenario.overrides, constant_contact={"requests_per_second": 4})
    scenario.seed(org.sandbox)
    org.ingest(scenario.payloads)
    assert run_until_idle(org) == ["ok", "idle"]
    assert_same_end(org, scenario, expected)
    api = [e for e in org.sandbox.request_log() if e.path.startswith("/v3")]
    assert len(api) >= 6
    assert not [e for e in api if e.status == 429]
    # the limiter did the pacing: the requests took at least a quarter second each
    assert api[-1].timestamp - api[0].timestamp >= (len(api) - 1) / 4


# -- tokens ------------------------------------------------------------------------------------


def refresh_works(org: Org) -> bool:
    """Whether the token file's refresh token is still accepted (spends it, like a real run)."""
    settings = org.settings()
    cc = settings.constant_contact
    client_settings = ClientSettings(
        api_base_url=cc.api_base_url,
        oauth_base_url=cc.oauth_base_url,
        client_id=cc.client_id,
        token_file=cc.token_file,
    )
    manager = TokenManager(
        client_settings,
        new_session("test"),
        retry=NO_WAIT,
        clock=org.clock.now,
        sleep=org.clock.sleep,
        limiter=process_limiter(1.0, key="token", clock=org.clock),
    )
    try:
        manager.refresh(manager.current().access_token)
    except ReauthRequired:
        return False
    return True


@pytest.mark.parametrize(
    "sandbox_config",
    [FAST, SandboxConfig(requests_per_second=0, activity_seconds=0, rotating_refresh_tokens=False)],
    ids=["rotating", "long-lived"],
)
def test_access_token_expiring_between_requests(
    org: Org, tmp_path: Path, sandbox_config: SandboxConfig
) -> None:
    """Tokens expire before every activity poll: 401, one refresh, resend; the newest set is kept."""
    scenario = donors(count=6, batch_size=3)
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)
    token_file = org.settings().constant_contact.token_file
    before = read_token_file(token_file)
    assert run_until_idle(org, sleep=lambda _s: org.sandbox.expire_access_tokens()) == [
        "ok",
        "idle",
    ]
    assert_same_end(org, scenario, expected)
    log = org.sandbox.request_log()
    assert len([e for e in log if e.status == 401]) == 2  # one per batch's poll
    assert len([e for e in log if e.path.endswith("/token")]) == 2
    after = read_token_file(token_file)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert after.access_token != before.access_token
    if sandbox_config.rotating_refresh_tokens:
        assert after.refresh_token != before.refresh_token
    else:
        assert after.refresh_token == before.refresh_token
    assert refresh_works(org)  # the file holds the newest set: the server still accepts it


@pytest.mark.parametrize(
    "sandbox_config",
    [SandboxConfig(requests_per_second=0, activity_seconds=0, token_lifetime_seconds=2)],
    ids=["2s-tokens"],
)
def test_short_lived_tokens_are_refreshed_before_they_expire(
    org: Org, tmp_path: Path, sandbox_config: SandboxConfig
) -> None:
    """Access tokens living 2 s, a run lasting longer: refreshed ahead of expiry, no 401, kept 0600."""
    scenario = donors(count=4, batch_size=2)
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)
    token_file = org.settings().constant_contact.token_file
    first = read_token_file(token_file)
    assert run_until_idle(org, sleep=lambda _s: org.clock.sleep(1.1)) == ["ok", "idle"]
    assert_same_end(org, scenario, expected)
    log = org.sandbox.request_log()
    assert not [e for e in log if e.status == 401]
    assert len([e for e in log if e.path.endswith("/token")]) >= 2
    assert read_token_file(token_file).refresh_token != first.refresh_token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert refresh_works(org)


def test_revoked_refresh_token_exits_6_and_resumes_after_login(org: Org, tmp_path: Path) -> None:
    """invalid_grant: exit code 6 naming `flipsync auth login`, nothing written; a login resumes."""
    scenario = mixed()
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)
    org.sandbox.revoke_refresh_tokens()
    org.sandbox.expire_access_tokens()
    result = org.cli("run")
    assert result.exit_code == ExitCode.REAUTH, result.output
    assert "flipsync auth login" in result.output
    assert "invalid_grant" in result.output
    assert {e.method for e in org.sandbox.request_log() if e.path.startswith("/v3")} == {"GET"}
    with org.state() as state:
        assert state.checkpoint == 0
    token_file = org.settings().constant_contact.token_file
    write_token_file(
        token_file, token_set_from_response(org.sandbox.issue_tokens(), org.clock.now())
    )
    assert run_until_idle(org) == ["ok", "idle"]
    assert_same_end(org, scenario, expected)


def test_refresh_token_revoked_mid_run_keeps_the_import_for_after_login(
    org: Org, tmp_path: Path
) -> None:
    """Revoked while an import runs: ReauthRequired, journal kept; after login it is finished once."""
    scenario = donors(count=4, batch_size=10)
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)

    def revoke(_seconds: float) -> None:
        org.sandbox.revoke_refresh_tokens()
        org.sandbox.expire_access_tokens()

    with pytest.raises(ReauthRequired, match="flipsync auth login") as caught:
        run_once(org, sleep=revoke)
    assert caught.value.exit_code == ExitCode.REAUTH
    with org.state() as state:
        assert state.checkpoint == 0
        assert [op.state for j in state.open_journals() for op in j.ops] == ["posted"]
    token_file = org.settings().constant_contact.token_file
    write_token_file(
        token_file, token_set_from_response(org.sandbox.issue_tokens(), org.clock.now())
    )
    assert run_until_idle(org) == ["ok", "idle"]
    assert_same_end(org, scenario, expected)
    assert len(processed_imports(org.sandbox.request_log())) == 1


# -- daily quota -------------------------------------------------------------------------------


@pytest.mark.parametrize("left", ["none", "until-the-import", "past-the-import"])
def test_quota_exhaustion_exits_5_and_the_next_utc_day_completes(
    org: Org, tmp_path: Path, left: str
) -> None:
    """Quota spent before or mid-run: exit 5 with the reset time, checkpoint kept; next day completes."""
    scenario = mixed(batch_size=50)
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)
    first_import = expected.requests.index(("POST", IMPORT_PATH))
    budget = {"none": 0, "until-the-import": first_import, "past-the-import": first_import + 1}
    org.sandbox.set_quota_used(org.sandbox.config.daily_quota - budget[left])

    result = org.cli("run")
    assert result.exit_code == ExitCode.QUOTA, result.output
    reset = next_utc_midnight(org.clock.now())
    assert "quota" in result.output
    assert f"resets at {reset.isoformat()}" in result.output
    with org.state() as state:
        assert state.checkpoint == 0
        ops = [op.state for j in state.open_journals() for op in j.ops]
    assert ops.count("posted") == (1 if left == "past-the-import" else 0)
    assert len(processed_imports(org.sandbox.request_log())) == ops.count("posted")

    # later the same day: still spent, and nothing more reaches the account
    served = len([e for e in org.sandbox.request_log() if not e.rejected])
    assert org.cli("run").exit_code == ExitCode.QUOTA
    assert len([e for e in org.sandbox.request_log() if not e.rejected]) == served

    org.sandbox.advance_clock(86400 - org.sandbox.now() % 86400 + 1)
    assert run_until_idle(org) == ["ok", "idle"]
    assert_same_end(org, scenario, expected)


# -- killed processes --------------------------------------------------------------------------


def api(log: list[RequestLogEntry], method: str, prefix: str) -> list[RequestLogEntry]:
    return [e for e in log if e.method == method and e.path.startswith(prefix)]


@dataclass
class Moment:
    """When to SIGKILL the run: what to arrange first, and which logged request to wait for."""

    arrange: Callable[[Sandbox], None]
    reached: Callable[[list[RequestLogEntry]], bool]
    # after the first matching request: what to change (the run is still going)
    then: Callable[[Sandbox], None] | None = None


def _posting_before_processed(box: Sandbox) -> None:
    # Hold batch 1's import until the watcher has scripted the throttle for batch 2's post.
    box.hold_activities(True)


def _posting_after_processed(box: Sandbox) -> None:
    # The import is processed, its answer lost; it is still processing when the next run comes.
    box.hold_activities(True)
    box.fail_next(1, "drop_after", IMPORT_PATH)


def _throttle_second_import(box: Sandbox) -> None:
    box.fail_next(3, "throttle", IMPORT_PATH)
    box.hold_activities(False)


MOMENTS: dict[str, Moment] = {
    "reading-the-account": Moment(
        arrange=lambda box: box.fail_next(1, "throttle", "/v3/contacts"),
        reached=lambda log: any(e.error_key == "throttled" for e in log),
    ),
    "posting-before-it-was-processed": Moment(
        arrange=_posting_before_processed,
        reached=lambda log: any(e.error_key == "throttled" for e in api(log, "POST", IMPORT_PATH)),
        then=_throttle_second_import,
    ),
    "posting-after-it-was-processed": Moment(
        arrange=_posting_after_processed,
        reached=lambda log: any(e.fault == "drop_after" for e in log),
    ),
    "polling": Moment(
        arrange=lambda box: box.hold_activities(True),
        reached=lambda log: bool(api(log, "GET", "/v3/activities/")),
    ),
}


def kill_when(org: Org, moment: Moment, *, delay: float | None = None) -> str:
    """Start `flipsync run` as a process and SIGKILL it at the moment (or after `delay` s)."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flipsync", "-c", str(org.config_path), "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    started = time.monotonic()
    then = moment.then
    try:
        while time.monotonic() - started < 30:
            log = org.sandbox.request_log()
            if then is not None and api(log, "POST", IMPORT_PATH):
                then(org.sandbox)
                then = None
            if delay is not None and time.monotonic() - started >= delay:
                return "killed"
            if delay is None and moment.reached(log):
                return "killed"
            if proc.poll() is not None:
                return "finished"
            time.sleep(0.005)
        raise AssertionError("the moment never came")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)


@pytest.mark.parametrize("clock", [SYSTEM_CLOCK], ids=["real-time"])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_killed_run_is_finished_by_the_next_one(org: Org, tmp_path: Path, moment: str) -> None:
    """SIGKILL while reading, posting (before/after CC processed it) or polling: same end, once."""
    # a short wait: a held import leaves the run "waiting" after one poll
    scenario = donors(count=6, batch_size=3, activity_wait_seconds=1.5)
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)
    MOMENTS[moment].arrange(org.sandbox)
    assert kill_when(org, MOMENTS[moment]) == "killed"
    with org.state() as state:
        assert state.checkpoint < len(scenario.payloads)
    # the next run comes while the account may still be processing the killed run's import
    assert run_once(org).status in ("ok", "waiting")
    org.sandbox.hold_activities(False)
    run_until_idle(org)
    assert_same_end(org, scenario, expected)


@pytest.mark.parametrize("clock", [SYSTEM_CLOCK], ids=["real-time"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_run_killed_at_a_random_moment_is_finished_by_the_next_one(
    org: Org, tmp_path: Path, seed: int
) -> None:
    """SIGKILL at a seeded random time of a slow run: the next runs reach the same end."""
    scenario = donors(count=6, batch_size=2)
    expected = reference(tmp_path, scenario)
    prepare(org, scenario)
    # a run paced at 10 requests/s lasts about two seconds: long enough to be cut anywhere
    org.write_config(**{**scenario.overrides, "constant_contact": {"requests_per_second": 10}})
    delay = random.Random(seed).uniform(0.5, 1.6)
    never = Moment(arrange=lambda _b: None, reached=lambda _l: False)
    assert kill_when(org, never, delay=delay) == "killed"
    org.write_config(**scenario.overrides)
    run_until_idle(org)
    assert_same_end(org, scenario, expected)
