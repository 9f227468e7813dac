"""The webhook receiver (`flipsync serve`): Flipcause webhooks into the inbox, durably.

This module owns the HTTP side of intake: a plain WSGI application (testable
without a server), authentication by a shared secret, and running it under
waitress with a graceful SIGTERM. It decodes bodies with `flipsync.webhook_body`
and stores payloads through the group-commit writer of `flipsync.inbox_writer`.

Like file ingest it judges nothing but "a JSON object of sane size"; the run
decides what a payload means and rejects bad records with reasons. A request is
answered 2xx only after its payloads are committed. Logs carry sizes, reasons
and record keys, never payload values, and never the secret.
"""

from __future__ import annotations

import hmac
import json
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import structlog

from flipsync.config import Settings, secret_from_env
from flipsync.errors import ConfigError
from flipsync.inbox_writer import (
    COMMIT_TIMEOUT_SECONDS,
    SOURCE,
    GroupCommitWriter,
    WriterUnavailable,
)
from flipsync.intake import BadItem
from flipsync.state import record_key_for
from flipsync.webhook_body import BodyError, media_type, parse_body, short

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/flipcause"
HEALTH_PATH = "/healthz"
SECRET_HEADER = "X-Flipsync-Secret"  # noqa: S105 - a header name, not a secret
_SECRET_ENVIRON_KEY = "HTTP_X_FLIPSYNC_SECRET"  # noqa: S105 - the WSGI key of that header
MIN_SECRET_LENGTH = 16
# The secret travels in a URL path, so it must need no escaping there.
_SECRET_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
DRAIN_SECONDS = 10.0
DEFAULT_THREADS = 16
# Open connections waitress keeps (idle ones hold no thread), and how long one may stay
# silent. The proxy in front buffers whole requests, so a real sender is never this slow.
CONNECTION_LIMIT = 1000
CHANNEL_TIMEOUT_SECONDS = 10
FD_RESERVE = 64  # open files kept for the state DB, its WAL, logs and the listening socket
_GENERATE_HINT = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


# -- the secret -----------------------------------------------------------------------------


def read_webhook_secret(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The shared webhook secret from the env var the config names; ConfigError when unusable.

    The receiver refuses to start without one: an open webhook URL would let anyone
    put records into the inbox. Messages name the variable, never its value.
    """
    name = settings.intake.webhook_secret_env
    where = "`intake.webhook_secret_env`"
    if not name:
        raise ConfigError(
            str(settings.config_path),
            [
                f"{where}: missing; `flipsync serve` needs a shared secret. Name the environment "
                "variable that holds it, for example FLIPSYNC_WEBHOOK_SECRET"
            ],
        )
    secret = secret_from_env(name, environ)
    if secret is None:
        raise ConfigError(
            str(settings.config_path),
            [
                f"{where}: the environment variable {name} is not set or empty; put the webhook "
                f"secret in it (for example through the systemd EnvironmentFile); {_GENERATE_HINT}"
            ],
        )
    if len(secret) < MIN_SECRET_LENGTH or not _SECRET_RE.match(secret):
        raise ConfigError(
            str(settings.config_path),
            [
                f"{where}: the secret in {name} must be at least {MIN_SECRET_LENGTH} characters "
                f"of A-Z a-z 0-9 . _ ~ - (it is part of the webhook URL); {_GENERATE_HINT}"
            ],
        )
    return secret


# -- the WSGI application -------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Mapping[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_NOT_FOUND = _Reply(404, {"error": "not found"})


class Receiver:
    """The WSGI application: POST /flipcause[/<secret>] stores payloads; GET /healthz.

    Authentication: the secret as the last path segment (a wrong one is a plain
    404, like any unknown path) or in the X-Flipsync-Secret header on /flipcause (a
    wrong or missing one is 401). Both are compared in constant time.
    """

    def __init__(
        self,
        writer: GroupCommitWriter,
        *,
        secret: str,
        id_field: str,
        max_body_bytes: int,
        commit_timeout: float = COMMIT_TIMEOUT_SECONDS,
    ) -> None:
        self.writer = writer
        self._secret = secret.encode("utf-8")
        self._id_field = id_field
        self._max_body = max_body_bytes
        self._commit_timeout = commit_timeout

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        try:
            reply = self._handle(environ)
        except Exception as exc:  # noqa: BLE001 - a bug must not reach waitress, which logs the path
            frames = traceback.extract_tb(exc.__traceback__)
            log.error(
                "receiver_bug",
                error=type(exc).__name__,
                where=[f"{f.filename}:{f.lineno} {f.name}" for f in frames[-5:]],
            )
            reply = _Reply(500, {"error": "internal error"})
        data = json.dumps(dict(reply.body), separators=(",", ":")).encode("utf-8")
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            *reply.headers,
        ]
        start_response(f"{reply.status} {_REASONS.get(reply.status, 'Error')}", headers)
        return [data]

    def close(self) -> None:
        """Stop the writer after it committed everything queued."""
        self.writer.close()

    @property
    def max_body_bytes(self) -> int:
        """intake.max_body_bytes, for the answers waitress gives itself."""
        return self._max_body

    def refused_by_server(
        self, status: int, reason: str, size: int, path: str, header_secret: str | None
    ) -> None:
        """Log a request waitress refused itself (too large, malformed); record it if authentic.

        Only a request that carries the right secret is recorded in intake_rejects, so
        strangers cannot fill the state DB; every one is logged, without its path.
        """
        log.warning("webhook_rejected", status=status, reason=reason, bytes=size, by="server")
        authentic = (
            path.startswith(WEBHOOK_PATH + "/") and self._secret_ok(path[len(WEBHOOK_PATH) + 1 :])
        ) or (path in (WEBHOOK_PATH, WEBHOOK_PATH + "/") and self._secret_ok(header_secret))
        if authentic:
            self.writer.add_rejects([(SOURCE, f"request ({size} bytes)", reason)])

    def _secret_ok(self, given: str | None) -> bool:
        if given is None:
            return False
        try:
            raw = given.encode("latin-1")  # WSGI strings carry the raw bytes as latin-1
        except UnicodeEncodeError:
            raw = given.encode("utf-8", "surrogatepass")
        return hmac.compare_digest(raw, self._secret)

    def _handle(self, environ: WSGIEnvironment) -> _Reply:
        path = str(environ.get("PATH_INFO") or "/")
        method = str(environ.get("REQUEST_METHOD") or "GET").upper()
        if path == HEALTH_PATH:
            if method != "GET":
                return _Reply(405, {"error": "use GET"}, (("Allow", "GET"),))
            return self._health()
        if path in (WEBHOOK_PATH, WEBHOOK_PATH + "/"):
            if not self._secret_ok(environ.get(_SECRET_ENVIRON_KEY)):
                log.warning("webhook_unauthorized", form="header")
                return _Reply(401, {"error": "unauthorized"})
        elif path.startswith(WEBHOOK_PATH + "/"):
            if not self._secret_ok(path[len(WEBHOOK_PATH) + 1 :]):
                log.warning("webhook_unauthorized", form="path")
                return _NOT_FOUND
        else:
            return _NOT_FOUND
        if method != "POST":
            return _Reply(405, {"error": "use POST"}, (("Allow", "POST"),))
        return self._receive(environ)

    def _health(self) -> _Reply:
        problem = self.writer.ping()
        body: dict[str, Any] = {
            "status": "ok" if problem is None else "unavailable",
            "state_db": "writable" if problem is None else problem,
            "writer": self.writer.stats.as_dict(),
        }
        return _Reply(200 if problem is None else 503, body)

    def _read_body(self, environ: WSGIEnvironment) -> bytes:
        declared: int | None = None
        raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
        if raw_length:
            if not raw_length.isdigit() or not raw_length.isascii():
                raise BodyError(400, "invalid Content-Length")
            declared = int(raw_length)
            if declared > self._max_body:
                raise BodyError(
                    413,
                    f"body is {declared} bytes; the limit is {self._max_body} (intake.max_body_bytes)",
                )
        want = self._max_body + 1 if declared is None else declared
        stream = environ.get("wsgi.input")
        chunks: list[bytes] = []
        got = 0
        while stream is not None and got < want:
            chunk = stream.read(want - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        body = b"".join(chunks)
        if len(body) > self._max_body:
            raise BodyError(413, f"body is over the limit of {self._max_body} bytes")
        return body

    def _receive(self, environ: WSGIEnvironment) -> _Reply:
        content_type = environ.get("CONTENT_TYPE")
        size = 0
        try:
            body = self._read_body(environ)
            size = len(body)
            parsed = parse_body(body, content_type)
        except BodyError as exc:
            media = short(media_type(content_type)[0] or "(none)", 60)
            log.warning(
                "webhook_rejected",
                status=exc.status,
                reason=exc.reason,
                bytes=size,
                content_type=media,
            )
            self.writer.add_rejects([(SOURCE, f"request ({size} bytes)", exc.reason)])
            return _Reply(exc.status, {"error": exc.reason})
        good = [item for item in parsed.items if isinstance(item, dict)]
        bad = [item for item in parsed.items if isinstance(item, BadItem)]
        rejected = [{"item": b.location, "reason": b.reason} for b in bad]
        if bad:
            self.writer.add_rejects([(SOURCE, b.location, b.reason) for b in bad])
        if not good:
            reason = bad[0].reason if len(bad) == 1 else "no JSON object in the array"
            log.warning("webhook_rejected", status=400, reason=reason, bytes=size, items=len(bad))
            return _Reply(400, {"error": reason, "rejected": rejected})
        keyed = [(record_key_for(p, self._id_field), p) for p in good]
        try:
            result = self.writer.store(keyed, timeout=self._commit_timeout)
        except WriterUnavailable as exc:
            log.error("webhook_not_stored", reason=str(exc), bytes=size, payloads=len(keyed))
            return _Reply(503, {"error": "not stored; retry later"}, (("Retry-After", "5"),))
        log.info(
            "webhook_stored",
            kind=parsed.kind,
            bytes=size,
            added=result.added,
            duplicates=result.duplicates,
            rejected=len(bad),
            record_keys=[key for key, _ in keyed[:20]],
        )
        return _Reply(
            200, {"stored": result.added, "duplicates": result.duplicates, "rejected": rejected}
        )


def build_receiver(
    settings: Settings,
    secret: str,
    *,
    state_path: Path | None = None,
    commit_timeout: float = COMMIT_TIMEOUT_SECONDS,
) -> Receiver:
    """The receiver for one organization, its writer started on the state DB (or `state_path`)."""
    writer = GroupCommitWriter(state_path or settings.state_file).start()
    return Receiver(
        writer,
        secret=secret,
        id_field=settings.flipcause.fields.webhook_record_id,
        max_body_bytes=settings.intake.max_body_bytes,
        commit_timeout=commit_timeout,
    )


# -- serving --------------------------------------------------------------------------------


class _Redact:
    """A logging filter that removes the secret from waitress's messages (it logs paths)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def filter(self, record: Any) -> bool:
        message = record.getMessage()
        if self._secret in message:
            record.msg = message.replace(self._secret, "<secret>")
            record.args = ()
        return True


def _protect_waitress_logs(secret: str) -> None:
    """Route waitress's stdlib logs to stderr through a filter that hides the secret."""
    import logging

    logger = logging.getLogger("waitress")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Redact(secret))
    handler.setFormatter(logging.Formatter("waitress %(levelname)s: %(message)s"))
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.WARNING)


def _busy(server: Any) -> bool:
    """True while waitress has requests queued, running, or answers not yet sent."""
    dispatcher = server.task_dispatcher
    if dispatcher.queue or dispatcher.active_count:
        return True
    for channel in list(server._map.values()):
        if getattr(channel, "requests", None) or getattr(channel, "total_outbufs_len", 0):
            return True
    return False


def connection_limit() -> int:
    """CONNECTION_LIMIT, or fewer when the open-files limit leaves no room for that many.

    It only reads the limit: the systemd unit raises it (LimitNOFILE), and its system-call
    filter would not let the process raise it itself.
    """
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= CONNECTION_LIMIT:
        return CONNECTION_LIMIT
    limit = max(16, soft - FD_RESERVE)
    log.warning("receiver_connection_limit_lowered", limit=limit, open_files_limit=soft)
    return limit


def make_server(
    app: Receiver, settings: Settings, *, host: str, port: int, threads: int = DEFAULT_THREADS
) -> Any:
    """A waitress server for the receiver, bound but not yet serving (port 0 picks one).

    Slow clients cannot starve it: a request is handed to a thread only once it has
    fully arrived, so idle or half-sent connections hold no thread; there is room for
    CONNECTION_LIMIT of them; and a connection silent for CHANNEL_TIMEOUT_SECONDS (with
    no request being answered) is closed, checked every second. /healthz keeps answering.
    """
    from waitress.server import create_server

    from flipsync.receiver_errors import use_json_errors

    try:
        server = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            # waitress refuses a body AT its limit; the receiver's limit is inclusive.
            max_request_body_size=settings.intake.max_body_bytes + 1,
            max_request_header_size=64 * 1024,
            channel_timeout=CHANNEL_TIMEOUT_SECONDS,
            cleanup_interval=1,
            connection_limit=connection_limit(),
            asyncore_use_poll=True,
            clear_untrusted_proxy_headers=True,
            expose_tracebacks=False,
            ident="flipsync",
        )
    except OSError as exc:
        raise ConfigError(
            str(settings.config_path),
            [f"`intake.host`/`intake.port`: cannot listen on {host}:{port} ({exc.strerror})"],
        ) from None
    return use_json_errors(server, app)  # waitress's own 413 and 400 answers are JSON too


def run_until_stopped(
    server: Any, stop: threading.Event, *, drain_seconds: float = DRAIN_SECONDS
) -> None:
    """Serve until `stop` is set (then call server.pull_trigger() to wake it), then drain.

    Draining closes the listening socket, keeps answering the requests already
    received (their payloads commit first) until none is left or `drain_seconds`
    pass, then closes every connection. The caller closes the receiver afterwards.
    """
    from waitress import wasyncore

    smap = server._map
    while not stop.is_set():
        wasyncore.loop(timeout=0.5, map=smap, use_poll=True, count=1)
    log.info("receiver_stopping")
    wasyncore.dispatcher.close(server)  # no new connections; open ones are still served
    deadline = time.monotonic() + drain_seconds
    while _busy(server) and time.monotonic() < deadline:
        wasyncore.loop(timeout=0.05, map=smap, use_poll=True, count=1)
    server.task_dispatcher.shutdown(timeout=1)
    wasyncore.close_all(smap)


def serve_forever(
    settings: Settings,
    secret: str,
    *,
    host: str,
    port: int,
    threads: int = DEFAULT_THREADS,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the receiver with waitress until SIGTERM or SIGINT, then stop gracefully.

    On a stop signal the listening socket closes, requests in flight are answered
    (their payloads commit first) for up to DRAIN_SECONDS, and the writer commits
    what it holds before the state DB closes.
    """
    app = build_receiver(settings, secret)
    _protect_waitress_logs(secret)
    try:
        server = make_server(app, settings, host=host, port=port, threads=threads)
    except ConfigError:
        app.close()
        raise
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        server.pull_trigger()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        say = announce or (lambda text: print(text, flush=True))  # noqa: T201 - the CLI's stdout
        say(
            f"flipsync receiver listening on http://{server.effective_host}:{server.effective_port}"
        )
        log.info("receiver_started", host=server.effective_host, port=server.effective_port)
        run_until_stopped(server, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        app.close()
        log.info("receiver_stopped", **app.writer.stats.as_dict())
