"""Reading and validating the YAML config (the sandbox's seed file is the only other YAML).

The whole file is checked before anything touches the network, every problem is
collected with its key path and the fix, and the result is a tree of frozen
settings (`flipsync.settings`, re-exported here). Secrets never live in the YAML: the
config names the environment variables that hold them, and OAuth tokens live in the
token file.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import fields
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import yaml

from flipsync.errors import ConfigError
from flipsync.settings import (
    CONFIG_ENV,
    DEFAULT_ACTIVITY_TYPES,
    DEFAULT_API_BASE,
    DEFAULT_CSV_COLUMNS,
    DEFAULT_OAUTH_BASE,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_TRIGGER_TYPES,
    EXISTING_FIELDS,
    LOOKUP_STRATEGIES,
    RECORD_KINDS,
    SETUPS,
    STATUSES,
    UUID_RE,
    Condition,
    ConstantContactSettings,
    FieldMap,
    FlipcauseSettings,
    IntakeSettings,
    ListRule,
    ListSettings,
    PolicySettings,
    RunSettings,
    Settings,
    Setup,
    SkipRule,
    Status,
    TestRecordSettings,
    is_list_id,
    spelling_key,
)

# The settings types are re-exported, so `from flipsync.config import Settings` keeps working.
__all__ = [
    "CONFIG_ENV",
    "DEFAULT_ACTIVITY_TYPES",
    "DEFAULT_API_BASE",
    "DEFAULT_CSV_COLUMNS",
    "DEFAULT_OAUTH_BASE",
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_TRIGGER_TYPES",
    "EXISTING_FIELDS",
    "LOOKUP_STRATEGIES",
    "RECORD_KINDS",
    "SETUPS",
    "STATUSES",
    "UUID_RE",
    "Condition",
    "ConstantContactSettings",
    "FieldMap",
    "FlipcauseSettings",
    "IntakeSettings",
    "ListRule",
    "ListSettings",
    "PolicySettings",
    "RunSettings",
    "Settings",
    "Setup",
    "SkipRule",
    "Status",
    "TestRecordSettings",
    "duplicate_keys",
    "email_glob",
    "is_list_id",
    "is_loopback_host",
    "load_settings",
    "parse_settings",
    "placeholder_problems",
    "read_yaml",
    "secret_from_env",
    "spelling_key",
]

T = TypeVar("T")
NO_STRS: tuple[str, ...] = ()
DEFAULT_EXISTING_FIELDS: tuple[str, ...] = ("first_name", "last_name")


class _Reader:
    """Walks raw YAML data, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"`{path}`: {message}")

    def section(self, raw: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """A mapping whose keys must all be known; unknown keys are errors with a suggestion."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem(path, f"must be a mapping, got {type(raw).__name__}")
            return {}
        for key in raw:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                fix = (
                    f" (did you mean `{hint[0]}`?)" if hint else f"; allowed: {', '.join(allowed)}"
                )
                self.problem(_join(path, str(key)), f"unknown key{fix}")
        return raw

    def get(
        self,
        data: Mapping[str, Any],
        path: str,
        key: str,
        convert: Callable[[Any], T],
        default: T,
        expected: str,
    ) -> T:
        """Convert one value, recording `expected` as the fix when it does not fit."""
        if key not in data or data[key] is None:
            return default
        try:
            return convert(data[key])
        except (TypeError, ValueError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            self.problem(_join(path, key), f"must be {expected}, got {data[key]!r}{detail}")
            return default


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError
    text = str(value).strip()
    if not text:
        raise ValueError("empty")
    return text


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def _positive_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError
    return float(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError
    return value


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise TypeError
    return tuple(_str(v) for v in value)


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError
        return cast(str, value)

    return convert


def _url(value: Any) -> str:
    text = _str(value).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError("an http(s) URL")
    return text


HTTPS_ONLY = (
    "an https URL: tokens and the client secret travel to it, so plain http is allowed only "
    "for loopback addresses (127.0.0.0/8, ::1, localhost), such as the local sandbox"
)


def is_loopback_host(host: str | None) -> bool:
    """True for localhost and addresses in 127.0.0.0/8 or ::1: traffic that never leaves the machine."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secure_url(value: Any) -> str:
    """An http(s) URL that is https unless it points at this machine."""
    text = _url(value)
    parts = urlsplit(text)
    if parts.scheme.lower() != "https" and not is_loopback_host(parts.hostname):
        raise ValueError("http to a remote host would send tokens in clear")
    return text


def _env_name(value: Any) -> str:
    text = _str(value)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", text):
        raise ValueError("the NAME of an environment variable, not its value")
    return text


def load_settings(path: Path | str | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config file; `path` None falls back to $FLIPSYNC_CONFIG."""
    env = os.environ if environ is None else environ
    if path is None:
        env_path = env.get(CONFIG_ENV)
        if not env_path:
            raise ConfigError(
                "config",
                [
                    f"no config given: pass `-c PATH` or set {CONFIG_ENV} (start from config.example.yaml)"
                ],
            )
        path = env_path
    config_path = Path(path).expanduser()
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(config_path), ["file not found; copy config.example.yaml"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(config_path), [f"cannot read the file: {exc}"]) from None
    try:
        raw = yaml.safe_load(text)
        repeated = duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(config_path), [f"not valid YAML{where}: {exc}"]) from None
    try:
        settings = parse_settings(raw, config_path)
    except ConfigError as exc:
        raise ConfigError(str(config_path), repeated + exc.problems) from None
    if repeated:
        raise ConfigError(str(config_path), repeated)
    return settings


def duplicate_keys(node: yaml.Node | None, path: str = "") -> list[str]:
    """Keys given twice in one mapping, with both lines: YAML keeps the last one silently."""
    found: list[str] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            line = key_node.start_mark.line + 1
            if key in first and key != "<<":
                found.append(
                    f"`{_join(path, key)}`: given twice, on lines {first[key]} and {line}; "
                    "keep one (otherwise the second would silently win)"
                )
            first.setdefault(key, line)
            found += duplicate_keys(value_node, _join(path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += duplicate_keys(item, f"{path}[{i}]")
    return found


PLACEHOLDER_RE = re.compile(
    r"^(?:your[-_ ].*|<[^>]*>|change[-_ ]?me|replace[-_ ]?me|todo|fixme|x{3,})$",
    re.IGNORECASE,
)


def placeholder_problems(settings: Settings) -> list[str]:
    """Values still as the example has them (`client_id: your-application-api-key`), by key.

    `flipsync check` reports them: an unedited example loads fine, but would only fail
    later, against Constant Contact, with a less helpful message.
    """
    try:
        raw = yaml.safe_load(settings.config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, _join(path, str(key)))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, str) and PLACEHOLDER_RE.match(value.strip()):
            found.append(
                f"`{path}`: {value!r} is a placeholder (from config.example.yaml); "
                "replace it with this organization's own value"
            )

    walk(raw, "")
    return found


TOP_KEYS = (
    "organization",
    "state_file",
    "constant_contact",
    "flipcause",
    "policy",
    "run",
    "intake",
    "test_records",
)


def parse_settings(raw: Any, config_path: Path) -> Settings:
    """Validate raw YAML data into Settings, raising one ConfigError with every problem."""
    r = _Reader()
    base_dir = config_path.parent
    top = r.section(raw if raw is not None else {}, "", TOP_KEYS)
    organization = r.get(top, "", "organization", _str, config_path.stem, "a name")
    state_file = _resolve(
        base_dir, r.get(top, "", "state_file", _str, f"{config_path.stem}.db", "a file path")
    )
    settings = Settings(
        config_path=config_path,
        organization=organization,
        state_file=state_file,
        constant_contact=_parse_ctct(r, top.get("constant_contact"), base_dir),
        flipcause=_parse_flipcause(r, top.get("flipcause")),
        policy=_parse_policy(r, top.get("policy")),
        run=_parse_run(r, top.get("run")),
        intake=_parse_intake(r, top.get("intake")),
        test_records=_parse_test_records(r, top.get("test_records")),
    )
    if "constant_contact" not in top:
        r.problem("constant_contact", "missing; at least `client_id` is required")
    if "policy" not in top:
        r.problem("policy", "missing; choose a `setup` and its `lists`")
    if r.problems:
        raise ConfigError(str(config_path), r.problems)
    return settings


def _resolve(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def _parse_ctct(r: _Reader, raw: Any, base_dir: Path) -> ConstantContactSettings:
    p = "constant_contact"
    names = tuple(f.name for f in fields(ConstantContactSettings))
    d = r.section(raw, p, names)
    default = ConstantContactSettings()
    client_id = r.get(d, p, "client_id", _str, "", "the application's client id (not a secret)")
    if raw is not None and not client_id:
        r.problem(
            _join(p, "client_id"), "missing; copy the API key (client id) of your application"
        )
    return ConstantContactSettings(
        api_base_url=r.get(d, p, "api_base_url", _secure_url, default.api_base_url, HTTPS_ONLY),
        oauth_base_url=r.get(
            d, p, "oauth_base_url", _secure_url, default.oauth_base_url, HTTPS_ONLY
        ),
        client_id=client_id,
        client_secret_env=r.get(
            d, p, "client_secret_env", _env_name, None, "an environment variable name"
        ),
        token_file=_resolve(
            base_dir, r.get(d, p, "token_file", _str, "tokens.json", "a file path")
        ),
        requests_per_second=r.get(
            d, p, "requests_per_second", _positive_float, 4.0, "a positive number (at most 4)"
        ),
        timeout_seconds=r.get(
            d, p, "timeout_seconds", _positive_float, 30.0, "a positive number of seconds"
        ),
        confirmed_opt_in=r.get(d, p, "confirmed_opt_in", _bool, False, "true or false"),
        activity_wait_seconds=r.get(
            d, p, "activity_wait_seconds", _positive_float, 120.0, "a positive number of seconds"
        ),
        max_contacts_per_import=r.get(
            d,
            p,
            "max_contacts_per_import",
            _bounded_int(1, 40_000),
            40_000,
            "a whole number from 1 to 40000",
        ),
        daily_request_budget=r.get(
            d, p, "daily_request_budget", _positive_int, 10_000, "a whole number of requests"
        ),
        organization_daily_request_budget=r.get(
            d,
            p,
            "organization_daily_request_budget",
            _positive_int,
            None,
            "a whole number of requests",
        ),
        budget_file=(
            _resolve(base_dir, bf)
            if (bf := r.get(d, p, "budget_file", _str, None, "a file path"))
            else None
        ),
    )


def _bounded_int(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        number = _positive_int(value)
        if not low <= number <= high:
            raise ValueError
        return number

    return convert


def _parse_flipcause(r: _Reader, raw: Any) -> FlipcauseSettings:
    p = "flipcause"
    d = r.section(
        raw, p, ("fields", "activity_types", "trigger_types", "custom_fields", "csv_columns")
    )
    field_names = tuple(f.name for f in fields(FieldMap))
    fd = r.section(d.get("fields"), _join(p, "fields"), field_names)
    fmap = FieldMap(
        **{
            name: r.get(
                fd, _join(p, "fields"), name, _str, getattr(FieldMap(), name), "a field name"
            )
            for name in field_names
            if name in fd
        }
    )
    kinds = tuple(DEFAULT_ACTIVITY_TYPES)
    ad = r.section(d.get("activity_types"), _join(p, "activity_types"), kinds)
    activity_types = dict(DEFAULT_ACTIVITY_TYPES)
    for kind in ad:
        if kind in kinds:
            activity_types[kind] = r.get(
                ad,
                _join(p, "activity_types"),
                kind,
                _str_tuple,
                DEFAULT_ACTIVITY_TYPES[kind],
                "a list of activity_type spellings",
            )
    trigger_types = _parse_spellings(
        r, d.get("trigger_types"), _join(p, "trigger_types"), DEFAULT_TRIGGER_TYPES
    )
    cd = d.get("custom_fields")
    custom: dict[str, str] = {}
    if cd is not None:
        if not isinstance(cd, dict):
            r.problem(
                _join(p, "custom_fields"),
                "must map Flipcause field -> Constant Contact custom field name",
            )
        else:
            for key in cd:
                custom[str(key)] = r.get(
                    cd, _join(p, "custom_fields"), key, _str, "", "a custom field name"
                )
            if len(custom) > 25:
                r.problem(
                    _join(p, "custom_fields"),
                    "at most 25 custom fields per contact in Constant Contact; map fewer",
                )
    return FlipcauseSettings(
        fields=fmap,
        activity_types=activity_types,
        trigger_types=trigger_types,
        custom_fields=custom,
        csv_columns=_parse_csv_columns(r, d.get("csv_columns"), _join(p, "csv_columns")),
    )


def _parse_spellings(
    r: _Reader, raw: Any, path: str, defaults: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """Kind -> spellings; given kinds replace their default, [] recognises none of them."""
    d = r.section(raw, path, tuple(defaults))
    out = dict(defaults)
    for kind in d:
        if kind in defaults:
            out[kind] = r.get(
                d, path, kind, _str_tuple, defaults[kind], "a list of trigger type spellings"
            )
    owner: dict[str, str] = {}
    for kind, spellings in out.items():
        for spelling in spellings:
            key = spelling_key(spelling)
            if owner.setdefault(key, kind) != kind:
                r.problem(
                    _join(path, kind),
                    f"{spelling!r} is already a spelling of `{owner[key]}`; "
                    "a trigger type names one kind (remove it from one of them)",
                )
    return out


def _parse_csv_columns(r: _Reader, raw: Any, path: str) -> dict[str, tuple[str, ...]]:
    """FieldMap name -> CSV column names; given keys replace the default, [] maps none."""
    field_names = tuple(f.name for f in fields(FieldMap))
    d = r.section(raw, path, field_names)
    columns = dict(DEFAULT_CSV_COLUMNS)
    for name in d:
        if name in field_names:
            columns[name] = r.get(
                d, path, name, _str_tuple, columns.get(name, ()), "a column name or a list of them"
            )
    owner: dict[str, str] = {}
    for name, names in columns.items():
        for column in names:
            key = " ".join(column.split()).casefold()
            if key in owner and owner[key] != name:
                r.problem(
                    _join(path, name),
                    f"column {column!r} is already mapped to `{owner[key]}`; a column feeds one field",
                )
            owner.setdefault(key, name)
    return {name: names for name, names in columns.items() if names}


CONDITION_KEYS = (
    "activity_type",
    "campaign_id",
    "campaign_title",
    "amount_at_least",
    "recurring",
    "email_matches",
    "trigger_type",
)


def _parse_condition(r: _Reader, raw: Any, path: str) -> Condition:
    d = r.section(raw, path, CONDITION_KEYS)
    if not d:
        r.problem(path, f"needs at least one condition: {', '.join(CONDITION_KEYS)}")
    kinds = r.get(d, path, "activity_type", _str_tuple, NO_STRS, "a list of activity kinds")
    known = set(DEFAULT_ACTIVITY_TYPES)
    for kind in kinds:
        if kind not in known:
            r.problem(
                _join(path, "activity_type"),
                f"unknown activity kind {kind!r}; use one of {', '.join(sorted(known))}",
            )

    def amount(value: Any) -> Decimal:
        # Via the string form: YAML's 1.1 is the float 1.1000000000000000888..., and a
        # Decimal made from that float would not match a $1.10 gift.
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        try:
            number = Decimal(str(value).strip().replace("$", "").replace(",", ""))
        except InvalidOperation:
            raise ValueError from None
        if not number.is_finite() or number < 0:
            raise ValueError
        return number

    return Condition(
        activity_types=kinds,
        campaign_ids=r.get(d, path, "campaign_id", _str_tuple, NO_STRS, "a list of campaign ids"),
        campaign_titles=r.get(d, path, "campaign_title", _str_tuple, NO_STRS, "a list of titles"),
        amount_at_least=r.get(
            d, path, "amount_at_least", amount, None, "an amount >= 0 like 500 or 1.10"
        ),
        recurring=r.get(d, path, "recurring", _bool, None, "true or false"),
        email_patterns=r.get(
            d, path, "email_matches", _str_tuple, NO_STRS, "a list of glob patterns like *@test.org"
        ),
        trigger_types=r.get(
            d, path, "trigger_type", _str_tuple, NO_STRS, "a list of trigger types"
        ),
    )


def _parse_policy(r: _Reader, raw: Any) -> PolicySettings:
    p = "policy"
    d = r.section(
        raw,
        p,
        (
            "setup",
            "new_contact_status",
            "new_non_subscriber_status",
            "lists",
            "existing_contact_fields",
            "rules",
            "skip",
        ),
    )
    setup = r.get(
        d, p, "setup", _choice(SETUPS), "all_contacts_uniform", f"one of {', '.join(SETUPS)}"
    )
    if raw is not None and "setup" not in d:
        r.problem(_join(p, "setup"), f"missing; choose one of {', '.join(SETUPS)}")
    status = r.get(
        d, p, "new_contact_status", _choice(STATUSES), "implicit", f"one of {', '.join(STATUSES)}"
    )
    non_sub = r.get(
        d,
        p,
        "new_non_subscriber_status",
        _choice(STATUSES),
        "implicit",
        f"one of {', '.join(STATUSES)}",
    )
    lp = _join(p, "lists")
    ld = r.section(
        d.get("lists"), lp, ("new", "existing", "new_subscribers", "new_non_subscribers")
    )
    lists = ListSettings(
        new=r.get(ld, lp, "new", _str_tuple, NO_STRS, "a list of list names or ids"),
        existing=r.get(ld, lp, "existing", _str_tuple, NO_STRS, "a list of list names or ids"),
        new_subscribers=r.get(
            ld, lp, "new_subscribers", _str_tuple, NO_STRS, "a list of list names or ids"
        ),
        new_non_subscribers=r.get(
            ld, lp, "new_non_subscribers", _str_tuple, NO_STRS, "a list of list names or ids"
        ),
    )
    _check_setup_keys(r, d, setup, lists, lp)
    existing_fields = r.get(
        d, p, "existing_contact_fields", _str_tuple, DEFAULT_EXISTING_FIELDS, "a list"
    )
    for name in existing_fields:
        if name not in EXISTING_FIELDS:
            r.problem(
                _join(p, "existing_contact_fields"),
                f"{name!r} cannot be written to existing contacts; allowed: "
                f"{', '.join(EXISTING_FIELDS)} (phone, address and permission never are)",
            )
    rules: list[ListRule] = []
    for i, item in enumerate(_as_list(r, d.get("rules"), _join(p, "rules"))):
        ip = f"{p}.rules[{i}]"
        rd = r.section(item, ip, ("name", "when", "add_lists"))
        add = r.get(rd, ip, "add_lists", _str_tuple, NO_STRS, "a list of list names or ids")
        if not add:
            r.problem(_join(ip, "add_lists"), "missing; name the list(s) this rule adds")
        rules.append(
            ListRule(
                name=r.get(rd, ip, "name", _str, f"rule {i + 1}", "a short name"),
                when=_parse_condition(r, rd.get("when"), _join(ip, "when")),
                add_lists=add,
            )
        )
    skips: list[SkipRule] = []
    for i, item in enumerate(_as_list(r, d.get("skip"), _join(p, "skip"))):
        ip = f"{p}.skip[{i}]"
        sd = r.section(item, ip, ("name", "when"))
        skips.append(
            SkipRule(
                name=r.get(sd, ip, "name", _str, f"skip rule {i + 1}", "a short name"),
                when=_parse_condition(r, sd.get("when"), _join(ip, "when")),
            )
        )
    return PolicySettings(
        setup=cast(Setup, setup),
        new_contact_status=cast(Status, status),
        new_non_subscriber_status=cast(Status, non_sub),
        lists=lists,
        existing_contact_fields=existing_fields,
        rules=tuple(rules),
        skip=tuple(skips),
    )


def _check_setup_keys(
    r: _Reader, d: Mapping[str, Any], setup: str, lists: ListSettings, lp: str
) -> None:
    """Each setup uses its own list keys and status key; name the ones that do not apply."""
    if setup == "all_contacts_by_subscription":
        needed = {
            "new_subscribers": lists.new_subscribers,
            "new_non_subscribers": lists.new_non_subscribers,
            "existing": lists.existing,
        }
        unused = {"new": lists.new}
        if "new_contact_status" in d:
            r.problem(
                "policy.new_contact_status",
                "applies to all_contacts_uniform only; this setup uses `new_non_subscriber_status`",
            )
    else:
        needed = {"new": lists.new, "existing": lists.existing}
        unused = {
            "new_subscribers": lists.new_subscribers,
            "new_non_subscribers": lists.new_non_subscribers,
        }
        if "new_non_subscriber_status" in d:
            r.problem(
                "policy.new_non_subscriber_status", "applies to all_contacts_by_subscription only"
            )
        if setup == "mailing_list_contacts" and "new_contact_status" in d:
            r.problem(
                "policy.new_contact_status",
                "mailing_list_contacts always makes people explicit; remove this key",
            )
    for key, value in needed.items():
        if not value:
            r.problem(
                _join(lp, key),
                f"missing; setup {setup} needs at least one list here "
                "(the same list may appear under several keys)",
            )
    for key, value in unused.items():
        if value:
            r.problem(_join(lp, key), f"not used by setup {setup}; use {', '.join(sorted(needed))}")


def _as_list(r: _Reader, raw: Any, path: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        r.problem(path, "must be a list of rules")
        return []
    return raw


def _parse_run(r: _Reader, raw: Any) -> RunSettings:
    p = "run"
    d = r.section(raw, p, ("batch_size", "lookup_strategy", "retention_days"))
    return RunSettings(
        retention_days=r.get(
            d,
            p,
            "retention_days",
            _bounded_int(1, 36_500),
            DEFAULT_RETENTION_DAYS,
            "a whole number of days from 1 to 36500 (to keep everything, do not run prune)",
        ),
        batch_size=r.get(
            d, p, "batch_size", _bounded_int(1, 100_000), 5000, "a whole number 1-100000"
        ),
        lookup_strategy=cast(
            Literal["auto", "lookup", "mirror"],
            r.get(
                d,
                p,
                "lookup_strategy",
                _choice(LOOKUP_STRATEGIES),
                "auto",
                f"one of {', '.join(LOOKUP_STRATEGIES)}",
            ),
        ),
    )


def _parse_intake(r: _Reader, raw: Any) -> IntakeSettings:
    p = "intake"
    d = r.section(raw, p, ("webhook_secret_env", "host", "port", "max_body_bytes"))
    return IntakeSettings(
        webhook_secret_env=r.get(
            d, p, "webhook_secret_env", _env_name, None, "an environment variable name"
        ),
        host=r.get(d, p, "host", _str, "127.0.0.1", "a host name or address"),
        port=r.get(d, p, "port", _bounded_int(1, 65535), 8787, "a port number"),
        max_body_bytes=r.get(
            d,
            p,
            "max_body_bytes",
            _bounded_int(1024, 64 * 1024 * 1024),
            256 * 1024,
            "a size in bytes (1024 or more)",
        ),
    )


TEST_RECORD_KEYS = (
    "email_matches",
    "record_ids",
    "transaction_ids",
    "campaign_ids",
    "go_live_date",
)


def email_glob(value: Any) -> str:
    """A test-address glob; one that matches every address is refused (it would mark everyone)."""
    text = _str(value)
    if not re.sub(r"[*?@.\[\]!-]", "", text):
        raise ValueError(
            "it matches every address; name the test addresses, like *@test.example.org"
        )
    return text


def _date(value: Any) -> date:
    if isinstance(value, datetime):
        raise TypeError
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise TypeError
    return date.fromisoformat(value.strip())


def _parse_test_records(r: _Reader, raw: Any) -> TestRecordSettings:
    p = "test_records"
    before = len(r.problems)
    d = r.section(raw, p, TEST_RECORD_KEYS)
    settings = TestRecordSettings(
        email_patterns=r.get(
            d,
            p,
            "email_matches",
            lambda v: tuple(email_glob(x) for x in _str_tuple(v)),
            NO_STRS,
            "a list of glob patterns like *@test.example.org",
        ),
        record_ids=r.get(
            d, p, "record_ids", _str_tuple, NO_STRS, "a list of Flipcause webhook record ids"
        ),
        transaction_ids=r.get(
            d, p, "transaction_ids", _str_tuple, NO_STRS, "a list of Flipcause transaction ids"
        ),
        campaign_ids=r.get(
            d, p, "campaign_ids", _str_tuple, NO_STRS, "a list of Flipcause campaign ids"
        ),
        go_live_date=r.get(
            d,
            p,
            "go_live_date",
            _date,
            None,
            "a date like 2026-03-01 (records that reached the inbox before it are tests)",
        ),
    )
    if raw is not None and not settings.configured and len(r.problems) == before:
        r.problem(p, f"empty; set at least one of {', '.join(TEST_RECORD_KEYS)}, or remove it")
    return settings


def secret_from_env(name: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Read a secret from the environment variable the config names; None when unset."""
    if not name:
        return None
    value = (os.environ if environ is None else environ).get(name)
    return value or None


def read_yaml(path: Path, missing_fix: str) -> Any:
    """Parse one YAML file of flipsync's (fleet.yaml too); ConfigError naming the file and fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [f"file not found; {missing_fix}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(path), [f"not valid YAML{where}: {exc}"]) from None
