"""The CLI surface: help for every command, exit codes, check, explain, status, ingest."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from flipsync.cli import cli
from flipsync.errors import ExitCode
from tests.conftest import Org
from tests.helpers import config_dict, payload, write_config


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        out.append(path)
        if isinstance(command, click.Group):
            out.extend(all_commands(command, path))
    return out


@pytest.mark.parametrize("path", all_commands(cli), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    """Each command explains itself."""
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]  # type: ignore[assignment]
    assert command.help and len(command.help) > 20


def test_config_errors_exit_2_with_every_problem(tmp_path: Path) -> None:
    """A broken config lists all its problems and exits 2 before any network call."""
    data = config_dict(policy={"setup": "nope", "lists": {}}, run={"batch_size": 0})
    path = write_config(tmp_path, data)
    result = CliRunner().invoke(cli, ["-c", str(path), "run"])
    assert result.exit_code == ExitCode.CONFIG
    assert "`policy.setup`" in result.output and "`run.batch_size`" in result.output
    assert not (tmp_path / "state.db").exists()


def test_missing_token_file_asks_for_login(org: Org) -> None:
    """No token file: exit 6 naming the fix; nothing was sent."""
    (org.tmp / "tokens.json").unlink()
    org.ingest([payload("a@example.org")])
    result = org.cli("run")
    assert result.exit_code == ExitCode.REAUTH
    assert "flipsync auth login" in result.output
    assert org.sandbox.request_log() == []


def test_check_reports_lists_token_and_consent_warning(org: Org) -> None:
    """check proves the token and lists, and warns when non-sign-ups would become explicit."""
    org.write_config(
        policy={
            "setup": "all_contacts_uniform",
            "new_contact_status": "explicit",
            "lists": {"new": ["Donors"], "existing": ["Donors"]},
        }
    )
    result = org.cli("check")
    assert result.exit_code == 0, result.output
    assert "token: ok" in result.output and "lists: ok (Donors)" in result.output
    assert "own basis for that consent" in result.output
    org.write_config(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["Missing list"], "existing": ["Donors"]},
        }
    )
    result = org.cli("check")
    assert result.exit_code == ExitCode.CONFIG
    assert "'Missing list'" in result.output
    offline = org.cli("check", "--offline")
    assert offline.exit_code == 0 and "token: ok" not in offline.output


def test_explain_shows_history_with_reasons(org: Org) -> None:
    """explain lists each decision for an email, case-insensitively, with Flipcause ids."""
    p = payload("Ada@Example.org")
    org.ingest([p])
    org.run()
    result = org.cli("explain", "ada@example.org")
    assert result.exit_code == 0
    assert "create via json_import, new -> implicit" in result.output
    assert f"webhook_record_id={p['webhook_record_id']}" in result.output
    data = json.loads(org.cli("explain", "ADA@example.org", "--json").output)
    assert data["outcomes"][0]["reason"].startswith("new contact")
    assert org.cli("explain", "nobody@example.org").output.startswith(
        "nobody@example.org: flipsync has no record"
    )


def test_status_and_ingest_from_stdin(org: Org) -> None:
    """ingest reads stdin; status shows what waits after the checkpoint."""
    lines = "\n".join(json.dumps(payload(f"s{i}@example.org")) for i in range(3)) + "\n{broken\n"
    result = org.cli("ingest", "-", input=lines)
    assert result.exit_code == 0
    assert "stored 3 payload(s), 0 already in the inbox, 1 rejected" in result.output
    assert "stdin: line 4" in result.output
    status = json.loads(org.cli("status", "--json").output)
    assert (status["checkpoint"], status["inbox_waiting"]) == (0, 3)
    org.cli("run")
    status = json.loads(org.cli("status", "--json").output)
    assert (status["checkpoint"], status["inbox_waiting"]) == (3, 0)
    assert status["recent_runs"][0]["status"] == "ok"
    assert (
        status["requests_today"]["organization"] == status["requests_today"]["application_key"] > 0
    )


def test_run_json_report_lists_every_unsynced_record(org: Org) -> None:
    """--json: counts, requests by kind, and each rejected or skipped record with ids and reason."""
    bad = payload("not-an-email")
    org.ingest([payload("ok@example.org"), bad])
    result = org.cli("run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["counts"]["create"] == 1 and report["counts"]["reject"] == 1
    (entry,) = report["not_synced"]
    assert entry["flipcause_ids"]["webhook_record_id"] == [bad["webhook_record_id"]]
    assert "invalid email" in entry["reason"]
    assert report["requests"]["total"] == sum(report["requests"]["by_kind"].values()) > 0


def test_unreadable_input_file_is_a_clear_error(org: Org, tmp_path: Path) -> None:
    """A missing or non-UTF-8 file names itself; nothing else is lost."""
    result = org.cli("ingest", str(tmp_path / "missing.ndjson"))
    assert result.exit_code == ExitCode.CONFIG and "file not found" in result.output
    binary = tmp_path / "bin.ndjson"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    result = org.cli("ingest", str(binary))
    assert result.exit_code == ExitCode.CONFIG and "not UTF-8" in result.output
