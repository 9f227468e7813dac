"""State integrity: broken state files are refused, never a fresh start; files and pipes fail clearly.

Issue 11, item 1. Commands that meet an empty, truncated or foreign state file stop with
its path and both ways out; a read-only folder is named with the fix (and read-only
commands still read a healthy DB there); a closed stdout ends quietly; the demo finds
a free port.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from flipsync import state as state_mod
from flipsync.cli import cli
from flipsync.errors import ExitCode
from flipsync.state import StateDB
from tests.conftest import Org
from tests.demo_run import DemoRun
from tests.helpers import config_dict, payload, write_config

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534
COMMANDS = [
    ("status",),
    ("status", "--check"),
    ("status", "--json"),
    ("run",),
    ("run", "--dry-run"),
    ("explain", "a@example.org"),
    ("backfill", "--since", "2026-01-01"),
    ("serve", "--port", "0"),
    ("fields",),
    ("check", "--offline"),
]


def _healthy(tmp_path: Path) -> tuple[Path, Path]:
    """A config and a state DB holding enough payloads to span many pages."""
    config = write_config(
        tmp_path, config_dict(intake={"webhook_secret_env": "TEST_WEBHOOK_SECRET"})
    )
    state = tmp_path / "state.db"
    with StateDB.open(state) as db:
        db.add_payloads(
            [(f"wh:{i}", {**payload(f"p{i}@example.org"), "pad": "x" * 400}) for i in range(200)],
            source="test",
            id_field="webhook_record_id",
        )
    return config, state


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated_mid_page(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2 + 100)


def _truncated_on_a_page(path: Path) -> None:
    os.truncate(path, 4096 * 2)


def _foreign_text(path: Path) -> None:
    path.write_text("root:x:0:0:root:/root:/bin/bash\n" * 50)


def _foreign_sqlite(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()


BREAKAGES = {
    "empty": (_empty, "is empty (0 bytes)"),
    "truncated-mid-page": (_truncated_mid_page, "is truncated"),
    "truncated-on-a-page": (_truncated_on_a_page, "is truncated"),
    "foreign-text": (_foreign_text, "is not an SQLite database"),
    "foreign-sqlite": (_foreign_sqlite, "not a flipsync state DB"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
@pytest.mark.parametrize("command", [*COMMANDS, ("ingest", "PAYLOADS")], ids=" ".join)
def test_broken_state_file_is_refused_never_a_fresh_start(
    tmp_path: Path, breakage: str, command: tuple[str, ...]
) -> None:
    """Every command refuses with the path, restore-or-start-over, exit 2; the file is untouched."""
    config, state = _healthy(tmp_path)
    damage, expected = BREAKAGES[breakage]
    damage(state)
    before = state.read_bytes()
    payloads = tmp_path / "in.ndjson"
    payloads.write_text('{"webhook_record_id": "n1", "PD_email": "n@example.org"}\n')
    args = [str(payloads) if a == "PAYLOADS" else a for a in command]
    env = {"TEST_WEBHOOK_SECRET": "a-webhook-secret-of-some-length"}
    result = CliRunner(env=env).invoke(cli, ["-c", str(config), *args])
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert expected in result.output and str(state) in result.output
    assert "Restore it from a backup" in result.output and "init --start-over" in result.output
    assert "Traceback" not in result.output and "checkpoint 0" not in result.output
    assert state.read_bytes() == before


def test_init_starts_over_only_on_purpose_and_only_over_a_broken_file(tmp_path: Path) -> None:
    """init creates; --start-over keeps the broken file aside; a healthy DB is never replaced."""
    config, state = _healthy(tmp_path)
    runner = CliRunner()
    healthy = runner.invoke(cli, ["-c", str(config), "init", "--start-over"])
    assert healthy.exit_code == ExitCode.CONFIG and "is healthy" in healthy.output
    with StateDB.open(state, create=False) as db:
        assert db.inbox_count() == 200
    _empty(state)
    refused = runner.invoke(cli, ["-c", str(config), "init"])
    assert refused.exit_code == ExitCode.CONFIG and "is empty" in refused.output
    done = runner.invoke(cli, ["-c", str(config), "init", "--start-over"])
    assert done.exit_code == 0, done.output
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("state.db.unusable-")]
    assert [p.stat().st_size for p in kept if not p.name.endswith(("-wal", "-shm"))] == [0]
    status = runner.invoke(cli, ["-c", str(config), "status", "--json"])
    assert status.exit_code == 0 and '"inbox_total": 0' in status.output


def test_start_over_waits_until_no_process_has_the_file_open(tmp_path: Path) -> None:
    """A receiver still writing into a damaged file: start-over refuses, then works once it stops.

    Moving the file from under a live writer would leave it answering 200 into the moved
    file, which nothing reads.
    """
    config, state = _healthy(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom flipsync.state import StateDB\n"
            f"db = StateDB.open({str(state)!r}, create=False)\n"
            "db.inbox_count()\nprint('ready', flush=True)\nsys.stdin.read()\ndb.close()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with state.open("r+b") as fh:  # the file is damaged while the receiver runs
            fh.write(b"not a database!!")
        runner = CliRunner()
        refused = runner.invoke(cli, ["-c", str(config), "init", "--start-over"])
        assert refused.exit_code == ExitCode.CONFIG, refused.output
        assert "another process still has it open" in refused.output
        assert not [p for p in tmp_path.iterdir() if ".unusable-" in p.name]
    finally:
        holder.communicate("", timeout=30)
    done = CliRunner().invoke(cli, ["-c", str(config), "init", "--start-over"])
    assert done.exit_code == 0, done.output
    assert [p for p in tmp_path.iterdir() if p.name.startswith("state.db.unusable-")]


def test_a_new_state_db_is_never_left_empty(tmp_path: Path) -> None:
    """Creation goes through a temporary name: only a complete DB ever has the state file's name."""
    state = tmp_path / "sub" / "state.db"
    StateDB.open(state).close()
    assert state.stat().st_size > 0 and oct(state.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in state.parent.iterdir()] == ["state.db"]


def test_a_reader_upgrades_an_older_state_file_only_when_it_may_write(tmp_path: Path) -> None:
    """status on a version-1 file migrates it when the folder is writable, like any open."""
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(state_mod._SCHEMA_V1)
    conn.execute("INSERT INTO meta VALUES ('checkpoint_seq', '4')")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    with StateDB.open(path, create=False, readonly=True) as db:
        assert db.checkpoint == 4
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == state_mod.SCHEMA_VERSION
    check.close()


# -- read-only folders ----------------------------------------------------------------------


@pytest.fixture
def readonly_org() -> Iterator[Path]:
    """A healthy organization whose state folder the test's user cannot write.

    As root, permissions do not apply, so the commands run as `nobody` and the folder
    belongs to nobody with mode 0500; otherwise the folder is simply made 0500.
    """
    base = Path(tempfile.mkdtemp(prefix="flipsync-ro-"))
    base.chmod(0o755)
    state_dir = base / "state"
    config = base / "org.yaml"
    data = config_dict(state_file="state/state.db")
    data["constant_contact"]["budget_file"] = str(base / "key-budget.json")
    write_config(base, data).rename(config)
    with StateDB.open(state_dir / "state.db") as db:
        db.add_payloads(
            [("wh:1", payload("a@example.org"))], source="test", id_field="webhook_record_id"
        )
    (base / "in.ndjson").write_text('{"webhook_record_id": "2", "PD_email": "b@example.org"}\n')
    if os.geteuid() == 0:
        for path in [base, *base.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
    state_dir.chmod(0o500)
    try:
        yield base
    finally:
        state_dir.chmod(0o700)
        shutil.rmtree(base)


def _as_user(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run flipsync as the test's user, or as nobody (via setpriv) when the tests run as root."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root, this test needs setpriv (util-linux) to run as another user")
        prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "flipsync", "-c", str(cwd / "org.yaml"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(cwd)},
    )


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("status", "--check"),
        ("explain", "a@example.org"),
        ("fields",),
        ("check", "--offline"),
    ],
)
def test_readonly_commands_read_a_healthy_db_in_a_readonly_folder(
    readonly_org: Path, command: tuple[str, ...]
) -> None:
    """status and explain open read-only: a healthy DB is read, never called unreadable."""
    result = _as_user(list(command), readonly_org)
    assert "not a readable" not in result.stderr and "Traceback" not in result.stderr
    assert result.returncode in (0, ExitCode.UNHEALTHY), result.stderr
    if command == ("status",):
        assert "1 payloads, 1 waiting" in result.stdout
    if command[0] == "explain":
        assert "a@example.org" in result.stdout
    if command[0] == "check":
        assert "stored payloads: 1" in result.stdout


@pytest.mark.parametrize("command", [("run",), ("ingest", "in.ndjson"), ("init",)])
def test_writing_commands_name_the_readonly_folder_and_the_fix(
    readonly_org: Path, command: tuple[str, ...]
) -> None:
    """run, ingest, init: exit 2 naming the folder and the fix; no traceback, nothing changed."""
    result = _as_user(list(command), readonly_org)
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert "Traceback" not in result.stderr and "please report it" not in result.stderr
    assert "is not writable by" in result.stderr and "state" in result.stderr
    assert "chown" in result.stderr and "sudo -u flipsync" in result.stderr
    (readonly_org / "state").chmod(0o700)
    with StateDB.open(readonly_org / "state" / "state.db", create=False) as db:
        assert db.inbox_count() == 1


# -- closed stdout --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("status",), ("auth", "status"), ("status", "--json")])
def test_closed_stdout_ends_quietly(org: Org, command: tuple[str, ...]) -> None:
    """`flipsync status | head -1` with the reader already gone: exit 0 or 141, no traceback."""
    org.ingest([payload("a@example.org")])
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "flipsync", "-c", str(org.config_path), *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode in (0, 141), result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert result.stderr == ""


# -- make demo ------------------------------------------------------------------------------


def test_demo_picks_a_free_port_when_the_default_is_taken(demo_run: DemoRun) -> None:
    """scripts/demo.sh with its port taken says so and completes on another port.

    The run starts with the session (``demo_run`` in conftest.py): its real-time waits
    overlap the other tests; here its whole output is checked.
    """
    returncode, stdout, stderr = demo_run.finish(timeout=120)
    port = demo_run.port
    assert returncode == 0, stderr
    assert f"port {port} is taken" in stdout
    assert "== sandbox running at http://127.0.0.1:" in stdout
    assert f":{port}\n" not in stdout.split("sandbox running at")[1].splitlines()[0] + "\n"
    assert "Traceback" not in stderr


def test_sandbox_on_a_taken_port_is_one_clear_line() -> None:
    """`flipsync sandbox --port N` with N taken: exit 2 and what to do, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "flipsync", "sandbox", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == ExitCode.CONFIG
    assert "0 picks a free one" in result.stderr and "Traceback" not in result.stderr
