"""Fleet at scale: two `fleet run` cycles over 500 organizations of one application key.

Each organization has its own sandbox account. The sandbox package serves one account per
``Sandbox``, so one child process holds all of them behind a small router that picks the
account by the request's access token (``Authorization: Bearer ...``), records every API
request's time and account, and reports them on ``GET /__router/stats``. The fleet runs in
this process through the real CLI code path (``FleetRunner`` with ``flipsync.cli.build_client``:
the real client, the key's real budget file with real sleeps, the real retry policy).

490 organizations are idle (a state DB with nothing waiting) and 10 have ``--records`` new
records each. Cycle 1 runs everyone (everyone's first slot); cycle 2, one cadence later, finds
the 10 caught up. Printed: wall time and CPU per cycle, requests per active organization,
peak requests/s against the key (from the router's clock: must never exceed 4), requests from
idle organizations (must be 0), the end state of every active account, and peak RSS.

    .venv/bin/python benchmarks/fleet.py [--orgs 500] [--active 10] [--records 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flipsync.ctct.auth import token_set_from_response, write_token_file  # noqa: E402
from flipsync.state import utcnow  # noqa: E402

KEY = "flipsync-sandbox"


# -- the router (child process) -----------------------------------------------------------------


def serve_router(root: Path, names: list[str], activity_seconds: float) -> None:
    """One process, one port, one sandbox account per organization, chosen by access token."""
    from flipsync.sandbox import Sandbox, SandboxConfig
    from flipsync.sandbox.server import _Server
    from flipsync.sandbox.wire import SandboxRequest, SandboxResponse, error_array

    boxes: dict[str, Sandbox] = {}
    by_token: dict[str, str] = {}
    for name in names:
        box = Sandbox(SandboxConfig(requests_per_second=0, activity_seconds=activity_seconds))
        box.add_list("Donors")
        tokens = box.issue_tokens()
        by_token[tokens["access_token"]] = name
        write_token_file(
            root / "orgs" / name / "state" / "tokens.json",
            token_set_from_response(tokens, utcnow()),
        )
        boxes[name] = box
    hits: list[tuple[float, str]] = []
    lock = threading.Lock()

    class Router:
        def now(self) -> float:
            return time.time()

        def handle(self, request: SandboxRequest) -> SandboxResponse:
            if request.path == "/__router/stats":
                with lock:
                    data = {
                        "hits": hits,
                        "contacts": {n: len(b.contacts()) for n, b in boxes.items()},
                    }
                return SandboxResponse(
                    200, json.dumps(data).encode(), (("Content-Type", "application/json"),)
                )
            auth = request.headers.get("authorization", "")
            name = by_token.get(auth.removeprefix("Bearer ").strip())
            if name is None:
                return error_array(401, "unauthorized", "Unknown access token.")
            with lock:
                hits.append((time.time(), name))
            return boxes[name].handle(request)

    server = _Server(("127.0.0.1", 0), Router())  # type: ignore[arg-type]
    print(server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.05)


# -- the fleet (this process) -------------------------------------------------------------------


def payload(n: int, org: str) -> dict[str, str]:
    return {
        "webhook_record_id": f"{org}-{n}",
        "webhook_trigger_type": "new_activity",
        "master_activity_auto_id": str(900000 + n),
        "activity_type": "Donation",
        "transaction_id": f"T{n}",
        "AD_payment_id": f"D{n}_A",
        "AD_transaction_date": "2026-01-15",
        "PD_first_name": f"Donor{n}",
        "PD_last_name": "Bench",
        "PD_email": f"donor{n}@{org}.example.org",
        "DD_amount": "25.00",
    }


def org_config(name: str, base_url: str) -> dict[str, Any]:
    return {
        "organization": name,
        "state_file": f"state/{name}.db",
        "constant_contact": {
            "client_id": KEY,
            "token_file": "state/tokens.json",
            "api_base_url": f"{base_url}/v3",
            "oauth_base_url": f"{base_url}/oauth2/default/v1",
            "activity_wait_seconds": 60,
        },
        "policy": {
            "setup": "all_contacts_uniform",
            "new_contact_status": "implicit",
            "lists": {"new": ["Donors"], "existing": ["Donors"]},
        },
        "intake": {"webhook_secret_env": "FLIPSYNC_WEBHOOK_SECRET"},
    }


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_per_second(times: list[float]) -> int:
    ordered = sorted(times)
    best = j = 0
    for i, t in enumerate(ordered):
        while ordered[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=500)
    parser.add_argument("--active", type=int, default=10)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--activity-seconds", type=float, default=0.5)
    parser.add_argument("--router", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.router:
        root = Path(args.router)
        serve_router(root, sorted(os.listdir(root / "orgs")), args.activity_seconds)
        return 0

    from flipsync import logs
    from flipsync.cli import build_client
    from flipsync.fleet import load_fleet
    from flipsync.fleet_run import FleetRunner
    from flipsync.intake import ingest_text
    from flipsync.state import StateDB

    logs.configure("error", "console")
    names = [f"org-{i:03d}" for i in range(args.orgs)]
    active = set(names[:: max(1, args.orgs // args.active)][: args.active])
    with tempfile.TemporaryDirectory(prefix="flipsync-fleet-bench-") as tmp:
        root = Path(tmp)
        (root / "fleet.yaml").write_text(
            yaml.safe_dump(
                {
                    "application_key": KEY,
                    "budget_file": "key-budget.json",
                    "max_concurrent_orgs": 4,
                    "minimum_daily_requests_per_org": 10,
                }
            )
        )
        for name in names:
            (root / "orgs" / name / "state").mkdir(parents=True)
            (root / "orgs" / name / "flipsync.env").write_text(
                f"FLIPSYNC_WEBHOOK_SECRET=bench-secret-{name}-0123456789\n"
            )
        router = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--router",
                str(root),
                "--activity-seconds",
                str(args.activity_seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert router.stdout is not None
            port = int(router.stdout.readline())
            base = f"http://127.0.0.1:{port}"
            setup = time.monotonic()
            for name in names:
                config = org_config(name, base)
                (root / "orgs" / name / "flipsync.yaml").write_text(yaml.safe_dump(config))
                with StateDB.open(root / "orgs" / name / "state" / f"{name}.db") as state:
                    if name in active:
                        text = "\n".join(json.dumps(payload(n, name)) for n in range(args.records))
                        ingest_text(
                            state,
                            text,
                            name="bench",
                            source="file:bench",
                            id_field="webhook_record_id",
                        )
            print(
                f"{args.orgs} organizations ({len(active)} with {args.records} new records each) "
                f"set up in {time.monotonic() - setup:.1f} s"
            )
            offset = timedelta(0)

            def clock() -> datetime:
                return utcnow() + offset

            fleet = load_fleet(root)
            cycles = []
            for number in (1, 2):
                before_cpu, before = cpu(), time.monotonic()
                report = FleetRunner(fleet, build_client, clock=clock).cycle()
                cycles.append(report)
                wall, spent = time.monotonic() - before, cpu() - before_cpu
                active_seconds = sum(r.seconds for r in report.results if r.name in active)
                print(
                    f"cycle {number}: {wall:.2f} s wall, {spent:.2f} s CPU; "
                    f"results {dict(sorted(report.counts().items()))}; "
                    f"active organizations' own run time {active_seconds:.1f} s (summed over threads)"
                )
                offset += timedelta(minutes=fleet.cadence_minutes)
            with urllib.request.urlopen(f"{base}/__router/stats", timeout=30) as answer:
                stats = json.loads(answer.read())
        finally:
            router.terminate()
            router.wait(timeout=30)
    hits = stats["hits"]
    per_org = Counter(name for _, name in hits)
    idle_requests = sum(n for name, n in per_org.items() if name not in active)
    print("requests by active organization (both cycles):")
    ok = True
    for name in sorted(active):
        results = [r for c in cycles for r in c.results if r.name == name]
        kinds: Counter[str] = Counter()
        for r in results:
            kinds.update(r.requests)
        contacts = stats["contacts"][name]
        good = contacts == args.records
        ok &= good
        print(
            f"  {name}: {per_org[name]} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); "
            f"results {[r.status for r in results]}; {contacts} contacts in its account"
            + ("" if good else f" (EXPECTED {args.records})")
        )
    peak = peak_per_second([t for t, _ in hits])
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"requests in total: {len(hits)}; peak requests/s against the key: {peak} (limit 4)")
    print(
        f"requests from the {args.orgs - len(active)} idle organizations: {idle_requests} (must be 0)"
    )
    print(f"peak RSS of the fleet process: {rss_mb:.0f} MB")
    ok &= peak <= 4 and idle_requests == 0
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
