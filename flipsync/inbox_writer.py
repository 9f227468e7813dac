"""The inbox writer: webhook payloads into the state DB's inbox, many requests per commit.

This module owns the receiver's one state DB connection: a single thread that
takes what request threads hand it (payloads, rejects, health pings) and commits
every request queued meanwhile in ONE transaction, so concurrent webhooks share
one fsync and SQLite sees one writer. A request is answered 2xx only after its
payloads are committed (WAL, synchronous=FULL): each waiting request learns
whether its own payloads are durable. Logs carry counts and SQLite's errors,
never payload values.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from flipsync.state import AddResult, StateDB

log = structlog.get_logger(__name__)

SOURCE = "webhook"
COMMIT_TIMEOUT_SECONDS = 60.0
HEALTH_TIMEOUT_SECONDS = 5.0


class WriterUnavailable(Exception):
    """The payloads were not (known to be) stored: answer 503 so the sender retries."""


@dataclass(eq=False)
class _Job:
    kind: Literal["store", "rejects", "ping"]
    payloads: Sequence[tuple[str, dict[str, Any]]] = ()
    rejects: Sequence[tuple[str, str, str]] = ()
    source: str = SOURCE
    done: threading.Event = field(default_factory=threading.Event)
    result: AddResult | None = None
    error: str | None = None


@dataclass
class WriterStats:
    """Counters of the writer thread (written by it alone; read by /healthz and tests)."""

    commits: int = 0
    requests: int = 0
    payloads_added: int = 0
    duplicates: int = 0
    largest_batch: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain data for /healthz."""
        return {
            "commits": self.commits,
            "requests": self.requests,
            "payloads_added": self.payloads_added,
            "duplicates": self.duplicates,
            "largest_batch": self.largest_batch,
            "failed": self.failed,
        }


class GroupCommitWriter:
    """One thread that owns the receiver's state DB connection and commits in groups.

    Request threads hand it their payloads and wait. It takes every request queued
    while the previous commit ran and stores them in ONE transaction (one fsync),
    then wakes each request: a request is answered only once its own payloads are
    durable. If a grouped commit fails, each request is retried alone, so one bad
    request cannot cost the others their answer.
    """

    def __init__(self, state_path: Path, *, max_batch_payloads: int = 1000) -> None:
        self._path = Path(state_path)
        self._max_batch = max_batch_payloads
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._state: StateDB | None = None
        self._thread = threading.Thread(target=self._loop, name="flipsync-writer", daemon=True)
        self.stats = WriterStats()

    def start(self) -> GroupCommitWriter:
        """Open the state DB (errors surface here, at start-up) and start the thread."""
        self._state = StateDB.open(self._path)
        self._thread.start()
        return self

    def _submit(self, job: _Job) -> _Job:
        with self._lock:
            if self._closed:
                raise WriterUnavailable("the receiver is shutting down")
            self._queue.put(job)
        return job

    def store(
        self,
        payloads: Sequence[tuple[str, dict[str, Any]]],
        *,
        source: str = SOURCE,
        timeout: float = COMMIT_TIMEOUT_SECONDS,
    ) -> AddResult:
        """Store (record_key, payload) pairs; returns once they are committed, else raises."""
        job = self._submit(_Job("store", payloads=payloads, source=source))
        if not job.done.wait(timeout):
            raise WriterUnavailable(f"not committed within {timeout:g} s")
        if job.result is None:
            raise WriterUnavailable(job.error or "not stored")
        return job.result

    def add_rejects(self, rejects: Sequence[tuple[str, str, str]]) -> None:
        """Remember (source, location, reason) of bodies that stored nothing; best effort."""
        with contextlib.suppress(WriterUnavailable):
            self._submit(_Job("rejects", rejects=rejects))

    def ping(self, timeout: float = HEALTH_TIMEOUT_SECONDS) -> str | None:
        """None when the state DB takes a write transaction now, else why not."""
        if not self._thread.is_alive():
            return "writer not running"
        try:
            job = self._submit(_Job("ping"))
        except WriterUnavailable as exc:
            return str(exc)
        if not job.done.wait(timeout):
            return f"no write transaction within {timeout:g} s"
        return job.error

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new work, commit everything already queued, close the DB."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        elif self._state is not None:
            self._state.close()

    @property
    def closed(self) -> bool:
        """True once close() began."""
        return self._closed

    def _loop(self) -> None:
        state = self._state
        assert state is not None
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            size = len(first.payloads)
            while size < self._max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
                size += len(job.payloads)
            self._run_batch(state, batch)
        state.close()

    def _run_batch(self, state: StateDB, batch: list[_Job]) -> None:
        try:
            stores = [job for job in batch if job.kind == "store"]
            if stores:
                self._commit(state, stores)
            rejects = [r for job in batch if job.kind == "rejects" for r in job.rejects]
            if rejects:
                try:
                    state.add_intake_rejects(rejects)
                except Exception as exc:  # noqa: BLE001 - rejects are a courtesy; never stop the writer
                    log.error("intake_rejects_not_stored", error=_error_text(exc))
            for job in batch:
                if job.kind == "ping":
                    try:
                        with state.transaction():
                            pass
                    except Exception as exc:  # noqa: BLE001 - the health answer carries it
                        job.error = _error_text(exc)
        finally:
            for job in batch:
                job.done.set()

    def _commit(self, state: StateDB, jobs: list[_Job]) -> None:
        try:
            results = state.add_payload_groups([(job.source, job.payloads) for job in jobs])
        except Exception as exc:  # noqa: BLE001 - turned into a 503 for the waiting requests
            if len(jobs) > 1:
                for job in jobs:
                    self._commit(state, [job])
                return
            jobs[0].error = "the state DB did not store it"
            self.stats.failed += 1
            log.error("inbox_commit_failed", error=_error_text(exc), payloads=len(jobs[0].payloads))
            return
        for job, result in zip(jobs, results, strict=True):
            job.result = result
            self.stats.payloads_added += result.added
            self.stats.duplicates += result.duplicates
        self.stats.commits += 1
        self.stats.requests += len(jobs)
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))


def _error_text(exc: BaseException) -> str:
    """An error for the log: SQLite's messages are safe; others only by type (they may quote data)."""
    import sqlite3

    if isinstance(exc, sqlite3.Error):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
