"""The consent policy, table-driven: every setup x CC state x sign-up x configured status."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from flipsync.plan import build_plan
from flipsync.policy import Action, Endpoint, Known, decide
from tests.helpers import config_dict, known_for, person, settings_from

STATES = [
    "new",
    "explicit",
    "implicit",
    "not_set",
    "pending_confirmation",
    "temp_hold",
    "unsubscribed",
    "deleted",
]
STATUSES = ["explicit", "implicit", "not_set"]
NEW_FIELDS = ("first_name", "last_name", "phone", "address")
NAMES = ("first_name", "last_name")
ENDPOINT_FOR = {
    "implicit": Endpoint.JSON_IMPORT,
    "explicit": Endpoint.SIGN_UP_FORM,
    "not_set": Endpoint.CREATE_CONTACT,
}


def setup_settings(setup: str, status: str) -> Any:
    if setup == "mailing_list_contacts":
        policy = {"setup": setup, "lists": {"new": ["New"], "existing": ["Existing"]}}
    elif setup == "all_contacts_uniform":
        policy = {
            "setup": setup,
            "new_contact_status": status,
            "lists": {"new": ["New"], "existing": ["Existing"]},
        }
    else:
        policy = {
            "setup": setup,
            "new_non_subscriber_status": status,
            "lists": {
                "new_subscribers": ["Subscribers"],
                "new_non_subscribers": ["NonSubscribers"],
                "existing": ["Existing"],
            },
        }
    return settings_from(config_dict(policy=policy))


def skip(state: str) -> tuple[Action, Endpoint, str | None, tuple[str, ...], tuple[str, ...]]:
    after = None if state == "new" else ("deleted" if state == "deleted" else state)
    return (Action.SKIP, Endpoint.NONE, after, (), ())


def expected(setup: str, state: str, signed: bool, status: str, coi: bool) -> tuple[Any, ...]:
    """The rule book, written out independently of the implementation."""
    if state == "unsubscribed":
        return skip(state)
    # what a sign-up form ends in: explicit, or pending_confirmation under Confirmed Opt-In
    signed_up_status = "pending_confirmation" if coi else "explicit"
    existing_keep = (Action.UPDATE, Endpoint.JSON_IMPORT, state, ("Existing",), NAMES)
    if setup == "mailing_list_contacts":
        if state == "new":
            if signed:
                return (
                    Action.CREATE,
                    Endpoint.SIGN_UP_FORM,
                    signed_up_status,
                    ("New",),
                    NEW_FIELDS,
                )
            return skip(state)
        if state == "deleted":
            if signed:
                return (Action.UPDATE, Endpoint.SIGN_UP_FORM, "explicit", ("Existing",), NAMES)
            return skip(state)
        if state == "explicit":
            return existing_keep
        if signed and state in ("implicit", "not_set"):
            return (Action.UPDATE, Endpoint.SIGN_UP_FORM, "explicit", ("Existing",), NAMES)
        if signed and state == "pending_confirmation":
            # signing up again on a Flipcause form: the setup's promise holds for them too
            return (Action.UPDATE, Endpoint.SIGN_UP_FORM, signed_up_status, ("Existing",), NAMES)
        if signed:  # temp_hold: Constant Contact's own hold; a sign-up does not lift it
            return existing_keep
        return skip(state)
    if setup == "all_contacts_uniform":
        if state == "new":
            after = signed_up_status if status == "explicit" else status
            return (Action.CREATE, ENDPOINT_FOR[status], after, ("New",), NEW_FIELDS)
        if state == "deleted":
            return skip(state)
        return existing_keep
    # all_contacts_by_subscription
    if state == "new":
        if signed:
            return (
                Action.CREATE,
                Endpoint.SIGN_UP_FORM,
                signed_up_status,
                ("Subscribers",),
                NEW_FIELDS,
            )
        after = signed_up_status if status == "explicit" else status
        return (Action.CREATE, ENDPOINT_FOR[status], after, ("NonSubscribers",), NEW_FIELDS)
    if state == "deleted":
        return skip(state)
    return existing_keep


CASES = [
    (setup, state, signed, status)
    for setup in ("mailing_list_contacts", "all_contacts_uniform", "all_contacts_by_subscription")
    for state, signed, status in itertools.product(STATES, (True, False), STATUSES)
    if not (setup == "mailing_list_contacts" and status != "explicit")  # setup 1 has no status
]


@pytest.mark.parametrize("coi", [False, True], ids=["coi-off", "coi-on"])
@pytest.mark.parametrize(("setup", "state", "signed", "status"), CASES)
def test_decision_table(setup: str, state: str, signed: bool, status: str, coi: bool) -> None:
    """Endpoint, final status, lists and fields for every combination the product meets."""
    settings = setup_settings(setup, status)
    who = person(settings, signed_up=signed)
    decision = decide(who, known_for(state), settings.policy, confirmed_opt_in=coi)
    got = (
        decision.action,
        decision.endpoint,
        decision.status_after,
        decision.lists,
        decision.fields,
    )
    assert got == expected(setup, state, signed, status, coi), decision.reason
    assert decision.reason  # every decision carries its reason


def expected_reason(setup: str, state: str, signed: bool, coi: bool) -> list[str]:
    """Phrases the reason must contain, so a person reading it learns why (not just what)."""
    if state == "unsubscribed":
        return ["unsubscribed in Constant Contact: never updated"]
    if state == "deleted":
        return ["deleted in Constant Contact"]
    if state == "new":
        if setup == "mailing_list_contacts":
            return ["signed up (Mailing List activity"] if signed else ["no mailing-list sign-up"]
        if setup == "all_contacts_by_subscription" and signed:
            return ["new subscriber (Mailing List activity"]
        return ["new", f"setup {setup} gives"]
    parts = [state]
    if signed:
        parts.append("signed up")
    if setup == "mailing_list_contacts" and not signed and state != "explicit":
        return [*parts, "without a mailing-list sign-up", "syncs only sign-ups and explicit"]
    if state in ("pending_confirmation", "temp_hold") and not (
        setup == "mailing_list_contacts" and signed and state == "pending_confirmation"
    ):
        parts.append(
            "awaiting the contact's own confirmation"
            if state == "pending_confirmation"
            else "on hold by Constant Contact"
        )
    if setup != "mailing_list_contacts":
        parts.append(f"setup {setup} keeps every existing contact's status")
    elif signed and state == "pending_confirmation":
        parts.append(
            "pending_confirmation again until the person confirms (Confirmed Opt-In)"
            if coi
            else "signed up again (Mailing List activity"
        )
        if not coi:
            parts.append("made explicit")
    elif signed and state == "temp_hold":
        parts.append("a sign-up does not lift a hold Constant Contact placed")
    return parts


@pytest.mark.parametrize("coi", [False, True], ids=["coi-off", "coi-on"])
@pytest.mark.parametrize(("setup", "state", "signed", "status"), CASES)
def test_every_reason_says_why(
    setup: str, state: str, signed: bool, status: str, coi: bool
) -> None:
    """The reason names the state, the evidence, and the rule that decided (setups 1, 2, 3)."""
    settings = setup_settings(setup, status)
    decision = decide(
        person(settings, signed_up=signed), known_for(state), settings.policy, confirmed_opt_in=coi
    )
    for phrase in expected_reason(setup, state, signed, coi):
        assert phrase in decision.reason, (phrase, decision.reason)


@pytest.mark.parametrize(("setup", "state", "signed", "status"), CASES)
def test_no_existing_contact_gets_phone_address_or_permission_change(
    setup: str, state: str, signed: bool, status: str
) -> None:
    """Invariant 3 through the planner: bodies for existing contacts carry no phone/address."""
    settings = setup_settings(setup, status)
    decision = decide(person(settings, signed_up=signed), known_for(state), settings.policy)
    plan = build_plan(
        [decision],
        batch_id="b",
        list_ids={
            ref: f"00000000-0000-0000-0000-00000000000{i}"
            for i, ref in enumerate(["New", "Existing", "Subscribers", "NonSubscribers"])
        },
        field_ids={},
        max_contacts_per_import=100,
    )
    if state == "unsubscribed":
        assert plan.ops == ()
    for op in plan.ops:
        rows = op.body.get("import_data", [op.body])
        for row in rows:
            if state != "new":
                assert not {"phone", "street", "phone_number", "street_address"} & set(row)
                assert "permission_to_send" not in str(row)
            if op.kind == "sign_up_form":
                # the sign-up form sets explicit: only with a sign-up, or for new people by config
                assert signed or (state == "new" and status == "explicit")


def test_confirmed_opt_in_reports_pending_confirmation() -> None:
    """With Confirmed Opt-In the sign-up form leaves new contacts pending_confirmation."""
    settings = setup_settings("mailing_list_contacts", "explicit")
    decision = decide(
        person(settings, signed_up=True), None, settings.policy, confirmed_opt_in=True
    )
    assert decision.endpoint is Endpoint.SIGN_UP_FORM
    assert decision.status_after == "pending_confirmation"


@pytest.mark.parametrize(
    ("setup", "status", "known_status", "endpoint", "after", "lists"),
    [
        # setup 3: flipsync made them implicit from this transaction; the sign-up arrived later
        (
            "all_contacts_by_subscription",
            "implicit",
            "implicit",
            Endpoint.SIGN_UP_FORM,
            "explicit",
            ("Subscribers",),
        ),
        # already explicit: the cheaper import finishes the job
        (
            "all_contacts_by_subscription",
            "implicit",
            "explicit",
            Endpoint.JSON_IMPORT,
            "explicit",
            ("Subscribers",),
        ),
        (
            "mailing_list_contacts",
            "explicit",
            "explicit",
            Endpoint.JSON_IMPORT,
            "explicit",
            ("New",),
        ),
        (
            "all_contacts_uniform",
            "implicit",
            "implicit",
            Endpoint.JSON_IMPORT,
            "implicit",
            ("New",),
        ),
    ],
)
def test_contact_created_by_flipsync_from_same_transaction_counts_as_new(
    setup: str,
    status: str,
    known_status: str,
    endpoint: Endpoint,
    after: str,
    lists: tuple[str, ...],
) -> None:
    """A later Mailing List activity of the same transaction still gives subscriber treatment."""
    settings = setup_settings(setup, status)
    who = person(settings, signed_up=True, created_by_flipsync=True)
    decision = decide(who, Known(permission=known_status), settings.policy)
    assert (decision.endpoint, decision.status_after, decision.lists) == (endpoint, after, lists)
    assert decision.is_new
    assert "counts as new" in decision.reason
    assert "phone" in decision.fields  # still new: phone and address may be written


def test_created_by_flipsync_but_unsubscribed_since_is_never_touched() -> None:
    """Unsubscribing wins over everything, even for contacts flipsync created."""
    settings = setup_settings("all_contacts_by_subscription", "implicit")
    who = person(settings, signed_up=True, created_by_flipsync=True)
    decision = decide(who, Known(permission="unsubscribed"), settings.policy)
    assert decision.action is Action.SKIP
    assert "never updated" in decision.reason


def test_rules_add_lists_with_reason() -> None:
    """A matching routing rule adds its list and names itself in the reason."""
    data = config_dict(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["New"], "existing": ["Existing"]},
            "rules": [
                {
                    "name": "big",
                    "when": {"activity_type": ["donation"], "amount_at_least": 20},
                    "add_lists": ["Major"],
                },
                {
                    "name": "gala",
                    "when": {"campaign_title": ["Spring Gala"]},
                    "add_lists": ["Gala"],
                },
            ],
        }
    )
    settings = settings_from(data)
    decision = decide(person(settings), None, settings.policy)
    assert decision.lists == ("New", "Major")
    assert "rule 'big'" in decision.reason


def test_existing_contact_fields_configurable_but_never_phone_or_address() -> None:
    """company_name may be written to existing contacts when configured."""
    data = config_dict(
        policy={
            "setup": "all_contacts_uniform",
            "lists": {"new": ["New"], "existing": ["Existing"]},
            "existing_contact_fields": ["first_name"],
        }
    )
    settings = settings_from(data)
    decision = decide(person(settings), Known(permission="implicit"), settings.policy)
    assert decision.fields == ("first_name",)
