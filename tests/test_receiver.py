"""The webhook receiver: auth forms, body kinds, limits, durability, group commit, `serve`."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import structlog
from click.testing import CliRunner
from structlog.testing import capture_logs

from flipsync.cli import cli
from flipsync.config import Settings
from flipsync.errors import ConfigError
from flipsync.inbox_writer import GroupCommitWriter, WriterUnavailable
from flipsync.receiver import (
    Receiver,
    _Redact,
    build_receiver,
    make_server,
    read_webhook_secret,
    run_until_stopped,
)
from flipsync.state import StateDB
from tests.helpers import config_dict, payload, settings_from, write_config

SECRET = secrets.token_urlsafe(24)
ROOT = Path(__file__).resolve().parent.parent


def intake_settings(tmp_path: Path, **intake: Any) -> Settings:
    """Settings with the receiver's env var named and the state file in tmp_path."""
    return settings_from(
        config_dict(intake={"webhook_secret_env": "TEST_WEBHOOK_SECRET", **intake}), tmp_path
    )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Receiver]:
    receiver = build_receiver(intake_settings(tmp_path, max_body_bytes=4096), SECRET)
    yield receiver
    receiver.close()


@pytest.fixture
def all_logs() -> Iterator[None]:
    """Log at every level for this test (another test's CLI run may have set warning)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(**saved)


def call(
    app: Receiver,
    *,
    method: str = "POST",
    path: str = f"/flipcause/{SECRET}",
    body: bytes = b"",
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    content_length: str | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Drive the WSGI app like a server would; (status, headers, JSON body)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)) if content_length is None else content_length,
    }
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        seen["status"] = int(status.split()[0])
        seen["headers"] = dict(response_headers)

    data = b"".join(app(environ, start_response))
    assert seen["headers"]["Content-Length"] == str(len(data))
    return seen["status"], seen["headers"], json.loads(data)


def inbox(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(record_key, source, payload) of every inbox row, read through a fresh connection."""
    with StateDB.open(path, create=False) as state:
        return [(r.record_key, r.source, r.payload) for r in state.inbox_after(0, 10_000)]


def rejects(path: Path) -> list[tuple[str, str, str]]:
    """(source, location, reason) of the intake_rejects rows."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("SELECT source, location, reason FROM intake_rejects"))
    finally:
        conn.close()


# -- authentication -------------------------------------------------------------------------


def test_path_secret_stores_payload_durably_before_answering(app: Receiver, tmp_path: Path) -> None:
    """POST /flipcause/<secret> answers 200 only once a fresh connection can read the payload."""
    data = payload("ada@example.org", webhook_record_id="1145")
    status, _, body = call(app, body=json.dumps(data).encode())
    assert status == 200
    assert body == {"stored": 1, "duplicates": 0, "rejected": []}
    assert inbox(tmp_path / "state.db") == [("wh:1145", "webhook", data)]


def test_header_secret_on_bare_path(app: Receiver, tmp_path: Path) -> None:
    """The X-Flipsync-Secret header authenticates POST /flipcause (with or without a slash)."""
    for number, path in enumerate(("/flipcause", "/flipcause/")):
        data = payload(webhook_record_id=f"h{number}")
        status, _, _ = call(
            app, path=path, body=json.dumps(data).encode(), headers={"X-Flipsync-Secret": SECRET}
        )
        assert status == 200
    assert [k for k, _, _ in inbox(tmp_path / "state.db")] == ["wh:h0", "wh:h1"]


@pytest.mark.parametrize(
    "given",
    [SECRET[:-1], SECRET + "x", SECRET.upper() + "!", "%2e%2e", "é" + SECRET[1:], "/"],
    # ids that do not carry the secret, which is new in every process
    ids=["short", "longer", "upper", "dot-dot", "accented", "slash"],
)
def test_wrong_path_secret_is_the_plain_404(app: Receiver, tmp_path: Path, given: str) -> None:
    """A wrong path secret looks exactly like an unknown path, and stores nothing."""
    status, _, body = call(app, path=f"/flipcause/{given}", body=b'{"a": "1"}')
    unknown = call(app, path="/nothing-here", body=b'{"a": "1"}')
    assert (status, body) == (unknown[0], unknown[2]) == (404, {"error": "not found"})
    assert inbox(tmp_path / "state.db") == []


@pytest.mark.parametrize(
    "given",
    [None, "", "wrong", SECRET + " ", SECRET[:-1], "\u00e9\u00ff"],
    ids=["missing", "empty", "wrong", "trailing-space", "short", "not-ascii"],
)
def test_missing_or_wrong_header_secret_is_401(
    app: Receiver, tmp_path: Path, given: str | None
) -> None:
    """The header form answers 401 with no detail when the secret is missing or wrong."""
    headers = {} if given is None else {"X-Flipsync-Secret": given}
    status, _, body = call(app, path="/flipcause", body=b'{"a": "1"}', headers=headers)
    assert (status, body) == (401, {"error": "unauthorized"})
    assert inbox(tmp_path / "state.db") == []


def test_the_path_secret_is_not_accepted_in_the_header_position(app: Receiver) -> None:
    """A secret path segment under another prefix, or with extra segments, is not a webhook URL."""
    assert call(app, path=f"/other/{SECRET}", body=b"{}")[0] == 404
    assert call(app, path=f"/flipcause/{SECRET}/more", body=b"{}")[0] == 404


@pytest.mark.usefixtures("all_logs")
def test_auth_failures_log_no_secret_and_no_path(app: Receiver) -> None:
    """Logs of refused requests carry the auth form only: never the given secret or the path."""
    attempt = "guess-" + secrets.token_urlsafe(8)
    with capture_logs() as logs:
        call(app, path=f"/flipcause/{attempt}", body=b"{}")
        call(app, path="/flipcause", body=b"{}", headers={"X-Flipsync-Secret": attempt})
    assert [e["form"] for e in logs] == ["path", "header"]
    assert attempt not in repr(logs) and SECRET not in repr(logs)


# -- bodies ---------------------------------------------------------------------------------


def test_repeated_webhook_record_id_is_2xx_and_stored_once(app: Receiver, tmp_path: Path) -> None:
    """Flipcause redelivering a webhook gets 200 again, and the inbox keeps one copy."""
    data = json.dumps(payload(webhook_record_id="77")).encode()
    assert call(app, body=data)[2] == {"stored": 1, "duplicates": 0, "rejected": []}
    assert call(app, body=data)[2] == {"stored": 0, "duplicates": 1, "rejected": []}
    assert [k for k, _, _ in inbox(tmp_path / "state.db")] == ["wh:77"]


def test_array_stores_every_object_and_reports_bad_items(app: Receiver, tmp_path: Path) -> None:
    """In an array, non-objects are rejected one by one; every object in it is still stored."""
    first, second = payload(webhook_record_id="a1"), payload(webhook_record_id="a2")
    status, _, body = call(app, body=json.dumps([first, 5, "x", second]).encode())
    assert status == 200
    assert body["stored"] == 2
    assert [r["item"] for r in body["rejected"]] == ["item 2", "item 3"]
    assert [k for k, _, _ in inbox(tmp_path / "state.db")] == ["wh:a1", "wh:a2"]
    assert {loc for _, loc, _ in rejects(tmp_path / "state.db")} == {"item 2", "item 3"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[]", "empty JSON array"),
        (b"[1, 2]", "no JSON object"),
        (b'"just a string"', "expected a JSON object"),
        (b'{"a": ', "not valid JSON"),
        (b"", "empty body"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b"\xff\xfe{", "not valid utf-8"),
    ],
)
def test_invalid_bodies_are_400_with_a_short_reason(
    tmp_path: Path, body: bytes, reason: str
) -> None:
    """Bodies with nothing storable get 400 and a reason, and are remembered as intake rejects."""
    receiver = build_receiver(intake_settings(tmp_path, max_body_bytes=1024 * 1024), SECRET)
    try:
        status, _, answer = call(receiver, body=body)
    finally:
        receiver.close()
    assert status == 400
    assert reason in answer["error"]
    assert len(answer["error"]) < 200
    assert inbox(tmp_path / "state.db") == []
    assert rejects(tmp_path / "state.db")


@pytest.mark.usefixtures("all_logs")
def test_rejection_logs_carry_no_payload_values(app: Receiver) -> None:
    """A bad body is logged with its size and reason, never with the values it held."""
    with capture_logs() as logs:
        call(app, body=b'{"PD_email": "secret.person@example.org", "PD_first_name": "Zed"')
        call(app, body=b'[1, {"PD_email": "other.person@example.org"}]')
    text = repr(logs)
    assert "person@example.org" not in text and "Zed" not in text
    assert logs[0]["event"] == "webhook_rejected" and logs[0]["bytes"] > 0
    assert logs[1]["event"] == "webhook_stored" and logs[1]["rejected"] == 1


def test_form_body_becomes_a_flat_object_of_strings(app: Receiver, tmp_path: Path) -> None:
    """Form fields are stored as strings; a repeated field keeps all its values."""
    body = urlencode(
        [
            ("webhook_record_id", "f1"),
            ("PD_email", "ada@example.org"),
            ("DD_amount", "25.00"),
            ("CF_interests", "food"),
            ("CF_interests", "shelter"),
            ("PD_note", ""),
        ]
    ).encode()
    status, _, _ = call(app, body=body, content_type="application/x-www-form-urlencoded")
    assert status == 200
    ((key, _, stored),) = inbox(tmp_path / "state.db")
    assert key == "wh:f1"
    assert stored == {
        "webhook_record_id": "f1",
        "PD_email": "ada@example.org",
        "DD_amount": "25.00",
        "CF_interests": "food, shelter",
        "PD_note": "",
    }


def test_multipart_form_body(app: Receiver, tmp_path: Path) -> None:
    """multipart/form-data fields (as PHP's curl sends an array) become a flat object too."""
    boundary = "----flipsyncTestBoundary42"
    parts = [("webhook_record_id", "m1"), ("PD_first_name", "Zoë")]
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    status, _, _ = call(app, body=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert status == 200
    assert inbox(tmp_path / "state.db")[0][2] == {"webhook_record_id": "m1", "PD_first_name": "Zoë"}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (None, b'{"webhook_record_id": "s1"}'),
        ("text/plain", b'{"webhook_record_id": "s1"}'),
        ("application/x-www-form-urlencoded", b'{"webhook_record_id": "s1"}'),
        ("APPLICATION/JSON; Charset=UTF-8", b'{"webhook_record_id": "s1"}'),
        ("application/vnd.flipcause+json", b'{"webhook_record_id": "s1"}'),
        (None, b"webhook_record_id=s1"),
    ],
)
def test_content_type_variants_that_still_carry_a_payload(
    app: Receiver, tmp_path: Path, content_type: str | None, body: bytes
) -> None:
    """Missing or mislabelled Content-Types are read by what the body evidently is."""
    assert call(app, body=body, content_type=content_type)[0] == 200
    assert inbox(tmp_path / "state.db")[0][2] == {"webhook_record_id": "s1"}


@pytest.mark.parametrize(
    "content_type",
    ["application/xml", "text/html", "image/png", "application/json; charset=koi8-r"],
)
def test_unsupported_content_type_is_415(app: Receiver, content_type: str) -> None:
    """A body of a type the receiver cannot read is 415, naming what to send."""
    status, _, body = call(app, body=b"<x/>", content_type=content_type)
    assert status == 415
    assert "application/json" in body["error"] or "charset" in body["error"]


def test_body_over_the_limit_is_413(app: Receiver, tmp_path: Path) -> None:
    """Over intake.max_body_bytes is 413, whether Content-Length says so or the body shows it."""
    big = json.dumps({"webhook_record_id": "big", "x": "y" * 5000}).encode()
    assert call(app, body=big)[0] == 413
    assert call(app, body=big, content_length="")[0] == 413
    assert call(app, body=b"{}", content_length="999999999999999999999")[0] == 413
    assert inbox(tmp_path / "state.db") == []


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "+5", "5, 5", "٣"])
def test_malformed_content_length_is_400(app: Receiver, length: str) -> None:
    """A Content-Length that is not a plain decimal number is refused, not trusted."""
    assert call(app, body=b"{}", content_length=length)[0] == 400


def test_methods_and_paths(app: Receiver) -> None:
    """GET on the webhook URL is 405 (after auth); other paths are 404."""
    status, headers, _ = call(app, method="GET", body=b"")
    assert status == 405 and headers["Allow"] == "POST"
    assert call(app, method="GET", path="/flipcause/nope")[0] == 404
    assert call(app, method="GET", path="/")[0] == 404
    assert call(app, method="POST", path="/healthz")[0] == 405


# -- health and failures --------------------------------------------------------------------


def test_healthz_reports_a_writable_state_db_then_unavailable_after_close(app: Receiver) -> None:
    """GET /healthz is 200 while the writer can take a write transaction, 503 once it is closed."""
    status, _, body = call(app, method="GET", path="/healthz")
    assert status == 200
    assert body["status"] == "ok" and body["state_db"] == "writable"
    app.close()
    status, _, body = call(app, method="GET", path="/healthz")
    assert status == 503 and body["status"] == "unavailable"


def test_healthz_is_503_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """Readiness means a write would go through now, not merely that the file exists."""
    receiver = build_receiver(intake_settings(tmp_path), SECRET)
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        receiver.writer.ping(timeout=0.01)  # queue behind the lock so the next ping times out
        assert receiver.writer.ping(timeout=0.2) is not None
    finally:
        other.execute("ROLLBACK")
        other.close()
        receiver.close()


def test_store_failure_answers_503_never_2xx(
    app: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the commit fails the request gets 503 with Retry-After, so Flipcause retries."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(StateDB, "add_payload_groups", broken)
    status, headers, body = call(app, body=json.dumps(payload()).encode())
    assert status == 503 and headers["Retry-After"] == "5"
    assert body == {"error": "not stored; retry later"}


def test_requests_after_close_get_503(app: Receiver, tmp_path: Path) -> None:
    """A request arriving while the receiver shuts down is refused with 503, not lost as a 2xx."""
    app.close()
    assert call(app, body=json.dumps(payload()).encode())[0] == 503
    assert inbox(tmp_path / "state.db") == []


# -- the group-commit writer ----------------------------------------------------------------


def _store_in_thread(
    writer: GroupCommitWriter, items: list[tuple[str, dict[str, Any]]], out: list[Any]
) -> threading.Thread:
    def work() -> None:
        try:
            out.append(writer.store(items, timeout=30))
        except WriterUnavailable as exc:
            out.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def _wait_queued(writer: GroupCommitWriter, count: int) -> None:
    for _ in range(500):
        if writer._queue.qsize() >= count:
            return
        threading.Event().wait(0.01)
    raise AssertionError("requests were not queued")


def test_concurrent_requests_share_one_commit_and_wait_for_it(tmp_path: Path) -> None:
    """Requests queued while the writer is busy are committed together; none returns before."""
    writer = GroupCommitWriter(tmp_path / "state.db")
    results: list[Any] = []
    threads = [_store_in_thread(writer, [(f"k{i}", {"n": i})], results) for i in range(8)]
    _wait_queued(writer, 8)
    assert results == []  # nobody is answered before the commit
    writer.start()
    for thread in threads:
        thread.join(10)
    writer.close()
    assert [r.added for r in results] == [1] * 8
    assert writer.stats.commits == 1 and writer.stats.largest_batch == 8
    assert len(inbox(tmp_path / "state.db")) == 8


def test_a_failing_request_does_not_cost_its_batch(tmp_path: Path) -> None:
    """If one request in a group cannot be stored, the others are committed on their own."""
    writer = GroupCommitWriter(tmp_path / "state.db")
    results: list[Any] = []
    threads = [_store_in_thread(writer, [(f"ok{i}", {"n": i})], results) for i in range(3)]
    threads.append(_store_in_thread(writer, [("bad", {"n": {1, 2}})], results))  # not JSON
    threads += [_store_in_thread(writer, [(f"ok{i}", {"n": i})], results) for i in range(3, 6)]
    _wait_queued(writer, 7)
    writer.start()
    for thread in threads:
        thread.join(10)
    writer.close()
    assert sum(1 for r in results if isinstance(r, WriterUnavailable)) == 1
    assert sorted(k for k, _, _ in inbox(tmp_path / "state.db")) == [f"ok{i}" for i in range(6)]


def test_close_commits_what_is_already_queued(tmp_path: Path) -> None:
    """Shutting down commits every request that was accepted, then refuses new ones."""
    writer = GroupCommitWriter(tmp_path / "state.db")
    results: list[Any] = []
    threads = [_store_in_thread(writer, [(f"q{i}", {"n": i})], results) for i in range(5)]
    _wait_queued(writer, 5)
    writer.start()
    writer.close()
    for thread in threads:
        thread.join(10)
    assert [getattr(r, "added", None) for r in results] == [1] * 5
    with pytest.raises(WriterUnavailable):
        writer.store([("late", {})], timeout=1)


def test_no_answer_without_a_commit(tmp_path: Path) -> None:
    """A writer that cannot commit in time makes store() fail, never return early."""
    writer = GroupCommitWriter(tmp_path / "state.db")  # never started
    with pytest.raises(WriterUnavailable, match="not committed"):
        writer.store([("k", {})], timeout=0.1)


# -- the secret and the server --------------------------------------------------------------


def test_secret_is_required_and_checked_without_echoing_it(tmp_path: Path) -> None:
    """No env var named, var unset, or a weak secret: a ConfigError naming the variable only."""
    unnamed = settings_from(config_dict(), tmp_path)
    with pytest.raises(ConfigError, match=r"intake\.webhook_secret_env"):
        read_webhook_secret(unnamed, {})
    named = intake_settings(tmp_path)
    with pytest.raises(ConfigError, match="TEST_WEBHOOK_SECRET is not set"):
        read_webhook_secret(named, {})
    for weak in ("short-secret", "has a space in it....", "slash/in/the/secret/x"):
        with pytest.raises(ConfigError) as info:
            read_webhook_secret(named, {"TEST_WEBHOOK_SECRET": weak})
        assert weak not in str(info.value)
    assert read_webhook_secret(named, {"TEST_WEBHOOK_SECRET": SECRET}) == SECRET


def test_serve_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    """`flipsync serve` exits 2 (config) with a clear message when the secret is not set."""
    path = write_config(tmp_path, config_dict(intake={"webhook_secret_env": "UNSET_SECRET_VAR"}))
    result = CliRunner().invoke(cli, ["-c", str(path), "serve"], env={"UNSET_SECRET_VAR": ""})
    assert result.exit_code == 2
    assert "UNSET_SECRET_VAR is not set" in result.output


def test_waitress_log_filter_hides_the_secret() -> None:
    """Waitress logs request paths; the filter replaces the secret before anything is written."""
    record = logging.LogRecord(
        "waitress", logging.INFO, __file__, 1, "Client disconnected while serving %s", None, None
    )
    record.args = (f"/flipcause/{SECRET}",)
    assert _Redact(SECRET).filter(record)
    assert record.getMessage() == "Client disconnected while serving /flipcause/<secret>"


def test_serve_end_to_end_with_graceful_sigterm(tmp_path: Path) -> None:
    """A real `flipsync serve`: stores over HTTP, exits 0 on SIGTERM, never prints the secret."""
    path = write_config(tmp_path, config_dict(intake={"webhook_secret_env": "E2E_SECRET"}))
    env = {**os.environ, "E2E_SECRET": SECRET}
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "flipsync", "-c", str(path), "--log-level", "info"),
            *("serve", "--port", "0", "--threads", "4"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        port = int(line.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST",
            f"/flipcause/{SECRET}",
            body=json.dumps(payload(webhook_record_id="e2e")),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())["stored"]) == (200, 1)
        conn.request("POST", f"/flipcause/not-{SECRET}", body="{}")
        response = conn.getresponse()
        response.read()
        assert response.status == 404
        conn.close()
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0
    assert SECRET not in out + err
    assert "receiver_stopped" in err
    assert [k for k, _, _ in inbox(tmp_path / "state.db")] == ["wh:e2e"]


def test_stop_answers_the_request_in_flight_and_refuses_new_connections(tmp_path: Path) -> None:
    """On stop, the listener closes, but a request already received is committed and answered."""
    settings = intake_settings(tmp_path)
    app = build_receiver(settings, SECRET)
    server = make_server(app, settings, host="127.0.0.1", port=0, threads=4)
    port = int(server.effective_port)
    stop = threading.Event()
    runner = threading.Thread(target=run_until_stopped, args=(server, stop))
    runner.start()
    blocker = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer must wait: the request stays in flight
    answer: dict[str, Any] = {}

    def post() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        body = json.dumps(payload(webhook_record_id="inflight"))
        conn.request("POST", "/flipcause", body=body, headers={"X-Flipsync-Secret": SECRET})
        response = conn.getresponse()
        answer["status"], answer["body"] = response.status, json.loads(response.read())

    client = threading.Thread(target=post)
    try:
        client.start()
        for _ in range(200):
            if server.task_dispatcher.active_count:
                break
            time.sleep(0.01)
        time.sleep(0.1)
        stop.set()
        server.pull_trigger()
        time.sleep(0.3)
        with pytest.raises(OSError):
            http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
        assert "status" not in answer  # still waiting for its commit
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        client.join(20)
        runner.join(20)
        app.close()
    assert answer == {"status": 200, "body": {"stored": 1, "duplicates": 0, "rejected": []}}
    assert [k for k, _, _ in inbox(tmp_path / "state.db")] == ["wh:inflight"]
