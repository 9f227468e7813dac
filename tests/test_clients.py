"""Every way flipsync reaches Constant Contact builds its client settings in one place.

`auth login` used to build its own ClientSettings and dropped requests_per_second; now a
run's client and a login get the same value from `flipsync.clients.client_settings`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import flipsync.ctct.auth
from flipsync.cli import build_client, cli
from flipsync.clients import client_settings
from flipsync.ctct.types import ClientSettings, TokenSet
from tests.helpers import config_dict, settings_from, write_config

SECRET_ENV = "FLIPSYNC_TEST_CLIENTS_SECRET"
TUNED = {
    "requests_per_second": 2.5,
    "timeout_seconds": 12.0,
    "client_secret_env": SECRET_ENV,
}


def tuned_config(tmp_path: Path) -> dict[str, Any]:
    data = config_dict(constant_contact=TUNED)
    data["constant_contact"]["token_file"] = str(tmp_path / "tokens.json")
    return data


def test_client_settings_carry_every_configured_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rate, timeout, token file and the secret (from its env var) all reach the client."""
    monkeypatch.setenv(SECRET_ENV, "shh")
    settings = settings_from(tuned_config(tmp_path), tmp_path)
    wanted = client_settings(settings)
    assert wanted.requests_per_second == 2.5
    assert wanted.timeout_seconds == 12.0
    assert wanted.client_secret == "shh"
    assert wanted.token_file == tmp_path / "tokens.json"
    assert wanted.client_id == settings.constant_contact.client_id
    assert build_client(settings).settings == wanted


def test_login_uses_the_same_client_settings_as_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`auth login` hands the device flow the run's client settings, rate included."""
    monkeypatch.setenv(SECRET_ENV, "shh")
    config = write_config(tmp_path, tuned_config(tmp_path))
    seen: list[ClientSettings] = []
    now = datetime.now(UTC)

    def device_login(settings: ClientSettings, session: Any, **kwargs: Any) -> TokenSet:
        seen.append(settings)
        return TokenSet("access", "refresh", "Bearer", "contact_data", now + timedelta(1), now)

    monkeypatch.setattr(flipsync.ctct.auth, "device_login", device_login)
    result = CliRunner().invoke(cli, ["-c", str(config), "auth", "login"])
    assert result.exit_code == 0, result.output
    [used] = seen
    assert used.requests_per_second == 2.5
    assert used == client_settings(settings_from(tuned_config(tmp_path), tmp_path))
    assert (tmp_path / "tokens.json").exists()
