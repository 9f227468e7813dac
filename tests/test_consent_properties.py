"""Property-based consent checks (hypothesis) over random accounts and record streams.

Whatever the account holds and whatever Flipcause sends, in any setup:
- no unsubscribed contact appears in any request body;
- no contact that existed before flipsync touched it gets a phone, an address or a
  permission change, except a mailing-list sign-up in the mailing_list_contacts setup.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flipsync.ctct.auth import token_set_from_response, write_token_file
from flipsync.sandbox import Sandbox, SandboxConfig
from flipsync.sandbox.inprocess import start_in_process
from flipsync.state import utcnow
from tests.conftest import Org
from tests.helpers import payload

EMAILS = [f"p{i}@example.org" for i in range(8)]
PERMISSIONS = [
    "explicit",
    "implicit",
    "not_set",
    "pending_confirmation",
    "temp_hold",
    "unsubscribed",
]
SETUPS = {
    "mailing_list_contacts": {"lists": {"new": ["A"], "existing": ["B"]}},
    "all_contacts_uniform": {"lists": {"new": ["A"], "existing": ["B"]}},
    "all_contacts_by_subscription": {
        "lists": {"new_subscribers": ["A"], "new_non_subscribers": ["C"], "existing": ["B"]}
    },
}

account = st.dictionaries(
    st.sampled_from(EMAILS),
    st.tuples(st.sampled_from([*PERMISSIONS, "deleted"]), st.booleans()),
    max_size=6,
)
record = st.fixed_dictionaries(
    {
        "email": st.sampled_from([*EMAILS, "P0@Example.org", "bad@", ""]),
        "activity": st.sampled_from(
            ["Donation", "Mailing List", "E Registration", "RD Refund", "Weird"]
        ),
        "txn": st.sampled_from(["T1", "T2", "T3", "T4"]),
        "amount": st.sampled_from(["", "5", "750.00", "-25.00", "abc"]),
    }
)
stream = st.lists(st.lists(record, min_size=1, max_size=6), min_size=1, max_size=3)


def make_org(tmp: Path, box: Sandbox, running: Any, setup: str, status: str) -> Org:
    for name in ("A", "B", "C"):
        box.add_list(name)
    org = Org(tmp, running, tmp / "flipsync.yaml")
    write_token_file(tmp / "tokens.json", token_set_from_response(box.issue_tokens(), utcnow()))
    return org


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    setup=st.sampled_from(sorted(SETUPS)),
    status=st.sampled_from(["explicit", "implicit", "not_set"]),
    accounts=account,
    batches=stream,
    strategy=st.sampled_from(["auto", "lookup", "mirror"]),
)
def test_consent_invariants_hold_over_random_streams(
    setup: str,
    status: str,
    accounts: dict[str, tuple[str, bool]],
    batches: list[list[dict[str, str]]],
    strategy: str,
) -> None:
    """No unsubscribed contact in any body; existing contacts keep phone, address and status."""
    box = Sandbox(SandboxConfig(requests_per_second=0, activity_seconds=0))
    with tempfile.TemporaryDirectory() as tmp, start_in_process(box) as running:
        org = make_org(Path(tmp), box, running, setup, status)
        org.write_config(policy=_policy(setup, status), run={"lookup_strategy": strategy})
        before: dict[str, dict[str, Any]] = {}
        for email, (permission, has_phone) in accounts.items():
            box.add_contact(
                email,
                permission="implicit" if permission == "deleted" else permission,
                deleted=permission == "deleted",
                phone="555-0000" if has_phone else None,
            )
            before[email] = box.contact_by_email(email) or {}
        unsubscribed = {e for e, (p, _) in accounts.items() if p == "unsubscribed"}
        signed_up: set[str] = set()
        for records in batches:
            org.ingest(
                payload(r["email"], activity=r["activity"], txn=r["txn"], amount=r["amount"])
                for r in records
            )
            signed_up |= {r["email"].lower() for r in records if r["activity"] == "Mailing List"}
            org.run()

        bodies = json.dumps([e.body for e in box.request_log() if e.body is not None]).lower()
        for email in unsubscribed:
            assert email not in bodies
        for email, old in before.items():
            now = box.contact_by_email(email) or {}
            assert now.get("phone_numbers", []) == old.get("phone_numbers", []), email
            assert now.get("street_addresses", []) == old.get("street_addresses", []), email
            old_status = old["email_address"]["permission_to_send"]
            new_status = now["email_address"]["permission_to_send"]
            if new_status != old_status or bool(now.get("deleted_at")) != bool(
                old.get("deleted_at")
            ):
                assert setup == "mailing_list_contacts" and email in signed_up, (
                    email,
                    old_status,
                    new_status,
                )
                assert new_status == "explicit"
        with org.state() as state:
            assert state.open_journals() == []
            assert state.checkpoint == state.inbox_after(0, 10_000)[-1].seq


def _policy(setup: str, status: str) -> dict[str, Any]:
    policy: dict[str, Any] = {"setup": setup, **SETUPS[setup]}
    if setup == "all_contacts_uniform":
        policy["new_contact_status"] = status
    if setup == "all_contacts_by_subscription":
        policy["new_non_subscriber_status"] = status
    return policy
