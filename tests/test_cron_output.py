"""Logs and output under cron: one `run_finished` event, no emails, run_id and organization.

Issue 11, item 4. Under cron, stdout and stderr are appended to the organization's log;
whatever a run prints there must be machine-readable lines without personal data.
Emails appear in full only where a person asks for them: explain, --output, --json.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from flipsync.errors import ExitCode
from flipsync.report import mask_email, scrub_emails
from tests.conftest import Org
from tests.helpers import payload

EMAILS = ("kept@example.org", "skipped@test.example.org")


def _prepare(org: Org) -> None:
    org.write_config(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["Donors"], "existing": ["Donors"]},
            "skip": [{"name": "tests", "when": {"email_matches": ["*@test.example.org"]}}],
        }
    )
    org.ingest([payload(EMAILS[0]), payload(EMAILS[1]), payload("broken-at-example.org")])


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("log_format", [["--log-format", "json"], []], ids=["json", "auto-no-tty"])
def test_cron_run_reports_one_run_finished_event_without_emails(
    org: Org, log_format: list[str]
) -> None:
    """JSON mode, or stdout not a terminal: stdout is one run_finished event with counts only."""
    _prepare(org)
    result = org.cli(*log_format, "--log-level", "info", "run")
    assert result.exit_code == 0, result.output
    (event,) = _json_lines(result.stdout)
    assert event["event"] == "run_finished" and event["level"] == "info"
    assert event["counts"] == {"create": 1, "update": 0, "skip": 1, "reject": 1, "deferred": 0}
    assert event["not_synced"] == 2 and event["status"] == "ok"
    assert event["organization"] == "test-org" and event["run_id"]
    assert "@" not in result.stdout and "not synced" not in result.stdout
    assert not any(e in result.stderr for e in (*EMAILS, "broken-at-example.org"))


def test_every_log_line_of_a_run_carries_run_id_and_organization(org: Org) -> None:
    """Each JSON log line of a run names the run and the organization (the config stem by default)."""
    text = org.config_path.read_text()
    org.config_path.write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("organization:"))
    )
    org.ingest([payload(f"p{i}@example.org") for i in range(3)])
    result = org.cli("--log-format", "json", "--log-level", "debug", "run")
    assert result.exit_code == 0, result.output
    lines = _json_lines(result.stderr) + _json_lines(result.stdout)
    assert len(lines) >= 3
    run_ids = {line.get("run_id") for line in lines}
    assert len(run_ids) == 1 and None not in run_ids
    assert {line.get("organization") for line in lines} == {"flipsync"}  # flipsync.yaml's stem


def test_failed_run_is_a_run_finished_error_event(org: Org) -> None:
    """A run that stops (a list the account lacks) still reports, as an error event, then exits."""
    org.write_config(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["Nope"], "existing": ["Donors"]},
        }
    )
    org.ingest([payload("x@example.org")])
    result = org.cli("--log-format", "json", "run")
    assert result.exit_code == ExitCode.CONFIG
    (event,) = _json_lines(result.stdout)
    assert event["event"] == "run_finished" and event["level"] == "error"
    assert event["status"] == "error" and "'Nope'" in event["message"]
    assert "x@example.org" not in result.output


def test_terminal_report_shortens_emails_and_requested_outputs_keep_them(org: Org) -> None:
    """Console text shortens emails; --json, --output files and explain have them in full."""
    _prepare(org)
    out = org.tmp / "plan.csv"
    dry = org.cli("--log-format", "console", "run", "--dry-run", "--output", str(out))
    assert dry.exit_code == 0, dry.output
    assert "k***@example.org" in dry.stdout and EMAILS[0] not in dry.stdout
    assert EMAILS[0] in out.read_text() and EMAILS[1] in out.read_text()
    as_json = json.loads(org.cli("run", "--dry-run", "--json").stdout)
    assert {o["email"] for o in as_json["outcomes"]} >= set(EMAILS)
    text = org.cli("--log-format", "console", "run")
    assert text.exit_code == 0, text.output
    assert "s***@test.example.org" in text.stdout and EMAILS[1] not in text.output
    assert "webhook_record_id=" in text.stdout  # the ids still say which record it was
    explain = org.cli("explain", EMAILS[1])
    assert EMAILS[1] in explain.stdout and "skip rule 'tests'" in explain.stdout


def test_backfill_reports_like_a_run(org: Org) -> None:
    """A backfill under cron is one run_finished event too."""
    org.ingest([payload("b@example.org")])
    result = org.cli("--log-format", "json", "backfill", "--since", "2000-01-01")
    assert result.exit_code == 0, result.output
    (event,) = _json_lines(result.stdout)
    assert event["event"] == "run_finished" and event["kind"] == "backfill"
    assert "b@example.org" not in result.output


@pytest.mark.parametrize("log_format", [["--log-format", "json"], []], ids=["json", "auto-no-tty"])
def test_prune_under_cron_is_one_prune_finished_event(org: Org, log_format: list[str]) -> None:
    """`run && prune` in the crontab: prune's report is a JSON line in the same log too."""
    org.ingest([payload("p@example.org")])
    result = org.cli(*log_format, "prune")
    assert result.exit_code == 0, result.output
    (event,) = _json_lines(result.stdout)
    assert event["event"] == "prune_finished" and event["organization"] == "test-org"
    assert event["removed"]["payloads"] == 0 and event["retention_days"] == 365
    assert "inbox seq 0" in event["kept"][0]
    text = org.cli("--log-format", "console", "prune")
    assert text.stdout.startswith("prune (older than 365 days")


def test_masking_helpers() -> None:
    """Shortened emails keep the first letter and the domain; free text loses every address."""
    assert mask_email("jane@example.org") == "j***@example.org"
    assert mask_email("no-at-sign") == "n***" and mask_email(None) == ""
    text = "import a1: contact jane.doe+x@example.org rejected (bob@x.io)"
    assert scrub_emails(text) == "import a1: contact j***@example.org rejected (b***@x.io)"
