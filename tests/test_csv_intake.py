"""Flipcause CSV exports: column mapping, record keys, odd files, bad rows, config, CLI."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flipsync.cli import cli
from flipsync.config import FlipcauseSettings
from flipsync.csv_intake import CsvRow, ingest_csv_text, parse_csv_text
from flipsync.errors import ConfigError, InputError
from flipsync.intake import BadItem
from flipsync.records import FlipcauseRecord, parse_record
from flipsync.state import StateDB
from tests.helpers import config_dict, settings_from, write_config

SETTINGS = settings_from(config_dict()).flipcause

CONTACTS = (
    "First Name,Last Name,Business/Organization Name,Birthdate,Email,"
    "Primary Mobile Country Code,Primary Mobile Number,Primary Mobile Number Ext,"
    "Primary Home Number Country Code,Primary Home Number,Primary Home Number Ext,"
    "Address,City,State/Province,Postal Code,Country,All Time Donation Amount,"
    "Largest Contribution Amount,Largest Contribution Date,Tags\n"
    'Ada,Lovelace,,1815-12-10,ada@example.org,1,555-555-0100,,1,555-555-0199,,"1 Main St, Apt 2",'
    'Boston,MA,02110,United States,"$1,200.00",$500.00,2025-12-01,"donor, volunteer"\n'
    ',,"Acme, Inc.",,info@acme.example,,,,1,555-555-0142,,2 Side St,Boston,MA,02111,'
    "United States,$50.00,$50.00,2025-01-01,\n"
)

TRANSACTIONS = (
    "Transaction ID,Transaction Date,Transaction Time,Day of Week,Transaction Type,Campaign ID,"
    "Campaign Title,First Name,Last Name,Email,Phone,Address,City,State,Postal Code,Amount,"
    "Payment Method,Message\n"
    "T1137405,2026-01-15,02:04,Thursday,Donation,4809,Winter Appeal,Todd,Test,Todd@Example.org,"
    '555-555-0100,123 Main St,Oakland,CA,94612,$25.00,Visa,"Thanks!\nKeep it up"\n'
    "T1137405,2026-01-15,02:04,Thursday,Mailing List,4809,Winter Appeal,Todd,Test,"
    "todd@example.org,,,,,,,,\n"
    "T1137406,2026-01-16,10:30,Friday,Donation,4809,Winter Appeal,Bo,Diddley,bo@example.org,"
    ",,,,,$10.00,Cash,\n"
)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDB]:
    db = StateDB.open(tmp_path / "state.db")
    yield db
    db.close()


def rows(text: str, settings: FlipcauseSettings = SETTINGS, name: str = "x.csv") -> list[CsvRow]:
    """The good rows of an export; fails if any row was reported bad."""
    items = list(parse_csv_text(text, name, settings))
    assert all(isinstance(i, CsvRow) for i in items), items
    return [i for i in items if isinstance(i, CsvRow)]


def test_contact_export_rows_use_the_configured_field_names() -> None:
    """Mapped columns land under flipcause.fields names; every other column under its header."""
    ada, acme = rows(CONTACTS)
    assert ada.payload["PD_email"] == "ada@example.org"
    assert ada.payload["PD_first_name"] == "Ada"
    assert ada.payload["PD_address"] == "1 Main St, Apt 2"
    assert ada.payload["PD_state"] == "MA"
    assert ada.payload["PD_phone"] == "555-555-0100"  # mobile first
    assert ada.payload["Primary Home Number"] == "555-555-0199"  # the unused one is kept
    assert ada.payload["Tags"] == "donor, volunteer"
    assert ada.payload["All Time Donation Amount"] == "$1,200.00"
    assert acme.payload["PD_business_name"] == "Acme, Inc."
    assert acme.payload["PD_phone"] == "555-555-0142"  # no mobile: the home number
    assert "Email" not in ada.payload and "First Name" not in ada.payload


def test_the_run_parses_csv_rows_exactly_like_webhooks() -> None:
    """A stored CSV payload becomes a FlipcauseRecord with person, address and activity."""
    donation, signup, _ = rows(TRANSACTIONS)
    record = parse_record(1, donation.record_key, donation.payload, SETTINGS)
    assert isinstance(record, FlipcauseRecord)
    assert (record.email_key, record.first_name, record.transaction_id) == (
        "todd@example.org",
        "Todd",
        "T1137405",
    )
    assert record.activity_kind == "donation" and str(record.amount) == "25.00"
    assert record.address.city == "Oakland" and record.address.state == "CA"
    assert record.extra["Message"] == "Thanks!\nKeep it up"
    mailing = parse_record(2, signup.record_key, signup.payload, SETTINGS)
    assert isinstance(mailing, FlipcauseRecord) and mailing.is_mailing_list
    business = parse_record(3, "k", rows(CONTACTS)[1].payload, SETTINGS)
    assert isinstance(business, FlipcauseRecord) and business.company_name == "Acme, Inc."


def test_transaction_rows_key_by_transaction_email_and_content() -> None:
    """With a Transaction ID column the key is csv:<id>:<email>:<content hash>."""
    keys = [r.record_key for r in rows(TRANSACTIONS)]
    assert [k.rsplit(":", 1)[0] for k in keys] == [
        "csv:T1137405:todd@example.org",
        "csv:T1137405:todd@example.org",
        "csv:T1137406:bo@example.org",
    ]
    assert len(set(keys)) == 3


SIMPLE_HEADER = "Transaction ID,Transaction Type,Email,Amount"
SIMPLE_ROWS = [
    "T1,Mailing List,ada@example.org,",
    "T1,Donation,ada@example.org,$25.00",
    "T2,Donation,bo@example.org,$10.00",
]


def test_fixed_or_reordered_export_adds_only_what_is_new(state: StateDB) -> None:
    """Keys follow the row's content, not its place: a fixed row is added, nothing is lost."""
    broken = "\n".join([SIMPLE_HEADER, "T1,Mailing List", *SIMPLE_ROWS[1:]]) + "\n"
    first = ingest_csv_text(state, broken, name="t.csv", source="csv:t.csv", settings=SETTINGS)
    assert (first.added, len(first.rejected)) == (2, 1)
    reordered = "\n".join([SIMPLE_HEADER, *reversed(SIMPLE_ROWS)]) + "\n"
    again = ingest_csv_text(state, reordered, name="t.csv", source="csv:t.csv", settings=SETTINGS)
    assert (again.added, again.duplicates) == (1, 2)
    kinds = sorted(r.payload["activity_type"] for r in state.inbox_after(0, 10))
    assert kinds == ["Donation", "Donation", "Mailing List"]


def test_identical_rows_in_one_file_are_both_kept() -> None:
    """Two equal rows (two equal gifts) are two records: the second gets #2."""
    keys = [
        r.record_key
        for r in rows("\n".join([SIMPLE_HEADER, SIMPLE_ROWS[1], SIMPLE_ROWS[1]]) + "\n")
    ]
    assert keys[1] == keys[0] + "#2"


def test_contact_rows_key_by_content_regardless_of_column_order() -> None:
    """Without a transaction id the key hashes the row's non-empty cells, not their order."""
    swapped = "Email,First Name,Last Name\nada@example.org,Ada,Lovelace\n"
    original = "First Name,Last Name,Email\nAda,Lovelace,ada@example.org\n"
    assert rows(swapped)[0].record_key == rows(original)[0].record_key
    assert rows(original)[0].record_key.startswith("csv:sha256:")
    changed = "First Name,Last Name,Email\nAda,King,ada@example.org\n"
    assert rows(changed)[0].record_key != rows(original)[0].record_key


def test_reingesting_the_same_export_adds_nothing(state: StateDB) -> None:
    """The second ingest of an export stores nothing new; all rows count as duplicates."""
    first = ingest_csv_text(
        state, TRANSACTIONS, name="t.csv", source="csv:t.csv", settings=SETTINGS
    )
    again = ingest_csv_text(
        state, TRANSACTIONS, name="t.csv", source="csv:t.csv", settings=SETTINGS
    )
    contacts = ingest_csv_text(state, CONTACTS, name="c.csv", source="csv:c.csv", settings=SETTINGS)
    contacts_again = ingest_csv_text(
        state, CONTACTS, name="c.csv", source="csv:c.csv", settings=SETTINGS
    )
    assert (first.added, first.duplicates) == (3, 0)
    assert (again.added, again.duplicates) == (0, 3)
    assert (contacts.added, contacts_again.added, contacts_again.duplicates) == (2, 0, 2)
    assert state.inbox_count() == 5
    assert {r.source for r in state.inbox_after(0, 10)} == {"csv:t.csv", "csv:c.csv"}


def test_bom_crlf_and_quoted_newlines() -> None:
    """A UTF-8 BOM, CRLF line ends and newlines inside quoted cells are all read correctly."""
    text = '\ufeffEmail,First Name,Notes\r\nada@example.org,Ada,"two\r\nlines"\r\nbo@example.org,Bo,\r\n'
    ada, bo = rows(text)
    assert ada.payload["PD_email"] == "ada@example.org"  # the BOM is not part of the header
    assert ada.payload["Notes"] == "two\r\nlines"
    assert (ada.line, bo.line) == (2, 4)


def test_bad_rows_are_reported_with_file_and_line_and_the_rest_stored(
    state: StateDB, tmp_path: Path
) -> None:
    """Rows with the wrong number of cells are rejected by line; every other row is stored."""
    text = (
        "Email,First Name,Notes\n"
        'ada@example.org,Ada,"multi\nline"\n'
        "bo@example.org,Bo\n"  # line 4: a cell short
        "cy@example.org,Cy,x,unexpected\n"  # line 5: a cell too many
        "di@example.org,Di,,\n"  # trailing empty cell: fine
        ",,\n"  # blank row: skipped
        "ed@example.org,Ed,ok\n"
    )
    report = ingest_csv_text(
        state, text, name="people.csv", source="csv:people.csv", settings=SETTINGS
    )
    assert report.added == 3
    assert [(b.location, b.reason.split(" (")[0]) for b in report.rejected] == [
        ("people.csv: line 4", "row has 2 cells but the header has 3"),
        ("people.csv: line 5", "row has 4 cells but the header has 3"),
    ]
    emails = [r.payload["PD_email"] for r in state.inbox_after(0, 10)]
    assert emails == ["ada@example.org", "di@example.org", "ed@example.org"]
    conn = sqlite3.connect(tmp_path / "state.db")
    assert [r[0] for r in conn.execute("SELECT location FROM intake_rejects ORDER BY id")] == [
        "people.csv: line 4",
        "people.csv: line 5",
    ]
    conn.close()


def test_missing_email_column_names_the_file_and_the_column() -> None:
    """A header without the email column is an InputError naming the file, column and header."""
    with pytest.raises(InputError) as info:
        list(parse_csv_text("Name,Phone\nAda,555\n", "exports/people.csv", SETTINGS))
    message = str(info.value)
    assert "exports/people.csv" in message
    assert "'Email'" in message and "csv_columns.email" in message
    assert "'Name', 'Phone'" in message


def test_headerless_export_is_refused_without_echoing_personal_data() -> None:
    """A file whose first line is data is refused, and the message does not repeat that data."""
    with pytest.raises(InputError) as info:
        list(parse_csv_text("Ada,Lovelace,ada@example.org\n", "people.csv", SETTINGS))
    message = str(info.value)
    assert "looks like data" in message
    assert "Lovelace" not in message and "ada@example.org" not in message


@pytest.mark.parametrize("text", ["", "\ufeff", "\n\n,,,\n"])
def test_empty_file_is_an_input_error(text: str) -> None:
    """An empty export is an InputError, not a silent no-op."""
    with pytest.raises(InputError, match="empty file"):
        list(parse_csv_text(text, "empty.csv", SETTINGS))


def test_header_matching_ignores_case_and_spacing_and_keeps_odd_headers() -> None:
    """'EMAIL' matches Email; duplicate and blank headers are kept under distinct names."""
    text = "EMAIL , first  name,Notes,Notes,,PD_email\nada@example.org,Ada,a,b,c,dup\n"
    (row,) = rows(text)
    assert row.payload["PD_email"] == "ada@example.org"
    assert row.payload["PD_first_name"] == "Ada"
    assert (row.payload["Notes"], row.payload["Notes (2)"], row.payload["column 5"]) == (
        "a",
        "b",
        "c",
    )
    assert row.payload["PD_email (csv)"] == "dup"


def test_csv_columns_from_config_and_renamed_fields() -> None:
    """csv_columns renames columns, [] unmaps one, and payload keys follow flipcause.fields."""
    settings = settings_from(
        config_dict(
            flipcause={
                "fields": {"email": "Email Address"},
                "csv_columns": {"email": ["E-mail", "Email"], "phone": []},
            }
        )
    ).flipcause
    (row,) = rows("E-mail,Phone,First Name\nada@example.org,555,Ada\n", settings)
    assert row.payload == {
        "Email Address": "ada@example.org",
        "Phone": "555",
        "PD_first_name": "Ada",
    }


def test_csv_columns_config_problems_name_the_key() -> None:
    """Unknown keys, wrong types and a column mapped twice are config errors naming the key."""
    with pytest.raises(ConfigError) as info:
        settings_from(
            config_dict(
                flipcause={
                    "csv_columns": {"emial": "Email", "city": {"a": 1}, "country": "City"},
                }
            )
        )
    problems = "\n".join(info.value.problems)
    assert "`flipcause.csv_columns.emial`: unknown key (did you mean `email`?)" in problems
    assert "`flipcause.csv_columns.city`: must be a column name or a list of them" in problems
    assert "`flipcause.csv_columns.country`" in problems and "already mapped" in problems


def test_oversized_rows_are_rejected_alone(state: StateDB) -> None:
    """A row over the payload size limit is reported; its neighbours are stored."""
    text = f"Email,Notes\nada@example.org,{'x' * 100_000}\nbo@example.org,{'y' * 1_100_000}\n"
    items = list(parse_csv_text(text, "big.csv", SETTINGS))
    assert [type(i).__name__ for i in items] == ["CsvRow", "BadItem"]
    bad = items[1]
    assert isinstance(bad, BadItem) and bad.location == "big.csv: line 3"


# -- the CLI --------------------------------------------------------------------------------


def _ingest(tmp_path: Path, *args: str) -> Any:
    config = write_config(tmp_path, config_dict())
    return CliRunner().invoke(cli, ["-c", str(config), "ingest", "--json", *args])


def test_ingest_auto_format_picks_csv_by_suffix(tmp_path: Path) -> None:
    """`ingest` reads *.csv (any case) as a Flipcause export and other files as JSON payloads."""
    (tmp_path / "export.CSV").write_text(TRANSACTIONS, encoding="utf-8")
    (tmp_path / "hooks.ndjson").write_text('{"webhook_record_id": "9"}\n', encoding="utf-8")
    result = _ingest(tmp_path, str(tmp_path / "export.CSV"), str(tmp_path / "hooks.ndjson"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["added"] == 4
    with StateDB.open(tmp_path / "state.db", create=False) as state:
        assert {r.source for r in state.inbox_after(0, 10)} == {
            "csv:export.CSV",
            "file:hooks.ndjson",
        }


def test_ingest_format_option_overrides_the_suffix(tmp_path: Path) -> None:
    """--format flipcause-csv reads any file as an export; --format json reads a .csv as JSON."""
    (tmp_path / "export.txt").write_text(CONTACTS, encoding="utf-8")
    result = _ingest(tmp_path, "--format", "flipcause-csv", str(tmp_path / "export.txt"))
    assert result.exit_code == 0 and json.loads(result.output)["added"] == 2
    (tmp_path / "odd.csv").write_text('{"webhook_record_id": "1"}', encoding="utf-8")
    result = _ingest(tmp_path, "--format", "json", str(tmp_path / "odd.csv"))
    assert result.exit_code == 0 and json.loads(result.output)["added"] == 1


def test_ingest_of_a_wrong_export_exits_2_naming_the_file(tmp_path: Path) -> None:
    """A CSV without the email column stops with exit 2 and the file and column in the message."""
    (tmp_path / "wrong.csv").write_text("Name,Phone\nAda,555\n", encoding="utf-8")
    result = _ingest(tmp_path, str(tmp_path / "wrong.csv"))
    assert result.exit_code == 2
    assert "wrong.csv" in result.output and "'Email'" in result.output
