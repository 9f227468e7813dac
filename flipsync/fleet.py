"""The fleet directory: many organizations of one application key on one machine.

Layout (everything under one directory, the "fleet")::

    fleet.yaml                      the key's budget, cadence, receiver, metrics, concurrency
    orgs/<name>/flipsync.yaml       each organization's config, exactly as for `flipsync run`
    orgs/<name>/flipsync.env        its secrets as NAME=value lines (0600): the webhook secret
    orgs/<name>/state/...           its state DB, token file and lock (as its config says)
    fleet-state.json                the scheduler's memory: last slot, results, counters (0600)

An organization is a directory under ``orgs/`` holding a ``flipsync.yaml``; adding or
removing one is adding or removing that directory. Each keeps its own state file, token
file and lock (invariant 6), so a fleet is only a way to run them together: nothing in an
organization's config changes meaning because it runs in a fleet.

This module owns the layout, ``fleet.yaml`` and loading organizations with their env file.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flipsync.config import (
    PLACEHOLDER_RE,
    Settings,
    load_settings,
    placeholder_problems,
    read_yaml,
)
from flipsync.errors import ConfigError, FlipsyncError, InputError, with_config

FLEET_FILE = "fleet.yaml"
ORGS_DIR = "orgs"
ORG_CONFIG = "flipsync.yaml"
ORG_ENV = "flipsync.env"
STATE_FILE = "fleet-state.json"
WEBHOOK_SECRET_ENV = "FLIPSYNC_WEBHOOK_SECRET"  # noqa: S105 - an env var name, not a secret
# A path segment of the webhook URL and a label in metrics: lowercase letters, digits, dashes.
ORG_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
FLEET_KEYS = (
    "application_key",
    "daily_request_budget",
    "requests_per_second",
    "budget_file",
    "env_dir",
    "cadence_minutes",
    "minimum_daily_requests_per_org",
    "max_concurrent_orgs",
    "receiver",
    "metrics",
    "organizations",
)
RECEIVER_KEYS = ("host", "port", "public_url", "max_body_bytes")
METRICS_KEYS = ("textfile",)
ORG_OVERRIDE_KEYS = ("cadence_minutes",)


@dataclass(frozen=True)
class ReceiverSettings:
    """Where `flipsync fleet serve` listens and the public URL Flipcause posts to."""

    host: str = "127.0.0.1"
    port: int = 8787
    public_url: str = "https://flipsync.example.org"
    max_body_bytes: int = 256 * 1024


@dataclass(frozen=True)
class FleetSettings:
    """What ``fleet.yaml`` says, validated. One fleet serves one application key."""

    root: Path
    application_key: str
    daily_request_budget: int = 10_000
    requests_per_second: float = 4.0
    budget_file: Path | None = None
    env_dir: Path | None = None
    cadence_minutes: int = 15
    minimum_daily_requests_per_org: int = 10
    max_concurrent_orgs: int = 4
    receiver: ReceiverSettings = field(default_factory=ReceiverSettings)
    metrics_textfile: Path | None = None
    cadence_overrides: Mapping[str, int] = field(default_factory=dict)

    @property
    def orgs_dir(self) -> Path:
        """Where the organizations' directories are."""
        return self.root / ORGS_DIR

    @property
    def state_path(self) -> Path:
        """The scheduler's memory (last slot, results and counters per organization)."""
        return self.root / STATE_FILE

    def org_dir(self, name: str) -> Path:
        """One organization's directory."""
        return self.orgs_dir / name

    def env_file(self, name: str) -> Path:
        """The organization's secrets: ``orgs/<name>/flipsync.env``, or ``<env_dir>/<name>.env``.

        ``env_dir`` lets the secrets live apart from configs and state (a Kubernetes Secret
        mounted as a directory, one key per organization).
        """
        if self.env_dir is not None:
            return self.env_dir / f"{name}.env"
        return self.org_dir(name) / ORG_ENV

    @property
    def key_budget_file(self) -> Path:
        """The key's one budget file: ``budget_file``, else the machine's default for the key.

        The default is the file single-organization runs of the key use too, so a fleet and
        any `flipsync run` of the same key beside it share one limiter.
        """
        from flipsync.ctct.budget import default_budget_file

        return self.budget_file or default_budget_file(self.application_key)

    def cadence_for(self, name: str) -> int:
        """The organization's cadence in minutes (its override, else the fleet's default)."""
        return int(self.cadence_overrides.get(name, self.cadence_minutes))

    def webhook_url(self, name: str, secret: str) -> str:
        """The URL to paste into Flipcause for one organization."""
        return f"{self.receiver.public_url.rstrip('/')}/{name}/flipcause/{secret}"


def _problem(problems: list[str], path: str, message: str) -> None:
    problems.append(f"`{path}`: {message}")


def _int_in(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _only(raw: Any, path: str, allowed: tuple[str, ...], problems: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        _problem(problems, path or "fleet.yaml", "must be a mapping")
        return {}
    for key in raw:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            _problem(problems, where, f"unknown key; allowed: {', '.join(allowed)}")
    return raw


def _resolve(root: Path, value: Any) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else root / path


def parse_fleet(raw: Any, root: Path) -> FleetSettings:
    """Validate ``fleet.yaml`` data; one ConfigError naming every bad key and its fix."""
    problems: list[str] = []
    top = _only(raw, "", FLEET_KEYS, problems)
    key = top.get("application_key")
    if not isinstance(key, str) or not key.strip():
        _problem(
            problems,
            "application_key",
            "missing; the application's API key (client id) that every organization uses",
        )
        key = ""
    ints = {
        "daily_request_budget": (1, 10_000_000, 10_000),
        "cadence_minutes": (1, 24 * 60, 15),
        "minimum_daily_requests_per_org": (0, 1_000_000, 10),
        "max_concurrent_orgs": (1, 64, 4),
    }
    values: dict[str, int] = {}
    for name, (low, high, default) in ints.items():
        got = top.get(name, default)
        checked = _int_in(got, low, high)
        if checked is None:
            _problem(problems, name, f"must be a whole number from {low} to {high}, got {got!r}")
            checked = default
        values[name] = checked
    rate = top.get("requests_per_second", 4)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 4:
        _problem(problems, "requests_per_second", f"must be above 0 and at most 4, got {rate!r}")
        rate = 4
    rec = _only(top.get("receiver"), "receiver", RECEIVER_KEYS, problems)
    port = _int_in(rec.get("port", 8787), 0, 65535)
    if port is None:
        _problem(problems, "receiver.port", f"must be a port number, got {rec.get('port')!r}")
        port = 8787
    body = _int_in(rec.get("max_body_bytes", 256 * 1024), 1024, 64 * 1024 * 1024)
    if body is None:
        _problem(problems, "receiver.max_body_bytes", "must be a size in bytes (1024 or more)")
        body = 256 * 1024
    public = str(rec.get("public_url", ReceiverSettings.public_url))
    if not re.match(r"^https?://[^/\s]+", public):
        _problem(
            problems, "receiver.public_url", "must be an http(s) URL (what Flipcause posts to)"
        )
    met = _only(top.get("metrics"), "metrics", METRICS_KEYS, problems)
    overrides: dict[str, int] = {}
    orgs_raw = top.get("organizations") or {}
    if not isinstance(orgs_raw, dict):
        _problem(problems, "organizations", "must be a mapping of organization name to overrides")
        orgs_raw = {}
    for name, extra in orgs_raw.items():
        d = _only(extra, f"organizations.{name}", ORG_OVERRIDE_KEYS, problems)
        if "cadence_minutes" in d:
            minutes = _int_in(d["cadence_minutes"], 1, 24 * 60)
            if minutes is None:
                _problem(
                    problems,
                    f"organizations.{name}.cadence_minutes",
                    "must be a whole number of minutes from 1 to 1440",
                )
            else:
                overrides[str(name)] = minutes
    if problems:
        raise ConfigError(str(root / FLEET_FILE), problems)
    textfile = met.get("textfile")
    return FleetSettings(
        root=root,
        application_key=key.strip(),
        daily_request_budget=values["daily_request_budget"],
        requests_per_second=float(rate),
        budget_file=_resolve(root, top["budget_file"]) if top.get("budget_file") else None,
        env_dir=_resolve(root, top["env_dir"]) if top.get("env_dir") else None,
        cadence_minutes=values["cadence_minutes"],
        minimum_daily_requests_per_org=values["minimum_daily_requests_per_org"],
        max_concurrent_orgs=values["max_concurrent_orgs"],
        receiver=ReceiverSettings(
            host=str(rec.get("host", "127.0.0.1")),
            port=port,
            public_url=public.rstrip("/"),
            max_body_bytes=body,
        ),
        metrics_textfile=_resolve(root, textfile) if textfile else None,
        cadence_overrides=overrides,
    )


def load_fleet(root: Path | str) -> FleetSettings:
    """Read ``<root>/fleet.yaml``; ConfigError naming the file and every problem."""
    root = Path(root).expanduser().resolve()
    raw = read_yaml(root / FLEET_FILE, "create it from contrib/fleet/fleet.example.yaml")
    return parse_fleet(raw, root)


def fleet_problems(fleet: FleetSettings) -> list[str]:
    """What loads but cannot work: ``application_key`` still the example's placeholder."""
    if PLACEHOLDER_RE.match(fleet.application_key):
        return [
            f"`application_key`: {fleet.application_key!r} is a placeholder (from "
            "contrib/fleet/fleet.example.yaml); set it in fleet.yaml to the application's API "
            "key (client id), the one every organization of this fleet logs in with"
        ]
    return []


def org_names(fleet: FleetSettings) -> list[str]:
    """The organizations of the fleet: every ``orgs/<name>/`` with a ``flipsync.yaml``, sorted."""
    if not fleet.orgs_dir.is_dir():
        return []
    return sorted(
        entry.name
        for entry in fleet.orgs_dir.iterdir()
        if entry.is_dir() and (entry / ORG_CONFIG).is_file()
    )


# -- the env file -----------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines (systemd EnvironmentFile style; # comments, optional quotes)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name.strip().removeprefix("export ").strip()] = value
    return values


def org_environ(fleet: FleetSettings, name: str) -> dict[str, str]:
    """The process environment with the organization's env file on top (the file wins)."""
    return {**os.environ, **read_env_file(fleet.env_file(name))}


# -- loading an organization ----------------------------------------------------------------


@dataclass(frozen=True)
class FleetOrg:
    """One organization as the fleet runs it: its settings, bound to the key's one budget."""

    name: str
    settings: Settings
    environ: Mapping[str, str]


def org_problems(fleet: FleetSettings, name: str, settings: Settings) -> list[str]:
    """What makes a valid config wrong for this fleet (name and key must match)."""
    found = []
    if not ORG_NAME_RE.match(name):
        found.append(
            f"directory name {name!r}: use lowercase letters, digits and dashes "
            "(it is part of the webhook URL)"
        )
    if settings.organization != name:
        found.append(
            f"`organization` is {settings.organization!r}; set it to {name!r}, the directory name "
            "(budgets, metrics and the webhook URL use it)"
        )
    if settings.constant_contact.client_id != fleet.application_key:
        found.append(
            f"`constant_contact.client_id` is not this fleet's application_key "
            f"({fleet.application_key}); a fleet serves one key: set "
            f"`constant_contact.client_id` to {fleet.application_key} in "
            f"{fleet.org_dir(name) / ORG_CONFIG} (then log in again with "
            f"`flipsync -c {fleet.org_dir(name) / ORG_CONFIG} auth login`: a login belongs "
            "to its key), or move this organization to the fleet of its key"
        )
    return found


def load_org(fleet: FleetSettings, name: str) -> FleetOrg:
    """The organization's validated settings, with the key's budget from ``fleet.yaml``.

    The budget file, rate and daily limit of the key come from the fleet so every
    organization draws on ONE limiter (flipsync.ctct.budget) whatever its own config says.
    """
    path = fleet.org_dir(name) / ORG_CONFIG
    environ = org_environ(fleet, name)
    settings = load_settings(path, environ)
    found = org_problems(fleet, name, settings)
    if found:
        raise ConfigError(str(path), found)
    cc = replace(
        settings.constant_contact,
        budget_file=fleet.key_budget_file,
        requests_per_second=fleet.requests_per_second,
        daily_request_budget=fleet.daily_request_budget,
    )
    return FleetOrg(name, replace(settings, constant_contact=cc), environ)


def clashes(orgs: Mapping[str, Settings]) -> dict[str, list[str]]:
    """Organizations that share a state file, token file or lock: their records would mix.

    Each organization must own its files (invariant 6), so every party to a clash is named.
    """
    found: dict[str, list[str]] = {}
    paths = {
        "state_file": {n: s.state_file for n, s in orgs.items()},
        "constant_contact.token_file": {n: s.constant_contact.token_file for n, s in orgs.items()},
    }
    for what, by_org in paths.items():
        owners: dict[Path, list[str]] = {}
        for name, path in by_org.items():
            owners.setdefault(Path(path).resolve(), []).append(name)
        for path, names in owners.items():
            if len(names) > 1:
                for name in names:
                    others = ", ".join(n for n in names if n != name)
                    found.setdefault(name, []).append(
                        f"`{what}` {path} is also {others}'s; every organization needs its own "
                        "(or their records and logins would mix)"
                    )
    return found


def check_fleet(fleet: FleetSettings) -> dict[str, list[str]]:
    """Every organization's problems at once (config, name, key, webhook secret, login)."""
    from flipsync.ctct.auth import read_token_file
    from flipsync.receiver import read_webhook_secret

    found: dict[str, list[str]] = {}
    loaded: dict[str, Settings] = {}
    for name in org_names(fleet):
        problems: list[str] = []
        environ = org_environ(fleet, name)
        try:
            settings = load_settings(fleet.org_dir(name) / ORG_CONFIG, environ)
        except FlipsyncError as exc:
            found[name] = getattr(exc, "problems", None) or [str(exc)]
            continue
        loaded[name] = settings
        # Every problem at once: a wrong name or key hides neither the secret nor the login.
        problems.extend(org_problems(fleet, name, settings))
        problems.extend(placeholder_problems(settings))
        try:
            read_webhook_secret(settings, environ)
        except FlipsyncError as exc:
            problems.extend(getattr(exc, "problems", None) or [str(exc)])
        try:
            read_token_file(settings.constant_contact.token_file)
        except FlipsyncError as exc:
            problems.append(f"login: {exc}")
        if problems:
            found[name] = [with_config(p, fleet.org_dir(name) / ORG_CONFIG) for p in problems]
    for name, problems in clashes(loaded).items():
        found.setdefault(name, []).extend(problems)
    return dict(sorted(found.items()))


# -- scaffolding ------------------------------------------------------------------------------


def _set_line(text: str, key: str, value: str, *, indent: str = "") -> str:
    """Replace the first ``key: ...`` line at this indent, keeping its trailing comment."""
    pattern = re.compile(rf"^{indent}{re.escape(key)}:[^\n#]*(#[^\n]*)?$", re.MULTILINE)

    def swap(match: re.Match[str]) -> str:
        comment = match.group(1)
        return f"{indent}{key}: {value}" + (f"   {comment}" if comment else "")

    new, count = pattern.subn(swap, text, count=1)
    if not count:
        raise InputError(f"the config template has no `{key}:` line to fill in")
    return new


def scaffold_config(template: str, fleet: FleetSettings, name: str) -> str:
    """The example config with this organization's name, paths, key and secret variable."""
    text = _set_line(template, "organization", name)
    text = _set_line(text, "state_file", f"state/{name}.db")
    text = _set_line(text, "client_id", fleet.application_key, indent="  ")
    text = _set_line(text, "token_file", f"state/{name}.tokens.json", indent="  ")
    return _set_line(text, "webhook_secret_env", WEBHOOK_SECRET_ENV, indent="  ")


def add_org(fleet: FleetSettings, name: str, template: str) -> str:
    """Create ``orgs/<name>/`` with its config and a fresh webhook secret; the webhook URL."""
    if not ORG_NAME_RE.match(name):
        raise InputError(
            f"{name!r} cannot be an organization name: use 1-63 lowercase letters, digits and "
            "dashes, starting and ending with a letter or digit (it is part of the webhook URL)"
        )
    refused = fleet_problems(fleet)
    if refused:  # never copy a placeholder into the organization's client_id
        raise ConfigError(str(fleet.root / FLEET_FILE), refused)
    directory = fleet.org_dir(name)
    if (directory / ORG_CONFIG).exists():
        raise InputError(f"{directory / ORG_CONFIG} already exists; nothing was changed")
    if fleet.env_file(name).exists():
        raise InputError(
            f"{fleet.env_file(name)} already exists; move it away to scaffold {name} afresh"
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / "state").mkdir(exist_ok=True, mode=0o700)
    secret = secrets.token_urlsafe(32)
    env_path = fleet.env_file(name)
    env_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as env:
        env.write(f"# secrets of {name} (0600); never commit this file\n")
        env.write(f"{WEBHOOK_SECRET_ENV}={secret}\n")
    (directory / ORG_CONFIG).write_text(scaffold_config(template, fleet, name), encoding="utf-8")
    return fleet.webhook_url(name, secret)


def example_template() -> str:
    """config.example.yaml from the source tree (where `make install` puts flipsync)."""
    for candidate in (
        Path(__file__).resolve().parent.parent / "config.example.yaml",
        Path.cwd() / "config.example.yaml",
    ):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise InputError(
        "config.example.yaml not found next to flipsync; pass --template PATH to `fleet add`"
    )
