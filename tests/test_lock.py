"""flipsync.lock: the one file-lock helper behind the run, token and budget locks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from flipsync.clock import VirtualClock
from flipsync.errors import ExitCode, LockHeld
from flipsync.lock import RUN_LOCK_POLL_SECONDS, LockBusy, hold_lock, locked_file


def test_a_held_lock_is_waited_for_on_the_clock_then_refused(tmp_path: Path) -> None:
    """Another holder: tried every poll until the wait is over, then LockBusy; no real sleep."""
    path = tmp_path / "locks" / "x.lock"
    clock = VirtualClock(start=1000.0)
    with (
        locked_file(path),  # held through another open file: another holder
        pytest.raises(LockBusy),
        locked_file(path, wait_seconds=1.0, poll_seconds=0.25, clock=clock.time, sleep=clock.sleep),
    ):
        pass
    assert clock.slept == pytest.approx(1.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_lock_is_free_again_when_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with locked_file(path, wait_seconds=0):
        pass
    with locked_file(path, wait_seconds=0) as fd:
        assert fd >= 0


def test_a_second_run_is_refused_at_once_naming_the_holder(tmp_path: Path) -> None:
    """The run lock: exit code LOCKED, the holder's pid and kind in the message, no wait."""
    path = tmp_path / "org.lock"
    clock = VirtualClock()
    with (
        hold_lock(path, "run"),
        pytest.raises(LockHeld) as refused,
        hold_lock(path, "dry run", clock=clock.time, sleep=clock.sleep),
    ):
        pass
    assert refused.value.exit_code == ExitCode.LOCKED
    assert "run)" in str(refused.value) and "this dry run did nothing" in str(refused.value)
    assert clock.slept == 0


def test_a_backfill_waits_in_poll_steps_up_to_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "org.lock"
    clock = VirtualClock()
    with (
        hold_lock(path, "run"),
        pytest.raises(LockHeld),
        hold_lock(path, "backfill", wait_seconds=2, clock=clock.time, sleep=clock.sleep),
    ):
        pass
    # every poll is one RUN_LOCK_POLL_SECONDS step; the last may end just past the limit
    assert 2 - 1e-6 <= clock.slept <= 2 + RUN_LOCK_POLL_SECONDS + 1e-6


def test_an_error_inside_the_block_is_not_taken_for_a_busy_lock(tmp_path: Path) -> None:
    """Only failing to take the run lock is LockHeld; the body's own errors pass through."""
    with pytest.raises(LockBusy), hold_lock(tmp_path / "org.lock"):
        raise LockBusy("the token lock, say")
