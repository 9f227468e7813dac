"""From decisions to requests: batching per list set, field limits, rejections with reasons."""

from __future__ import annotations

from dataclasses import replace

from flipsync.plan import build_plan
from flipsync.policy import Action, Endpoint, Known, decide
from flipsync.records import Address
from tests.helpers import config_dict, person, settings_from

SETTINGS = settings_from(
    config_dict(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["New"], "existing": ["Existing"]},
            "rules": [{"name": "big", "when": {"amount_at_least": 100}, "add_lists": ["Major"]}],
        },
        flipcause={"custom_fields": {"CF_q": "question"}},
    )
)
IDS = {
    "New": "11111111-1111-1111-1111-111111111111",
    "Existing": "22222222-2222-2222-2222-222222222222",
    "Major": "33333333-3333-3333-3333-333333333333",
}


def plan_for(decisions: list, **kwargs: object):  # type: ignore[no-untyped-def]
    return build_plan(
        decisions,
        batch_id="b1",
        list_ids=IDS,
        field_ids={"question": "cf-1"},
        max_contacts_per_import=kwargs.get("max_contacts", 1000),  # type: ignore[arg-type]
    )


def test_one_import_per_list_set_in_order() -> None:
    """People with the same lists share an import; each person is in exactly one request."""
    people = [person(SETTINGS, email=f"p{i}@example.org") for i in range(5)]
    decisions = [
        decide(p, None if i % 2 else Known("implicit"), SETTINGS.policy)
        for i, p in enumerate(people)
    ]
    plan = plan_for(decisions)
    assert [op.kind for op in plan.ops] == ["json_import", "json_import"]
    by_lists = {
        tuple(op.body["list_ids"]): [r["email"] for r in op.body["import_data"]] for op in plan.ops
    }
    assert by_lists == {
        (IDS["Existing"],): ["p0@example.org", "p2@example.org", "p4@example.org"],
        (IDS["New"],): ["p1@example.org", "p3@example.org"],
    }
    assert sorted(plan.op_of) == sorted(p.email_key for p in people)


def test_imports_split_at_the_configured_size() -> None:
    """max_contacts_per_import caps each import."""
    decisions = [
        decide(person(SETTINGS, email=f"s{i}@example.org"), None, SETTINGS.policy) for i in range(7)
    ]
    plan = plan_for(decisions, max_contacts=3)
    assert [len(op.body["import_data"]) for op in plan.ops] == [3, 3, 1]


def test_long_values_are_fitted_or_left_out_with_a_note() -> None:
    """Names are cut to 50; a phone or address that does not fit is left out; the person still syncs."""
    p = replace(
        person(SETTINGS),
        first_name="F" * 60,
        phone="5" * 30,
        address=Address(street="1 Main St", city="C" * 51),
        custom_fields={"question": "x" * 300},
    )
    signup = replace(decide(p, None, SETTINGS.policy), endpoint=Endpoint.SIGN_UP_FORM)
    plan = plan_for([signup])
    (op,) = plan.ops
    assert op.body["first_name"] == "F" * 50
    assert "phone_number" not in op.body and "street_address" not in op.body
    assert "custom_fields" not in op.body
    (decision,) = plan.decisions
    assert "first_name truncated to 50 characters" in decision.reason
    assert "phone left out: longer than 25 characters" in decision.reason
    assert "address left out: city too long" in decision.reason
    assert "custom field question left out" in decision.reason
    assert decision.fields == ("first_name", "last_name")
    # the JSON import allows 50-character phones, so the same phone goes there
    (imp,) = plan_for([decide(p, None, SETTINGS.policy)]).ops
    assert imp.body["import_data"][0]["phone"] == "5" * 30


def test_custom_fields_by_name_in_imports_and_by_id_elsewhere() -> None:
    """Imports address custom fields as cf:<name>; the sign-up form by custom_field_id."""
    p = replace(person(SETTINGS), custom_fields={"question": "yes"})
    (imp,) = plan_for([decide(p, None, SETTINGS.policy)]).ops
    assert imp.body["import_data"][0]["cf:question"] == "yes"
    signup = replace(decide(p, None, SETTINGS.policy), endpoint=Endpoint.SIGN_UP_FORM)
    (op,) = plan_for([signup]).ops
    assert op.body["custom_fields"] == [{"custom_field_id": "cf-1", "value": "yes"}]


def test_create_contact_body_carries_not_set_and_account_source() -> None:
    """POST /contacts gets the configured permission and create_source Account."""
    d = decide(person(SETTINGS), None, replace(SETTINGS.policy, new_contact_status="not_set"))
    (op,) = plan_for([d]).ops
    assert op.kind == "create_contact"
    assert op.body["email_address"] == {
        "address": "ada@example.org",
        "permission_to_send": "not_set",
    }
    assert op.body["create_source"] == "Account"
    assert op.body["list_memberships"] == [IDS["New"]]


def test_unsendable_decisions_become_rejections() -> None:
    """No list at all, or more than 50, is a rejection with the reason; nothing is sent."""
    d = decide(person(SETTINGS), None, SETTINGS.policy)
    no_list = replace(d, lists=())
    many = replace(d, lists=tuple(f"L{i}" for i in range(51)))
    ids = {**IDS, **{f"L{i}": f"{i:08d}-0000-0000-0000-000000000000" for i in range(51)}}
    plan = build_plan(
        [no_list, many], batch_id="b", list_ids=ids, field_ids={}, max_contacts_per_import=10
    )
    assert plan.ops == ()
    assert [x.action for x in plan.decisions] == [Action.REJECT, Action.REJECT]
    assert "no list" in plan.decisions[0].reason
    assert "at most 50" in plan.decisions[1].reason
