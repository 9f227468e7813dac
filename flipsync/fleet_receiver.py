"""`flipsync fleet serve`: one webhook receiver for every organization of a fleet.

It composes the single-organization receiver (flipsync.receiver) rather than copying
it: each organization gets the same ``Receiver`` with its own secret and its own
group-commit writer on its own state DB, so durability, body limits and answers are
exactly those of `flipsync serve`. This module only routes:

- ``POST /<org>/flipcause/<secret>`` (or ``/<org>/flipcause`` with the secret header)
  goes to that organization's receiver. An unknown organization, a wrong secret in the
  path and a wrong secret in the header all get the same plain 404, so the URL space
  tells a stranger nothing about which organizations exist.
- ``GET /healthz`` pings every organization's state DB (in parallel).
- ``GET /metrics`` serves the fleet's Prometheus metrics (flipsync.metrics).

SIGHUP re-reads the fleet directory on a side thread and swaps the routing table in
one step: requests keep being answered meanwhile, added organizations start, and a
removed organization's writer closes only after its last request in flight committed.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import structlog

from flipsync.errors import ConfigError, FlipsyncError
from flipsync.fleet import FleetSettings, clashes, load_org, org_names
from flipsync.inbox_writer import GroupCommitWriter
from flipsync.receiver import (
    HEALTH_PATH,
    WEBHOOK_PATH,
    Receiver,
    make_server,
    read_webhook_secret,
    run_until_stopped,
)
from flipsync.settings import (
    ConstantContactSettings,
    FlipcauseSettings,
    IntakeSettings,
    PolicySettings,
    RunSettings,
    Settings,
)

log = structlog.get_logger(__name__)

METRICS_PATH = "/metrics"
_NOT_FOUND = b'{"error":"not found"}'


@dataclass(frozen=True)
class _Route:
    """One organization's receiver and the state DB its writer owns."""

    receiver: Receiver
    state_file: Path
    secret: str
    settings: Settings


def _discard(route: _Route, previous: _Route | None) -> None:
    """Close a route's writer that nothing serves (one started for a refused organization)."""
    if previous is None or previous.receiver.writer is not route.receiver.writer:
        route.receiver.writer.close()


def _log_reload(
    old: Mapping[str, _Route], new: Mapping[str, _Route], problems: Mapping[str, list[str]]
) -> None:
    """Say what the reload really did: an organization with problems still served is kept
    on its last good config; only one not served at all is `fleet_org_not_served`."""
    kept = sorted(n for n in problems if n in new and new[n] is old.get(n))
    for name, found in sorted(problems.items()):
        if name in kept:
            log.warning(
                "fleet_org_reload_failed",
                organization=name,
                problems=found,
                kept="last good config",
            )
        else:
            log.warning("fleet_org_not_served", organization=name, problems=found)
    log.info(
        "fleet_reloaded",
        organizations=len(new),
        added=sorted(set(new) - set(old)),
        removed=sorted(set(old) - set(new)),
        kept_on_old_config=kept,
        not_served=sorted(n for n in problems if n not in new),
    )


class FleetReceiver:
    """The WSGI application of `fleet serve`: routes by organization, reloads on demand."""

    def __init__(
        self,
        fleet: FleetSettings,
        *,
        metrics: Callable[[], bytes] | None = None,
    ) -> None:
        self.fleet = fleet
        self._metrics = metrics
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._inflight: dict[int, int] = {}
        self._retiring: dict[int, GroupCommitWriter] = {}
        self.problems: dict[str, list[str]] = {}

    # -- the routing table ----------------------------------------------------------------

    def reload(self) -> dict[str, list[str]]:
        """Re-read the fleet directory and swap the routes; the problems per organization.

        An organization whose config became unusable keeps its current route (webhooks
        are never turned away because of a typo elsewhere in its config) and is reported.
        """
        with self._reload_lock:
            old = dict(self._routes)
            new: dict[str, _Route] = {}
            problems: dict[str, list[str]] = {}
            for name in org_names(self.fleet):
                try:
                    new[name] = self._route(name, old.get(name))
                except ConfigError as exc:
                    problems[name] = list(exc.problems)
                except FlipsyncError as exc:
                    problems[name] = [str(exc)]
                if name in problems and name in old:
                    new[name] = old[name]
            for name, found in clashes(
                {n: r.settings for n, r in new.items() if n not in problems}
            ).items():
                problems.setdefault(name, []).extend(found)
                if name in old and new[name].state_file == old[name].state_file:
                    new[name] = old[name]  # served before the clash: keep it as it was
                else:
                    _discard(new.pop(name), old.get(name))
            kept = {id(r.receiver.writer) for r in new.values()}
            with self._lock:
                self._routes = new
                gone = [
                    r.receiver.writer for r in old.values() if id(r.receiver.writer) not in kept
                ]
                idle = []
                for writer in gone:
                    if self._inflight.get(id(writer), 0):
                        self._retiring[id(writer)] = writer
                    else:
                        idle.append(writer)
            for writer in idle:
                writer.close()
            self.problems = problems
            _log_reload(old, new, problems)
            return problems

    def _route(self, name: str, previous: _Route | None) -> _Route:
        org = load_org(self.fleet, name)
        settings = org.settings
        secret = read_webhook_secret(settings, org.environ)
        if previous is not None and previous.state_file == settings.state_file:
            writer = previous.receiver.writer  # the same DB keeps its writer (and its queue)
        else:
            writer = GroupCommitWriter(settings.state_file).start()
        receiver = Receiver(
            writer,
            secret=secret,
            id_field=settings.flipcause.fields.webhook_record_id,
            max_body_bytes=settings.intake.max_body_bytes,
        )
        return _Route(receiver, settings.state_file, secret, settings)

    def organizations(self) -> list[str]:
        """The organizations currently served."""
        return sorted(self._routes)

    def secrets(self) -> list[str]:
        """Every secret served now (for the log redaction filter; never logged)."""
        return [r.secret for r in self._routes.values()]

    def close(self) -> None:
        """Close every writer after it committed what it holds."""
        with self._lock:
            writers = {id(r.receiver.writer): r.receiver.writer for r in self._routes.values()}
            writers.update(self._retiring)
            self._routes = {}
            self._retiring = {}
        for writer in writers.values():
            writer.close()

    # -- WSGI -----------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        path = str(environ.get("PATH_INFO") or "/")
        method = str(environ.get("REQUEST_METHOD") or "GET").upper()
        if path == HEALTH_PATH:
            return self._health(method, start_response)
        if path == METRICS_PATH and self._metrics is not None:
            return self._serve_metrics(method, start_response)
        name, _, rest = path.lstrip("/").partition("/")
        with self._lock:
            route = self._routes.get(name)
            if route is not None:
                key = id(route.receiver.writer)
                self._inflight[key] = self._inflight.get(key, 0) + 1
        if route is None or not ("/" + rest).startswith(WEBHOOK_PATH):
            if route is not None:
                self._done(route)
            return _answer(start_response, 404, _NOT_FOUND)
        try:
            inner = dict(environ)
            inner["PATH_INFO"] = "/" + rest
            inner["SCRIPT_NAME"] = str(environ.get("SCRIPT_NAME") or "") + "/" + name
            captured: dict[str, Any] = {}

            def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                captured["status"], captured["headers"] = status, headers
                return lambda _data: None

            # The name is a served organization's (the routing table's key), never other path
            # text: a refused secret is logged with the organization it was meant for.
            with structlog.contextvars.bound_contextvars(organization=name):
                body = route.receiver(inner, capture)
        finally:
            self._done(route)
        if str(captured.get("status", "")).startswith("401"):
            return _answer(start_response, 404, _NOT_FOUND)  # a wrong header secret: plain 404
        start_response(captured["status"], captured["headers"])
        return body

    def _done(self, route: _Route) -> None:
        writer = route.receiver.writer
        key = id(writer)
        with self._lock:
            left = self._inflight.get(key, 1) - 1
            if left:
                self._inflight[key] = left
                return
            self._inflight.pop(key, None)
            retiring = self._retiring.pop(key, None)
        if retiring is not None:
            retiring.close()

    def _health(self, method: str, start_response: StartResponse) -> list[bytes]:
        if method != "GET":
            return _answer(start_response, 405, b'{"error":"use GET"}', (("Allow", "GET"),))
        routes = dict(self._routes)
        with ThreadPoolExecutor(max_workers=min(32, max(1, len(routes)))) as pool:
            pings = dict(
                zip(
                    routes,
                    pool.map(lambda r: r.receiver.writer.ping(), routes.values()),
                    strict=True,
                )
            )
        orgs: dict[str, Any] = {
            name: {"state_db": "writable" if problem is None else problem}
            for name, problem in sorted(pings.items())
        }
        for name, found in self.problems.items():
            orgs.setdefault(name, {})["config"] = f"{len(found)} problem(s); see `fleet check`"
        bad = any(p is not None for p in pings.values())
        body = {
            "status": "unavailable" if bad else "ok",
            "organizations": orgs,
        }
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return _answer(start_response, 503 if bad else 200, data)

    def _serve_metrics(self, method: str, start_response: StartResponse) -> list[bytes]:
        if method != "GET":
            return _answer(start_response, 405, b'{"error":"use GET"}', (("Allow", "GET"),))
        assert self._metrics is not None
        from flipsync.metrics import CONTENT_TYPE

        data = self._metrics()
        start_response(
            "200 OK",
            [
                ("Content-Type", CONTENT_TYPE),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [data]


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _answer(
    start_response: StartResponse,
    status: int,
    data: bytes,
    extra: tuple[tuple[str, str], ...] = (),
) -> list[bytes]:
    start_response(
        f"{status} {_REASONS[status]}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            *extra,
        ],
    )
    return [data]


# -- serving --------------------------------------------------------------------------------


class _RedactAll(logging.Filter):
    """Hide every served secret from waitress's messages (it logs request paths)."""

    def __init__(self, secrets: Callable[[], list[str]]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        changed = message
        for secret in self._secrets():
            changed = changed.replace(secret, "<secret>")
        if changed != message:
            record.msg, record.args = changed, ()
        return True


def server_settings(fleet: FleetSettings) -> Settings:
    """Settings carrying the fleet's receiver limits, for flipsync.receiver.make_server."""
    return Settings(
        config_path=fleet.root / "fleet.yaml",
        organization="fleet",
        state_file=fleet.root / "fleet-receiver.unused",
        constant_contact=ConstantContactSettings(client_id=fleet.application_key),
        flipcause=FlipcauseSettings(),
        policy=PolicySettings(),
        run=RunSettings(),
        intake=IntakeSettings(
            host=fleet.receiver.host,
            port=fleet.receiver.port or 8787,
            max_body_bytes=fleet.receiver.max_body_bytes,
        ),
    )


def _hide_secrets(app: FleetReceiver) -> None:
    logger = logging.getLogger("waitress")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactAll(app.secrets))
    handler.setFormatter(logging.Formatter("waitress %(levelname)s: %(message)s"))
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.WARNING)


def serve_fleet(
    fleet: FleetSettings,
    *,
    host: str,
    port: int,
    threads: int,
    announce: Callable[[str], None],
    metrics: Callable[[], bytes] | None = None,
) -> None:
    """Serve every organization until SIGTERM/SIGINT; SIGHUP reloads the organizations."""
    app = FleetReceiver(fleet, metrics=metrics)
    problems = app.reload()
    for name, found in problems.items():
        announce(f"not serving {name} ({len(found)} problem(s); see `flipsync fleet check`)")
    _hide_secrets(app)
    try:
        # make_server only hands the app to waitress: any WSGI callable will do.
        server = make_server(
            app,  # type: ignore[arg-type]
            server_settings(fleet),
            host=host,
            port=port,
            threads=threads,
        )
    except ConfigError:
        app.close()
        raise
    stop = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        server.pull_trigger()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=app.reload, name="flipsync-fleet-reload", daemon=True).start()

    handlers: Mapping[int, Any] = {
        signal.SIGTERM: on_stop,
        signal.SIGINT: on_stop,
        signal.SIGHUP: on_hup,
    }
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        announce(
            f"flipsync fleet receiver listening on http://{server.effective_host}:"
            f"{server.effective_port} for {len(app.organizations())} organization(s)"
        )
        run_until_stopped(server, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        app.close()
        log.info("fleet_receiver_stopped")
