"""The webhook receiver (`flipsync serve`): Flipcause webhooks into the inbox, durably.

This module owns the HTTP side of intake: a plain WSGI application (testable
without a server), authentication by a shared secret, body decoding (JSON,
form-encoded and multipart forms, since Flipcause's transport is undocumented),
the group-commit writer that stores payloads, and running it all under waitress
with a graceful SIGTERM.

Like file ingest it judges nothing but "a JSON object of sane size"; the run
decides what a payload means and rejects bad records with reasons. A request is
answered 2xx only after its payloads are committed (WAL, synchronous=FULL). Logs
carry sizes, reasons and record keys, never payload values, and never the secret.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import queue
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from types import FrameType
from typing import Any, Literal
from urllib.parse import parse_qsl
from wsgiref.types import StartResponse, WSGIEnvironment

import structlog

from flipsync.config import Settings, secret_from_env
from flipsync.errors import ConfigError
from flipsync.intake import BadItem, check_item, loads_json
from flipsync.state import AddResult, StateDB, record_key_for

log = structlog.get_logger(__name__)

SOURCE = "webhook"
WEBHOOK_PATH = "/flipcause"
HEALTH_PATH = "/healthz"
SECRET_HEADER = "X-Flipsync-Secret"  # noqa: S105 - a header name, not a secret
_SECRET_ENVIRON_KEY = "HTTP_X_FLIPSYNC_SECRET"  # noqa: S105 - the WSGI key of that header
MIN_SECRET_LENGTH = 16
# The secret travels in a URL path, so it must need no escaping there.
_SECRET_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
MAX_FORM_FIELDS = 1000
COMMIT_TIMEOUT_SECONDS = 60.0
HEALTH_TIMEOUT_SECONDS = 5.0
DRAIN_SECONDS = 10.0
DEFAULT_THREADS = 16

JSON_TYPES = frozenset({"application/json", "text/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"
_CHARSETS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "iso-8859-1": "latin-1",
    "latin-1": "latin-1",
    "latin1": "latin-1",
    "windows-1252": "cp1252",
    "cp1252": "cp1252",
    "utf-16": "utf-16",
    "utf-16le": "utf-16-le",
    "utf-16be": "utf-16-be",
}
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]$")
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


# -- bodies ---------------------------------------------------------------------------------


class BodyError(Exception):
    """A request body that yields nothing to store: the status to answer and a short reason."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ParsedBody:
    """What a body held: how it was read, and each item as a payload or a BadItem."""

    kind: Literal["json", "form", "multipart"]
    items: list[dict[str, Any] | BadItem]


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """Split a Content-Type header into its lower-cased media type and its parameters."""
    if not content_type:
        return "", {}
    parts = content_type.split(";")
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            params.setdefault(key.strip().lower(), value)
    return parts[0].strip().lower(), params


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(body: bytes, charset: str | None) -> str:
    name = (charset or "utf-8").strip().lower()
    codec = _CHARSETS.get(name)
    if codec is None:
        raise BodyError(415, f"unsupported charset {_short(name, 40)!r}; send UTF-8")
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        raise BodyError(400, f"body is not valid {codec} (byte {exc.start})") from None
    return text.removeprefix("\ufeff")


def _looks_like_json(text: str) -> bool:
    stripped = text.lstrip()
    return stripped[:1] in ("{", "[")


def _json_items(text: str) -> list[dict[str, Any] | BadItem]:
    stripped = text.strip()
    if not stripped:
        raise BodyError(400, "empty body")
    try:
        doc = loads_json(stripped)
    except json.JSONDecodeError as exc:
        raise BodyError(400, f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    except ValueError as exc:
        reason = str(exc) if "nested" in str(exc) else "a value JSON cannot carry"
        raise BodyError(400, f"not valid JSON ({reason})") from None
    if isinstance(doc, dict):
        return [check_item(doc, "body")]
    if isinstance(doc, list):
        if not doc:
            raise BodyError(400, "empty JSON array: nothing to store")
        return [check_item(item, f"item {index}") for index, item in enumerate(doc, start=1)]
    raise BodyError(400, f"expected a JSON object or an array of objects, got {type(doc).__name__}")


def _flat(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Form fields as one flat object of strings; a repeated field keeps every value, joined."""
    out: dict[str, str] = {}
    for key, value in pairs:
        out[key] = f"{out[key]}, {value}" if key in out else value
    return dict(out)


def _form_items(text: str, charset: str | None) -> list[dict[str, Any] | BadItem]:
    if not text.strip():
        raise BodyError(400, "empty body")
    codec = _CHARSETS.get((charset or "utf-8").strip().lower(), "utf-8")
    try:
        pairs = parse_qsl(
            text.strip(),
            keep_blank_values=True,
            encoding=codec,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise BodyError(400, f"a form field is not valid {codec} after %-decoding") from None
    except ValueError:
        raise BodyError(400, f"more than {MAX_FORM_FIELDS} form fields") from None
    if not pairs:
        raise BodyError(400, "no form fields in the body")
    return [check_item(_flat(pairs), "body")]


def _multipart_items(body: bytes, boundary: str | None) -> list[dict[str, Any] | BadItem]:
    if not boundary or not _BOUNDARY_RE.match(boundary):
        raise BodyError(400, "multipart body without a valid boundary parameter")
    head = f'Content-Type: multipart/form-data; boundary="{boundary}"\r\n\r\n'.encode("ascii")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    parts = message.get_payload() if message.is_multipart() else None
    if not isinstance(parts, list) or not parts:
        raise BodyError(400, "malformed multipart body (no parts)")
    if len(parts) > MAX_FORM_FIELDS:
        raise BodyError(400, f"more than {MAX_FORM_FIELDS} form fields")
    pairs: list[tuple[str, str]] = []
    for number, part in enumerate(parts, start=1):
        if not isinstance(part, Message) or part.is_multipart():
            raise BodyError(400, f"multipart part {number} is not a plain form field")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise BodyError(400, f"multipart part {number} has no field name")
        raw = part.get_payload(decode=True)
        data = raw if isinstance(raw, bytes) else b""
        charset = part.get_content_charset() or "utf-8"
        codec = _CHARSETS.get(charset.lower())
        if codec is None:
            raise BodyError(415, f"multipart part {number}: unsupported charset; send UTF-8")
        try:
            pairs.append((name, data.decode(codec)))
        except UnicodeDecodeError:
            raise BodyError(400, f"multipart part {number} is not valid {codec}") from None
    return [check_item(_flat(pairs), "body")]


def parse_body(body: bytes, content_type: str | None) -> ParsedBody:
    """Decode a webhook body into payload objects, or raise BodyError(status, reason).

    JSON (one object, or an array of objects whose bad items are reported one by
    one), form-encoded and multipart form fields (a flat object of strings). With no
    Content-Type, or text/plain, a body that looks like JSON is read as JSON; with no
    Content-Type a body with `=` is read as a form. A form-typed body that starts
    with `{` or `[` is read as JSON: it cannot be a real form.
    """
    media, params = media_type(content_type)
    charset = params.get("charset")
    if media == MULTIPART_TYPE:
        return ParsedBody("multipart", _multipart_items(body, params.get("boundary")))
    if media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return ParsedBody("json", _json_items(_decode(body, charset)))
    if media == FORM_TYPE:
        text = _decode(body, charset)
        if _looks_like_json(text):
            return ParsedBody("json", _json_items(text))
        return ParsedBody("form", _form_items(text, charset))
    if media in ("", "text/plain"):
        text = _decode(body, charset)
        if _looks_like_json(text):
            return ParsedBody("json", _json_items(text))
        if not media and "=" in text:
            return ParsedBody("form", _form_items(text, charset))
        if not text.strip():
            raise BodyError(400, "empty body")
    raise BodyError(
        415,
        f"unsupported Content-Type {_short(media or '(none)', 60)!r}; "
        f"send application/json or {FORM_TYPE}",
    )


# -- the group-commit writer ----------------------------------------------------------------


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
            media = _short(media_type(content_type)[0] or "(none)", 60)
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


def make_server(
    app: Receiver, settings: Settings, *, host: str, port: int, threads: int = DEFAULT_THREADS
) -> Any:
    """A waitress server for the receiver, bound but not yet serving (port 0 picks one)."""
    from waitress.server import create_server

    try:
        return create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            max_request_body_size=settings.intake.max_body_bytes,
            max_request_header_size=64 * 1024,
            channel_timeout=30,
            connection_limit=200,
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
