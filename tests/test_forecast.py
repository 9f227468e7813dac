"""Issue 9: a dry run says what the live run will cost; `backfill --estimate` sends nothing."""

from __future__ import annotations

import json

from flipsync.forecast import Forecast, requests_of
from tests.conftest import Org
from tests.helpers import payload


def people(org: Org) -> None:
    org.write_config(
        policy={
            "setup": "all_contacts_by_subscription",
            "new_non_subscriber_status": "implicit",
            "lists": {
                "new_subscribers": ["Subscribers"],
                "new_non_subscribers": ["NonSubscribers"],
                "existing": ["Existing"],
            },
        }
    )
    org.sandbox.add_contact("known@example.org", permission="implicit")
    org.ingest(
        [
            payload("a@example.org", txn="A"),
            payload("b@example.org", txn="B"),
            payload("s@example.org", txn="S"),
            payload("s@example.org", txn="S", activity="Mailing List", amount=""),
            payload("known@example.org", txn="K"),
        ]
    )


def test_a_dry_run_forecasts_the_live_runs_writes_and_its_share_of_the_budget(org: Org) -> None:
    """The forecast's imports and sign-ups are what the live run then sends."""
    people(org)
    dry = org.cli("run", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    outlook = json.loads(dry.output)["forecast"]
    assert outlook["requests"]["json_import"] == 2  # NonSubscribers, Existing
    assert outlook["requests"]["sign_up_form"] == 1
    assert outlook["key_budget"] == 10_000
    assert 0 < outlook["share_of_key_budget_left"] < 0.01
    text = org.cli("run", "--dry-run", "--log-format", "console")
    assert "a live run would send about" in text.output
    assert "of what is left of today's budget of the application key" in text.output
    org.sandbox.clear_request_log()
    live = org.run()
    sent = [e for e in org.api_requests() if e.method == "POST"]
    assert sum(e.path.endswith("contacts_json_import") for e in sent) == 2
    assert sum(e.path.endswith("sign_up_form") for e in sent) == 1
    assert live.status == "ok"


def test_backfill_estimate_sends_no_request_and_changes_nothing(org: Org) -> None:
    """From local data alone: no request, the state DB untouched, the same planned writes."""
    people(org)
    assert org.run().status == "ok"  # the records are synced once; a backfill redoes them
    org.sandbox.clear_request_log()
    state_before = org.settings().state_file.read_bytes()
    result = org.cli("backfill", "--since", "2000-01-01", "--estimate", "--json")
    assert result.exit_code == 0, result.output
    assert org.api_requests() == []
    assert org.settings().state_file.read_bytes() == state_before
    document = json.loads(result.output)
    outlook = document["forecast"]
    assert outlook["requests"]["json_import"] >= 1
    assert any("no request was sent" in n for n in outlook["notes"])
    # the report counts what was sent (nothing), the forecast what a live backfill would send
    assert document["requests"] == {"total": 0, "by_kind": {}}


def test_estimate_of_a_cold_mirror_counts_its_build() -> None:
    """Pure arithmetic: polls per import, and the share of what is left today."""
    counted = requests_of({"lists": 1, "contacts_page": 1}, {"json_import": 3, "sign_up_form": 4})
    assert counted == {
        "lists": 1,
        "contacts_page": 1,
        "json_import": 3,
        "activity": 6,
        "sign_up_form": 4,
    }
    f = Forecast(counted, key_budget=100, key_used_today=85)
    assert f.total == 15 and f.share_of_key_budget() == 1.0
    assert any("of what is left" in line for line in f.lines())
    assert not any("would not fit" in line for line in f.lines())
    assert any("would not fit" in line for line in Forecast(counted, 100, 90).lines())
