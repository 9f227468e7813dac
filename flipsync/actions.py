"""What an outcome does and through which endpoint: the two enums every layer shares.

Apart from the policy that chooses them so that the state DB, which stores them, can read
them back typed without importing the policy (and, through it, the records).
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What happens to a person in Constant Contact: every action any outcome can carry.

    The policy decides the first four. DEFERRED is push's: a write that was not confirmed
    (its people are decided again next run). DELETE is cleanup-test-contacts' only.
    """

    CREATE = "create"
    UPDATE = "update"
    SKIP = "skip"
    REJECT = "reject"
    DEFERRED = "deferred"
    DELETE = "delete"


class Endpoint(StrEnum):
    """Which Constant Contact endpoint carries the write; each sets permission differently."""

    JSON_IMPORT = "json_import"  # new -> implicit; existing -> unchanged
    SIGN_UP_FORM = "sign_up_form"  # -> explicit (pending_confirmation with Confirmed Opt-In)
    CREATE_CONTACT = "create_contact"  # POST /contacts with the permission we send (not_set)
    CONTACT_DELETE = "contact_delete"  # cleanup-test-contacts only; never chosen by the policy
    NONE = "none"
