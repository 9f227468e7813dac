"""Print the contacts per list that a running sandbox holds (used by `make demo`)."""

from __future__ import annotations

import sys

import requests


def main(base_url: str) -> None:
    state = requests.get(f"{base_url}/__sandbox/state", timeout=10).json()
    names = {lst["list_id"]: lst["name"] for lst in state["lists"]}
    members: dict[str, list[str]] = {name: [] for name in names.values()}
    for contact in state["contacts"]:
        email = contact["email_address"]["address"]
        status = contact["email_address"]["permission_to_send"]
        for list_id in contact.get("list_memberships", []):
            members[names[list_id]].append(f"{email} ({status})")
    for name, emails in members.items():
        print(f"{name}: {len(emails)}")
        for line in sorted(emails):
            print(f"  {line}")
    print("all contacts:")
    for contact in state["contacts"]:
        email = contact["email_address"]
        extras = [k for k in ("phone_numbers", "street_addresses") if contact.get(k)]
        print(
            f"  {email['address']}: {email['permission_to_send']}"
            + (f", with {' and '.join(extras)}" if extras else "")
            + (", DELETED" if contact.get("deleted_at") else "")
        )


if __name__ == "__main__":
    main(sys.argv[1])
