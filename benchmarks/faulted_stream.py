"""A long faulted run: a medium stream in 20 cron runs against a flaky sandbox, per fault seed.

The acceptance run that found the lost-import bug (issue 13), reproduced in process: a stream
of Flipcause records (donations, repeat gifts, Mailing List sign-ups, people already in the
account in every status, a few invalid emails) arrives in 20 slices; after each slice one
`flipsync run` happens, as cron would, against a sandbox that fails --fault-rate of the API
requests (500 and 503 before or after processing, dropped connections, lost answers) and
rotates refresh tokens that expire every few seconds. Failed runs are followed by the next
slice's run; after the last slice, runs continue until one is idle (bounded).

The expected end state comes from the same stream and slices run against a fault-free
sandbox. For each seed the script checks that the faulty account equals it contact by contact
(status, lists, names, phone and address presence), that every payload has an outcome, and
that no journal or retry is left. It exits 1 when any seed differs.

    .venv/bin/python benchmarks/faulted_stream.py [--records 5000] [--seeds 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flipsync import logs  # noqa: E402
from flipsync.cli import build_client  # noqa: E402
from flipsync.config import load_settings  # noqa: E402
from flipsync.ctct.auth import token_set_from_response, write_token_file  # noqa: E402
from flipsync.ctct.http import RetryPolicy  # noqa: E402
from flipsync.errors import FlipsyncError  # noqa: E402
from flipsync.intake import ingest_text  # noqa: E402
from flipsync.sandbox import FAULT_KINDS, Sandbox, SandboxConfig, start_in_thread  # noqa: E402
from flipsync.state import StateDB, utcnow  # noqa: E402
from flipsync.sync import Syncer  # noqa: E402

SLICES = 20
EXTRA_RUNS = 12
LISTS = ("Subscribers", "NonSubscribers", "Existing")
EXISTING = {"implicit": 300, "explicit": 100, "unsubscribed": 50, "pending_confirmation": 30}
BASE = SandboxConfig(requests_per_second=0, activity_seconds=0.05, token_lifetime_seconds=5)
IMPORT_PATH = "/v3/activities/contacts_json_import"


def stream(records: int, seed: int = 7) -> list[dict[str, Any]]:
    """The Flipcause records, deterministic: about two records per person."""
    rng = random.Random(seed)
    people = max(10, records // 2)
    existing = [f"{status}{i}@example.org" for status, n in EXISTING.items() for i in range(n)]
    out: list[dict[str, Any]] = []
    n = 0
    while len(out) < records:
        n += 1
        pick = rng.random()
        if pick < 0.2:
            email = rng.choice(existing)
        elif pick < 0.22:
            email = f"broken{n}@@example"  # rejected with a reason, never lost silently
        else:
            email = f"person{rng.randrange(people)}@example.org"
        person = email.split("@")[0]
        txn = f"T{n}"
        out.append(_payload(len(out), email, person, txn, "Donation"))
        if rng.random() < 0.1 and len(out) < records:
            out.append(_payload(len(out), email, person, txn, "Mailing List"))
    return out


def _payload(n: int, email: str, person: str, txn: str, activity: str) -> dict[str, Any]:
    return {
        "webhook_record_id": f"stream-{n}",
        "webhook_trigger_type": "new_activity",
        "master_activity_auto_id": str(700000 + n),
        "activity_type": activity,
        "transaction_id": txn,
        "AD_payment_id": f"{txn}_{n}",
        "AD_contact_id": f"{person} (CID1-{n})",
        "AD_transaction_date": "2026-11-20",
        "AD_campaign_title": "Winter Appeal",
        "PD_individual_or_bussiness": "Individual",
        "PD_first_name": person.title(),
        "PD_last_name": "Stream",
        "PD_email": email,
        "PD_phone": "555-555-0100",
        "PD_address": "1 Main St",
        "PD_city": "Boston",
        "PD_state": "MA",
        "PD_zip": "02110",
        "PD_country": "United States",
        "DD_amount": "" if activity == "Mailing List" else "25.00",
    }


@dataclass
class Outcome:
    """What one account ended with, and what it took."""

    label: str
    snapshot: dict[str, tuple[Any, ...]]
    statuses: Counter[str]
    requests: int
    faults: Counter[str]
    import_posts: int
    adopted: int
    resent_writes: int
    seconds: float
    problems: list[str]


def snapshot(box: Sandbox) -> dict[str, tuple[Any, ...]]:
    names = {lst["list_id"]: lst["name"] for lst in box.lists()}
    out: dict[str, tuple[Any, ...]] = {}
    for contact in box.contacts():
        email = contact["email_address"]["address"].lower()
        status = (
            "deleted"
            if contact.get("deleted_at")
            else contact["email_address"]["permission_to_send"]
        )
        out[email] = (
            status,
            tuple(sorted(names[i] for i in contact.get("list_memberships", []))),
            contact.get("first_name"),
            contact.get("last_name"),
            bool(contact.get("phone_numbers")),
            bool(contact.get("street_addresses")),
        )
    return out


def run_account(
    label: str, root: Path, config: SandboxConfig, records: list[dict[str, Any]]
) -> Outcome:
    """Seed an account, feed the stream in slices with one run each, then run until idle."""
    running = start_in_thread(Sandbox(config))
    try:
        box = running.sandbox
        for name in LISTS:
            box.add_list(name)
        for status, n in EXISTING.items():
            for i in range(n):
                box.add_contact(f"{status}{i}@example.org", permission=status, first_name="Old")
        home = root / label
        home.mkdir(parents=True)
        settings_path = home / "flipsync.yaml"
        settings_path.write_text(
            yaml.safe_dump(
                {
                    "organization": label,
                    "state_file": "state.db",
                    "constant_contact": {
                        "api_base_url": running.api_base_url,
                        "oauth_base_url": running.oauth_base_url,
                        "client_id": "flipsync-sandbox",
                        "token_file": "tokens.json",
                        "requests_per_second": 4,
                        "budget_file": "budget.json",
                    },
                    "policy": {
                        "setup": "all_contacts_by_subscription",
                        "new_non_subscriber_status": "implicit",
                        "lists": {
                            "new_subscribers": ["Subscribers"],
                            "new_non_subscribers": ["NonSubscribers"],
                            "existing": ["Existing"],
                        },
                    },
                    "run": {"batch_size": 100},
                }
            ),
            encoding="utf-8",
        )
        write_token_file(
            home / "tokens.json", token_set_from_response(box.issue_tokens(), utcnow())
        )
        settings = load_settings(settings_path, environ={})
        statuses: Counter[str] = Counter()
        resent = 0
        started = time.perf_counter()
        size = -(-len(records) // SLICES)
        slices = [records[i : i + size] for i in range(0, len(records), size)]

        def one_run() -> str:
            nonlocal resent
            with StateDB.open(settings.state_file) as state:
                api = build_client(settings, retry=RetryPolicy.no_wait(max_attempts=5))
                try:
                    report = Syncer(
                        settings, state, api, sleep=lambda s: time.sleep(s * 0.02)
                    ).run()
                except FlipsyncError as exc:
                    return type(exc).__name__
                resent += report.writes_resent
                return report.status

        for chunk in slices:
            with StateDB.open(settings.state_file) as state:
                text = "\n".join(json.dumps(r) for r in chunk)
                ingest_text(state, text, name=label, source="bench", id_field="webhook_record_id")
            statuses[one_run()] += 1
        for _ in range(EXTRA_RUNS):
            status = one_run()
            statuses[status] += 1
            if status == "idle":
                break
        seconds = time.perf_counter() - started
        problems: list[str] = []
        with StateDB.open(settings.state_file) as state:
            if state.open_journals():
                problems.append("a journal is still open")
            if state.retry_seqs():
                problems.append(f"{len(state.retry_seqs())} records still in the retry queue")
            if state.checkpoint != len(records):
                problems.append(f"checkpoint {state.checkpoint} of {len(records)}")
            emails = {str(r["PD_email"]).strip().lower() for r in records}
            silent = sorted(e for e in emails if "@@" not in e and not state.outcomes_for(e))
            if silent:
                problems.append(f"{len(silent)} people without any outcome")
        log = box.request_log()
        api_log = [e for e in log if e.path.startswith("/v3")]
        return Outcome(
            label=label,
            snapshot=snapshot(box),
            statuses=statuses,
            requests=len(api_log),
            faults=Counter(e.fault for e in api_log if e.fault),
            import_posts=sum(1 for e in api_log if e.method == "POST" and e.path == IMPORT_PATH),
            adopted=sum(
                1
                for e in api_log
                if e.method == "POST"
                and e.path == IMPORT_PATH
                and e.fault in ("500_after", "drop_after")
            ),
            resent_writes=resent,
            seconds=seconds,
            problems=problems,
        )
    finally:
        running.stop()


def compare(expected: dict[str, tuple[Any, ...]], actual: dict[str, tuple[Any, ...]]) -> list[str]:
    """Contact-by-contact differences, at most ten shown."""
    diffs = []
    for email in sorted(set(expected) | set(actual)):
        if expected.get(email) != actual.get(email):
            diffs.append(f"{email}: expected {expected.get(email)}, got {actual.get(email)}")
    return diffs[:10] + ([f"... {len(diffs) - 10} more"] if len(diffs) > 10 else [])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--fault-rate", type=float, default=0.1)
    args = parser.parse_args()
    logs.configure(level="error", fmt="console")
    records = stream(args.records)
    print(f"stream: {len(records)} records, {SLICES} runs, fault rate {args.fault_rate:.0%}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        reference = run_account("reference", root, BASE, records)
        print(
            f"reference (no faults): {len(reference.snapshot)} contacts, {reference.requests} "
            f"requests, {reference.seconds:.1f} s, runs {dict(reference.statuses)}"
        )
        if reference.problems:
            print("  reference problems:", "; ".join(reference.problems))
            failed = True
        for seed in args.seeds:
            config = replace(
                BASE, fault_rate=args.fault_rate, fault_seed=seed, fault_kinds=FAULT_KINDS
            )
            result = run_account(f"seed{seed}", root, config, records)
            diffs = compare(reference.snapshot, result.snapshot)
            ok = not diffs and not result.problems
            failed |= not ok
            print(
                f"seed {seed}: {'SAME END STATE' if ok else 'DIFFERENT'}; "
                f"{sum(result.faults.values())} faults {dict(sorted(result.faults.items()))}; "
                f"{result.requests} requests; {result.import_posts} import POSTs "
                f"({result.adopted} answers lost after processing); "
                f"{result.resent_writes} writes re-sent by reconciliation; "
                f"runs {dict(result.statuses)}; {result.seconds:.1f} s"
            )
            for line in result.problems + diffs:
                print("   ", line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
