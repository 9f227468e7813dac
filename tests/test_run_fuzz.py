"""Hostile payloads through a whole run: never a crash, never a valid record lost beside them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flipsync.ctct.auth import token_set_from_response, write_token_file
from flipsync.sandbox import Sandbox, SandboxConfig
from flipsync.sandbox.inprocess import start_in_process
from flipsync.state import utcnow
from tests.conftest import Org
from tests.helpers import payload

FIELDS = [
    "PD_email",
    "PD_first_name",
    "PD_last_name",
    "PD_phone",
    "PD_address",
    "PD_city",
    "PD_zip",
    "activity_type",
    "transaction_id",
    "webhook_record_id",
    "DD_amount",
    "AD_contact_id",
    "AD_campaign_id",
    "AD_transaction_date",
    "CF_x",
]

odd_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=3000),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\u202e",
            "\ufeff",
            "a@b",
            "@@",
            "x" * 10_000,
            "Ünïcödé@example.org",
            "NaN",
            "-1e999",
            "9" * 400,
        ]
    ),
)
odd_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), odd_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
hostile = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=20), odd_value, max_size=12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.lists(hostile, min_size=1, max_size=8), good_count=st.integers(1, 4))
def test_run_survives_hostile_payloads_and_keeps_the_good_ones(
    junk: list[dict[str, Any]], good_count: int
) -> None:
    """Every payload gets an outcome with a reason; every valid person reaches Constant Contact."""
    box = Sandbox(SandboxConfig(requests_per_second=0, activity_seconds=0))
    box.add_list("Donors")
    with tempfile.TemporaryDirectory() as tmp, start_in_process(box) as running:
        org = Org(Path(tmp), running, Path(tmp) / "flipsync.yaml")
        org.write_config()
        write_token_file(
            Path(tmp) / "tokens.json", token_set_from_response(box.issue_tokens(), utcnow())
        )
        good = [payload(f"good{i}@example.org") for i in range(good_count)]
        for i, item in enumerate(junk):
            item.setdefault("webhook_record_id", f"junk-{i}")
        mixed = [*junk[: len(junk) // 2], *good, *junk[len(junk) // 2 :]]
        ingested = org.ingest(mixed)
        report = org.run()
        assert report.status in ("ok", "idle")
        for p in good:
            assert box.contact_by_email(p["PD_email"]) is not None
        assert all(o.reason for o in report.outcomes)
        with org.state() as state:
            stored = state.inbox_after(0, 10_000)
            assert len(stored) == ingested.added
            # seqs may have gaps (a duplicate insert still uses one up): compare with the last
            assert state.checkpoint == stored[-1].seq
            assert state.open_journals() == []
