"""`fleet serve`: routing by organization, one 404 for every miss, health, metrics, SIGHUP."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flipsync.fleet_receiver import FleetReceiver
from flipsync.metrics import render
from tests.fleet_helpers import FleetBox
from tests.helpers import payload

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fb(tmp_path: Path) -> Iterator[FleetBox]:
    box = FleetBox(tmp_path / "fleet")
    box.root.mkdir()
    box.write_fleet()
    yield box
    box.close()


def call(
    app: FleetReceiver,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    got: dict[str, Any] = {}

    def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, dict(hdrs)
        return lambda _: None

    data = b"".join(app(environ, start_response))
    return int(got["status"].split()[0]), data, got["headers"]


def body_of(*emails: str) -> bytes:
    return json.dumps([payload(e) for e in emails]).encode()


def stored(fb: FleetBox, name: str) -> list[str]:
    with fb.state(name) as state:
        return [row.payload.get("PD_email") for row in state.inbox_after(0, 10_000)]


@pytest.fixture
def app(fb: FleetBox) -> Iterator[FleetReceiver]:
    fb.add("north")
    fb.add("south")
    receiver = FleetReceiver(fb.fleet(), metrics=lambda: render(fb.fleet()))
    assert receiver.reload() == {}
    yield receiver
    receiver.close()


def test_each_org_stores_into_its_own_inbox_with_its_own_secret(
    app: FleetReceiver, fb: FleetBox
) -> None:
    north, south = fb.secrets["north"], fb.secrets["south"]
    assert call(app, "POST", f"/north/flipcause/{north}", body_of("ann@north.example"))[0] == 200
    status, _, _ = call(
        app,
        "POST",
        "/south/flipcause",
        body_of("sam@south.example"),
        {"X-Flipsync-Secret": south},
    )
    assert status == 200
    assert stored(fb, "north") == ["ann@north.example"]
    assert stored(fb, "south") == ["sam@south.example"]


@pytest.mark.parametrize(
    ("path", "header"),
    [
        ("/nowhere/flipcause/{north}", None),  # unknown organization, even with a real secret
        ("/south/flipcause/{north}", None),  # another organization's secret
        ("/north/flipcause/wrong-secret-000000000", None),
        ("/north/flipcause", "wrong-secret-000000000"),  # wrong header secret: 404, not 401
        ("/north/flipcause", None),
        ("/north/other", None),
        ("/north", None),
        ("/", None),
    ],
)
def test_every_miss_is_the_same_plain_404_and_stores_nothing(
    app: FleetReceiver, fb: FleetBox, path: str, header: str | None
) -> None:
    headers = {"X-Flipsync-Secret": header} if header else None
    status, data, hdrs = call(
        app, "POST", path.format(north=fb.secrets["north"]), body_of("eve@x.example"), headers
    )
    assert (status, data) == (404, b'{"error":"not found"}')
    assert "Allow" not in hdrs
    assert stored(fb, "north") == [] and stored(fb, "south") == []


def test_limits_are_those_of_the_single_receiver(app: FleetReceiver, fb: FleetBox) -> None:
    path = f"/north/flipcause/{fb.secrets['north']}"
    status, _, _ = call(app, "POST", path, b"x" * (300 * 1024))
    assert status == 413
    assert call(app, "POST", path, b"not json")[0] == 400
    assert call(app, "GET", path)[0] == 405


def test_healthz_shows_every_state_db(app: FleetReceiver) -> None:
    status, data, _ = call(app, "GET", "/healthz")
    assert status == 200
    body = json.loads(data)
    assert body == {
        "status": "ok",
        "organizations": {"north": {"state_db": "writable"}, "south": {"state_db": "writable"}},
    }


def test_metrics_per_organization_in_prometheus_text(app: FleetReceiver, fb: FleetBox) -> None:
    call(app, "POST", f"/north/flipcause/{fb.secrets['north']}", body_of("a@b.example"))
    status, data, headers = call(app, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = data.decode()
    assert 'flipsync_backlog_records{organization="north"} 1.0' in text
    assert 'flipsync_backlog_records{organization="south"} 0.0' in text
    assert 'flipsync_budget_used_requests{organization="north"} 0.0' in text
    assert "flipsync_key_budget_requests 10000.0" in text
    assert 'flipsync_token_days_left{organization="south"}' in text
    assert fb.secrets["north"] not in text


def test_reload_adds_and_removes_orgs_while_webhooks_arrive(
    app: FleetReceiver, fb: FleetBox
) -> None:
    north = fb.secrets["north"]
    answers: list[int] = []
    stop = threading.Event()

    def post_forever() -> None:
        i = 0
        while not stop.is_set() or i < 20:
            answers.append(
                call(app, "POST", f"/north/flipcause/{north}", body_of(f"n{i}@north.example"))[0]
            )
            i += 1

    poster = threading.Thread(target=post_forever)
    poster.start()
    try:
        fb.add("east")
        assert app.reload() == {}
        east = fb.secrets["east"]
        assert call(app, "POST", f"/east/flipcause/{east}", body_of("e@east.example"))[0] == 200
        (fb.root / "orgs" / "south" / "flipsync.yaml").unlink()
        app.reload()
    finally:
        stop.set()
        poster.join()
    assert app.organizations() == ["east", "north"]
    assert set(answers) == {200}
    assert len(stored(fb, "north")) == len(answers)
    assert stored(fb, "east") == ["e@east.example"]
    south = fb.secrets["south"]
    assert call(app, "POST", f"/south/flipcause/{south}", body_of("s@x.example"))[0] == 404


def test_a_broken_config_on_reload_keeps_serving_that_org(app: FleetReceiver, fb: FleetBox) -> None:
    (fb.root / "orgs" / "south" / "flipsync.yaml").write_text("policy: [\n", encoding="utf-8")
    problems = app.reload()
    assert list(problems) == ["south"]
    south = fb.secrets["south"]
    assert call(app, "POST", f"/south/flipcause/{south}", body_of("s@x.example"))[0] == 200
    assert json.loads(call(app, "GET", "/healthz")[1])["organizations"]["south"]["config"]


def _post(port: int, path: str, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_sighup_adds_an_org_while_webhooks_arrive(fb: FleetBox) -> None:
    """The real server in its own process: SIGHUP while one org's webhooks keep coming."""
    fb.add("north")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flipsync",
            "fleet",
            "--fleet",
            str(fb.root),
            "serve",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://" in line, line + (proc.stderr.read() if proc.stderr else "")
        port = int(line.split("http://", 1)[1].split()[0].rsplit(":", 1)[1])
        north = fb.secrets["north"]
        answers: list[int] = []
        stop = threading.Event()

        def post_forever() -> None:
            i = 0
            while not stop.is_set():
                answers.append(
                    _post(port, f"/north/flipcause/{north}", body_of(f"n{i}@north.example"))
                )
                i += 1

        poster = threading.Thread(target=post_forever)
        poster.start()
        try:
            fb.add("east")
            east_path = f"/east/flipcause/{fb.secrets['east']}"
            assert _post(port, east_path, body_of("before@east.example")) == 404
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            status = 404
            while status == 404 and time.monotonic() < deadline:
                status = _post(port, east_path, body_of("e@east.example"))  # paced by the request
            assert status == 200
        finally:
            stop.set()
            poster.join()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert answers and set(answers) == {200}
    assert len(stored(fb, "north")) == len(answers)
    assert stored(fb, "east") == ["e@east.example"]


def test_fleet_run_writes_the_textfile_and_the_alert_rules_use_real_metrics(
    fb: FleetBox,
) -> None:
    import re

    import yaml
    from click.testing import CliRunner

    from flipsync.cli import cli

    fb.write_fleet(metrics={"textfile": "metrics/flipsync.prom"})
    fb.add("north")
    fb.ingest("north", [])
    result = CliRunner().invoke(cli, ["fleet", "--fleet", str(fb.root), "run"])
    assert result.exit_code == 0, result.output
    text = (fb.root / "metrics" / "flipsync.prom").read_text()
    assert 'flipsync_runs_total{organization="north",result="idle"} 1.0' in text
    assert 'flipsync_seconds_since_last_good_run{organization="north"}' in text
    exposed = set(re.findall(r"^(flipsync_\w+?)(?:\{| )", text, re.MULTILINE))
    rules = yaml.safe_load((ROOT / "contrib" / "fleet" / "flipsync-alerts.yml").read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"flipsync_\w+", rule["expr"])
    }
    assert used and used <= exposed, used - exposed


def test_metrics_are_rendered_at_most_once_per_ttl() -> None:
    from flipsync.metrics import CachedMetrics

    now = [100.0]
    renders: list[bytes] = []

    def produce() -> bytes:
        renders.append(f"n {len(renders)}\n".encode())
        return renders[-1]

    cached = CachedMetrics(produce, ttl=15, monotonic=lambda: now[0])
    assert cached() == b"n 0\n"
    now[0] += 14.9
    assert cached() == b"n 0\n"
    now[0] += 0.1
    assert cached() == b"n 1\n"
    assert len(renders) == 2


def test_an_org_removed_mid_request_still_stores_it_then_its_writer_closes(
    app: FleetReceiver, fb: FleetBox
) -> None:
    body = body_of("late@south.example")
    reading, release = threading.Event(), threading.Event()

    class SlowBody(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            reading.set()
            assert release.wait(10)
            return super().read(size)

    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"/south/flipcause/{fb.secrets['south']}",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": SlowBody(body),
    }
    got: dict[str, str] = {}

    def request() -> None:
        app(environ, lambda status, headers, exc_info=None: got.update(status=status))

    (south_route,) = [r for n, r in app._routes.items() if n == "south"]
    worker = threading.Thread(target=request)
    worker.start()
    assert reading.wait(10)
    (fb.root / "orgs" / "south" / "flipsync.yaml").unlink()
    app.reload()  # south is gone from the routes while its request is in flight
    assert app.organizations() == ["north"]
    assert not south_route.receiver.writer.closed
    release.set()
    worker.join(10)
    assert got["status"].startswith("200")
    assert stored(fb, "south") == ["late@south.example"]
    assert south_route.receiver.writer.closed  # closed by its last request, not before


def test_a_new_org_pointing_at_anothers_state_db_is_refused_and_the_other_kept(
    app: FleetReceiver, fb: FleetBox
) -> None:
    fb.add("copycat", state_file="../north/state/north.db")
    problems = app.reload()
    assert "is also copycat's" in " ".join(problems["north"])
    assert "is also north's" in " ".join(problems["copycat"])
    assert app.organizations() == ["north", "south"]
    north = fb.secrets["north"]
    assert call(app, "POST", f"/north/flipcause/{north}", body_of("n@north.example"))[0] == 200
    copycat = fb.secrets["copycat"]
    assert call(app, "POST", f"/copycat/flipcause/{copycat}", body_of("c@x.example"))[0] == 404
    assert stored(fb, "north") == ["n@north.example"]


def _events(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]


def test_a_refused_webhook_logs_its_known_organization_never_the_secret_or_an_unknown_name(
    app: FleetReceiver, fb: FleetBox, capsys: pytest.CaptureFixture[str]
) -> None:
    from flipsync import logs

    north = fb.secrets["north"]
    logs.configure("info", "json")
    try:
        capsys.readouterr()
        assert (
            call(app, "POST", "/north/flipcause/wrong-secret-000000000", body_of("e@x.io"))[0]
            == 404
        )
        call(app, "POST", "/north/flipcause", body_of("e@x.io"), {"X-Flipsync-Secret": "nope-1234"})
        call(app, "POST", f"/attacker-text/flipcause/{north}", body_of("e@x.io"))
        events = _events(capsys)
    finally:
        logs.configure("warning", "console")
    refused = [e for e in events if e["event"] == "webhook_unauthorized"]
    assert [(e["organization"], e["form"]) for e in refused] == [
        ("north", "path"),
        ("north", "header"),
    ]
    text = json.dumps(events)
    assert "attacker-text" not in text and north not in text and "wrong-secret" not in text


def test_reload_logs_kept_on_old_config_apart_from_not_served(
    app: FleetReceiver, fb: FleetBox, capsys: pytest.CaptureFixture[str]
) -> None:
    from flipsync import logs

    (fb.root / "orgs" / "south" / "flipsync.yaml").write_text("policy: [\n", encoding="utf-8")
    fb.add("west")
    (fb.root / "orgs" / "west" / "flipsync.yaml").write_text("policy: [\n", encoding="utf-8")
    fb.add("east")
    logs.configure("info", "json")
    try:
        capsys.readouterr()
        assert sorted(app.reload()) == ["south", "west"]
        events = _events(capsys)
    finally:
        logs.configure("warning", "console")
    by_event: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_event.setdefault(e["event"], []).append(e)
    (failed,) = by_event["fleet_org_reload_failed"]
    assert failed["organization"] == "south" and failed["kept"] == "last good config"
    assert failed["problems"] and failed["level"] == "warning"
    (not_served,) = by_event["fleet_org_not_served"]
    assert not_served["organization"] == "west"
    (reloaded,) = by_event["fleet_reloaded"]
    assert reloaded["level"] == "info"
    assert reloaded["added"] == ["east"] and reloaded["removed"] == []
    assert reloaded["kept_on_old_config"] == ["south"] and reloaded["not_served"] == ["west"]
    assert app.organizations() == ["east", "north", "south"]
