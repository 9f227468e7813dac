"""Transport: https to Constant Contact, secrets out of proxy logs, /healthz under slow clients."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flipsync.errors import ConfigError
from tests.helpers import config_dict, payload, settings_from, write_config

ROOT = Path(__file__).resolve().parent.parent
SECRET = secrets.token_urlsafe(24)


# -- https to Constant Contact --------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api.cc.email/v3",
        "http://127.0.0.1:8765/v3",
        "http://127.8.9.10/v3",
        "http://localhost:9/v3",
        "http://[::1]:9/v3",
    ],
)
def test_https_or_loopback_base_urls_are_accepted(tmp_path: Path, url: str) -> None:
    cc = {"api_base_url": url, "oauth_base_url": url.replace("/v3", "/oauth")}
    settings = settings_from(config_dict(constant_contact=cc), tmp_path)
    assert settings.constant_contact.api_base_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://api.cc.email/v3",
        "http://10.0.0.5/v3",
        "http://128.0.0.1/v3",
        "http://localhost.example.org/v3",
        "http://[::2]/v3",
    ],
)
def test_plain_http_to_another_host_is_a_config_error_naming_the_key(
    tmp_path: Path, url: str
) -> None:
    cc = {"api_base_url": url, "oauth_base_url": url}
    with pytest.raises(ConfigError) as info:
        settings_from(config_dict(constant_contact=cc), tmp_path)
    problems = info.value.problems
    assert len(problems) == 2
    for key, problem in zip(("api_base_url", "oauth_base_url"), problems, strict=True):
        assert problem.startswith(f"`constant_contact.{key}`: must be an https URL")
        assert "only for loopback addresses (127.0.0.0/8, ::1, localhost)" in problem


# -- slow clients cannot starve /healthz ----------------------------------------------------


@contextmanager
def serving(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """A real `flipsync serve` on 127.0.0.1 (port 0): (port, process); stopped afterwards."""
    path = write_config(tmp_path, config_dict(intake={"webhook_secret_env": "T_SECRET"}))
    server = subprocess.Popen(
        [sys.executable, "-m", "flipsync", "-c", str(path), "serve", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "T_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        yield int(line.rsplit(":", 1)[1]), server
    finally:
        stop(server)


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[int]:
    with serving(tmp_path) as (port, _):
        yield port


def test_healthz_answers_within_a_second_beside_200_idle_half_sent_connections(
    served: int,
) -> None:
    """200 clients that send half a request and go quiet do not keep /healthz waiting."""
    idle: list[socket.socket] = []
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", served), timeout=5)
            sock.sendall(
                b"POST /flipcause HTTP/1.1\r\nHost: hooks\r\nContent-Length: 5000\r\n"
            )  # headers never finished
            idle.append(sock)
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", served, timeout=1.0)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read()
        elapsed = time.monotonic() - started
        conn.close()
    finally:
        for sock in idle:
            sock.close()
    assert response.status == 200, body
    assert elapsed < 1.0


# -- the shipped nginx config keeps the secret out of every log -----------------------------

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shipped_nginx_config(tmp: Path, *, http_port: int, https_port: int, upstream: int) -> Path:
    """contrib/nginx-flipsync.conf with only ports, log and certificate paths changed."""
    text = (ROOT / "contrib" / "nginx-flipsync.conf").read_text(encoding="utf-8")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"),
            *("-subj", "/CN=hooks.example.org", "-keyout", str(tmp / "key.pem")),
            *("-out", str(tmp / "cert.pem")),
        ],
        check=True,
        capture_output=True,
    )
    changes = {
        "/var/log/nginx/": f"{tmp}/logs/",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "/etc/letsencrypt/live/hooks.example.org/fullchain.pem": str(tmp / "cert.pem"),
        "/etc/letsencrypt/live/hooks.example.org/privkey.pem": str(tmp / "key.pem"),
        "proxy_pass http://127.0.0.1:8787/;": f"proxy_pass http://127.0.0.1:{upstream}/;",
    }
    for old, new in changes.items():
        assert old in text, f"the shipped config changed: {old!r} is gone; update this test"
        text = text.replace(old, new)
    text = "\n".join(line for line in text.splitlines() if "listen [::]" not in line)
    (tmp / "logs").mkdir()
    (tmp / "temp").mkdir()
    (tmp / "flipsync.conf").write_text(text, encoding="utf-8")
    main = tmp / "nginx.conf"
    temp = {name: tmp / "temp" / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp}/nginx.pid;\n"
        # The global error log at a chatty level: it must not get the secret either.
        + f"error_log {tmp}/logs/global-error.log info;\n"
        + "events { worker_connections 64; }\n"
        + "http {\n"
        + f"  access_log {tmp}/logs/global-access.log;\n"
        + "".join(f"  {name}_temp_path {path};\n" for name, path in temp.items()).replace(
            "body_temp_path", "client_body_temp_path"
        )
        + f"  include {tmp}/flipsync.conf;\n"
        + "}\n",
        encoding="utf-8",
    )
    return main


def wait_for_port(port: int, process: subprocess.Popen[str]) -> None:
    for _ in range(200):  # bounded: 10 s at most
        if process.poll() is not None:
            raise AssertionError(f"nginx exited: {process.stderr.read() if process.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def https_post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request(
            "POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        conn.close()


@pytest.mark.skipif(
    NGINX is None or shutil.which("openssl") is None,
    reason="nginx (and openssl) not installed; to run this test: apt-get install -y nginx openssl",
)
def test_shipped_nginx_config_keeps_the_secret_out_of_every_log(tmp_path: Path) -> None:
    """Stored, too large, receiver down, bad request, plain http: no log line holds the secret."""
    assert NGINX is not None
    http_port, https_port = free_port(), free_port()
    with serving(tmp_path) as (upstream, receiver):
        main = shipped_nginx_config(
            tmp_path, http_port=http_port, https_port=https_port, upstream=upstream
        )
        nginx = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(main), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_port(https_port, nginx)
            body = json.dumps(payload(webhook_record_id="via-nginx")).encode()
            header = {"X-Flipsync-Secret": SECRET}
            statuses = [
                https_post(https_port, "/example-food-bank/flipcause", body, header)[0],
                https_post(https_port, f"/example-food-bank/flipcause/{SECRET}", body)[0],
                https_post(https_port, f"/example-food-bank/flipcause/{SECRET}", b"x" * 300_000)[0],
            ]
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
            conn.request("POST", f"/example-food-bank/flipcause/{SECRET}", body=body)
            redirect = conn.getresponse()
            redirect.read()
            conn.close()
            with socket.create_connection(("127.0.0.1", http_port), timeout=10) as raw:
                raw.sendall(
                    f"P\x01ST /example-food-bank/flipcause/{SECRET} HTTP/1.1\r\n\r\n".encode()
                )
                bad_request = raw.recv(100)
            stop(receiver)  # the receiver is down: nginx answers 502 and logs an error
            statuses.append(
                https_post(https_port, f"/example-food-bank/flipcause/{SECRET}", body)[0]
            )
            statuses.append(https_post(https_port, "/example-food-bank/flipcause", body, header)[0])
        finally:
            stop(nginx, signal.SIGQUIT)  # graceful: every log is flushed and closed
    logs = {
        p.name: p.read_text(encoding="utf-8", errors="replace")
        for p in (tmp_path / "logs").iterdir()
    }
    assert nginx.stderr is not None
    logs["stderr"] = nginx.stderr.read()
    for name, text in logs.items():
        assert SECRET not in text, f"the secret is in {name}"
    access = logs["flipsync-access.log"]
    for status in (" 200 ", " 413 ", " 502 ", " 301 "):
        assert status in access, access
    assert "upstream=502" in access or "upstream=-" in access
    assert statuses == [200, 200, 413, 502, 502]
    assert redirect.status == 301 and SECRET not in redirect.getheader("Location", "")
    assert bad_request.startswith(b"HTTP/1.1 400")


def test_shipped_caddyfile_logs_no_uri_and_no_failed_request() -> None:
    """No site-level access log (URIs, headers); the error loggers that quote requests are out."""
    text = (ROOT / "contrib" / "Caddyfile").read_text(encoding="utf-8")
    config = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    assert "exclude http.log.error http.handlers.reverse_proxy" in config
    logs = [line for line in config if line.split(" ", 1)[0] == "log"]
    assert logs == ["log default {"]  # only the global default logger, never an access log
    caddy = shutil.which("caddy")
    if caddy is not None:  # when Caddy is installed, it must also accept the file
        adapted = subprocess.run(
            [caddy, "adapt", "--config", str(ROOT / "contrib" / "Caddyfile")],
            capture_output=True,
            text=True,
            check=True,
        )
        default = json.loads(adapted.stdout)["logging"]["logs"]["default"]
        assert "http.log.error" in default["exclude"]
