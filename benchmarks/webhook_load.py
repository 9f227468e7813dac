"""Load benchmark for the webhook receiver: a real `flipsync serve` on loopback.

Posts N unique webhooks (default 10,000) from C concurrent clients (default 8), half with
the secret in the path and half in the header, one in ten form-encoded, while a separate
reader process opens the state DB and reads `inbox_after` in a loop, as a sync run would.
Then re-posts a sample of them (duplicates) and checks that every webhook is in the inbox
exactly once and that the reader saw each one exactly once. Prints throughput and latency.

It is a measurement, not a test: nothing here asserts on timing. It exits 1 if a webhook
was lost, stored twice, or answered with anything but 2xx.

    .venv/bin/python benchmarks/webhook_load.py [--webhooks 10000] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flipsync.state import StateDB  # noqa: E402

CONFIG = """\
organization: loadtest
state_file: state/loadtest.db
constant_contact: {{client_id: loadtest}}
policy: {{setup: all_contacts_uniform, lists: {{new: [Donors], existing: [Donors]}}}}
intake: {{webhook_secret_env: FLIPSYNC_LOAD_SECRET, max_body_bytes: {max_body}}}
"""


def make_payload(n: int) -> dict[str, str]:
    """A webhook the shape of Flipcause's documented example (values made up)."""
    return {
        "webhook_record_id": f"load-{n}",
        "webhook_trigger_type": "new_activity",
        "master_activity_auto_id": str(900000 + n),
        "activity_type": "Donation" if n % 5 else "Mailing List",
        "transaction_id": str(500000 + n // 2),
        "AD_payment_id": f"D{n}_A",
        "AD_contact_id": f"Load Tester (CID638-{n})",
        "AD_transaction_date": "2026-01-15",
        "AD_transaction_time": "02:04 ",
        "AD_campaign_title": "Winter Appeal",
        "AD_campaign_id": "4809",
        "PD_individual_or_bussiness": "Individual",
        "PD_first_name": "Load",
        "PD_last_name": f"Tester{n}",
        "PD_email": f"load{n}@example.org",
        "PD_phone": "555-555-0100",
        "PD_address": "1 Main St",
        "PD_city": "Oakland",
        "PD_state": "CA",
        "PD_zip": "94612",
        "PD_country": "United States",
        "DD_amount": f"{(n % 200) + 5}.00",
    }


def request_for(n: int, secret: str) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) for webhook n: auth form and body encoding vary with n."""
    payload = make_payload(n)
    if n % 10 == 3:
        body = urlencode(payload).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    else:
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
    if n % 2:
        headers["X-Flipsync-Secret"] = secret
        return "/flipcause", body, headers
    return f"/flipcause/{secret}", body, headers


def client(
    port: int, secret: str, numbers: list[int], latencies: list[float], failures: list[str]
) -> None:
    """One keep-alive connection posting its share of webhooks, one at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for n in numbers:
        path, body, headers = request_for(n, secret)
        started = time.perf_counter()
        for attempt in range(3):
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                break
            except (ConnectionError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                if attempt == 2:
                    failures.append(f"webhook {n}: {type(exc).__name__}")
                    response = None
        latencies.append(time.perf_counter() - started)
        if response is not None and not 200 <= response.status < 300:
            failures.append(f"webhook {n}: HTTP {response.status}")
    conn.close()


def run_clients(
    port: int, secret: str, numbers: list[int], clients: int
) -> tuple[float, list[float], list[str]]:
    """Post `numbers` from `clients` threads; (seconds, latencies, failures)."""
    shares = [numbers[i::clients] for i in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    threads = [
        threading.Thread(target=client, args=(port, secret, shares[i], latencies[i], failures))
        for i in range(clients)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, [x for chunk in latencies for x in chunk], failures


def reader(db_path: str, expected: int, result: Any, stop: Any) -> None:
    """A sync run's view: open the state DB and page through inbox_after in a loop."""
    while not Path(db_path).exists():
        time.sleep(0.01)
    seen: dict[str, int] = {}
    last = 0
    reads = 0
    regressions = 0
    state = StateDB.open(Path(db_path), create=False)
    deadline = time.monotonic() + 600
    try:
        while len(seen) < expected and time.monotonic() < deadline and not stop.is_set():
            rows = state.inbox_after(last, 500)
            reads += 1
            for row in rows:
                if row.seq <= last:
                    regressions += 1
                last = row.seq
                seen[row.record_key] = seen.get(row.record_key, 0) + 1
            if not rows:
                time.sleep(0.005)
    finally:
        state.close()
    result.put(
        {
            "distinct": len(seen),
            "seen_twice": sum(1 for c in seen.values() if c > 1),
            "reads": reads,
            "seq_regressions": regressions,
        }
    )


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values fall."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhooks", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duplicates", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=16, help="serve --threads")
    args = parser.parse_args()

    secret = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="flipsync-load-") as tmp:
        config = Path(tmp) / "loadtest.yaml"
        config.write_text(CONFIG.format(max_body=256 * 1024), encoding="utf-8")
        db_path = Path(tmp) / "state" / "loadtest.db"
        env = {**os.environ, "FLIPSYNC_LOAD_SECRET": secret}
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "flipsync", "-c", str(config), "--log-level", "warning"),
                *("serve", "--port", "0", "--threads", str(args.threads)),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        line = server.stdout.readline()
        if "listening on" not in line:
            server.kill()
            print("server did not start:", line, server.stderr.read() if server.stderr else "")
            return 1
        port = int(line.rsplit(":", 1)[1])

        ctx = multiprocessing.get_context("spawn")
        result: Any = ctx.Queue()
        stop: Any = ctx.Event()
        watcher = ctx.Process(target=reader, args=(str(db_path), args.webhooks, result, stop))
        watcher.start()

        numbers = list(range(args.webhooks))
        seconds, latencies, failures = run_clients(port, secret, numbers, args.clients)
        dup_numbers = numbers[:: max(1, args.webhooks // max(1, args.duplicates))][
            : args.duplicates
        ]
        dup_seconds, dup_latencies, dup_failures = run_clients(
            port, secret, dup_numbers, args.clients
        )

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        health = json.loads(conn.getresponse().read())
        conn.close()

        server.send_signal(signal.SIGTERM)
        try:
            exit_code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            exit_code = -9
        stderr = server.stderr.read() if server.stderr else ""

        try:
            seen = result.get(timeout=60)
        except Exception:  # noqa: BLE001 - report what we have
            seen = {"distinct": -1}
        stop.set()
        watcher.join(timeout=10)

        keys: list[str] = []
        last_seq = 0
        with StateDB.open(db_path, create=False) as state:
            while page := state.inbox_after(last_seq, 5000):
                keys += [row.record_key for row in page]
                last_seq = page[-1].seq
        expected = {f"wh:load-{n}" for n in numbers}

    ok = True
    print(f"webhooks:            {args.webhooks} unique from {args.clients} concurrent clients")
    print(f"throughput:          {args.webhooks / seconds:,.0f} webhooks/s ({seconds:.2f} s)")
    print(
        f"latency:             p50 {percentile(latencies, 0.50) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms, mean {statistics.fmean(latencies) * 1000:.1f} ms"
    )
    print(
        f"duplicates re-posted: {len(dup_numbers)} "
        f"({len(dup_numbers) / dup_seconds:,.0f}/s, p99 {percentile(dup_latencies, 0.99) * 1000:.1f} ms)"
    )
    writer = health.get("writer", {})
    commits = writer.get("commits", 0) or 1
    print(
        f"group commit:        {writer.get('requests')} requests in {writer.get('commits')} commits "
        f"(mean {writer.get('requests', 0) / commits:.1f} per commit, largest {writer.get('largest_batch')})"
    )
    print(
        f"concurrent reader:   {seen.get('distinct')} distinct seen, {seen.get('reads')} reads, "
        f"{seen.get('seen_twice')} seen twice, {seen.get('seq_regressions')} seq regressions"
    )
    print(f"server exit on SIGTERM: {exit_code}")
    in_inbox = [k for k in keys if k in expected]
    print(
        f"inbox:               {len(keys)} rows, {len(set(in_inbox))} of {len(expected)} expected, "
        f"{len(in_inbox) - len(set(in_inbox))} stored twice"
    )
    if failures or dup_failures:
        ok = False
        print(
            f"FAILED requests: {len(failures) + len(dup_failures)}: {(failures + dup_failures)[:5]}"
        )
    if set(in_inbox) != expected or len(in_inbox) != len(keys) or len(keys) != len(expected):
        ok = False
        print("FAILED: the inbox does not hold every webhook exactly once")
    if seen.get("distinct") != args.webhooks or seen.get("seen_twice"):
        ok = False
        print("FAILED: the concurrent reader did not see every webhook exactly once")
    if exit_code != 0:
        ok = False
        print(f"FAILED: server exit code {exit_code}; stderr: {stderr[-2000:]}")
    print("result:              " + ("OK, zero loss" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
