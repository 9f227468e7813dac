"""The one email normalisation: what flipsync treats as the same person's address."""

from __future__ import annotations

from flipsync.emails import normalize_email
from flipsync.records import parse_record
from tests.helpers import config_dict, payload, settings_from


def test_case_and_surrounding_blanks_do_not_matter() -> None:
    assert normalize_email("  Ada.Lovelace@Example.ORG\t") == "ada.lovelace@example.org"
    assert normalize_email("ÉLODIE@example.org") == "élodie@example.org"


def test_non_ascii_letters_are_not_folded_into_other_letters() -> None:
    """casefold would turn ß into ss and make two addresses Constant Contact keeps apart one."""
    assert normalize_email("Straße@example.de") == "straße@example.de"
    assert normalize_email("Straße@example.de") != normalize_email("strasse@example.de")


def test_records_are_keyed_by_it() -> None:
    settings = settings_from(config_dict())
    data = payload(" Ada@Example.org ")
    record = parse_record(1, "wh:1", data, settings.flipcause)
    assert getattr(record, "email_key", None) == "ada@example.org"
