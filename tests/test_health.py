"""`flipsync status --check`: problems a monitor should page someone about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flipsync.errors import ExitCode
from flipsync.health import problems
from tests.conftest import Org
from tests.helpers import payload

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_healthy_sync_has_no_problems() -> None:
    """A recent good run, nothing waiting, a fresh login: no problem."""
    assert (
        problems(
            now=NOW,
            runs=[{"kind": "live", "status": "ok"}],
            oldest_waiting=None,
            open_batches=[],
            token={"refresh_token_days_left": 170},
            token_error=None,
        )
        == []
    )


def test_each_problem_is_named_with_what_to_do() -> None:
    """Failed last run, stale inbox, stuck batch and an expiring login are all reported."""
    found = problems(
        now=NOW,
        runs=[
            {
                "kind": "live",
                "status": "error",
                "started_at": "t",
                "report": {"message": "quota spent"},
            },
            {"kind": "live", "status": "ok"},
        ],
        oldest_waiting=NOW - timedelta(hours=3),
        open_batches=[NOW - timedelta(hours=7), NOW - timedelta(minutes=5)],
        token={"refresh_token_days_left": 12.5},
        token_error=None,
    )
    assert len(found) == 4
    assert found[0].startswith("login: the refresh token expires from disuse in 12.5 days")
    assert "last run failed (t): quota spent" in found[1]
    assert "waited 3.0 hours" in found[2]
    assert "still unconfirmed" in found[3]


def test_status_check_exit_codes(org: Org) -> None:
    """Exit 0 when healthy; exit 8 with the problems when not."""
    org.ingest([payload("h@example.org")])
    org.run()
    ok = org.cli("status", "--check")
    assert ok.exit_code == 0, ok.output
    assert "problem:" not in ok.output
    with org.state() as state:
        old = datetime.now(UTC) - timedelta(hours=5)
        state.add_payloads(
            [("wh:stale", payload("s@example.org"))],
            source="test",
            id_field="webhook_record_id",
            received_at=old,
        )
    (org.tmp / "tokens.json").unlink()
    bad = org.cli("status", "--check")
    assert bad.exit_code == ExitCode.UNHEALTHY
    assert "problem: login:" in bad.output and "flipsync auth login" in bad.output
    assert "records have waited 5.0 hours" in bad.output
