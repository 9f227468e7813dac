"""Field limits, truncation and import splitting (flipsync.ctct.limits)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flipsync.ctct.limits import (
    CREATE_CONTACT,
    DEFAULT_MAX_IMPORT_BYTES,
    JSON_IMPORT,
    MAX_IMPORT_BYTES,
    MAX_IMPORT_CONTACTS,
    SIGN_UP_FORM,
    ImportRowTooLarge,
    check_fields,
    encode_json,
    import_body,
    split_import,
    truncate,
)

LIST_ID = "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"


def _email(length: int) -> str:
    """An address of exactly ``length`` characters."""
    domain = "@example.org"
    return "a" * (length - len(domain)) + domain


class TestCheckFieldsImport:
    def test_valid_row_has_no_problems(self) -> None:
        """A row inside every limit is sendable."""
        row = {
            "email": "ada@example.org",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "phone": "555-555-5555",
            "street": "1 Main St",
            "city": "Boston",
            "state": "MA",
            "zip": "02110",
            "country": "United States",
            "cf:donor_id": "D-123",
            "birthday_month": 12,
            "birthday_day": 10,
        }
        assert check_fields(row, JSON_IMPORT) == []

    @pytest.mark.parametrize(
        ("key", "limit"),
        [
            ("first_name", 50),
            ("last_name", 50),
            ("job_title", 50),
            ("company_name", 50),
            ("phone", 50),
            ("mobile_phone", 50),
            ("street", 255),
            ("work_street2", 255),
            ("city", 50),
            ("state", 50),
            ("zip", 50),
            ("other_country", 50),
            ("cf:donor_note", 255),
        ],
    )
    def test_each_limit_is_enforced_at_its_edge(self, key: str, limit: int) -> None:
        """limit characters pass, one more is a problem naming the field and the limit."""
        ok = {"email": "a@example.org", key: "x" * limit}
        assert check_fields(ok, JSON_IMPORT) == []
        problems = check_fields({**ok, key: "y" * (limit + 1)}, JSON_IMPORT)
        assert [f"{key}: {limit + 1} characters, the limit is {limit}"] == problems

    def test_email_is_capped_at_50_for_imports(self) -> None:
        """The import cap is 50 (the contact object allows 80)."""
        assert check_fields({"email": _email(50)}, JSON_IMPORT) == []
        assert check_fields({"email": _email(51)}, JSON_IMPORT) == [
            "email: 51 characters, the limit is 50"
        ]

    def test_missing_or_malformed_email(self) -> None:
        """A row needs an email that looks like one."""
        assert check_fields({"first_name": "A"}, JSON_IMPORT) == ["email: missing"]
        assert check_fields({"email": "a b@c"}, JSON_IMPORT) == ["email: not an email address"]

    def test_more_than_25_custom_fields(self) -> None:
        """CC takes at most 25 custom fields per contact."""
        row: dict[str, Any] = {"email": "a@example.org"}
        row.update({f"cf:f{i}": "v" for i in range(25)})
        assert check_fields(row, JSON_IMPORT) == []
        row["cf:extra"] = "v"
        assert check_fields(row, JSON_IMPORT) == ["custom fields: 26 fields, the limit is 25"]

    def test_unknown_keys_and_counts(self) -> None:
        """Typos, a fourth phone and a fourth address are reported."""
        row = {
            "email": "a@example.org",
            "frist_name": "A",
            "phone": "1",
            "home_phone": "2",
            "work_phone": "3",
            "mobile_phone": "4",
            "street": "s",
            "home_city": "c",
            "work_zip": "z",
            "other_street": "o",
        }
        problems = check_fields(row, JSON_IMPORT)
        assert "frist_name: unknown field for a JSON import" in problems
        assert "phones: 4 phone numbers, the limit is 3" in problems
        assert "addresses: 4 addresses, the limit is 3" in problems

    def test_birthday_needs_both_parts_in_range(self) -> None:
        """birthday_month and birthday_day go together, 1-12 and 1-31."""
        assert check_fields({"email": "a@example.org", "birthday_month": 3}, JSON_IMPORT) == [
            "birthday_month and birthday_day: give both or neither"
        ]
        assert check_fields(
            {"email": "a@example.org", "birthday_month": 3, "birthday_day": 32}, JSON_IMPORT
        ) == ["birthday_day: must be a whole number from 1 to 31"]

    def test_problems_never_contain_the_value(self) -> None:
        """Problems go to logs and outcome reasons, so they name fields, not data."""
        secret = "Zebediah" * 10
        problems = check_fields({"email": "a@example.org", "first_name": secret}, JSON_IMPORT)
        assert problems
        assert all(secret not in p for p in problems)

    def test_non_text_value(self) -> None:
        """A number where CC expects text is a problem."""
        assert check_fields({"email": "a@example.org", "zip": 2110}, JSON_IMPORT) == [
            "zip: must be text, not int"
        ]


class TestCheckFieldsSignUpAndCreate:
    def test_sign_up_form_limits(self) -> None:
        """sign_up_form: email 50, phone_number 25, at least one list, custom fields 25."""
        body = {"email_address": "a@example.org", "list_memberships": [LIST_ID]}
        assert check_fields(body, SIGN_UP_FORM) == []
        bad = {
            "email_address": _email(51),
            "phone_number": "1" * 26,
            "list_memberships": [],
            "custom_fields": [{"custom_field_id": "x", "value": "v"}] * 26,
            "street_address": {"street": "s"},
        }
        problems = check_fields(bad, SIGN_UP_FORM)
        assert "email_address: 51 characters, the limit is 50" in problems
        assert "phone_number: 26 characters, the limit is 25" in problems
        assert "list_memberships: at least one list is required" in problems
        assert "custom_fields: 26 fields, the limit is 25" in problems
        assert "street_address.kind: must be one of home, other, work" in problems

    def test_create_contact_email_is_capped_at_80(self) -> None:
        """POST /contacts takes an 80-character address in an object."""
        body = {"email_address": {"address": _email(80)}, "create_source": "Account"}
        assert check_fields(body, CREATE_CONTACT) == []
        body["email_address"] = {"address": _email(81)}
        assert check_fields(body, CREATE_CONTACT) == [
            "email_address.address: 81 characters, the limit is 80"
        ]

    def test_create_contact_phones_and_addresses(self) -> None:
        """Phone numbers 25, 3 each, address kind required, create_source required."""
        body = {
            "email_address": {"address": "a@example.org"},
            "phone_numbers": [{"phone_number": "1" * 26, "kind": "home"}],
            "street_addresses": [{"kind": "home", "city": "c" * 51}],
        }
        problems = check_fields(body, CREATE_CONTACT)
        assert "create_source: must be Contact or Account" in problems
        assert "phone_numbers[0].phone_number: 26 characters, the limit is 25" in problems
        assert "street_addresses[0].city: 51 characters, the limit is 50" in problems

    def test_unknown_endpoint(self) -> None:
        """A typo in the endpoint name is a programming error."""
        with pytest.raises(ValueError, match="unknown endpoint"):
            check_fields({}, "contacts")


class TestTruncate:
    def test_truncate_cuts_and_strips(self) -> None:
        """The cut never leaves trailing blanks and never exceeds the limit."""
        assert truncate("abc  def", 5) == "abc"
        assert truncate("abc", 5) == "abc"


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # any code point JSON can carry
    max_size=60,
)
_rows = st.lists(
    st.fixed_dictionaries(
        {
            "email": st.builds(
                "{}@example.org".format, st.text("abcxyz.-_", min_size=1, max_size=38)
            )
        },
        optional={"first_name": _text, "last_name": _text, "cf:note": _text, "city": _text},
    ),
    max_size=60,
)


def _flatten(chunks: list[list[Any]]) -> list[Any]:
    return [row for chunk in chunks for row in chunk]


class TestSplitImport:
    @settings(max_examples=120, deadline=None)
    @given(
        rows=_rows,
        max_bytes=st.integers(min_value=3_500, max_value=20_000),  # any generated row fits
        max_contacts=st.integers(min_value=1, max_value=25),
        explicit_lists=st.booleans(),
    )
    def test_chunks_respect_both_caps_and_keep_every_row_in_order(
        self, rows: list[dict[str, str]], max_bytes: int, max_contacts: int, explicit_lists: bool
    ) -> None:
        """Each real request body is within max_bytes; rows are neither lost nor reordered."""
        list_ids = [LIST_ID] * 3 if explicit_lists else None
        chunks = split_import(
            rows, list_ids=list_ids, max_contacts=max_contacts, max_bytes=max_bytes
        )
        assert rows == _flatten(chunks)
        measure_ids = list_ids if list_ids is not None else [LIST_ID] * 50
        for chunk in chunks:
            assert 1 <= len(chunk) <= max_contacts
            assert len(encode_json(import_body(chunk, measure_ids))) <= max_bytes

    @settings(max_examples=40, deadline=None)
    @given(rows=_rows.filter(lambda r: len(r) >= 2))
    def test_chunks_are_full_before_a_new_one_starts(self, rows: list[dict[str, str]]) -> None:
        """Greedy: a chunk ends only because the next row would not fit."""
        max_bytes = 3_000
        chunks = split_import(rows, max_bytes=max_bytes)
        for chunk, following in itertools.pairwise(chunks):
            grown = [*chunk, following[0]]
            assert len(encode_json(import_body(grown, [LIST_ID] * 50))) > max_bytes

    def test_multibyte_rows_near_the_real_cap(self) -> None:
        """About 6 MB of multi-byte rows split into bodies under 4 MB with the default caps."""
        rows = [
            {
                "email": f"donor{i}@example.org",
                "first_name": "名前テスト" * 10,
                "cf:note": "é" * 100,
            }
            for i in range(17_000)
        ]
        chunks = split_import(rows, list_ids=[LIST_ID])
        assert len(chunks) >= 2
        assert rows == _flatten(chunks)
        for chunk in chunks:
            size = len(encode_json(import_body(chunk, [LIST_ID])))
            assert size <= DEFAULT_MAX_IMPORT_BYTES < MAX_IMPORT_BYTES

    def test_contact_cap(self) -> None:
        """Small rows still split at 40,000 contacts (or a smaller configured cap)."""
        rows = [{"email": f"{i}@x.io"} for i in range(40_001)]
        assert [len(c) for c in split_import(rows)] == [40_000, 1]
        assert [len(c) for c in split_import(rows[:25], max_contacts=10)] == [10, 10, 5]

    def test_a_row_that_can_never_fit_is_reported(self) -> None:
        """An oversized row raises with its index instead of vanishing."""
        rows = [{"email": "a@x.io"}, {"email": "b@x.io", "cf:blob": "x" * 5_000}]
        with pytest.raises(ImportRowTooLarge) as caught:
            split_import(rows, max_bytes=3_000)
        assert caught.value.index == 1
        assert "x" * 20 not in str(caught.value)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_bytes": MAX_IMPORT_BYTES},
            {"max_bytes": 0},
            {"max_contacts": 0},
            {"max_contacts": MAX_IMPORT_CONTACTS + 1},
        ],
    )
    def test_caps_beyond_what_cc_accepts_are_refused(self, kwargs: dict[str, int]) -> None:
        """A body of 4 MB or more can never be asked for."""
        with pytest.raises(ValueError, match="must be"):
            split_import([{"email": "a@x.io"}], **kwargs)

    def test_empty_input(self) -> None:
        """No rows, no requests."""
        assert split_import([]) == []
