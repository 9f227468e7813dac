"""Prometheus metrics for a fleet, one label set per organization (prometheus-client).

Built at scrape time from the same rows as `fleet status` (flipsync.fleet_status), so the
receiver's ``/metrics`` and the node_exporter textfile written after each `fleet run`
always agree with what an operator sees. Counters come from the scheduler's memory in
``fleet-state.json``: they count fleet runs since the fleet started, and only grow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flipsync.fleet import FleetSettings
from flipsync.fleet_status import FleetStatus, fleet_status, seconds_since_good
from flipsync.state import utcnow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class FleetCollector(Collector):
    """Collects the fleet's status on every scrape (cheap: local files only)."""

    def __init__(self, fleet: FleetSettings, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.fleet = fleet
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        """Every metric family, one sample per organization (and label)."""
        now = self.clock()
        yield from families(fleet_status(self.fleet, now), now)


def families(status: FleetStatus, now: datetime) -> Iterator[Metric]:
    """The metric families for one status snapshot."""
    org = ["organization"]
    runs = CounterMetricFamily(
        "flipsync_runs", "Fleet runs per organization by result.", labels=[*org, "result"]
    )
    records = CounterMetricFamily(
        "flipsync_records", "Records per organization by outcome.", labels=[*org, "outcome"]
    )
    requests = CounterMetricFamily(
        "flipsync_requests",
        "Constant Contact requests per organization by kind.",
        labels=[*org, "kind"],
    )
    backlog = GaugeMetricFamily(
        "flipsync_backlog_records", "Records waiting after the checkpoint.", labels=org
    )
    since_good = GaugeMetricFamily(
        "flipsync_seconds_since_last_good_run",
        "Seconds since the last run that ended ok, idle or waiting.",
        labels=org,
    )
    token = GaugeMetricFamily(
        "flipsync_token_days_left",
        "Days until the refresh token expires from disuse.",
        labels=org,
    )
    used = GaugeMetricFamily(
        "flipsync_budget_used_requests",
        "Requests counted today (UTC) against the application key's budget.",
        labels=org,
    )
    problems = GaugeMetricFamily(
        "flipsync_problems", "Problems `fleet status --check` reports.", labels=org
    )
    for row in status.rows:
        name = [row.name]
        for bucket, family in (("runs", runs), ("records", records), ("requests", requests)):
            for key, value in sorted(row.counters.get(bucket, {}).items()):
                family.add_metric([row.name, key], value)
        if row.backlog is not None:
            backlog.add_metric(name, row.backlog)
        seconds = seconds_since_good(row, now)
        if seconds is not None:
            since_good.add_metric(name, seconds)
        if row.login_expires_in_days is not None:
            token.add_metric(name, row.login_expires_in_days)
        used.add_metric(name, row.requests_today)
        problems.add_metric(name, len(row.problems))
    key_used = GaugeMetricFamily(
        "flipsync_key_budget_used_requests", "Requests today for the whole application key."
    )
    key_used.add_metric([], status.key_requests_today)
    key_budget = GaugeMetricFamily(
        "flipsync_key_budget_requests", "The application key's daily request budget."
    )
    key_budget.add_metric([], status.key_budget)
    yield from (runs, records, requests, backlog, since_good, token, used, problems)
    yield from (key_used, key_budget)


def registry(fleet: FleetSettings, *, clock: Callable[[], datetime] = utcnow) -> CollectorRegistry:
    """A registry holding only the fleet's collector (no process metrics of the receiver)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FleetCollector(fleet, clock=clock))
    return reg


def render(fleet: FleetSettings, *, clock: Callable[[], datetime] = utcnow) -> bytes:
    """The text exposition format, as served on ``/metrics``."""
    return generate_latest(registry(fleet, clock=clock))


def write_textfile(fleet: FleetSettings, path: Path) -> None:
    """Write the metrics for node_exporter's textfile collector (atomically, by rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry(fleet))


class CachedMetrics:
    """``render`` at most once per ``ttl`` seconds, for the receiver's ``/metrics``.

    A scrape reads every organization's config, token file and state DB (a few ms each);
    with hundreds of organizations and several scrapers that adds up, and the numbers only
    change when a run or a webhook happens, so a short cache costs no real freshness.
    """

    def __init__(
        self,
        produce: Callable[[], bytes],
        *,
        ttl: float = 15.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._produce = produce
        self._ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._at: float | None = None
        self._data = b""

    def __call__(self) -> bytes:
        with self._lock:
            now = self._monotonic()
            if self._at is None or now - self._at >= self._ttl:
                self._data = self._produce()
                self._at = now
            return self._data
