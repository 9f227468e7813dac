"""`fleet serve` keeps every acknowledged webhook while /metrics and /healthz read its DBs.

The end-to-end form of tests/test_state_locks.py: the fleet receiver's inbox writer holds
each organization's state DB open; a scrape of /metrics (or /healthz) opens the same files
again in the same process; a cron run in another process then opens and closes one. Every
webhook answered 200 before and after must be in the file that the next run reads.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from flipsync.fleet_receiver import FleetReceiver
from tests.fleet_helpers import FleetBox
from tests.test_fleet_receiver import app, body_of, call, fb

FIXTURES = (app, fb)


def _in_another_process(path: Path) -> int:
    """Open, count and close, as a cron run does: the inbox records another process sees."""
    script = textwrap.dedent(
        f"""
        from flipsync.state import StateDB
        with StateDB.open({str(path)!r}, create=False) as db:
            print(db.inbox_count())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    )
    return int(out.stdout.strip())


def test_webhooks_answered_around_a_scrape_and_a_cron_run_are_all_stored(
    app: FleetReceiver, fb: FleetBox
) -> None:
    north = fb.secrets["north"]
    path = fb.root / "orgs" / "north" / "state" / "north.db"
    assert call(app, "POST", f"/north/flipcause/{north}", body_of("a1@north.example"))[0] == 200
    assert call(app, "GET", "/metrics")[0] == 200
    assert call(app, "GET", "/healthz")[0] == 200
    assert _in_another_process(path) == 1  # the cron run: its close must not take the WAL
    assert call(app, "POST", f"/north/flipcause/{north}", body_of("a2@north.example"))[0] == 200
    assert path.with_name(path.name + "-wal").exists()
    assert _in_another_process(path) == 2
