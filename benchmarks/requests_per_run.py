"""Requests per run: what `flipsync run` costs against a production-like sandbox.

Starts the Constant Contact sandbox in this process with production-like limits (4 requests
per second, imports taking 0.5 s), builds organizations in a temporary directory and runs the
real run engine and client on them (production retry policy, real polling sleeps). For each
run it prints the requests used by kind, counted twice: by the run report (the client's own
count) and by the sandbox's request log (what the server received). The two must agree; the
script exits 1 when they do not.

Runs measured:

- an idle run (nothing in the inbox): expected 0 requests;
- 50 records on a fresh organization (its mirror is cold);
- 5,000 records right after (the mirror is warm: one incremental refresh);
- the same 5,000 records on a fresh organization against a like account (cold mirror);
- a handful of records with per-email lookups (`lookup_strategy: lookup`).

The account starts with --existing contacts (default 2,000, one in a hundred unsubscribed),
changed ten at a time every five minutes; a fifth of the payloads are people already in it,
the rest are new. It is a measurement, not a test.

    .venv/bin/python benchmarks/requests_per_run.py [--records 5000] [--existing 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flipsync import logs  # noqa: E402
from flipsync.cli import build_client  # noqa: E402
from flipsync.config import load_settings  # noqa: E402
from flipsync.ctct.auth import token_set_from_response, write_token_file  # noqa: E402
from flipsync.intake import ingest_text  # noqa: E402
from flipsync.sandbox import RequestLogEntry, Sandbox, SandboxConfig, start_in_thread  # noqa: E402
from flipsync.sandbox.server import RunningSandbox  # noqa: E402
from flipsync.state import StateDB, utcnow  # noqa: E402
from flipsync.sync import Syncer  # noqa: E402

PRODUCTION_LIKE = SandboxConfig(requests_per_second=4, activity_seconds=0.5)


def payload(n: int, email: str) -> dict[str, str]:
    """A Flipcause donation webhook with the documented field names (values made up)."""
    return {
        "webhook_record_id": f"bench-{n}",
        "webhook_trigger_type": "new_activity",
        "master_activity_auto_id": str(900000 + n),
        "activity_type": "Donation",
        "transaction_id": f"T{n}",
        "AD_payment_id": f"D{n}_A",
        "AD_contact_id": f"Bench Donor (CID638-{n})",
        "AD_transaction_date": "2026-01-15",
        "AD_campaign_title": "Winter Appeal",
        "PD_individual_or_bussiness": "Individual",
        "PD_first_name": f"Donor{n}",
        "PD_last_name": "Bench",
        "PD_email": email,
        "PD_phone": "555-555-0100",
        "PD_address": f"{n} Main St",
        "PD_city": "Boston",
        "PD_state": "MA",
        "PD_zip": "02110",
        "PD_country": "United States",
        "DD_amount": "25.00",
    }


def payloads(start: int, count: int, existing: int) -> list[dict[str, str]]:
    """`count` records from number `start`: every fifth one is a contact the account has."""
    out = []
    for n in range(start, start + count):
        if n % 5 == 0 and existing:
            email = f"member{(n // 5) % existing}@example.org"
        else:
            email = f"donor{n}@example.org"
        out.append(payload(n, email))
    return out


def kind_of(entry: RequestLogEntry) -> str:
    """The client's name for a request (HttpClient counts by these), from the server's log."""
    if entry.path.startswith("/oauth2"):
        return "token" if entry.path.endswith("/token") else entry.path
    path = entry.path.removeprefix("/v3")
    if entry.method == "GET":
        if path == "/contact_lists":
            return "lists"
        if path == "/contact_custom_fields":
            return "custom_fields"
        if path == "/contacts":
            if "email" in entry.query:
                return "contact_lookup"
            if "include_count" in entry.query:
                return "contact_count"
            return "contacts_page"
        if path == "/activities":
            return "activities_list"
        if path.startswith("/activities/"):
            return "activity"
    if entry.method == "POST":
        if path == "/activities/contacts_json_import":
            return "json_import"
        if path == "/contacts/sign_up_form":
            return "sign_up_form"
        if path == "/contacts":
            return "create_contact"
    return f"{entry.method} {entry.path}"


@dataclass
class Result:
    """One measured run."""

    label: str
    records: int
    people: int
    status: str
    knowledge: str
    seconds: float
    by_report: Counter[str]
    by_log: Counter[str]

    @property
    def agree(self) -> bool:
        return self.by_report == self.by_log


class Account:
    """One sandbox account with lists and existing contacts, and organizations using it."""

    def __init__(self, root: Path, running: RunningSandbox, existing: int) -> None:
        self.root = root
        self.running = running
        self.box: Sandbox = running.sandbox
        for name in ("Donors", "Existing"):
            self.box.add_list(name)
        # The account's contacts changed over days, not all in one second: otherwise the
        # incremental refresh (which re-reads the 2 minutes before its watermark) reads them all.
        for i in range(existing):
            if i % 10 == 0:
                self.box.advance_clock(300)
            permission = "unsubscribed" if i % 100 == 0 else "implicit"
            self.box.add_contact(f"member{i}@example.org", permission=permission)
        self.box.advance_clock(3600)

    def organization(self, name: str, **run: Any) -> Path:
        """A config, token file and state directory for one organization; returns the config."""
        home = self.root / name
        home.mkdir(parents=True)
        config = {
            "organization": name,
            "state_file": "state.db",
            "constant_contact": {
                "api_base_url": self.running.api_base_url,
                "oauth_base_url": self.running.oauth_base_url,
                "client_id": "flipsync-sandbox",
                "token_file": "tokens.json",
                "requests_per_second": 4,
                "budget_file": "budget.json",
            },
            "policy": {
                "setup": "all_contacts_uniform",
                "new_contact_status": "implicit",
                "lists": {"new": ["Donors"], "existing": ["Existing"]},
            },
            "run": run,
        }
        path = home / "flipsync.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        tokens = token_set_from_response(self.box.issue_tokens(), utcnow())
        write_token_file(home / "tokens.json", tokens)
        return path

    def measure(self, label: str, config: Path, records: list[dict[str, str]]) -> Result:
        """Ingest the records, then time one live run and count its requests both ways."""
        settings = load_settings(config, environ={})
        with StateDB.open(settings.state_file) as state:
            if records:
                text = "\n".join(json.dumps(r) for r in records)
                ingest_text(state, text, name=label, source="bench", id_field="webhook_record_id")
            self.box.clear_request_log()
            started = time.perf_counter()
            report = Syncer(settings, state, build_client(settings)).run()
            seconds = time.perf_counter() - started
        return Result(
            label=label,
            records=report.records_read,
            people=report.people,
            status=report.status,
            knowledge=", ".join(dict.fromkeys(report.knowledge)) or "-",
            seconds=seconds,
            by_report=Counter(report.requests),
            by_log=Counter(kind_of(e) for e in self.box.request_log()),
        )


@contextmanager
def account(root: Path, existing: int) -> Iterator[Account]:
    running = start_in_thread(Sandbox(PRODUCTION_LIKE))
    try:
        yield Account(root, running, existing)
    finally:
        running.stop()


def show(results: list[Result]) -> None:
    print(
        f"{'run':<40} {'records':>7} {'people':>6} {'status':<7} {'seconds':>7} "
        f"{'requests':>8}  knowledge"
    )
    for r in results:
        print(
            f"{r.label:<40} {r.records:>7} {r.people:>6} {r.status:<7} {r.seconds:>7.1f} "
            f"{sum(r.by_report.values()):>8}  {r.knowledge}"
        )
    print()
    print("requests by kind (run report / sandbox log):")
    for r in results:
        kinds = sorted(set(r.by_report) | set(r.by_log))
        parts = [f"{k} {r.by_report[k]}/{r.by_log[k]}" for k in kinds] or ["none"]
        mark = "agree" if r.agree else "DISAGREE"
        print(f"  {r.label}: {', '.join(parts)}  [{mark}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000, help="records of the large run")
    parser.add_argument("--existing", type=int, default=2000, help="contacts in the account")
    parser.add_argument("--handful", type=int, default=5, help="records of the lookup run")
    args = parser.parse_args(argv)
    logs.configure("warning", "console")  # as `flipsync run` does by default; logs to stderr
    big = f"{args.records:,} records"
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="flipsync-bench-") as tmp:
        with account(Path(tmp) / "a", args.existing) as a:
            org = a.organization("warm")
            results.append(a.measure("idle run (empty inbox)", org, []))
            results.append(
                a.measure("50 records, cold mirror", org, payloads(0, 50, args.existing))
            )
            records = payloads(1000, args.records, args.existing)
            results.append(a.measure(f"{big}, warm mirror", org, records))
            results.append(a.measure("idle run after them", org, []))
            lookups = a.organization("lookups", lookup_strategy="lookup")
            handful = payloads(900, args.handful, args.existing)
            results.append(
                a.measure(f"{args.handful} records, per-email lookups", lookups, handful)
            )
        with account(Path(tmp) / "b", args.existing) as b:
            cold = b.organization("cold")
            results.append(b.measure(f"{big}, cold mirror", cold, records))
    show(results)
    idle = [r for r in results if r.label.startswith("idle")]
    failed = [
        r.label for r in results if not r.agree or r.status != ("idle" if r in idle else "ok")
    ]
    failed += [r.label for r in idle if sum(r.by_log.values()) != 0]
    if failed:
        print(f"\nproblems: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
