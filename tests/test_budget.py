"""The machine-wide request budget of an application key, shared by every organization."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flipsync.ctct.budget import KeyBudget
from flipsync.errors import ExitCode, QuotaExceeded
from tests.conftest import Org
from tests.helpers import payload

NOON = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()


class FakeTime:
    def __init__(self, start: float) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def budget(path: Path, t: FakeTime, org: str, **limits: int | None) -> KeyBudget:
    return KeyBudget(
        path,
        organization=org,
        rate_per_second=4,
        daily_limit=limits.get("daily_limit"),
        organization_daily_limit=limits.get("organization_daily_limit"),
        wall_clock=t.clock,
        sleep=t.sleep,
    )


def test_two_processes_share_the_rate(tmp_path: Path) -> None:
    """Requests of two organizations (two processes) are spaced as one stream under 4/s."""
    t = FakeTime(NOON)
    a = budget(tmp_path / "key.json", t, "a")
    b = budget(tmp_path / "key.json", t, "b")
    starts = []
    for limiter in (a, b, a, b, a, b, a, b):
        limiter.acquire()
        starts.append(t.now)
    window = [s for s in starts if s < starts[0] + 1.0]
    assert len(window) <= 4
    assert all(later - earlier >= 0.25 for earlier, later in itertools.pairwise(starts))
    assert a.usage().key_total == 8 and a.usage().organization == 4


def test_daily_budgets_stop_before_sending(tmp_path: Path) -> None:
    """The key budget and an organization's share each end the run with the reset time."""
    t = FakeTime(NOON)
    a = budget(tmp_path / "key.json", t, "a", daily_limit=5, organization_daily_limit=3)
    b = budget(tmp_path / "key.json", t, "b", daily_limit=5)
    for _ in range(3):
        a.acquire()
    with pytest.raises(QuotaExceeded, match="this organization's daily budget of 3") as info:
        a.acquire()
    assert info.value.reset_at == datetime(2026, 11, 30, tzinfo=UTC)
    b.acquire()
    b.acquire()
    with pytest.raises(QuotaExceeded, match="for this application key is spent"):
        b.acquire()
    t.now += 12 * 3600  # past 00:00 UTC: a new day, new counts
    a.acquire()
    assert a.usage().key_total == 1


def test_damaged_budget_file_costs_counts_not_runs(tmp_path: Path) -> None:
    """A torn or foreign budget file is started afresh, never a crash."""
    path = tmp_path / "key.json"
    path.write_text("{not json")
    t = FakeTime(NOON)
    budget(path, t, "a").acquire()
    assert budget(path, t, "a").usage().organization == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_organization_budget_ends_a_live_run_cleanly(org: Org) -> None:
    """An organization over its daily share stops with exit 5; its checkpoint is kept."""
    org.write_config(constant_contact={"organization_daily_request_budget": 2})
    org.ingest([payload(f"b{i}@example.org") for i in range(5)])
    result = org.cli("run")
    assert result.exit_code == ExitCode.QUOTA
    assert "daily budget of 2 requests is spent" in result.output
    with org.state() as state:
        assert state.checkpoint == 0
    assert len(org.sandbox.request_log()) == 2


def test_the_budget_spaces_exactly_like_the_process_limiter(tmp_path: Path) -> None:
    """One spacing rule: the machine-wide budget and the in-process limiter wait alike."""
    from flipsync.ctct.http import RateLimiter

    across, within = FakeTime(NOON), FakeTime(NOON)
    shared = budget(tmp_path / "key.json", across, "a")
    limiter = RateLimiter(4, clock=within.clock, sleep=within.sleep)
    for pause in (0.0, 0.1, 0.0, 0.0, 1.0, 0.0):
        across.now += pause
        within.now += pause
        assert shared.acquire() == pytest.approx(limiter.acquire())
    assert across.slept == pytest.approx(within.slept)
    assert len(across.slept) == 4  # 4/s with 5% slack: back-to-back requests wait
