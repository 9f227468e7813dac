"""Promises kept: what the README and --help say is what flipsync does.

Issue 11, item 7: the 413 answer is JSON, logged and recorded; `status` is a readable
table and `--check` says "ok"; global options work after the subcommand; `check
--offline` flags placeholders; an empty backfill window and duplicate YAML keys are
errors; the install paths of README, crontab and unit agree and name no missing file.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from flipsync.cli import cli
from flipsync.cli_support import hoist_global_options
from flipsync.errors import ExitCode
from flipsync.receiver import build_receiver, make_server, run_until_stopped
from tests.conftest import Org
from tests.helpers import payload
from tests.test_receiver import SECRET, intake_settings, rejects

REPO = Path(__file__).resolve().parent.parent
LIMIT = 2048

# -- 413 --------------------------------------------------------------------------------------


@contextmanager
def serving(tmp_path: Path) -> Iterator[int]:
    """A real waitress receiver with intake.max_body_bytes = LIMIT; yields its port.

    On exit the receiver is closed, so its writer has committed everything queued.
    """
    settings = intake_settings(tmp_path, max_body_bytes=LIMIT)
    app = build_receiver(settings, SECRET)
    server = make_server(app, settings, host="127.0.0.1", port=0, threads=2)
    stop = threading.Event()
    runner = threading.Thread(target=run_until_stopped, args=(server, stop))
    runner.start()
    try:
        yield int(server.effective_port)
    finally:
        stop.set()
        server.pull_trigger()
        runner.join(20)
        app.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[int]:
    with serving(tmp_path) as port:
        yield port


def _post(port: int, path: str, body: bytes, *, chunked: bool = False) -> tuple[int, str, Any]:
    """POST in one write (so a server that answers early cannot reset it); (status, type, JSON)."""
    if chunked:
        framing = "Transfer-Encoding: chunked"
        pieces = [body[i : i + 1024] for i in range(0, len(body), 1024)]
        data = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    else:
        framing, data = f"Content-Length: {len(body)}", body
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        answer = response.read()
    return response.status, response.getheader("Content-Type") or "", json.loads(answer)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_413_is_json_logged_and_recorded(tmp_path: Path, chunked: bool) -> None:
    """Over the limit, through the real server: a JSON 413 naming the limit, a log line, a reject row."""
    with capture_logs() as logs, serving(tmp_path) as port:
        status, ctype, body = _post(
            port, f"/flipcause/{SECRET}", b"[" + b" " * (LIMIT * 3) + b"]", chunked=chunked
        )
    assert status == 413 and ctype == "application/json"
    assert body == {
        "error": f"body is too large; the limit is {LIMIT} bytes (intake.max_body_bytes)"
    }
    (entry,) = [e for e in logs if e["event"] == "webhook_rejected"]
    assert entry["status"] == 413 and entry["bytes"] > LIMIT and SECRET not in str(entry)
    ((source, location, reason),) = rejects(tmp_path / "state.db")
    assert source == "webhook" and "bytes" in location and "intake.max_body_bytes" in reason


def test_413_from_strangers_is_logged_not_recorded(tmp_path: Path) -> None:
    """Without the secret, a refused body is logged but leaves no row in the state DB."""
    with capture_logs() as logs, serving(tmp_path) as port:
        status, _, _ = _post(port, "/flipcause/wrong-secret-value", b"x" * (LIMIT * 2))
    assert status == 413
    assert [e["status"] for e in logs if e["event"] == "webhook_rejected"] == [413]
    assert rejects(tmp_path / "state.db") == []


def test_a_body_of_exactly_the_limit_is_accepted(served: int) -> None:
    """The limit is inclusive, as the receiver itself counts it (waitress alone would refuse it)."""
    item = json.dumps(payload("limit@example.org"))
    body = (item + " " * (LIMIT - len(item))).encode()
    assert len(body) == LIMIT
    status, _, answer = _post(served, f"/flipcause/{SECRET}", body)
    assert status == 200 and answer["stored"] == 1


def test_malformed_http_gets_a_json_400(served: int) -> None:
    """waitress's own 400 is JSON too, and never echoes the request line (it may hold the secret)."""
    with socket.create_connection(("127.0.0.1", served), timeout=10) as sock:
        sock.sendall(f"POST /flipcause/{SECRET} HTTP/1.1\r\nContent-Length: x\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(4096):  # the server closes after an error answer
            chunks.append(chunk)
        answer = b"".join(chunks).decode()
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400") and "application/json" in head
    assert json.loads(body) == {"error": "malformed HTTP request"} and SECRET not in answer


# -- status -----------------------------------------------------------------------------------


def test_status_is_a_readable_table_and_check_says_ok(org: Org) -> None:
    """No raw dicts or True/False in the text; `--check` prints "ok" alone when all is well."""
    org.ingest([payload("t@example.org")])
    org.run()
    text = org.cli("status")
    assert text.exit_code == 0, text.output
    for raw in ("{", "}", "True", "False", "None", "[", "]"):
        assert raw not in text.stdout
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["organization", "test-org"]
    assert any(
        re.match(r"^inbox\s+1 payloads, 0 waiting after the checkpoint$", ln) for ln in lines
    )
    assert any(
        re.match(r"^requests today\s+\d+ of 10000 for the application key", ln) for ln in lines
    )
    assert "recent runs:" in text.stdout and re.search(
        r"\n  RUN\s+KIND\s+STARTED\s+STATUS", text.stdout
    )
    assert lines[-1] == "ok"
    check = org.cli("status", "--check")
    assert (check.exit_code, check.stdout) == (0, "ok\n")


# -- global options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "order",
    [
        ["-c", "CFG", "--log-format", "json", "status", "--json"],
        ["status", "--json", "-c", "CFG", "--log-format", "json"],
        ["status", "-c", "CFG", "--json", "--log-level=debug"],
        ["status", "--json", "--config=CFG", "--log-format=console"],
        ["status", "--json", "-cCFG"],
    ],
    ids=["before", "after", "mixed", "equals-forms", "attached"],
)
def test_global_options_work_before_or_after_the_subcommand(org: Org, order: list[str]) -> None:
    """-c, --log-level and --log-format are accepted on either side of the subcommand."""
    org.ingest([payload("g@example.org")])
    args = [a.replace("CFG", str(org.config_path)) for a in order]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["organization"] == "test-org"


def test_global_options_after_nested_subcommands(org: Org) -> None:
    """`auth status -c CFG` and a log level after `run` work too."""
    runner = CliRunner()
    auth = runner.invoke(cli, ["auth", "status", "--json", "-c", str(org.config_path)])
    assert auth.exit_code == 0, auth.output
    assert "access_token_expires_at" in json.loads(auth.stdout)
    run = runner.invoke(cli, ["run", "--log-format", "json", "-c", str(org.config_path)])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["event"] == "run_finished"


def test_hoisting_leaves_other_arguments_alone() -> None:
    """Only the group's own options move; `--` and option values that look like commands stay."""
    commands = ["run", "status", "explain"]
    assert hoist_global_options(["-c", "run", "status"], commands) == ["-c", "run", "status"]
    assert hoist_global_options(["explain", "a@b.org", "-c", "x.yaml"], commands) == [
        "-c",
        "x.yaml",
        "explain",
        "a@b.org",
    ]
    assert hoist_global_options(["explain", "--", "-c"], commands) == ["explain", "--", "-c"]


# -- check, backfill, YAML --------------------------------------------------------------------


def test_check_offline_flags_the_examples_placeholders(tmp_path: Path) -> None:
    """The unedited example fails `check --offline`, naming the key; an edited one passes."""
    config = tmp_path / "org.yaml"
    shutil.copy(REPO / "config.example.yaml", config)
    result = CliRunner().invoke(cli, ["-c", str(config), "check", "--offline"])
    assert result.exit_code == ExitCode.CONFIG
    assert "`constant_contact.client_id`" in result.output
    assert "'your-application-api-key' is a placeholder" in result.output
    config.write_text(
        config.read_text().replace("your-application-api-key", "3f0a9c1e-real-key"),
        encoding="utf-8",
    )
    fixed = CliRunner().invoke(cli, ["-c", str(config), "check", "--offline"])
    assert fixed.exit_code == 0, fixed.output


def test_backfill_since_after_until_is_an_error(org: Org) -> None:
    """An empty window is a usage error (exit 2); nothing runs, nothing is recorded."""
    org.ingest([payload("w@example.org")])
    result = org.cli("backfill", "--since", "2026-03-01", "--until", "2026-02-01")
    assert result.exit_code == 2
    assert "2026-02-01 is before --since 2026-03-01" in result.output
    with org.state() as state:
        assert state.recent_runs() == []
    assert org.sandbox.request_log() == []


def test_duplicate_yaml_keys_are_an_error_naming_both_lines(tmp_path: Path) -> None:
    """A repeated key (YAML would keep the last silently) is a config error with both lines."""
    config = tmp_path / "org.yaml"
    config.write_text(
        "organization: a\n"
        "constant_contact:\n"
        "  client_id: abc\n"
        "  client_id: def\n"
        "policy:\n"
        "  setup: all_contacts_uniform\n"
        "  lists:\n"
        "    new: [Donors]\n"
        "    existing: [Donors]\n"
        "    new: [Other]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["-c", str(config), "check", "--offline"])
    assert result.exit_code == ExitCode.CONFIG
    assert "`constant_contact.client_id`: given twice, on lines 3 and 4" in result.output
    assert "`policy.lists.new`: given twice, on lines 8 and 10" in result.output


# -- install paths and references -------------------------------------------------------------


def test_install_paths_agree_and_no_reference_is_missing() -> None:
    """README, crontab.example and the unit run the same flipsync; every repo file they name exists."""
    docs = {
        name: (REPO / name).read_text(encoding="utf-8")
        for name in ("README.md", "crontab.example", "contrib/flipsync-receiver@.service")
    }
    venvs = {
        name: set(re.findall(r"(/opt/flipsync[\w./-]*?)/bin/(?:flipsync|pip)\b", text))
        for name, text in docs.items()
    }
    assert all(venvs.values()), venvs
    assert set.union(*venvs.values()) == {"/opt/flipsync/.venv"}, venvs
    named = set()
    for text in [*docs.values(), (REPO / "contrib" / "nginx-flipsync.conf").read_text()]:
        named |= set(
            re.findall(r"(?<![\w/])((?:docs|contrib|scripts|benchmarks)/[\w@.-]+\w)", text)
        )
        named |= set(re.findall(r"file://(/opt/flipsync/[\w./@-]+)", text))
    assert named, "the docs name repository files"
    missing = sorted(n for n in named if not (REPO / n).exists())
    assert missing == [], missing
