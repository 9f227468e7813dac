"""Issue 9: progress for people at a terminal, never in logs or JSON."""

from __future__ import annotations

import io

from flipsync.progress import TerminalProgress, for_people, no_progress
from flipsync.state import utcnow
from flipsync.sync import Syncer
from tests.conftest import Org
from tests.helpers import payload


def test_the_bar_shows_counts_and_rate_and_ends_its_line() -> None:
    out = io.StringIO()
    now = [0.0]
    bar = TerminalProgress(out, clock=lambda: now[0], every=0.2)
    bar("records", 0, 1000)
    now[0] = 0.1
    bar("records", 100, 1000)  # too soon after the last update: not drawn
    now[0] = 2.0
    bar("records", 500, 1000)
    now[0] = 4.0
    bar("records", 1000, 1000)
    text = out.getvalue()
    assert "100/1,000" not in text
    assert "[###############...............] 500/1,000 (250/s)" in text
    assert text.endswith("1,000/1,000 (250/s)\x1b[K\n")


def test_no_bar_for_json_or_when_nobody_watches() -> None:
    assert for_people(as_json=True) is no_progress
    assert for_people(as_json=False) is no_progress  # pytest's stderr is no terminal


def test_a_run_reports_progress_batch_by_batch(org: Org) -> None:
    org.write_config(run={"batch_size": 2})
    org.ingest([payload(f"p{i}@example.org", txn=f"T{i}") for i in range(5)])
    seen: list[tuple[str, int, int | None]] = []
    settings = org.settings()
    with org.state() as state:
        from flipsync.cli import build_client

        Syncer(
            settings,
            state,
            build_client(settings),
            clock=utcnow,
            sleep=lambda _s: None,
            progress=lambda what, done, total: seen.append((what, done, total)),
        ).run()
    assert seen == [("records", 2, 5), ("records", 4, 5), ("records", 5, 5)]


def test_cli_output_under_a_pipe_has_no_bar(org: Org) -> None:
    org.ingest([payload("a@example.org")])
    result = org.cli("run")
    assert "\r" not in result.output and "\x1b[K" not in result.output
