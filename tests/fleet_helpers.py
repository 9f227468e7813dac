"""A fleet directory in tmp_path, its organizations each wired to their own sandbox."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from flipsync.clients import new_session
from flipsync.config import Settings
from flipsync.ctct.auth import TokenManager, token_set_from_response, write_token_file
from flipsync.ctct.budget import KeyBudget
from flipsync.ctct.client import ConstantContactClient
from flipsync.ctct.http import RetryPolicy
from flipsync.ctct.types import ClientSettings
from flipsync.fleet import FleetSettings, load_fleet
from flipsync.fleet_run import FleetRunner
from flipsync.intake import IngestReport, ingest_text
from flipsync.sandbox import RunningSandbox, Sandbox, SandboxConfig
from flipsync.sandbox.inprocess import InProcessSandbox, start_in_process
from flipsync.state import StateDB, utcnow
from tests.helpers import config_dict

KEY = "flipsync-sandbox"


@dataclass
class FleetBox:
    """A fleet of organizations, each with its own sandbox account."""

    root: Path
    boxes: dict[str, RunningSandbox | InProcessSandbox] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    # Every request start the key's budget granted, across all threads.
    starts: list[float] = field(default_factory=list)
    built: list[Settings] = field(default_factory=list)
    # The fleet's clock stands still unless a test moves it (offset): whether an organization
    # is due must not depend on how long the test took.
    base: datetime = field(default_factory=utcnow)
    offset: timedelta = timedelta(0)

    def write_fleet(self, **overrides: Any) -> None:
        data: dict[str, Any] = {
            "application_key": KEY,
            "budget_file": "key-budget.json",
            "max_concurrent_orgs": 3,
            "receiver": {"public_url": "https://hooks.example.org"},
        }
        data.update(overrides)
        (self.root / "fleet.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")

    def fleet(self) -> FleetSettings:
        return load_fleet(self.root)

    def add(
        self, name: str, *, box: RunningSandbox | InProcessSandbox | None = None, **overrides: Any
    ) -> Path:
        running = box or start_in_process(
            Sandbox(SandboxConfig(requests_per_second=0, activity_seconds=0))
        )
        self.boxes[name] = running
        if not running.sandbox.lists():
            running.sandbox.add_list("Donors")
        cc = {
            "token_file": "state/tokens.json",
            "api_base_url": running.api_base_url,
            "oauth_base_url": running.oauth_base_url,
            "budget_file": "own-budget-ignored-in-a-fleet.json",
            **overrides.pop("constant_contact", {}),
        }
        overrides.setdefault("state_file", f"state/{name}.db")
        data = config_dict(
            organization=name,
            constant_contact=cc,
            intake={"webhook_secret_env": "FLIPSYNC_WEBHOOK_SECRET"},
            **overrides,
        )
        directory = self.root / "orgs" / name
        (directory / "state").mkdir(parents=True, exist_ok=True)
        (directory / "flipsync.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        secret = self.secrets[name] = secrets.token_urlsafe(24)
        env = directory / "flipsync.env"
        env.write_text(f"FLIPSYNC_WEBHOOK_SECRET={secret}\n", encoding="utf-8")
        env.chmod(0o600)
        write_token_file(
            directory / "state" / "tokens.json",
            token_set_from_response(running.sandbox.issue_tokens(), utcnow()),
        )
        return directory

    def state(self, name: str) -> StateDB:
        return StateDB.open(self.root / "orgs" / name / "state" / f"{name}.db")

    def ingest(self, name: str, payloads: Iterable[dict[str, Any]]) -> IngestReport:
        text = "\n".join(json.dumps(p) for p in payloads)
        with self.state(name) as state:
            return ingest_text(
                state, text, name="test", source="file:test", id_field="webhook_record_id"
            )

    def clock(self) -> datetime:
        return self.base + self.offset

    def client(self, settings: Settings) -> ConstantContactClient:
        """Like flipsync.cli.build_client, but the key's budget records instead of sleeping."""
        self.built.append(settings)
        cc = settings.constant_contact
        client_settings = ClientSettings(
            api_base_url=cc.api_base_url,
            oauth_base_url=cc.oauth_base_url,
            client_id=cc.client_id,
            client_secret=None,
            token_file=cc.token_file,
            requests_per_second=cc.requests_per_second,
            timeout_seconds=cc.timeout_seconds,
        )
        assert cc.budget_file is not None
        budget = KeyBudget(
            cc.budget_file,
            organization=settings.organization,
            rate_per_second=cc.requests_per_second,
            daily_limit=cc.daily_request_budget,
            organization_daily_limit=cc.organization_daily_request_budget,
            sleep=lambda _: None,
        )
        # The start each reservation granted, recorded under the budget's lock: exact whatever
        # the threads do after (reading the time again after acquire() raced with the others).
        spacer = budget._spacer
        starts = self.starts

        class RecordingSpacer:
            def reserve(self, last_start: float | None) -> tuple[float, float]:
                start, wait = spacer.reserve(last_start)
                starts.append(start)
                return start, wait

            def wait(self, seconds: float) -> float:
                return spacer.wait(seconds)

        budget._spacer = RecordingSpacer()  # type: ignore[assignment]

        session = new_session(client_settings.user_agent)
        retry = RetryPolicy.no_wait()
        return ConstantContactClient(
            client_settings,
            TokenManager(client_settings, session, retry=retry),
            session=session,
            retry=retry,
            limiter=budget,
        )

    def runner(self) -> FleetRunner:
        return FleetRunner(self.fleet(), self.client, clock=self.clock, sleep=lambda _: None)

    def close(self) -> None:
        for running in self.boxes.values():
            running.stop()


def max_in_one_second(starts: list[float]) -> int:
    """The most request starts inside any one-second window."""
    ordered = sorted(starts)
    best = 0
    j = 0
    for i, start in enumerate(ordered):
        while ordered[j] <= start - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best
