"""Typed outcomes: JSON round trips, old journals, immutability, and the run report's spill."""

from __future__ import annotations

import dataclasses
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from flipsync.journal_batch import BatchRecord, OpResult
from flipsync.json_fields import StoredDataError
from flipsync.outcome_log import OutcomeLog
from flipsync.outcomes import PUBLIC_OUTCOME_KEYS, Outcome, RunReport, outcome_log
from flipsync.policy import Action, Endpoint
from flipsync.push import Pusher
from flipsync.report import render_table, report_json, write_outcomes
from flipsync.safe_text import json_for_terminal
from flipsync.state import Journal, JournalOp, StateDB
from tests.helpers import config_dict, settings_from

FULL = Outcome(
    email="Zoë@Example.org",
    email_key="zoë@example.org",
    seqs=(3, 7),
    record_keys=("wh:3", "wh:7"),
    flipcause_ids={"transaction_id": ("T1", "T2"), "webhook_record_id": ("3",)},
    action=Action.CREATE,
    endpoint=Endpoint.SIGN_UP_FORM,
    status_before="new",
    status_after="explicit",
    lists=("Newsletter",),
    list_ids=("11111111-1111-1111-1111-111111111111",),
    fields=("first_name", "phone"),
    reason="signed up \u202eon the form",
    op_id="b1:sign_up_form:0",
    contact_id="c-42",
)

# A batch exactly as the dict-based code (before typed outcomes) journaled it.
OLD_BATCH: dict[str, Any] = {
    "outcomes": [
        {
            "email": "ann@example.org",
            "email_key": "ann@example.org",
            "seqs": [1],
            "record_keys": ["wh:1"],
            "flipcause_ids": {"transaction_id": ["T-ann"]},
            "action": "create",
            "endpoint": "sign_up_form",
            "status_before": "new",
            "status_after": "explicit",
            "lists": ["Newsletter"],
            "list_ids": ["L1"],
            "fields": ["first_name"],
            "reason": "new subscriber",
            "op_id": "op-ann",
        },
        {
            "email": "bob@example.org",
            "email_key": "bob@example.org",
            "seqs": [2],
            "record_keys": ["wh:2"],
            "flipcause_ids": {"transaction_id": ["T-bob"]},
            "action": "update",
            "endpoint": "sign_up_form",
            "status_before": "implicit",
            "status_after": "explicit",
            "lists": ["Newsletter"],
            "list_ids": ["L1"],
            "fields": [],
            "reason": "signed up",
            "op_id": "op-bob",
        },
        {
            "email": None,
            "email_key": None,
            "seqs": [3],
            "record_keys": ["wh:3"],
            "flipcause_ids": {},
            "action": "reject",
            "endpoint": "none",
            "status_before": None,
            "status_after": None,
            "lists": [],
            "list_ids": [],
            "fields": [],
            "reason": "no email",
            "op_id": None,
        },
    ],
    "people": {
        "ann@example.org": {"transactions": [["T-ann", True]]},
        "bob@example.org": {"transactions": [["T-bob", False]]},
    },
    "attempts": {"2": 1},
    "checkpoint": 3,
    "progress": None,
}


def test_an_outcome_round_trips_every_field_through_json() -> None:
    text = json.dumps(FULL.to_json(), ensure_ascii=False)
    back = Outcome.from_json(json.loads(text))
    assert back == FULL
    for f in dataclasses.fields(Outcome):
        assert getattr(back, f.name) == getattr(FULL, f.name), f.name
    assert isinstance(back.action, Action) and isinstance(back.endpoint, Endpoint)


def test_an_outcome_is_never_edited_in_place() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FULL.action = Action.REJECT  # type: ignore[misc]
    deferred = dataclasses.replace(FULL, action=Action.DEFERRED)
    assert FULL.action is Action.CREATE and deferred.action is Action.DEFERRED


def test_deferred_and_delete_are_actions() -> None:
    assert Action("deferred") is Action.DEFERRED and Action("delete") is Action.DELETE


def test_the_public_view_keeps_the_report_keys_in_order() -> None:
    assert tuple(FULL.public()) == PUBLIC_OUTCOME_KEYS
    assert FULL.public()["action"] == "create" and FULL.public()["reason"] == FULL.reason


def test_a_batch_journaled_by_the_dict_based_code_still_loads() -> None:
    batch = BatchRecord.from_json(json.loads(json.dumps(OLD_BATCH)))
    ann, bob, bad = batch.outcomes
    assert ann.action is Action.CREATE and ann.endpoint is Endpoint.SIGN_UP_FORM
    assert ann.seqs == (1,) and ann.flipcause_ids == {"transaction_id": ("T-ann",)}
    assert bob.action is Action.UPDATE and bob.status_before == "implicit"
    assert ann.contact_id is None and bad.email is None and bad.op_id is None
    assert batch.people == {
        "ann@example.org": (("T-ann", True),),
        "bob@example.org": (("T-bob", False),),
    }
    assert batch.attempts == {2: 1} and batch.checkpoint == 3 and batch.progress is None
    # What the typed code writes is what the old code wrote, key for key.
    assert batch.to_json() == OLD_BATCH


def test_a_batch_round_trips_with_backfill_progress() -> None:
    batch = BatchRecord(
        outcomes=(FULL,),
        people={"zoë@example.org": (("T1", True), ("T2", False))},
        attempts={7: 2},
        checkpoint=None,
        progress=("backfill:2024-01-01:", 7),
    )
    assert BatchRecord.from_json(json.loads(json.dumps(batch.to_json()))) == batch


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**OLD_BATCH["outcomes"][0], "action": "explode"}, "explode"),
        ({**OLD_BATCH["outcomes"][0], "reason": None}, "'reason'"),
        ({**OLD_BATCH["outcomes"][0], "lists": "Newsletter"}, "'lists'"),
    ],
)
def test_a_malformed_stored_outcome_is_refused_by_name(data: dict[str, Any], field: str) -> None:
    with pytest.raises(StoredDataError, match=field):
        Outcome.from_json(data)


def test_an_old_journal_is_finished_and_committed_with_typed_outcomes(tmp_path: Path) -> None:
    """A journal left by the dict-based code: its results turn into new outcome values."""
    settings = settings_from(config_dict(), tmp_path)
    with StateDB.open(tmp_path / "state.db") as state:
        ops = (
            # The sign-up form answered "already there": the planned create becomes an update.
            JournalOp("op-ann", 0, "sign_up_form", {}, "done", None, None, None),
            # Never confirmed, retryable: deferred, and queued again.
            JournalOp("op-bob", 1, "sign_up_form", {}, "failed", None, None, None),
        )
        journal = Journal("b1", "run-1", "live", "2026-01-01T00:00:00+00:00", 1, 3, OLD_BATCH, ops)
        state.write_journal(journal)
        state.update_op("op-ann", state="done", result={"contact_id": "c-ann", "created": False})
        state.update_op("op-bob", state="failed", result={"error": "timed out", "retry": True})
        (stored,) = state.open_journals()
        report = RunReport(run_id="run-1", kind="live", dry_run=False, started_at="now")
        pusher = Pusher(settings, state, api=None, run_id="run-1")  # type: ignore[arg-type]
        assert pusher.drive(stored, report)
        ann, bob, bad = report.outcomes
        assert (ann.action, ann.contact_id) == (Action.UPDATE, "c-ann")
        assert ann.reason == "new subscriber; Constant Contact already had this contact"
        assert (bob.action, bob.reason, bob.status_after) == (
            Action.DEFERRED,
            "timed out",
            "implicit",
        )
        assert bad.action is Action.REJECT
        assert report.counts() == {"create": 0, "update": 1, "skip": 0, "reject": 1, "deferred": 1}
        assert state.retry_seqs() == {2: 2}
        assert state.checkpoint == 3 and not state.open_journals()
        assert [o.action for o in state.outcomes_for("ann@example.org")] == ["update"]
        assert state.mirror_get(["ann@example.org"])["ann@example.org"].contact_id == "c-ann"


def test_op_results_keep_their_journal_shape() -> None:
    assert OpResult(contact_id="c", created=True).to_json() == {"contact_id": "c", "created": True}
    assert OpResult.failed("gone", retry=False).to_json() == {"error": "gone", "retry": False}
    activity = {"state": "completed", "error_count": 1, "correctable_count": 2, "errors": ["x"]}
    result = OpResult.from_json(activity)
    assert result.row_error_count == 3 and result.errors == ("x",)


# -- the run report's spill ----------------------------------------------------------------


def _outcome(i: int, action: Action = Action.CREATE) -> Outcome:
    return dataclasses.replace(
        FULL,
        email=f"p{i}@example.org",
        email_key=f"p{i}@example.org",
        seqs=(i,),
        action=action,
        reason=f"reason {i} \u202e",
    )


def test_the_spill_is_read_again_on_every_pass_and_leaves_no_file(tmp_path: Path) -> None:
    log = outcome_log(tmp_path)
    assert not log and list(log) == []
    log.extend([_outcome(1), _outcome(2)])
    assert os.listdir(tmp_path) == []  # unlinked as it was created
    first = iter(log)
    assert next(first) == _outcome(1)
    log.extend([_outcome(3)])  # added while a pass is under way: that pass ends where it began
    assert list(first) == [_outcome(2)]
    assert list(log) == [_outcome(1), _outcome(2), _outcome(3)] and len(log) == 3
    log.close()
    assert list(log) == [] and len(log) == 0


def test_the_spill_reads_lines_longer_than_a_chunk(tmp_path: Path) -> None:
    log: OutcomeLog[Outcome] = outcome_log(tmp_path)
    long = dataclasses.replace(FULL, reason="x" * 200_000)
    log.extend([FULL, long, FULL])
    assert list(log) == [FULL, long, FULL]


def _report(n: int, *, dry_run: bool = True) -> RunReport:
    report = RunReport(run_id="r", kind="live", dry_run=dry_run, started_at="t")
    actions = [Action.CREATE, Action.SKIP, Action.REJECT, Action.DEFERRED, Action.UPDATE]
    report.add(_outcome(i, actions[i % len(actions)]) for i in range(n))
    return report


@pytest.mark.parametrize("n", [0, 1, 7])
@pytest.mark.parametrize("with_outcomes", [True, False])
def test_streamed_json_is_byte_for_byte_the_report_as_one_dump(n: int, with_outcomes: bool) -> None:
    report = _report(n)
    expected = json_for_terminal(report.as_dict(with_outcomes=with_outcomes))
    assert "".join(report_json(report, with_outcomes=with_outcomes)) == expected


def test_streamed_json_keeps_keys_added_after_the_outcomes() -> None:
    report = _report(4)
    extra = {"forecast": {"total": 3, "by_kind": {"json_import": 1}}}
    expected = json_for_terminal({**report.as_dict(with_outcomes=True), **extra})
    assert "".join(report_json(report, with_outcomes=True, extra=extra)) == expected


@pytest.mark.parametrize("n", [0, 3])
def test_the_json_output_file_is_the_rows_as_one_dump(tmp_path: Path, n: int) -> None:
    report = _report(n)
    out = tmp_path / "plan.json"
    write_outcomes(out, report.outcomes)
    rows = [o.public() for o in report.outcomes]
    assert out.read_text(encoding="utf-8") == json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


def test_the_table_measures_columns_over_the_whole_spill() -> None:
    report = _report(3)
    wide = dataclasses.replace(_outcome(9), email="a-much-longer-local-part@example.org")
    report.add([wide])
    lines = render_table(report.outcomes).splitlines()
    assert len(lines) == 1 + 4 + 1
    # Every row's ACTION column starts where the header's does: widths came from all rows.
    start = lines[0].index("ACTION")
    assert all(line[start:].split()[0] in {"create", "skip", "reject"} for line in lines[1:5])


def _peak_of_a_dry_run_report(tmp_path: Path, batches: int) -> int:
    """Traced peak bytes while adding ``batches`` batches of 200 outcomes and streaming --json."""
    report = RunReport(
        run_id="r", kind="live", dry_run=True, started_at="t", outcomes=outcome_log(tmp_path)
    )
    tracemalloc.start()
    try:
        for batch in range(batches):
            report.add(_outcome(batch * 200 + i) for i in range(200))
        for piece in report_json(report, with_outcomes=True):
            assert piece
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.counts()["create"] == len(report.outcomes) == batches * 200
    return peak


def test_the_report_keeps_counts_not_outcomes_in_memory(tmp_path: Path) -> None:
    """Eight times the outcomes, about the same peak: memory is one batch's, not the run's."""
    small = _peak_of_a_dry_run_report(tmp_path, 2)
    large = _peak_of_a_dry_run_report(tmp_path, 16)
    # Held as rows, the 2,800 extra outcomes would take about 2.8 MB.
    assert large - small < 700_000, (small, large)
    assert large < 1_500_000, large


def test_the_run_history_keeps_counts_not_the_outcomes() -> None:
    report = _report(7, dry_run=False)  # create, skip, reject, deferred, update, create, skip
    record = report.history_record()
    assert record["not_synced"] == 4 and list(record)[-1] == "not_synced"
    assert record["counts"] == {"create": 2, "update": 1, "skip": 2, "reject": 1, "deferred": 1}
    assert json.loads(json.dumps(record))["run_id"] == "r"


def test_the_spill_falls_back_to_the_system_temp_directory(tmp_path: Path) -> None:
    log = outcome_log(tmp_path / "not-there")
    log.extend([FULL])
    assert list(log) == [FULL] and not (tmp_path / "not-there").exists()


def test_journaled_request_bodies_are_read_by_shape() -> None:
    from flipsync.push import _email_of, _import_emails

    assert _email_of({"email_address": {"address": "a@example.org"}}) == "a@example.org"
    assert _email_of({"email_address": "b@example.org"}) == "b@example.org"
    assert _email_of({}) == ""
    body: dict[str, Any] = {"import_data": [{"email": "Ann@Example.org"}, "junk", {}]}
    op = JournalOp("op", 0, "json_import", body, "done", "act", None, None)
    assert _import_emails(op) == ["ann@example.org", "", ""]
