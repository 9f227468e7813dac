"""Flipcause's event model: a record kind per payload, and what each kind may do.

Activity, transaction, contact, merchant account payment, merchant account credit and
refund, recognised from the trigger type and the activity type (both configurable).
Also money as Decimal: `amount_at_least: 1.1` in YAML matches a $1.10 gift.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from flipsync.config import DEFAULT_TRIGGER_TYPES, RECORD_KINDS, load_settings
from flipsync.errors import ConfigError
from flipsync.people import group_people
from flipsync.policy import Action, Known, decide
from flipsync.records import FlipcauseRecord, RecordKind, Unusable, parse_record
from flipsync.report import render_text
from flipsync.rules import matches, rule_lists
from tests.conftest import Org
from tests.helpers import config_dict, payload, record, settings_from, write_config

SETTINGS = settings_from(config_dict())


def parse(data: dict[str, Any], settings: Any = SETTINGS) -> FlipcauseRecord | Unusable:
    return parse_record(1, "k", data, settings.flipcause)


def merchant(trigger: str, **extra: Any) -> dict[str, Any]:
    """A merchant record that carries a name and an email (the case that used to sync)."""
    return {
        "webhook_record_id": "m1",
        "webhook_trigger_type": trigger,
        "AD_payment_id": "MP-1",
        "PD_first_name": "Stripe",
        "PD_last_name": "Payout",
        "PD_email": "payouts@example.org",
        "DD_amount": "1250.00",
        **extra,
    }


# -- one test per kind ---------------------------------------------------------------------


def test_record_kinds_are_the_config_keys() -> None:
    """`flipcause.trigger_types` is keyed by exactly the kinds records get."""
    assert tuple(RecordKind) == RECORD_KINDS == tuple(DEFAULT_TRIGGER_TYPES)


def test_activity_record() -> None:
    """new_activity: an activity of a transaction, synced as a supporter."""
    rec = parse(payload("ada@example.org"))
    assert isinstance(rec, FlipcauseRecord) and rec.kind is RecordKind.ACTIVITY
    assert rec.activity_kind == "donation" and not rec.is_refund


def test_transaction_record() -> None:
    """new_transaction: the buyer of a transaction, synced like any supporter."""
    data = payload("tom@example.org", webhook_trigger_type="new_transaction")
    del data["activity_type"]
    rec = parse(data)
    assert isinstance(rec, FlipcauseRecord) and rec.kind is RecordKind.TRANSACTION
    (who,) = group_people([rec], {})
    decision = decide(who, None, SETTINGS.policy)
    assert decision.action is Action.CREATE and decision.status_after == "implicit"


def test_contact_record_without_transaction_is_synced_like_any_supporter() -> None:
    """new_contact: no transaction, no activity; new people are created, existing keep status."""
    data = {
        "webhook_record_id": "c1",
        "webhook_trigger_type": "new_contact",
        "AD_contact_id": "Cora Contact (CID638-77)",
        "PD_first_name": "Cora",
        "PD_last_name": "Contact",
        "PD_email": "cora@example.org",
    }
    rec = parse(data)
    assert isinstance(rec, FlipcauseRecord) and rec.kind is RecordKind.CONTACT
    assert rec.transaction_id is None and rec.flipcause_contact_id == "CID638-77"
    (who,) = group_people([rec], {})
    assert who.transaction_ids == ()
    new = decide(who, None, SETTINGS.policy)
    assert new.action is Action.CREATE and new.lists == ("Donors",)
    existing = decide(who, Known(permission="explicit"), SETTINGS.policy)
    assert existing.action is Action.UPDATE and existing.status_after == "explicit"


@pytest.mark.parametrize(
    ("trigger", "kind", "words"),
    [
        ("new_merchant_account_payment", RecordKind.MERCHANT_PAYMENT, "merchant account payment"),
        ("New Merchant Payment", RecordKind.MERCHANT_PAYMENT, "merchant account payment"),
        ("new_merchant_account_credit", RecordKind.MERCHANT_CREDIT, "merchant account credit"),
        ("merchant-credit", RecordKind.MERCHANT_CREDIT, "merchant account credit"),
    ],
)
def test_merchant_records_never_become_a_person(trigger: str, kind: RecordKind, words: str) -> None:
    """Merchant payments and credits: skipped with their own reason, even with name and email."""
    out = parse(merchant(trigger, activity_type="Donation"))
    assert isinstance(out, Unusable) and not out.rejected
    assert out.kind is kind
    assert out.reason.startswith(words) and "never creates or changes a contact" in out.reason
    assert out.email is None  # not shown as if it were a supporter's address


def test_refund_record_syncs_its_person_but_never_matches_amount_or_recurring_rules() -> None:
    """RD Refund: the person is a supporter; amount and recurring conditions never match it."""
    data = config_dict(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["New"], "existing": ["Existing"]},
            "rules": [
                {"name": "big", "when": {"amount_at_least": 100}, "add_lists": ["Major"]},
                {"name": "one-off", "when": {"recurring": False}, "add_lists": ["OneOff"]},
                {"name": "monthly", "when": {"recurring": True}, "add_lists": ["Monthly"]},
                {"name": "refunds", "when": {"activity_type": ["refund"]}, "add_lists": ["R"]},
            ],
            "skip": [{"name": "tiny", "when": {"amount_at_least": 0}}],
        }
    )
    settings = settings_from(data)
    for amount in ("750.00", "-750.00"):
        rec = record(payload("ada@example.org", activity="RD Refund", amount=amount), settings)
        assert rec.kind is RecordKind.REFUND and rec.is_refund
        assert not any(matches(rule.when, rec) for rule in settings.policy.skip)
        assert rule_lists((rec,), settings.policy) == [("refunds", "R")]
        (who,) = group_people([rec], {})
        existing = decide(who, Known(permission="implicit"), settings.policy)
        assert (existing.action, existing.status_after) == (Action.UPDATE, "implicit")
        assert existing.lists == ("Existing", "R")
        new = decide(who, None, settings.policy)
        assert (new.action, new.status_after, new.is_new) == (Action.CREATE, "implicit", True)
        assert new.lists == ("New", "R")
    # the same amount on a donation does match: the rule itself works
    gift = record(payload("ada@example.org", amount="750.00"), settings)
    assert ("big", "Major") in rule_lists((gift,), settings.policy)


def test_a_refund_is_never_evidence_of_a_sign_up() -> None:
    """A refund repeating a Mailing List activity: no one asked to be emailed; no sign-up."""
    settings = settings_from(
        config_dict(
            policy={
                "setup": "mailing_list_contacts",
                "lists": {"new": ["Newsletter"], "existing": ["Existing"]},
            }
        )
    )
    refund = record(
        payload(
            "r@example.org",
            activity="Mailing List",
            amount="-25.00",
            webhook_trigger_type="new_refund",
        ),
        settings,
    )
    assert refund.kind is RecordKind.REFUND and not refund.is_mailing_list
    (who,) = group_people([refund], {})
    assert not who.signed_up
    for known in (Known(permission="implicit"), None):
        decision = decide(who, known, settings.policy)
        assert decision.action is Action.SKIP and decision.endpoint == "none"
    # the same activity outside a refund is the opt-in it always was
    signup = record(payload("r@example.org", activity="Mailing List", amount=""), settings)
    assert signup.is_mailing_list


def test_refund_recognised_from_a_configured_trigger_type() -> None:
    """A refund may also come as its own trigger; both names and values are configurable."""
    settings = settings_from(
        config_dict(
            flipcause={
                "fields": {"trigger_type": "event", "activity_type": "kind_of_thing"},
                "trigger_types": {"refund": ["refund_created"], "merchant_payment": ["payout"]},
                "activity_types": {"donation": ["Gift"]},
            }
        )
    )
    base = payload("ada@example.org")
    del base["webhook_trigger_type"], base["activity_type"]
    refund = parse({**base, "event": "Refund Created", "kind_of_thing": "Gift"}, settings)
    assert isinstance(refund, FlipcauseRecord) and refund.kind is RecordKind.REFUND
    gift = parse({**base, "event": "new_activity", "kind_of_thing": "Gift"}, settings)
    assert isinstance(gift, FlipcauseRecord) and gift.kind is RecordKind.ACTIVITY
    assert gift.activity_kind == "donation"
    payout = parse({**base, "event": "PAYOUT"}, settings)
    assert isinstance(payout, Unusable) and payout.kind is RecordKind.MERCHANT_PAYMENT
    # the default merchant spelling was replaced, so it is no longer recognised
    old = parse({**base, "event": "new_merchant_payment"}, settings)
    assert isinstance(old, Unusable) and old.kind is None


def test_unrecognised_trigger_type_is_skipped_with_the_fix() -> None:
    """A trigger no kind lists may be a merchant record: not synced, and the reason names the key."""
    out = parse(payload("ada@example.org", webhook_trigger_type="new_thing"))
    assert isinstance(out, Unusable) and not out.rejected and out.kind is None
    assert "unrecognised trigger type 'new_thing'" in out.reason
    assert "flipcause.trigger_types" in out.reason
    assert out.email == "ada@example.org"  # the report shows whom it concerns


def test_payloads_without_trigger_type_still_sync() -> None:
    """CSV exports and saved files carry no trigger: activity, transaction or contact by content."""
    base = payload("ada@example.org")
    del base["webhook_trigger_type"]
    rec = parse(base)
    assert isinstance(rec, FlipcauseRecord) and rec.kind is RecordKind.ACTIVITY
    del base["activity_type"]
    rec = parse(base)
    assert isinstance(rec, FlipcauseRecord) and rec.kind is RecordKind.TRANSACTION
    del base["transaction_id"]
    rec = parse(base)
    assert isinstance(rec, FlipcauseRecord) and rec.kind is RecordKind.CONTACT


def test_trigger_spelling_in_two_kinds_is_a_config_error(tmp_path: Path) -> None:
    """One spelling names one kind; the problem names the key and the fix."""
    data = config_dict(flipcause={"trigger_types": {"contact": ["new_merchant_payment"]}})
    with pytest.raises(ConfigError) as info:
        settings_from(data, tmp_path)
    (problem,) = info.value.problems
    assert "flipcause.trigger_types" in problem and "merchant_payment" in problem


def test_every_kind_in_one_run(org: Org) -> None:
    """Against the sandbox: merchants never reach Constant Contact, counted in the report."""
    org.write_config(
        policy={
            "setup": "all_contacts_uniform",
            "new_contact_status": "implicit",
            "lists": {"new": ["Donors"], "existing": ["Existing"]},
            "rules": [{"name": "big", "when": {"amount_at_least": 500}, "add_lists": ["Major"]}],
        }
    )
    org.sandbox.add_contact("eve@example.org", permission="explicit", first_name="Eve")
    txn = payload("tom@example.org", webhook_trigger_type="new_transaction")
    del txn["activity_type"]
    contact = {
        "webhook_record_id": "c1",
        "webhook_trigger_type": "new_contact",
        "PD_first_name": "Cora",
        "PD_email": "cora@example.org",
    }
    org.ingest(
        [
            payload("ada@example.org"),
            txn,
            contact,
            merchant("new_merchant_account_payment"),
            merchant("new_merchant_account_credit", webhook_record_id="m2"),
            payload("eve@example.org", activity="RD Refund", amount="900.00"),
            payload("rex@example.org", activity="RD Refund", amount="-900.00"),
        ]
    )
    report = org.run()
    assert report.record_kinds == {
        "activity": 1,
        "transaction": 1,
        "contact": 1,
        "merchant_payment": 1,
        "merchant_credit": 1,
        "refund": 2,
    }
    assert report.merchant_records() == 2
    assert report.as_dict()["records"]["merchant"] == 2
    bodies = json.dumps([e.body for e in org.api_requests()])
    assert "payouts@example.org" not in bodies and org.contact("payouts@example.org") is None
    for email in ("ada@example.org", "tom@example.org", "cora@example.org", "rex@example.org"):
        contact_now = org.contact(email)
        assert contact_now is not None, email
        assert contact_now["email_address"]["permission_to_send"] == "implicit"
    eve = org.contact("eve@example.org")
    assert eve is not None and eve["email_address"]["permission_to_send"] == "explicit"
    assert org.list_names(eve) == {"Existing"}  # a 900 refund adds no amount list
    rex = org.contact("rex@example.org")
    assert rex is not None and org.list_names(rex) == {"Donors"}
    skipped = [o for o in report.outcomes if o.action == "skip"]
    assert sorted(o.reason.split(":")[0] for o in skipped) == [
        "merchant account credit",
        "merchant account payment",
    ]
    assert "merchant account payments and credits: 2 (never synced" in render_text(report)


# -- money as Decimal ------------------------------------------------------------------------


def test_amount_at_least_from_yaml_is_decimal_and_matches_cents(tmp_path: Path) -> None:
    """`amount_at_least: 1.1` is Decimal('1.1'): a $1.10 gift matches, $1.09 does not."""
    data = config_dict(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["A"], "existing": ["A"]},
            "rules": [
                {"name": "small", "when": {"amount_at_least": "AMOUNT_A"}, "add_lists": ["S"]},
                {"name": "thirty", "when": {"amount_at_least": "AMOUNT_B"}, "add_lists": ["T"]},
            ],
        }
    )
    path = write_config(tmp_path, data)
    text = path.read_text(encoding="utf-8")
    # YAML numbers, as a person writes them: the loader sees the floats 1.1 and 0.3
    text = text.replace("AMOUNT_A", "1.1").replace("AMOUNT_B", "0.3")
    path.write_text(text, encoding="utf-8")
    assert "amount_at_least: 1.1\n" in text
    settings = load_settings(path, environ={})
    small, thirty = (rule.when for rule in settings.policy.rules)
    assert small.amount_at_least == Decimal("1.1") and isinstance(small.amount_at_least, Decimal)
    assert thirty.amount_at_least == Decimal("0.3")

    def gift(amount: str) -> FlipcauseRecord:
        return record(payload("ada@example.org", amount=amount), settings)

    assert matches(small, gift("1.10")) and matches(small, gift("$1.10"))
    assert not matches(small, gift("1.09"))
    assert matches(thirty, gift("0.30"))  # 0.1 + 0.2 style float error would miss this


@pytest.mark.parametrize("bad", [-1, "abc", True, float("nan"), float("inf"), "1.1.1", [1]])
def test_amount_at_least_rejects_non_amounts(tmp_path: Path, bad: object) -> None:
    """Not an amount: the problem names the key path and what to write."""
    data = config_dict(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["A"], "existing": ["A"]},
            "rules": [{"name": "r", "when": {"amount_at_least": bad}, "add_lists": ["B"]}],
        }
    )
    with pytest.raises(ConfigError) as info:
        settings_from(data, tmp_path)
    (problem,) = info.value.problems
    assert "policy.rules[0].when.amount_at_least" in problem and "an amount >= 0" in problem


def test_unrecognised_trigger_synced_by_backfill_once_configured(org: Org) -> None:
    """Skipped with the fix in the reason; after the spelling is added, a backfill syncs it."""
    org.ingest([payload("nia@example.org", webhook_trigger_type="new_contact_v2")])
    first = org.run()
    (outcome,) = first.outcomes
    assert outcome.action == "skip" and "flipcause.trigger_types" in outcome.reason
    assert first.record_kinds == {"unrecognised": 1}
    assert org.contact("nia@example.org") is None
    org.write_config(flipcause={"trigger_types": {"contact": ["new_contact", "new_contact_v2"]}})
    result = org.cli("backfill", "--since", "2000-01-01")
    assert result.exit_code == 0, result.output
    nia = org.contact("nia@example.org")
    assert nia is not None and nia["email_address"]["permission_to_send"] == "implicit"
