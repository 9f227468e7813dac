"""The consent policy: one Person plus what Constant Contact knows of them -> a Decision.

Pure functions over plain data, so every rule is table-tested. The rules, in the
order they are applied:

1. An unsubscribed contact is never sent to any endpoint (the sign-up form
   would resubscribe them; an import would silently drop them).
2. A contact deleted in Constant Contact is not restored, unless the person
   signed up for the mailing list again in setup mailing_list_contacts: a new
   sign-up is new consent, and the sign-up form restores the contact. Deletion is
   the organization's deliberate act; a donation alone does not undo it, and the
   "all contacts" setups keep existing contacts (deleted ones included) as they are.
3. A contact flipsync itself created from one of the person's transactions
   counts as new (a Mailing List activity may arrive after the donation).
4. Permission only moves towards explicit, only through the sign-up form, and
   only with a Flipcause sign-up as evidence (or, for new contacts, the
   configured status). In mailing_list_contacts that includes a pending_confirmation
   contact who signs up again (explicit, or pending again under Confirmed Opt-In);
   a temp_hold contact keeps its hold, which is Constant Contact's and whose cause
   flipsync cannot see. Existing contacts otherwise keep their status.
5. Phone and street address are written only for new contacts; existing ones
   get only `existing_contact_fields` (names by default) and their lists.
6. Where a cheaper request has the same effect (the contact already has the
   target status), the batched JSON import is used instead of a single-contact call.
"""

from __future__ import annotations

from dataclasses import dataclass

from flipsync.actions import Action as Action  # re-exported: the policy chooses them
from flipsync.actions import Endpoint as Endpoint
from flipsync.people import Person
from flipsync.rules import rule_lists
from flipsync.settings import PolicySettings

NEW = "new"
DELETED = "deleted"


def unchanged_status(status_before: str | None) -> str | None:
    """The status a person ends with when nothing is written: none if they did not exist."""
    return None if status_before in (None, NEW) else status_before


UPGRADABLE = frozenset({"implicit", "not_set"})


@dataclass(frozen=True)
class Known:
    """What Constant Contact has for an email (from the mirror or a lookup)."""

    permission: str
    deleted: bool = False
    contact_id: str | None = None


@dataclass(frozen=True)
class Decision:
    """The outcome for one person, with the reason a person can read."""

    person: Person
    action: Action
    endpoint: Endpoint
    status_before: str
    status_after: str | None
    lists: tuple[str, ...]
    fields: tuple[str, ...]
    reason: str
    is_new: bool = False

    @property
    def writes(self) -> bool:
        """True when this decision sends anything to Constant Contact."""
        return self.endpoint is not Endpoint.NONE


ALL_NEW_FIELDS = ("first_name", "last_name", "company_name", "phone", "address", "custom_fields")


def _available(person: Person, names: tuple[str, ...]) -> tuple[str, ...]:
    """The named fields that the person actually has a value for (never blank-overwrite)."""
    have = {
        "first_name": bool(person.first_name),
        "last_name": bool(person.last_name),
        "company_name": bool(person.company_name),
        "phone": bool(person.phone),
        "address": not person.address.is_empty(),
        "custom_fields": bool(person.custom_fields),
    }
    return tuple(n for n in names if have.get(n))


def _with_rule_lists(
    person: Person, policy: PolicySettings, base: tuple[str, ...]
) -> tuple[tuple[str, ...], str]:
    lists = list(base)
    notes = []
    for rule_name, ref in rule_lists(person.records, policy):
        if ref not in lists:
            lists.append(ref)
            notes.append(f"list {ref!r} by rule {rule_name!r}")
    return tuple(lists), ("; " + ", ".join(notes)) if notes else ""


def _skip(person: Person, status_before: str, reason: str) -> Decision:
    return Decision(
        person=person,
        action=Action.SKIP,
        endpoint=Endpoint.NONE,
        status_before=status_before,
        status_after=unchanged_status(status_before),
        lists=(),
        fields=(),
        reason=reason,
    )


def _new_endpoint(status: str) -> Endpoint:
    return {
        "implicit": Endpoint.JSON_IMPORT,
        "explicit": Endpoint.SIGN_UP_FORM,
        "not_set": Endpoint.CREATE_CONTACT,
    }[status]


def decide(
    person: Person, known: Known | None, policy: PolicySettings, *, confirmed_opt_in: bool = False
) -> Decision:
    """Decide what to do with one person. Never raises for any combination of inputs."""
    setup = policy.setup
    explicit_after = "pending_confirmation" if confirmed_opt_in else "explicit"
    signup = person.signup_evidence or "Mailing List activity"

    if known is not None and known.permission == "unsubscribed":
        return _skip(person, "unsubscribed", "unsubscribed in Constant Contact: never updated")

    if known is not None and known.deleted:
        if person.signed_up and setup == "mailing_list_contacts":
            lists, note = _with_rule_lists(person, policy, policy.lists.existing)
            return Decision(
                person=person,
                action=Action.UPDATE,
                endpoint=Endpoint.SIGN_UP_FORM,
                status_before=DELETED,
                status_after="explicit",
                lists=lists,
                fields=_available(person, policy.existing_contact_fields),
                reason=f"deleted in Constant Contact, restored by a new mailing-list sign-up ({signup})"
                + note,
            )
        why = (
            "not restored without a new mailing-list sign-up"
            if setup == "mailing_list_contacts"
            else f"setup {setup} keeps existing contacts as they are and does not restore them"
        )
        return _skip(person, DELETED, f"deleted in Constant Contact: {why}")

    counts_as_new = known is None or person.created_by_flipsync
    status_before = NEW if known is None else known.permission
    created_note = f" ({person.created_evidence}, so it counts as new)" if known is not None else ""

    if counts_as_new:
        if setup == "mailing_list_contacts":
            if not person.signed_up:
                if known is not None and known.permission == "explicit":
                    return _existing(person, known, policy, "explicit contact in Constant Contact")
                return _skip(
                    person,
                    status_before,
                    "no mailing-list sign-up and not explicit in Constant Contact: "
                    "setup mailing_list_contacts syncs only those",
                )
            target, base, why = "explicit", policy.lists.new, f"signed up ({signup})"
        elif setup == "all_contacts_by_subscription":
            if person.signed_up:
                target, base, why = (
                    "explicit",
                    policy.lists.new_subscribers,
                    f"new subscriber ({signup})",
                )
            else:
                target = policy.new_non_subscriber_status
                base = policy.lists.new_non_subscribers
                why = f"new non-subscriber; setup {setup} gives them {target}"
        else:
            target, base = policy.new_contact_status, policy.lists.new
            why = f"new contact; setup all_contacts_uniform gives {target}"
        lists, note = _with_rule_lists(person, policy, base)
        fields = _available(person, ALL_NEW_FIELDS)
        if known is None:
            endpoint = _new_endpoint(target)
            after = explicit_after if target == "explicit" else target
            return Decision(
                person=person,
                action=Action.CREATE,
                endpoint=endpoint,
                status_before=NEW,
                status_after=after,
                lists=lists,
                fields=fields,
                reason=f"{why} ({endpoint.value})" + note,
                is_new=True,
            )
        # flipsync created it from this transaction: finish the job with the cheapest request.
        if target == "explicit" and person.signed_up and known.permission in UPGRADABLE:
            return Decision(
                person=person,
                action=Action.UPDATE,
                endpoint=Endpoint.SIGN_UP_FORM,
                status_before=status_before,
                status_after="explicit",
                lists=lists,
                fields=fields,
                reason=f"{why}: made explicit{created_note}" + note,
                is_new=True,
            )
        return Decision(
            person=person,
            action=Action.UPDATE,
            endpoint=Endpoint.JSON_IMPORT,
            status_before=status_before,
            status_after=known.permission,
            lists=lists,
            fields=fields,
            reason=f"{why}; already {known.permission}{created_note}" + note,
            is_new=True,
        )

    assert known is not None
    if setup == "mailing_list_contacts":
        if person.signed_up and known.permission in UPGRADABLE:
            lists, note = _with_rule_lists(person, policy, policy.lists.existing)
            return Decision(
                person=person,
                action=Action.UPDATE,
                endpoint=Endpoint.SIGN_UP_FORM,
                status_before=known.permission,
                status_after="explicit",
                lists=lists,
                fields=_available(person, policy.existing_contact_fields),
                reason=f"existing {known.permission} contact signed up ({signup}): made explicit"
                + note,
            )
        if person.signed_up and known.permission == "pending_confirmation":
            # The setup promises that people signing up on a Flipcause form end explicit
            # (pending again under Confirmed Opt-In); a contact who never confirmed an
            # earlier sign-up has just given the same consent again.
            lists, note = _with_rule_lists(person, policy, policy.lists.existing)
            result = (
                "pending_confirmation again until the person confirms (Confirmed Opt-In)"
                if confirmed_opt_in
                else "made explicit"
            )
            return Decision(
                person=person,
                action=Action.UPDATE,
                endpoint=Endpoint.SIGN_UP_FORM,
                status_before=known.permission,
                status_after=explicit_after,
                lists=lists,
                fields=_available(person, policy.existing_contact_fields),
                reason=f"existing pending_confirmation contact signed up again ({signup}): "
                f"{result}" + note,
            )
        if person.signed_up and known.permission == "temp_hold":
            # temp_hold is Constant Contact's own hold, not the contact's choice nor the
            # account's; flipsync cannot see its cause, and the sign-up form would override it.
            return _existing(
                person,
                known,
                policy,
                f"existing contact signed up ({signup})",
                tail=": a sign-up does not lift a hold Constant Contact placed "
                "(flipsync cannot see its cause)",
            )
        if person.signed_up:
            return _existing(person, known, policy, f"existing contact signed up ({signup})")
        if known.permission != "explicit":
            return _skip(
                person,
                known.permission,
                f"existing {known.permission} contact without a mailing-list sign-up: "
                "setup mailing_list_contacts syncs only sign-ups and explicit contacts",
            )
        return _existing(person, known, policy, "explicit contact in Constant Contact")
    # The "all contacts" setups promise that existing contacts keep their status, whatever
    # their status and whether or not they signed up (only new subscribers become explicit).
    why = f"existing contact signed up ({signup})" if person.signed_up else "existing contact"
    return _existing(
        person, known, policy, why, tail=f"; setup {setup} keeps every existing contact's status"
    )


def _existing(
    person: Person, known: Known, policy: PolicySettings, why: str, *, tail: str = ""
) -> Decision:
    """Existing contacts: names (as configured) and lists by JSON import; status untouched."""
    lists, note = _with_rule_lists(person, policy, policy.lists.existing)
    held = {
        "pending_confirmation": "; awaiting the contact's own confirmation",
        "temp_hold": "; on hold by Constant Contact",
    }.get(known.permission, "")
    return Decision(
        person=person,
        action=Action.UPDATE,
        endpoint=Endpoint.JSON_IMPORT,
        status_before=known.permission,
        status_after=known.permission,
        lists=lists,
        fields=_available(person, policy.existing_contact_fields),
        reason=f"{why} keeps status {known.permission}{held}{tail}" + note,
    )
