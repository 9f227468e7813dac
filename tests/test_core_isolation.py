"""The core holds without the HTTP, YAML and web stacks: ports that hold, proven by blocking them.

A fresh interpreter refuses every import of requests, urllib3, tenacity, yaml, pydantic
(config validation only), waitress, click and prometheus_client, then imports each core module and runs one organization's
live run end to end: a Flipcause record in the state DB, a decision, a plan, an import
sent to a stand-in for Constant Contact, and the outcome committed with the checkpoint.
Any attempt to import a blocked module fails the test, even one a library would catch.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CORE = (
    "flipsync.settings",
    "flipsync.records",
    "flipsync.people",
    "flipsync.rules",
    "flipsync.actions",
    "flipsync.policy",
    "flipsync.plan",
    "flipsync.catalog",
    "flipsync.mirror",
    "flipsync.mirror_export",
    "flipsync.push",
    "flipsync.reconcile",
    "flipsync.outcomes",
    "flipsync.state",
    "flipsync.sync",
    "flipsync.ports",
    "flipsync.ctct.types",
    "flipsync.ctct.limits",
)
BLOCKED = (
    "requests",
    "urllib3",
    "tenacity",
    "yaml",
    "pydantic",
    "pydantic_core",
    "waitress",
    "click",
    "prometheus_client",
)

SCRIPT = """
import importlib
import importlib.abc
import sys

BLOCKED = set(sys.argv[1].split(","))
attempts = []


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"the core must not import {name}")
        return None


already = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
assert not already, f"loaded before the test began: {already}"
sys.meta_path.insert(0, Refuse())
for name in sys.argv[2].split(","):
    importlib.import_module(name)

import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from flipsync.ctct.types import ActivityStatus, ContactList
from flipsync.settings import (
    ConstantContactSettings,
    FlipcauseSettings,
    IntakeSettings,
    ListSettings,
    PolicySettings,
    RunSettings,
    Settings,
)
from flipsync.state import StateDB
from flipsync.sync import Syncer

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
LIST_ID = "11111111-1111-1111-1111-111111111111"


class Account:
    '''Just enough of Constant Contact for one new contact's import (no HTTP anywhere).'''

    def __init__(self):
        self.request_counts = Counter()
        self.imports = []

    def list_lists(self):
        self.request_counts["lists"] += 1
        return [ContactList(LIST_ID, "Newsletter")]

    def list_custom_fields(self):
        return []

    def lookup_contact(self, email):
        self.request_counts["lookup"] += 1
        return None

    def count_contacts(self):
        return 10_000

    def server_now(self):
        return NOW

    def start_json_import(self, import_data, list_ids, *, exclude=()):
        self.request_counts["import"] += 1
        self.imports.append((import_data, list_ids))
        return "activity-1"

    def get_activity(self, activity_id):
        self.request_counts["activity"] += 1
        return ActivityStatus(
            activity_id, "completed", 100, (), 1, 1, 1, 0, 0, 0, NOW
        )

    def __getattr__(self, name):
        raise AssertionError(f"the run asked for {name}, which this stand-in does not expect")


with tempfile.TemporaryDirectory() as tmp:
    settings = Settings(
        config_path=Path(tmp, "org.yaml"),
        organization="isolated",
        state_file=Path(tmp, "state.db"),
        constant_contact=ConstantContactSettings(client_id="x"),
        flipcause=FlipcauseSettings(),
        policy=PolicySettings(
            setup="all_contacts_uniform",
            lists=ListSettings(new=("Newsletter",), existing=("Newsletter",)),
        ),
        run=RunSettings(lookup_strategy="lookup"),
        intake=IntakeSettings(),
    )
    payload = {
        "webhook_record_id": "r1",
        "webhook_trigger_type": "new_transaction",
        "activity_type": "Donation",
        "transaction_id": "t1",
        "PD_email": "Ada@Example.org",
        "PD_first_name": "Ada",
        "DD_amount": "25.00",
    }
    account = Account()
    with StateDB.open(settings.state_file) as state:
        state.add_payloads([("r1", payload)], source="test", id_field="webhook_record_id")
        report = Syncer(
            settings, state, account, clock=lambda: NOW, sleep=lambda seconds: None
        ).run()
        checkpoint = state.checkpoint
        history = state.outcomes_for("ada@example.org")

assert report.status == "ok", (report.status, report.message)
assert checkpoint == 1, checkpoint
assert [row.action for row in history] == ["create"], history
[(rows, list_ids)] = account.imports
assert list_ids == [LIST_ID], list_ids
assert rows == [{"email": "Ada@Example.org", "first_name": "Ada"}], rows
assert not attempts, attempts
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
assert not loaded, loaded
print("isolated ok")
"""


def test_the_core_runs_with_http_yaml_and_web_stacks_blocked() -> None:
    """Importing the core and running a batch never imports requests, yaml, waitress and co."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), ",".join(BLOCKED), ",".join(CORE)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("isolated ok")


def test_the_blocker_catches_a_module_that_imports_http() -> None:
    """The same blocker fails a module that does import requests (the test can fail)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), ",".join(BLOCKED), "flipsync.ctct.client"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "the core must not import" in result.stderr
