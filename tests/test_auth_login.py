"""`flipsync auth login` and `auth status` end to end against the sandbox's OAuth server.

The approved device flow runs as a real process: the test reads the prompt from its output,
approves the printed user code on the sandbox (as the person would in a browser) and waits
for the token file. The denied one runs in process on a virtual clock, the person denying
the code while the CLI waits between polls. The authorization-code flow (`--code`) runs through the CLI with a confidential
client whose secret comes from the environment variable the config names.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from flipsync.clock import VirtualClock
from flipsync.ctct.auth import read_token_file, write_token_file
from flipsync.ctct.types import TokenSet
from flipsync.errors import ExitCode
from flipsync.sandbox import SandboxConfig
from tests.conftest import Org
from tests.helpers import payload
from tests.sandbox_fixture import FAST_CONFIG

# The client polls at least once a second; a 1 s interval keeps a login near one second.
DEVICE = replace(FAST_CONFIG, device_interval=1, device_expires_in=30)
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TOKEN_KEYS = {"access_token", "refresh_token", "token_type", "scope", "expires_at", "obtained_at"}
CONFIDENTIAL = "flipsync-confidential"
SECRET = "s3cret-Value-for-tests"
SECRET_ENV = "FLIPSYNC_TEST_CLIENT_SECRET"


def token_file(org: Org) -> Path:
    return org.settings().constant_contact.token_file


def assert_documented_token_file(path: Path, lifetime: int) -> dict[str, Any]:
    """0600, exactly the documented keys, UTC timestamps, a JWT and a refresh token."""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) == TOKEN_KEYS
    assert data["token_type"] == "Bearer"
    assert data["scope"].split() == ["contact_data", "offline_access"]
    assert data["access_token"].count(".") == 2 and data["refresh_token"]
    assert ISO_Z.match(data["expires_at"]) and ISO_Z.match(data["obtained_at"])
    issued = datetime.fromisoformat(data["obtained_at"])
    assert datetime.fromisoformat(data["expires_at"]) - issued == timedelta(seconds=lifetime)
    assert abs(datetime.now(UTC) - issued) < timedelta(minutes=1)
    return data


def login_by_device(org: Org, *, approve: bool = True) -> tuple[int, str]:
    """Run `flipsync auth login` as a process; approve (or deny) the code it prints."""
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flipsync", "-c", str(org.config_path), "auth", "login"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r"enter the code (\S+)", line)
            if found:
                assert found.group(1) in org.sandbox.pending_user_codes()
                if approve:
                    org.sandbox.approve_device(found.group(1))
                else:
                    org.sandbox.deny_device(found.group(1))
                break
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + rest


@pytest.mark.parametrize("sandbox_config", [DEVICE], ids=["device-interval-1s"])
@pytest.mark.real_http  # `flipsync auth login` runs as a subprocess polling a real port
def test_device_login_writes_token_file_and_next_run_uses_it(
    org: Org, sandbox_config: SandboxConfig
) -> None:
    """Device flow via the CLI: prompt, approval, a 0600 token file in the documented format, a run."""
    path = token_file(org)
    path.unlink()
    org.ingest([payload("after-login@example.org")])
    before = org.cli("run")
    assert before.exit_code == ExitCode.REAUTH
    assert "flipsync auth login" in before.output
    assert org.api_requests() == []

    code, output = login_by_device(org)
    assert code == 0, output
    assert "Open http://127.0.0.1:" in output and "/activate" in output
    assert f"token set written to {path} (mode 0600)" in output
    data = assert_documented_token_file(path, sandbox_config.token_lifetime_seconds)
    assert data["access_token"] not in output and data["refresh_token"] not in output

    device = [e for e in org.sandbox.request_log() if e.path.endswith("/device/authorize")]
    assert len(device) == 1 and device[0].form is not None
    assert device[0].form["client_id"] == "flipsync-sandbox"
    assert "offline_access" in device[0].form["scope"].split()

    after = org.cli("run")
    assert after.exit_code == 0, after.output
    contact = org.contact("after-login@example.org")
    assert contact is not None and org.list_names(contact) == {"Donors"}
    assert read_token_file(path).access_token == data["access_token"]  # used as is, no refresh


@pytest.mark.parametrize("sandbox_config", [DEVICE], ids=["device-interval-1s"])
@pytest.mark.real_http  # `flipsync auth login` runs as a subprocess polling a real port
def test_denied_device_login_exits_6_and_writes_nothing(
    org: Org, sandbox_config: SandboxConfig
) -> None:
    """A code denied in the browser: exit code 6, a message saying to log in again, no token file."""
    path = token_file(org)
    path.unlink()
    box = org.sandbox

    class DeniedWhileWaiting(VirtualClock):
        """The person denies the code while the CLI waits between polls."""

        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            for user_code in box.pending_user_codes():
                box.deny_device(user_code)

    org.clock = DeniedWhileWaiting()
    result = org.cli("auth", "login")
    assert result.exit_code == ExitCode.REAUTH, result.output
    assert "enter the code" in result.output
    assert (
        "denied" in result.output and f"flipsync -c {org.config_path} auth login" in result.output
    )
    assert not path.exists()


def confidential(org: Org) -> None:
    """Point the organization at a registered confidential client whose secret is in the env."""
    org.sandbox.register_client(CONFIDENTIAL, secret=SECRET)
    org.write_config(constant_contact={"client_id": CONFIDENTIAL, "client_secret_env": SECRET_ENV})
    token_file(org).unlink()


def cli_with_secret(org: Org, *args: str, secret: str | None = SECRET) -> Result:
    env = {SECRET_ENV: secret} if secret is not None else {SECRET_ENV: ""}
    return org.cli(*args, env=env)


def test_code_login_without_the_secret_stops_before_the_browser(org: Org) -> None:
    """--print-url and --code with no secret: exit 2 naming the key and the device login."""
    confidential(org)
    for args in (("--print-url",), ("--code", "some-code")):
        result = cli_with_secret(org, "auth", "login", *args, secret=None)
        assert result.exit_code == ExitCode.CONFIG, result.output
        assert f"{SECRET_ENV} (constant_contact.client_secret_env) is not set" in result.output
        assert "device flow" in result.output
    org.write_config(constant_contact={"client_id": CONFIDENTIAL})  # no variable named at all
    result = org.cli("auth", "login", "--print-url")
    assert result.exit_code == ExitCode.CONFIG
    assert "constant_contact.client_secret_env is not set" in result.output
    assert org.sandbox.request_log() == []


def test_code_login_with_client_secret_writes_token_file(org: Org) -> None:
    """--code: exchanged with HTTP Basic client auth; 0600 token file; the next run refreshes with it."""
    confidential(org)
    url = cli_with_secret(org, "auth", "login", "--print-url")
    assert url.exit_code == 0
    assert url.output.startswith(org.running.oauth_base_url + "/authorize?")
    for part in (
        f"client_id={CONFIDENTIAL}",
        "redirect_uri=https%3A%2F%2Flocalhost",
        "response_type=code",
        "scope=contact_data%20offline_access",
    ):
        assert part in url.output

    code = org.sandbox.issue_auth_code(CONFIDENTIAL, "https://localhost")
    result = cli_with_secret(org, "auth", "login", "--code", code)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    path = token_file(org)
    data = assert_documented_token_file(path, org.sandbox.config.token_lifetime_seconds)
    (exchange,) = [e for e in org.sandbox.request_log() if e.path.endswith("/token")]
    assert exchange.form is not None
    assert exchange.form["grant_type"] == "authorization_code"
    assert exchange.form["redirect_uri"] == "https://localhost"
    assert "client_secret" not in exchange.form  # sent as HTTP Basic, never in the body

    # The access token expires: the run refreshes with the secret and saves the new set.
    org.sandbox.expire_access_tokens()
    org.ingest([payload("coded@example.org")])
    run = cli_with_secret(org, "run")
    assert run.exit_code == 0, run.output
    assert org.contact("coded@example.org") is not None
    refreshed = read_token_file(path)
    assert refreshed.refresh_token != data["refresh_token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_code_login_refused_or_without_secret(org: Org) -> None:
    """A used code exits 6 with the login advice; no secret in the env exits 2 naming it."""
    confidential(org)
    code = org.sandbox.issue_auth_code(CONFIDENTIAL, "https://localhost")
    assert cli_with_secret(org, "auth", "login", "--code", code).exit_code == 0
    again = cli_with_secret(org, "auth", "login", "--code", code)
    assert again.exit_code == ExitCode.REAUTH
    assert (
        "invalid_grant" in again.output
        and f"flipsync -c {org.config_path} auth login" in again.output
    )

    fresh = org.sandbox.issue_auth_code(CONFIDENTIAL, "https://localhost")
    missing = cli_with_secret(org, "auth", "login", "--code", fresh, secret=None)
    assert missing.exit_code == ExitCode.CONFIG
    assert "client_secret" in missing.output


def test_auth_status_reports_expiry_without_tokens(org: Org) -> None:
    """auth status: expiry times and days left from the token file, never a token value."""
    path = token_file(org)
    tokens = read_token_file(path)
    result = org.cli("auth", "status", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["access_token_expires_at"] == json.loads(path.read_text())["expires_at"]
    assert info["access_token_expired"] is False
    assert 86000 < info["access_token_seconds_left"] <= 86400
    assert info["offline_access"] is True
    assert info["refresh_token_days_left"] == pytest.approx(180, abs=0.1)
    assert tokens.access_token not in result.output and tokens.refresh_token not in result.output

    now = datetime.now(UTC)
    stale = TokenSet(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        token_type="Bearer",
        scope="contact_data",
        expires_at=now - timedelta(hours=1),
        obtained_at=now - timedelta(days=170),
    )
    write_token_file(path, stale)
    text = org.cli("auth", "status")
    assert text.exit_code == 0
    assert "access_token_expired: True" in text.output
    assert "offline_access: False" in text.output
    assert "refresh_token_days_left: 10.0" in text.output

    path.unlink()
    missing = org.cli("auth", "status")
    assert missing.exit_code == ExitCode.REAUTH
    assert f"flipsync -c {org.config_path} auth login" in missing.output
