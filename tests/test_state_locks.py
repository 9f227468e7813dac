"""A state DB opened twice in one process keeps its SQLite locks (the receiver's inbox).

POSIX record locks belong to the process, and closing any descriptor of the file drops all of
them. The receiver holds its writer connection for hours while /healthz, /metrics and the
fleet's reload open the same file again in the same process. If such an open read the file
with a plain open()/close(), the writer's locks would be gone: a cron run in another process
closing its connection would take itself for the last one, checkpoint and delete the WAL,
and every webhook the receiver answered 200 afterwards would go to a deleted file.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from flipsync.state import StateDB
from tests.helpers import payload


def _other_process_opens_and_closes(path: Path) -> None:
    """What a cron run does at its end: the last connection to close checkpoints the WAL."""
    script = textwrap.dedent(
        f"""
        from flipsync.state import StateDB
        with StateDB.open({str(path)!r}) as db:
            db.inbox_count()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def _count_in_another_process(path: Path) -> int:
    script = f"from flipsync.state import StateDB\nprint(StateDB.open({str(path)!r}).inbox_count())"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def test_a_second_open_in_the_writers_process_keeps_the_writers_wal(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = StateDB.open(path)  # the receiver's long-lived connection
    try:
        writer.add_payloads([("wh:1", payload("a@example.org"))], source="t", id_field="x")
        wal = path.with_name("state.db-wal")
        # /healthz or /metrics in the same process: opens the file again and closes it
        for readonly in (True, False):
            StateDB.open(path, create=False, readonly=readonly).close()
        _other_process_opens_and_closes(path)
        assert wal.exists(), "another process deleted the WAL the writer still writes to"
        writer.add_payloads([("wh:2", payload("b@example.org"))], source="t", id_field="x")
        assert _count_in_another_process(path) == 2  # the second webhook is in the file
    finally:
        writer.close()
    assert _count_in_another_process(path) == 2
