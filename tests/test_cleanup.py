"""Test contacts, from marking to clean-up (`flipsync cleanup-test-contacts`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flipsync.cleanup import (
    BatchOpen,
    Cleanup,
    EmailRecords,
    Markers,
    Verdict,
    classify,
    judge_contact,
    judge_history,
)
from flipsync.config import TestRecordSettings
from flipsync.ctct.types import ActivityStatus, RemoteContact
from flipsync.errors import ConfigError, InputError
from flipsync.outcomes import Outcome
from flipsync.policy import Action, Endpoint
from flipsync.state import InboxRow, Journal, OutcomeRecord, StateDB, iso
from flipsync.sync import TEST_RECORD_REASON, Syncer
from tests.conftest import Org
from tests.helpers import config_dict, payload, record, settings_from

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


# -- markers ------------------------------------------------------------------------------------


def test_markers_match_email_globs_ids_campaigns_and_go_live_on_inbox_arrival() -> None:
    settings = settings_from(config_dict())
    markers = Markers(
        TestRecordSettings(
            email_patterns=("*+TEST@example.org",),
            record_ids=("w-1",),
            transaction_ids=("T-9",),
            campaign_ids=("777",),
            go_live_date=date(2026, 3, 1),
        ),
        extra_patterns=("qa-*@example.net",),
    )
    after_go_live = "2026-03-01T00:00:00.000000Z"

    def rec(**kw: Any) -> Any:
        return record(payload(**kw), settings)

    assert markers.match(rec(email="Ann+Test@Example.org"), after_go_live) == (
        "email matches *+TEST@example.org"
    )
    assert markers.match(rec(email="qa-1@example.net"), after_go_live) == (
        "email matches qa-*@example.net"
    )
    assert markers.match(rec(webhook_record_id="w-1"), after_go_live) == "webhook record id w-1"
    assert markers.match(rec(txn="T-9"), after_go_live) == "transaction id T-9"
    assert markers.match(rec(AD_campaign_id="777"), after_go_live) == "campaign id 777"
    # A transaction dated long before go-live is history (a CSV backfill), not a test...
    real = rec(email="ann@example.org", AD_transaction_date="2019-05-01")
    assert markers.match(real, after_go_live) is None
    # ...while anything that reached the inbox before go-live is.
    assert markers.match(real, "2026-02-28T23:59:59.000000Z") == (
        "reached the inbox on 2026-02-28, before go-live"
    )
    assert markers.match(rec(email="ann+testing@example.org"), after_go_live) is None
    assert not Markers(TestRecordSettings()).any
    assert Markers(TestRecordSettings(), ("x*@example.org",)).any


def test_classify_reads_the_configured_field_names() -> None:
    """Email, record id and campaign come from flipcause.fields, like everywhere else."""
    renamed = {"email": "Email", "webhook_record_id": "RecordId", "campaign_id": "Campaign"}
    settings = settings_from(config_dict(flipcause={"fields": renamed}))
    markers = Markers(TestRecordSettings(record_ids=("r-7",), campaign_ids=("55",)))
    rows = [
        InboxRow(
            1, "k1", "test", "2026-03-05T00:00:00.000000Z", {"Email": "A@x.org", "RecordId": "r-7"}
        ),
        InboxRow(2, "k2", "test", "2026-03-05T00:00:00.000000Z", {"Email": "a@x.org"}),
        InboxRow(
            3, "k3", "test", "2026-03-05T00:00:00.000000Z", {"Email": "b@x.org", "Campaign": "55"}
        ),
        InboxRow(
            4,
            "k4",
            "test",
            "2026-03-05T00:00:00.000000Z",
            {"PD_email": "c@x.org", "Campaign": "55"},
        ),
        InboxRow(
            5, "k5", "test", "2026-03-05T00:00:00.000000Z", {"Email": "bad", "RecordId": "r-7"}
        ),
    ]
    found = classify(rows, settings.flipcause, markers)
    assert sorted(found) == ["a@x.org", "b@x.org"]
    assert found["a@x.org"].tests == {"k1": "webhook record id r-7"}
    assert found["a@x.org"].others == ["k2"]
    assert found["b@x.org"].tests == {"k3": "campaign id 55"}


def test_test_records_config_reports_every_problem_with_key_and_fix(tmp_path: Path) -> None:
    data = config_dict(
        test_records={
            "email_matches": ["*@*"],
            "go_live_date": "next monday",
            "campaign_ids": {"a": 1},
            "record_idz": ["1"],
        }
    )
    with pytest.raises(ConfigError) as caught:
        settings_from(data, tmp_path)
    text = str(caught.value)
    assert "`test_records.email_matches`" in text and "matches every address" in text
    assert "`test_records.go_live_date`: must be a date like 2026-03-01" in text
    assert "`test_records.campaign_ids`: must be a list of Flipcause campaign ids" in text
    assert "`test_records.record_idz`: unknown key (did you mean `record_ids`?)" in text
    with pytest.raises(ConfigError, match="`test_records`: empty"):
        settings_from(config_dict(test_records={}), tmp_path)
    ok = settings_from(
        config_dict(test_records={"email_matches": "*@test.example.org", "record_ids": [12]}),
        tmp_path,
    )
    assert ok.test_records.email_patterns == ("*@test.example.org",)
    assert ok.test_records.record_ids == ("12",)


# -- the verdict from flipsync's history (pure) ----------------------------------------------


def _records(tests: Sequence[str] = ("k1",), others: Sequence[str] = ()) -> EmailRecords:
    return EmailRecords(
        email="t+test@example.org",
        tests=dict.fromkeys(tests, "email matches *+test@*"),
        others=list(others),
    )


def _outcome(action: str, keys: Sequence[str] = ("k1",), at: datetime = NOW) -> OutcomeRecord:
    return OutcomeRecord(
        id=1,
        run_id="r",
        at=iso(at),
        email="t+test@example.org",
        email_key="t+test@example.org",
        record_keys=tuple(keys),
        flipcause_ids={},
        action=Action(action),
        endpoint=Endpoint.NONE if action == "skip" else Endpoint.JSON_IMPORT,
        status_before=None,
        status_after=None,
        lists=(),
        fields=(),
        reason="",
        run_kind="live",
    )


@pytest.mark.parametrize(
    ("records", "history", "verdict", "reason"),
    [
        (_records(), [_outcome("create")], Verdict.DELETE, "created by flipsync"),
        (
            _records(),
            [_outcome("create"), _outcome("update", at=NOW + timedelta(hours=1))],
            Verdict.DELETE,
            "created by flipsync",
        ),
        (_records(), [], Verdict.NOT_SYNCED, "never wrote"),
        (_records(), [_outcome("skip")], Verdict.NOT_SYNCED, "never wrote"),
        # pre-existing: flipsync's first write was an update
        (_records(), [_outcome("update"), _outcome("create")], Verdict.KEEP, "existed before"),
        # a non-test record in the inbox has the same email
        (_records(others=["k9"]), [_outcome("create")], Verdict.KEEP, "not tests have this"),
        # flipsync wrote it for a record that is not (or no longer) a test
        (
            _records(),
            [_outcome("create"), _outcome("update", keys=["k1", "k7"])],
            Verdict.KEEP,
            "not tests (k7)",
        ),
        (_records(), [_outcome("create"), _outcome("delete")], Verdict.GONE, "earlier cleanup"),
        # what happened before an earlier clean-up's delete does not count
        (
            _records(),
            [_outcome("update"), _outcome("delete"), _outcome("create")],
            Verdict.DELETE,
            "created by flipsync",
        ),
    ],
)
def test_history_decides_who_may_be_deleted(
    records: EmailRecords, history: list[dict[str, Any]], verdict: Verdict, reason: str
) -> None:
    candidate = judge_history("t+test@example.org", records, history)
    assert candidate.verdict is verdict
    assert reason in candidate.reason


def _contact(updated: datetime | None, *, deleted: bool = False) -> RemoteContact:
    return RemoteContact(
        contact_id="c-1",
        email="t+test@example.org",
        permission="implicit",
        opt_out_source=None,
        deleted=deleted,
        list_ids=frozenset(),
        created_at=NOW,
        updated_at=updated,
        first_name=None,
        last_name=None,
    )


def test_a_contact_changed_after_flipsync_wrote_it_is_kept() -> None:
    """updated_at later than flipsync's last write means someone changed it: listed, kept."""
    ready = judge_history("t+test@example.org", _records(), [_outcome("create")])
    assert ready.flipsync_wrote_at == iso(NOW)
    kept = judge_contact(ready, _contact(NOW + timedelta(seconds=1, milliseconds=1)))
    assert kept.verdict is Verdict.KEEP
    assert "changed in Constant Contact after flipsync wrote it" in kept.reason
    assert kept.contact_id == "c-1"
    assert judge_contact(ready, _contact(NOW - timedelta(seconds=2))).verdict is Verdict.DELETE
    assert judge_contact(ready, _contact(NOW)).verdict is Verdict.DELETE
    # Within CLOCK_SKEW of flipsync's write: the two clocks, not a person.
    assert judge_contact(ready, _contact(NOW + timedelta(seconds=1))).verdict is Verdict.DELETE
    assert judge_contact(ready, _contact(None)).verdict is Verdict.KEEP
    assert judge_contact(ready, None).verdict is Verdict.GONE
    assert judge_contact(ready, _contact(NOW, deleted=True)).verdict is Verdict.GONE


# -- the clean-up with a stand-in API (no network, no sleeping) ---------------------------------


class FakeAPI:
    """Contacts by email; bulk deletes finish after `polls` status reads (or never)."""

    def __init__(self, contacts: dict[str, RemoteContact], polls: int = 0) -> None:
        self.contacts = contacts
        self.polls = polls
        self.deletes: list[list[str]] = []
        self.lookups: list[str] = []
        self.partial = False
        self._reads: dict[str, int] = {}

    def lookup_contact(self, email: str) -> RemoteContact | None:
        self.lookups.append(email)
        return self.contacts.get(email)

    def delete_contacts(self, contact_ids: Sequence[str]) -> str:
        self.deletes.append(list(contact_ids))
        return f"act-{len(self.deletes)}"

    def get_activity(self, activity_id: str) -> ActivityStatus:
        reads = self._reads[activity_id] = self._reads.get(activity_id, 0) + 1
        ids = self.deletes[int(activity_id.split("-")[1]) - 1]
        done = self.polls >= 0 and reads > self.polls
        applied = ids[1:] if self.partial else ids
        if done:
            for email, contact in list(self.contacts.items()):
                if contact.contact_id in applied:
                    self.contacts[email] = replace(contact, deleted=True)
        return ActivityStatus(
            activity_id=activity_id,
            state="completed" if done else "processing",
            percent_done=100 if done else 50,
            errors=("contact_id x was not found",) if done and self.partial else (),
            items_total_count=len(ids),
            items_completed_count=len(applied) if done else 0,
            person_count=None,
            error_count=None,
            correctable_count=None,
            cannot_add_to_list_count=None,
            created_at=None,
        )


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def _state_with_created(tmp_path: Path, emails: Sequence[str]) -> StateDB:
    """A state DB where flipsync created one contact per email from one test record each."""
    state = StateDB.open(tmp_path / "state.db")
    state.add_payloads(
        [(f"wh:{i}", payload(email, webhook_record_id=str(i))) for i, email in enumerate(emails)],
        source="test",
        id_field="webhook_record_id",
    )
    state.commit_batch(
        batch_id=None,
        run_id="r1",
        checkpoint=len(emails),
        outcomes=[
            Outcome.from_json(
                {
                    "email": email,
                    "record_keys": [f"wh:{i}"],
                    "action": "create",
                    "endpoint": "json_import",
                    "reason": "new contact",
                }
            )
            for i, email in enumerate(emails)
        ],
    )
    return state


def _remote(emails: Sequence[str], updated: datetime) -> dict[str, RemoteContact]:
    return {
        e: replace(_contact(updated), contact_id=f"00000000-0000-4000-8000-{i:012d}", email=e)
        for i, e in enumerate(emails)
    }


def test_apply_deletes_in_bulk_requests_of_500_and_marks_the_records(tmp_path: Path) -> None:
    emails = [f"t{i}+test@example.org" for i in range(501)]
    state = _state_with_created(tmp_path, emails)
    api = FakeAPI(_remote(emails, datetime.now(UTC) - timedelta(minutes=5)), polls=2)
    clock = Clock()
    settings = settings_from(config_dict(test_records={"email_matches": ["*+test@*"]}), tmp_path)
    report = Cleanup(settings, state, api, clock=clock, sleep=clock.sleep).run(apply=True)
    assert report.status == "ok"
    assert [len(ids) for ids in api.deletes] == [500, 1]
    assert {"act-1", "act-2"} <= state.known_activity_ids()  # never adopted as an import
    assert clock.slept == [2.0, 2.0, 2.0, 2.0]  # two polls each before the activities finish
    assert len(report.deleted) == 501 and report.marked == 501
    history = state.outcomes_for("t0+test@example.org")
    assert [o.action for o in history] == ["create", "delete"]
    assert history[-1].endpoint == "contact_delete"
    assert history[-1].status_after == "deleted"
    assert "test contact deleted by cleanup-test-contacts" in history[-1].reason
    assert state.test_marked(["wh:0", "wh:500", "wh:x"]) == {"wh:0", "wh:500"}
    mirror = state.mirror_get(["t0+test@example.org"])["t0+test@example.org"]
    assert mirror.deleted
    run = state.recent_runs(1)[0]
    assert (run["kind"], run["status"]) == ("cleanup", "ok")


def test_an_activity_that_does_not_finish_in_time_marks_nothing(tmp_path: Path) -> None:
    emails = ["a+test@example.org"]
    state = _state_with_created(tmp_path, emails)
    api = FakeAPI(_remote(emails, datetime.now(UTC) - timedelta(minutes=5)), polls=10**6)
    clock = Clock()
    settings = settings_from(config_dict(test_records={"email_matches": ["*+test@*"]}), tmp_path)
    report = Cleanup(settings, state, api, clock=clock, sleep=clock.sleep).run(apply=True)
    assert report.status == "incomplete"
    assert sum(clock.slept) == pytest.approx(30)  # activity_wait_seconds in the test config
    assert report.not_deleted == emails and report.deleted == []
    assert state.test_marked(["wh:0"]) == set()
    assert [o.action for o in state.outcomes_for(emails[0])] == ["create"]


def test_a_partial_activity_is_checked_per_contact(tmp_path: Path) -> None:
    emails = ["a+test@example.org", "b+test@example.org"]
    state = _state_with_created(tmp_path, emails)
    api = FakeAPI(_remote(emails, datetime.now(UTC) - timedelta(minutes=5)))
    api.partial = True  # the first id is not deleted
    clock = Clock()
    settings = settings_from(config_dict(test_records={"email_matches": ["*+test@*"]}), tmp_path)
    report = Cleanup(settings, state, api, clock=clock, sleep=clock.sleep).run(apply=True)
    assert report.deleted == ["b+test@example.org"]
    assert report.not_deleted == ["a+test@example.org"]
    assert report.status == "incomplete" and report.marked == 0
    assert [o.action for o in state.outcomes_for("b+test@example.org")] == ["create", "delete"]
    assert [o.action for o in state.outcomes_for("a+test@example.org")] == ["create"]


def test_apply_waits_for_an_unfinished_batch_first(tmp_path: Path) -> None:
    """A journaled batch may be creating a test contact right now: --apply refuses, lists work."""
    emails = ["a+test@example.org"]
    state = _state_with_created(tmp_path, emails)
    state.write_journal(Journal("b1", "r2", "live", iso(NOW), 1, 1, {"outcomes": []}, ops=()))
    api = FakeAPI(_remote(emails, datetime.now(UTC) - timedelta(minutes=5)))
    settings = settings_from(config_dict(test_records={"email_matches": ["*+test@*"]}), tmp_path)
    listed = Cleanup(settings, state, api).run(apply=False)
    assert [c.verdict for c in listed.candidates] == [Verdict.DELETE]
    with pytest.raises(BatchOpen, match="not committed yet"):
        Cleanup(settings, state, api).run(apply=True)
    assert api.deletes == [] and api.lookups == ["a+test@example.org"]  # the listing only
    assert state.test_marked(["wh:0"]) == set()


def test_without_markers_the_command_refuses(tmp_path: Path) -> None:
    state = _state_with_created(tmp_path, ["a@example.org"])
    settings = settings_from(config_dict(), tmp_path)
    with pytest.raises(InputError, match="no test markers"):
        Cleanup(settings, state, FakeAPI({})).run(apply=False)


# -- end to end against the sandbox --------------------------------------------------------------


def _setup_org(org: Org) -> dict[str, str]:
    """A synced organization with every kind of test-looking contact; returns ids by email."""
    org.write_config(test_records={"email_matches": ["*+test@example.org"], "campaign_ids": [777]})
    box = org.sandbox
    # Pre-existing before flipsync: a test-looking address, which flipsync then updates.
    pre = box.add_contact("pre+test@example.org", permission="explicit")
    org.ingest(
        [
            payload("todd+test@example.org", first="Todd"),  # created from a test record
            payload("todd@example.org", first="Todd"),  # the real supporter, a similar email
            payload("pre+test@example.org"),
            payload("edit+test@example.org"),  # someone edits it after flipsync made it
            payload("shared@example.org", AD_campaign_id="777"),  # test campaign...
            payload("shared@example.org", AD_campaign_id="4809"),  # ...and a real gift
        ]
    )
    assert org.run().status == "ok"
    box.advance_clock(5)  # a person edits it a little later (the sandbox's clock, no sleep)
    box.unsubscribe("edit+test@example.org", source="Account")
    # The README's curl test: arrives after the last run, never synced yet.
    org.ingest([payload("curl+test@example.org")])
    ids = {c["email_address"]["address"]: c["contact_id"] for c in box.contacts()}
    assert ids["pre+test@example.org"] == pre
    return ids


def test_list_then_apply_against_the_sandbox(org: Org) -> None:
    ids = _setup_org(org)
    before = {c["contact_id"]: c for c in org.sandbox.contacts()}
    org.sandbox.clear_request_log()

    listed = org.cli("cleanup-test-contacts", "--json")
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    verdicts = {c["email"]: (c["verdict"], c["reason"]) for c in data["contacts"]}
    assert verdicts["todd+test@example.org"][0] == "delete"
    assert verdicts["pre+test@example.org"][0] == "keep"
    assert "existed before flipsync" in verdicts["pre+test@example.org"][1]
    assert verdicts["edit+test@example.org"][0] == "keep"
    assert "changed in Constant Contact after" in verdicts["edit+test@example.org"][1]
    assert verdicts["shared@example.org"][0] == "keep"
    assert "not tests have this email" in verdicts["shared@example.org"][1]
    assert verdicts["curl+test@example.org"][0] == "not_synced"
    assert "todd@example.org" not in verdicts
    assert data["test_records"] == 5 and data["marked_records"] == 0
    # Listing only reads: one lookup per contact it could delete, and no write at all.
    assert {(e.method, e.path) for e in org.api_requests()} == {("GET", "/v3/contacts")}
    assert {c["contact_id"]: c for c in org.sandbox.contacts()} == before

    applied = org.cli("cleanup-test-contacts", "--apply")
    assert applied.exit_code == 0, applied.output
    assert "deleted 1 contact(s)" in applied.output
    assert "marked 5 test record(s)" in applied.output
    posts = [e for e in org.api_requests() if e.method == "POST"]
    assert [(e.path, e.body) for e in posts] == [
        ("/v3/activities/contact_delete", {"contact_ids": [ids["todd+test@example.org"]]})
    ]

    # The sandbox's final state: only the contact flipsync made from a test record is gone.
    final = {c["email_address"]["address"]: c for c in org.sandbox.contacts()}
    assert "deleted_at" in final["todd+test@example.org"]
    for kept in ("todd@example.org", "pre+test@example.org", "edit+test@example.org"):
        assert "deleted_at" not in final[kept], kept
    assert "deleted_at" not in final["shared@example.org"]
    assert final["edit+test@example.org"]["email_address"]["permission_to_send"] == "unsubscribed"
    assert "curl+test@example.org" not in final
    # listed again: nothing left to mark, and the listing says so
    again = org.cli("--log-format", "console", "cleanup-test-contacts")
    assert "all 5 test record(s) are already marked" in again.output, again.output
    assert json.loads(org.cli("cleanup-test-contacts", "--json").output)["already_marked"] == 5

    # No later run or backfill sends a marked record again.
    report = org.run()
    skipped = [o for o in report.outcomes if o.reason == TEST_RECORD_REASON]
    assert [o.email for o in skipped] == ["curl+test@example.org"]
    with org.state() as state:
        settings = org.settings()
        syncer = Syncer(settings, state, _client(org), sleep=lambda _: None)
        backfill = syncer.backfill(date(2000, 1, 1), None)
    sent = {o.email for o in backfill.outcomes if o.action in ("create", "update")}
    assert sent == {"todd@example.org", "shared@example.org"}
    final = {c["email_address"]["address"]: c for c in org.sandbox.contacts()}
    assert "deleted_at" in final["todd+test@example.org"]
    assert "curl+test@example.org" not in final

    # A second clean-up finds nothing left to delete and changes nothing.
    again = json.loads(org.cli("cleanup-test-contacts", "--json").output)
    assert {c["email"]: c["verdict"] for c in again["contacts"]}["todd+test@example.org"] == "gone"
    assert again["counts"]["delete"] == 0


def test_email_option_selects_test_records_for_one_call(org: Org) -> None:
    """--email alone (no markers in the config) or on top of them; bad globs are refused."""
    org.ingest([payload("trial1@example.org"), payload("ann@example.org")])
    assert org.run().status == "ok"
    refused = org.cli("cleanup-test-contacts")
    assert refused.exit_code == 2
    assert "no test markers" in refused.output
    too_wide = org.cli("cleanup-test-contacts", "--email", "*@*")
    assert too_wide.exit_code == 2
    assert "matches every address" in too_wide.output

    listed = org.cli("cleanup-test-contacts", "--email", "TRIAL*@example.org", "--json")
    data = json.loads(listed.output)
    assert [(c["email"], c["verdict"]) for c in data["contacts"]] == [
        ("trial1@example.org", "delete")
    ]
    assert data["markers"] == ["email matches TRIAL*@example.org"]
    text = org.cli("cleanup-test-contacts", "--email", "trial*@example.org")
    assert "delete      trial1@example.org  created by flipsync" in text.output
    assert "Nothing was written." in text.output
    assert not any("contact_delete" in e.path for e in org.api_requests())

    org.write_config(test_records={"email_matches": ["nobody@example.org"]})
    applied = org.cli("cleanup-test-contacts", "--email", "trial*@example.org", "--apply")
    assert applied.exit_code == 0, applied.output
    contacts = {c["email_address"]["address"]: c for c in org.sandbox.contacts()}
    assert "deleted_at" in contacts["trial1@example.org"]
    assert "deleted_at" not in contacts["ann@example.org"]


def _client(org: Org) -> Any:
    from flipsync.cli import build_client

    return build_client(org.settings(), clock=org.clock)
