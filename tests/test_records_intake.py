"""Payload parsing, email rules, grouping into people, and inbox intake."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from flipsync.intake import ingest_text, parse_payload_text
from flipsync.people import group_people
from flipsync.records import FlipcauseRecord, Unusable, check_email, parse_record
from flipsync.state import StateDB
from tests.helpers import config_dict, payload, record, settings_from

SETTINGS = settings_from(config_dict())


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        ("  ada@example.org  ", "ada@example.org"),
        ("Ada.Lovelace+tag@Example.ORG", "Ada.Lovelace+tag@Example.ORG"),
        ("", None),
        (None, None),
        ("no-at-sign", None),
        ("two@@example.org", None),
        ("a@b", None),
        ("a@-bad-.org", None),
        ("a b@example.org", None),
        ("ünï@example.org", None),
        ("x" * 45 + "@ex.org", None),  # 52 characters: over Constant Contact's 50
        (42, None),
    ],
)
def test_check_email(raw: object, ok: str | None) -> None:
    """Emails are trimmed; anything Constant Contact would refuse is rejected with a reason."""
    email, reason = check_email(raw)
    assert email == ok
    assert (reason is None) == (ok is not None)


def test_parse_maps_configured_fields_and_keeps_unknown_ones() -> None:
    """Field names come from config; unknown fields are carried in extra."""
    data = payload("ada@example.org", CF_question="yes", DD_giving_level="Gold")
    rec = record(data, SETTINGS)
    assert rec.email_key == "ada@example.org"
    assert rec.flipcause_contact_id == "CID638-" + data["webhook_record_id"]
    assert rec.activity_kind == "donation"
    assert rec.extra == {
        "CF_question": "yes",
        "DD_giving_level": "Gold",
        "PD_individual_or_bussiness": "Individual",
    }
    assert rec.address.city == "Boston"

    renamed = settings_from(config_dict(flipcause={"fields": {"email": "Email Address"}}))
    rec2 = parse_record(
        1, "k", {"Email Address": "bo@example.org", "PD_first_name": "Bo"}, renamed.flipcause
    )
    assert isinstance(rec2, FlipcauseRecord) and rec2.email == "bo@example.org"


@pytest.mark.parametrize(
    ("spelling", "kind"),
    [
        ("Mailing List", "mailing_list"),
        ("mailing  list", "mailing_list"),
        ("E Registration", "registration"),
        ("Registration", "registration"),
        ("E", "registration"),
        ("RD Refund", "refund"),
        ("Weird", None),
    ],
)
def test_activity_type_matching_is_tolerant(spelling: str, kind: str | None) -> None:
    """Code, word or both, any case and spacing."""
    rec = record(payload(activity=spelling), SETTINGS)
    assert rec.activity_kind == kind


def test_record_without_person_is_skipped_and_bad_email_rejected() -> None:
    """No person at all: skipped with a reason; a person without a usable email: rejected."""
    merchant = parse_record(
        1, "k", {"webhook_record_id": "9", "DD_amount": "100"}, SETTINGS.flipcause
    )
    assert isinstance(merchant, Unusable) and not merchant.rejected
    assert "no person" in merchant.reason
    no_email = parse_record(2, "k2", payload(None), SETTINGS.flipcause)
    assert (
        isinstance(no_email, Unusable)
        and no_email.rejected
        and no_email.reason == "no email address"
    )
    bad = parse_record(3, "k3", payload("nope@"), SETTINGS.flipcause)
    assert isinstance(bad, Unusable) and bad.rejected and "invalid email" in bad.reason


def test_odd_values_do_not_crash_parsing() -> None:
    """Wrong types and control characters become clean text or are ignored, with a note."""
    data = payload(
        "ada@example.org", PD_first_name={"nested": 1}, PD_last_name="Love\x00lace\u200b "
    )
    rec = record(data, SETTINGS)
    assert rec.first_name is None
    assert rec.last_name == "Lovelace"
    assert any("PD_first_name" in n for n in rec.notes)


def test_grouping_is_case_insensitive_and_takes_latest_values() -> None:
    """One person per email; names from the latest record that has them."""
    a = record(payload("Ada@Example.org", first="A", txn="T9"), SETTINGS, seq=1)
    b = record(
        payload("ada@example.org", first="Ada", txn="T9", activity="Mailing List"), SETTINGS, seq=2
    )
    (person,) = group_people([a, b], {})
    assert person.email == "Ada@Example.org"
    assert person.first_name == "Ada"
    assert person.signed_up and "T9" in (person.signup_evidence or "")
    assert person.seqs == [1, 2]


def test_signup_seen_in_earlier_batch_counts() -> None:
    """A Mailing List activity remembered for the transaction makes a later record a subscriber."""
    a = record(payload("ada@example.org", txn="T7"), SETTINGS, seq=5)
    (person,) = group_people([a], {("T7", "ada@example.org"): (True, True)})
    assert person.signed_up and person.created_by_flipsync


def test_parse_payload_text_formats() -> None:
    """NDJSON, a single (pretty) object, and an array are all accepted."""
    one = {"webhook_record_id": "1"}
    assert list(parse_payload_text(json.dumps(one, indent=2), "f")) == [one]
    assert list(parse_payload_text(json.dumps([one, one]), "f")) == [one, one]
    items = list(parse_payload_text('{"a":1}\n\n[1]\n{bad\n"str"\n{"b":2}\n', "f"))
    good = [i for i in items if isinstance(i, dict)]
    bad = [i for i in items if not isinstance(i, dict)]
    assert good == [{"a": 1}, {"b": 2}]
    assert [b.location for b in bad] == ["f: line 3", "f: line 4", "f: line 5"]
    assert "not valid JSON" in bad[1].reason
    deep = "[" * 100_000 + "]" * 100_000
    (deep_item,) = list(parse_payload_text(deep, "deep"))
    assert not isinstance(deep_item, dict)


def test_ingest_dedupes_and_keeps_going(tmp_path: Path) -> None:
    """A repeated webhook_record_id is stored once; a bad line does not stop the rest."""
    db = StateDB.open(tmp_path / "s" / "state.db")
    p1, p2 = payload(), payload()
    text = "\n".join([json.dumps(p1), "{oops", json.dumps(p2), json.dumps(p1)])
    report = ingest_text(
        db, text, name="in.ndjson", source="file:in.ndjson", id_field="webhook_record_id"
    )
    assert (report.added, report.duplicates, len(report.rejected)) == (2, 1, 1)
    again = ingest_text(
        db, text, name="in.ndjson", source="file:in.ndjson", id_field="webhook_record_id"
    )
    assert (again.added, again.duplicates) == (0, 3)
    assert db.inbox_count() == 2
    rows = db.inbox_after(0, 10)
    assert [r.payload["webhook_record_id"] for r in rows] == [
        p1["webhook_record_id"],
        p2["webhook_record_id"],
    ]


def test_state_file_is_private_and_versioned(tmp_path: Path) -> None:
    """0600 file in a 0700 folder; a newer schema or a foreign SQLite file is refused."""
    path = tmp_path / "new" / "state.db"
    db = StateDB.open(path)
    db.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    from flipsync.errors import StateError

    with pytest.raises(StateError, match="newer flipsync"):
        StateDB.open(path)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    with pytest.raises(StateError, match="not a flipsync state DB"):
        StateDB.open(other)
