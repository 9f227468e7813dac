"""Shared fixtures: the sandbox server, and an organization wired to it end to end."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from flipsync.cli import build_client, cli
from flipsync.clock import Clock, VirtualClock
from flipsync.config import Settings, load_settings
from flipsync.ctct.auth import token_set_from_response, write_token_file
from flipsync.intake import IngestReport, ingest_text
from flipsync.outcomes import RunReport
from flipsync.sandbox import RunningSandbox
from flipsync.sandbox.inprocess import InProcessSandbox
from flipsync.state import StateDB
from flipsync.sync import Syncer
from tests.demo_run import DEMO_ENV, DEMO_TEST, DemoRun, start_demo
from tests.helpers import config_dict, write_config

pytest_plugins = ["tests.sandbox_fixture"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real_http: the org fixture serves its sandbox over real HTTP on 127.0.0.1 (end-to-end "
        "tests of the socket path, or a test that reaches it from another process)",
    )
    if _is_xdist_controller(config) and _may_select_the_demo(config):
        # One demo for the whole session, started before the workers, which attach to it.
        demo = start_demo()
        config.stash[_DEMO] = demo
        os.environ[DEMO_ENV] = demo.describe()


_DEMO = pytest.StashKey[DemoRun]()


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and bool(config.getoption("numprocesses", None))


def _may_select_the_demo(config: pytest.Config) -> bool:
    """The controller does not collect: it starts the demo unless the paths rule it out."""
    if config.option.collectonly:
        return False
    demo_file = (config.rootpath / DEMO_TEST.split("::")[0]).resolve()
    given = [(config.invocation_params.dir / arg.split("::")[0]).resolve() for arg in config.args]
    return not given or any(path == demo_file or path in demo_file.parents for path in given)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the demo now when it is to be tested: it waits in real time, the suite need not."""
    if session.config.option.collectonly or _is_xdist_controller(session.config):
        return
    if any(item.nodeid == DEMO_TEST for item in session.items):
        attached = os.environ.get(DEMO_ENV)
        if attached:
            session.config.stash[_DEMO] = DemoRun.attach(attached)
        elif not hasattr(session.config, "workerinput"):
            session.config.stash[_DEMO] = start_demo()
        # else: an xdist worker with no demo from its controller: the test starts its own


def pytest_unconfigure(config: pytest.Config) -> None:
    demo = config.stash.get(_DEMO, None)
    if demo is not None:
        demo.stop()


@pytest.fixture
def demo_run(request: pytest.FixtureRequest) -> Iterator[DemoRun]:
    """The background demo run of this session (or one started now)."""
    demo = request.config.stash.get(_DEMO, None) or start_demo()
    try:
        yield demo
    finally:
        demo.stop()


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """CLI tests configure logging for the process; every test starts from the defaults."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()  # a CLI call binds run_id and organization


@dataclass
class Org:
    """One organization's config, state and token file, pointed at a sandbox.

    ``running`` is the sandbox in this process (``InProcessSandbox``), or served over real
    HTTP (``RunningSandbox``) for a test marked ``real_http`` or on ``SYSTEM_CLOCK``.

    ``clock`` is the organization's time (the sandbox's too, from the fixtures): runs and
    CLI commands wait on it, so their polls and rate spacing take no real time.
    """

    tmp: Path
    running: RunningSandbox | InProcessSandbox
    config_path: Path
    clock: Clock = field(default_factory=VirtualClock)

    @property
    def sandbox(self) -> Any:
        return self.running.sandbox

    _loaded: tuple[Path, str, Settings] | None = field(default=None, init=False, repr=False)

    def settings(self) -> Settings:
        """The config file's settings, via ``load_settings``; parsed again whenever it changed.

        Settings are frozen and a pure function of the path and the text, and tests ask for
        them hundreds of times (each pure-Python YAML parse costs ~7 ms).
        """
        text = self.config_path.read_text(encoding="utf-8")
        if self._loaded is None or self._loaded[:2] != (self.config_path, text):
            self._loaded = (self.config_path, text, load_settings(self.config_path, environ={}))
        return self._loaded[2]

    def state(self) -> StateDB:
        return StateDB.open(self.settings().state_file)

    def ingest(self, payloads: Iterable[dict[str, Any]]) -> IngestReport:
        text = "\n".join(json.dumps(p) for p in payloads)
        with self.state() as state:
            return ingest_text(
                state, text, name="test", source="file:test", id_field="webhook_record_id"
            )

    def run(
        self, *, dry_run: bool = False, clock: Callable[[], datetime] | None = None
    ) -> RunReport:
        """One live (or dry) run in this process, as `flipsync run` does it, on the org's clock."""
        settings = self.settings()
        with self.state() as state:
            syncer = Syncer(
                settings,
                state,
                build_client(settings, clock=self.clock),
                sleep=self.clock.sleep,
                clock=clock or self.clock.now,
            )
            return syncer.run(dry_run=dry_run)

    def cli(self, *args: str, input: str | None = None, **kwargs: Any) -> Result:
        """The CLI in this process, on the org's clock."""
        return CliRunner().invoke(
            cli, ["-c", str(self.config_path), *args], input=input, obj=self.clock, **kwargs
        )

    def contact(self, email: str) -> dict[str, Any] | None:
        return self.sandbox.contact_by_email(email)

    def list_names(self, contact: dict[str, Any]) -> set[str]:
        names = {lst["list_id"]: lst["name"] for lst in self.sandbox.lists()}
        return {names[i] for i in contact.get("list_memberships", [])}

    def api_requests(self) -> list[Any]:
        return [e for e in self.sandbox.request_log() if e.path.startswith("/v3")]

    def write_config(self, **overrides: Any) -> None:
        data = config_dict(**overrides)
        data["constant_contact"].update(
            api_base_url=self.running.api_base_url, oauth_base_url=self.running.oauth_base_url
        )
        self.config_path = write_config(self.tmp, data)


@pytest.fixture
def org(
    tmp_path: Path, sandbox_service: RunningSandbox | InProcessSandbox, clock: Clock
) -> Iterator[Org]:
    """An organization with lists Donors, Major, Newsletter and a valid token file.

    Its sandbox answers in this process unless the test is marked ``real_http`` (or runs
    on ``SYSTEM_CLOCK``): see ``tests/sandbox_fixture.py``.
    """
    box = sandbox_service.sandbox
    for name in ("Donors", "Major", "Newsletter", "Subscribers", "NonSubscribers", "Existing"):
        box.add_list(name)
    o = Org(tmp_path, sandbox_service, tmp_path / "flipsync.yaml", clock)
    o.write_config()
    write_token_file(
        tmp_path / "tokens.json", token_set_from_response(box.issue_tokens(), clock.now())
    )
    yield o


# Tests of a second or more (real processes, real time, whole-run property tests) go first, so
# that the xdist workers end together instead of one running a long test while the other idles.
_LONG_FIRST = (
    "tests/test_run_fuzz.py",
    "tests/test_consent_properties.py",
    "tests/test_intake_fuzz.py::test_no_valid_record_is_lost_from_a_mixed_batch",
    "tests/test_intake_fuzz.py::test_ndjson_keeps_every_valid_line_among_bad_ones",
    "tests/test_faults.py::test_killed_run_is_finished_by_the_next_one",
    "tests/test_faults.py::test_run_killed_at_a_random_moment_is_finished_by_the_next_one",
    "tests/test_auth_login.py::test_device_login_writes_token_file_and_next_run_uses_it",
    "tests/test_e2e.py::test_crash_after_import_accepted_ends_in_the_same_state",
    "tests/test_contract.py::test_every_body_the_plan_builds_matches_the_spec",
    "tests/test_outcomes_typed.py::test_the_report_keeps_counts_not_outcomes_in_memory",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(_LONG_FIRST))
