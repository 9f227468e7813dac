"""A first load at scale: 100,000 Flipcause records into an account of 200,000 contacts.

What issue 9 measures, end to end with the real CLI in child processes against the sandbox at
production limits (4 requests/s, imports that take --import-seconds to process):

1. an account of --contacts contacts (2% unsubscribed, 1% deleted, changed over weeks);
2. --records Flipcause records (donations, registrations, store orders) from about 45% as
   many people, 30% of them already in the account, 10% of the new ones signing up;
3. `flipsync ingest` of the NDJSON file, `flipsync run --dry-run`, then `flipsync run`,
   each in its own process, for the setups `all_contacts_uniform` (implicit) and
   `all_contacts_by_subscription`.

It prints, per setup: requests by kind (from the sandbox's log), split into per-contact
sign-ups and everything else; wall time, and the time beyond what the sign-ups alone need at
4/s; the peak RSS of each process; the local speed of parse, policy and plan; and whether the
account ends exactly as the policy says (statuses and lists of every person, untouched
contacts untouched). Exit 1 when the end state is wrong. A measurement, not a test.

    .venv/bin/python benchmarks/backfill_at_scale.py [--records 100000] [--contacts 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flipsync.config import load_settings  # noqa: E402
from flipsync.ctct.auth import token_set_from_response, write_token_file  # noqa: E402
from flipsync.people import group_people  # noqa: E402
from flipsync.plan import build_plan  # noqa: E402
from flipsync.policy import Known, decide  # noqa: E402
from flipsync.records import FlipcauseRecord, parse_record  # noqa: E402
from flipsync.sandbox import RequestLogEntry, Sandbox, SandboxConfig, start_in_thread  # noqa: E402
from flipsync.state import utcnow  # noqa: E402

SETUPS: dict[str, dict[str, Any]] = {
    "all_contacts_uniform": {
        "setup": "all_contacts_uniform",
        "new_contact_status": "implicit",
        "lists": {"new": ["Donors"], "existing": ["Existing"]},
    },
    "all_contacts_by_subscription": {
        "setup": "all_contacts_by_subscription",
        "new_non_subscriber_status": "implicit",
        "lists": {
            "new_subscribers": ["Subscribers"],
            "new_non_subscribers": ["Donors"],
            "existing": ["Existing"],
        },
    },
}
LISTS = ("Donors", "Existing", "Subscribers")
KINDS = ("Donation", "Event Registration", "Store Order")


@dataclass(frozen=True)
class World:
    """The account before the load and the people of the stream."""

    contacts: dict[str, str]  # email -> permission ("deleted" for deleted ones)
    records: list[dict[str, Any]]
    signers: frozenset[str]


def make_world(records: int, contacts: int, seed: int = 9) -> World:
    rng = random.Random(seed)
    account: dict[str, str] = {}
    for i in range(contacts):
        roll = i % 100
        account[f"member{i}@example.org"] = (
            "unsubscribed" if roll < 2 else "deleted" if roll == 2 else "implicit"
        )
    people = max(1, int(records * 0.45))
    emails = []
    for p in range(people):
        if rng.random() < 0.3:
            emails.append(f"member{rng.randrange(contacts)}@example.org")
        else:
            emails.append(f"new{p}@example.org")
    signers = frozenset(
        e for e in emails if e.startswith("new") and int(e[3:].split("@")[0]) % 10 == 0
    )
    out: list[dict[str, Any]] = []
    n = 0
    while len(out) < records:
        email = emails[n % people] if n < people else rng.choice(emails)
        n += 1
        txn = f"T{n}"
        out.append(_payload(len(out), email, txn, rng.choice(KINDS)))
        if email in signers and len(out) < records:
            out.append(_payload(len(out), email, txn, "Mailing List"))
    return World(account, out, signers)


def _payload(n: int, email: str, txn: str, activity: str) -> dict[str, Any]:
    name = email.split("@")[0]
    return {
        "webhook_record_id": f"scale-{n}",
        "webhook_trigger_type": "new_activity",
        "master_activity_auto_id": str(500000 + n),
        "activity_type": activity,
        "transaction_id": txn,
        "AD_payment_id": f"{txn}_{n}",
        "AD_contact_id": f"{name} (CID9-{n})",
        "AD_transaction_date": "2026-10-15",
        "AD_campaign_title": "Annual Gala",
        "AD_campaign_id": "77",
        "PD_individual_or_bussiness": "Individual",
        "PD_first_name": name.title(),
        "PD_last_name": "Scale",
        "PD_email": email,
        "PD_phone": "555-555-0100",
        "PD_address": f"{n} Elm St",
        "PD_city": "Springfield",
        "PD_state": "IL",
        "PD_zip": "62701",
        "PD_country": "United States",
        "DD_amount": "" if activity == "Mailing List" else "40.00",
        "notes": "x" * 200,  # real payloads carry more than the fields flipsync reads
    }


def seed_account(box: Sandbox, world: World) -> None:
    """The account's contacts, changed a hundred at a time over weeks (as real ones are)."""
    for i, (email, status) in enumerate(world.contacts.items()):
        if i % 100 == 0:
            box.advance_clock(300)
        box.add_contact(
            email,
            permission="implicit" if status == "deleted" else status,
            deleted=status == "deleted",
        )
    box.advance_clock(3600)


def expected(world: World, setup: str, batch_size: int) -> dict[str, tuple[str, frozenset[str]]]:
    """What every stream person must look like afterwards (status, lists).

    Records are decided a batch at a time in inbox order. A person flipsync creates in one
    batch is new for that batch's transactions (and for later records of those same
    transactions), and an existing contact for any later transaction: a repeat donor of a
    later batch keeps the status and gains the `existing` lists, as they would live.
    """
    by_person: dict[str, list[tuple[int, str, bool]]] = {}
    for seq, r in enumerate(world.records):
        by_person.setdefault(str(r["PD_email"]), []).append(
            (seq // batch_size, str(r["transaction_id"]), r["activity_type"] == "Mailing List")
        )
    by_sub = setup == "all_contacts_by_subscription"
    out = {}
    for email, recs in by_person.items():
        before = world.contacts.get(email)
        if before in ("unsubscribed", "deleted"):
            out[email] = (before, frozenset())
            continue
        if before is not None:
            out[email] = (before, frozenset({"Existing"}))
            continue
        first = min(b for b, _, _ in recs)
        created = {t for b, t, _ in recs if b == first}
        status, lists = "implicit", set()
        for batch in sorted({b for b, _, _ in recs}):
            here = [(t, ml) for b, t, ml in recs if b == batch]
            new = [(t, ml) for t, ml in here if t in created]
            if new:
                signs = by_sub and any(ml for _, ml in new)
                if signs:
                    status = "explicit"
                lists.add("Subscribers" if signs else "Donors")
            if any(t not in created for t, _ in here):
                lists.add("Existing")
        out[email] = (status, frozenset(lists))
    return out


def actual(box: Sandbox) -> dict[str, tuple[str, frozenset[str]]]:
    names = {lst["list_id"]: lst["name"] for lst in box.lists()}
    out = {}
    for c in box.contacts():
        email = c["email_address"]["address"].lower()
        status = "deleted" if c.get("deleted_at") else c["email_address"]["permission_to_send"]
        out[email] = (status, frozenset(names[i] for i in c.get("list_memberships", [])))
    return out


def kind_of(entry: RequestLogEntry) -> str:
    path = entry.path.removeprefix("/v3")
    if entry.path.startswith("/oauth2"):
        return "token"
    if entry.method == "GET" and path == "/contacts":
        if "email" in entry.query:
            return "contact_lookup"
        if "include_count" in entry.query:
            return "contact_count"
        if "optout_after" in entry.query:
            return "optout_check"
        return "contacts_page"
    if entry.method == "GET" and path.startswith("/activities/"):
        return "activity_poll"
    if entry.method == "GET" and path.startswith("/contact_exports/"):
        return "export_file"
    return f"{entry.method} {path}"


# The child reports its own peak from /proc (VmHWM of its own memory after exec): the
# rusage of a forked child would also count the parent's pages it started with.
_CHILD = """
import atexit, runpy, sys
peak_path = sys.argv.pop(1)
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(peak_path, "w") as out:
        out.write(str(kb))
atexit.register(_peak)
runpy.run_module("flipsync", run_name="__main__", alter_sys=True)
"""


def child(args: list[str], env: dict[str, str], peak_file: Path) -> tuple[int, float, float]:
    """Run `flipsync ARGS` in a child process: exit code, seconds, peak RSS in MB."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(peak_file), *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode()[-2000:])
    peak = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("nan")
    return proc.returncode, seconds, peak


def local_speed(world: World, config: Path) -> float:
    """Records/s of parse, grouping, policy and plan in this process (no HTTP, no DB)."""
    settings = load_settings(config, environ={})
    known = {
        e: Known(permission=s if s != "deleted" else "implicit", deleted=s == "deleted")
        for e, s in world.contacts.items()
    }
    started = time.perf_counter()
    records: list[FlipcauseRecord] = []
    for seq, payload in enumerate(world.records, 1):
        parsed = parse_record(seq, f"wh:{seq}", payload, settings.flipcause)
        if isinstance(parsed, FlipcauseRecord):
            records.append(parsed)
    people = group_people(records, {})
    decisions = [
        decide(p, known.get(p.email_key), settings.policy, confirmed_opt_in=False) for p in people
    ]
    ids = {ref: f"{i:08d}-0000-0000-0000-000000000000" for i, ref in enumerate(LISTS)}
    build_plan(
        decisions, batch_id="bench", list_ids=ids, field_ids={}, max_contacts_per_import=40_000
    )
    return len(world.records) / (time.perf_counter() - started)


def measure(
    setup: str, world: World, root: Path, import_seconds: float, batch_size: int | None
) -> bool:
    box = Sandbox(SandboxConfig(requests_per_second=4, activity_seconds=import_seconds))
    running = start_in_thread(box)
    try:
        for name in LISTS:
            box.add_list(name)
        seed_account(box, world)
        home = root / setup
        home.mkdir()
        config = home / "flipsync.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "organization": setup,
                    "state_file": "state.db",
                    "constant_contact": {
                        "api_base_url": running.api_base_url,
                        "oauth_base_url": running.oauth_base_url,
                        "client_id": "flipsync-sandbox",
                        "token_file": "tokens.json",
                        "budget_file": "budget.json",
                        "activity_wait_seconds": 600,
                    },
                    "policy": SETUPS[setup],
                    **({"run": {"batch_size": batch_size}} if batch_size else {}),
                }
            ),
            encoding="utf-8",
        )
        write_token_file(
            home / "tokens.json", token_set_from_response(box.issue_tokens(), utcnow())
        )
        data = home / "records.ndjson"
        with data.open("w", encoding="utf-8") as out:
            for record in world.records:
                out.write(json.dumps(record) + "\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        base = ["-c", str(config), "--log-level", "error"]
        print(f"\n== {setup}: {len(world.records):,} records, {len(world.contacts):,} contacts")
        rc, secs, rss = child([*base, "ingest", str(data)], env, home / "peak-ingest")
        print(f"ingest:  exit {rc}, {secs:6.1f} s, peak RSS {rss:6.0f} MB")
        box.clear_request_log()
        rc, secs, rss = child([*base, "run", "--dry-run"], env, home / "peak-dry")
        dry = Counter(kind_of(e) for e in box.request_log() if e.path.startswith("/v3"))
        print(
            f"dry run: exit {rc}, {secs:6.1f} s, peak RSS {rss:6.0f} MB, {sum(dry.values())} reads"
        )
        box.clear_request_log()
        rc, secs, rss = child([*base, "run"], env, home / "peak-run")
        log = [e for e in box.request_log() if e.path.startswith("/v3")]
        kinds = Counter(kind_of(e) for e in log)
        signups = kinds.get("POST /contacts/sign_up_form", 0) + kinds.get("POST /contacts", 0)
        others = sum(kinds.values()) - signups
        beyond = secs - signups / 4
        print(f"run:     exit {rc}, {secs:6.1f} s, peak RSS {rss:6.0f} MB")
        print(f"requests: {sum(kinds.values())} = {signups} per-contact sign-ups + {others} others")
        print("  by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
        print(f"time beyond the sign-ups' own {signups / 4:.0f} s at 4/s: {beyond:.0f} s")
        want = expected(world, setup, load_settings(config, environ={}).run.batch_size)
        got = actual(box)
        wrong = [e for e, v in want.items() if got.get(e) != v]
        untouched = [
            e for e, s in world.contacts.items() if e not in want and got.get(e, ("?",))[0] != s
        ]
        print(
            f"end state: {'EXACTLY AS EXPECTED' if not wrong and not untouched else 'WRONG'} "
            f"({len(want):,} people checked, {len(wrong)} wrong, {len(untouched)} others changed)"
        )
        for email in wrong[:5]:
            print(f"  {email}: expected {want[email]}, got {got.get(email)}")
        print(f"local parse+policy+plan: {local_speed(world, config):,.0f} records/s")
        return rc == 0 and not wrong and not untouched
    finally:
        running.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--import-seconds", type=float, default=5.0)
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument(
        "--batch-size", type=int, default=None, help="run.batch_size (default: the product's)"
    )
    args = parser.parse_args()
    world = make_world(args.records, args.contacts)
    ok = True
    with tempfile.TemporaryDirectory(prefix="flipsync-scale-") as tmp:
        for setup in args.setups:
            ok &= measure(setup, world, Path(tmp), args.import_seconds, args.batch_size)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
