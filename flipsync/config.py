"""Reading and validating the YAML config (the sandbox's seed file is the only other YAML).

The whole file is checked before anything touches the network: the pydantic models in
`flipsync.config_schema` collect every problem, and this module words each one as
`` `key.path`: what is wrong; the fix ``. The result is a tree of frozen settings
(`flipsync.settings`, re-exported here). Secrets never live in the YAML: the
config names the environment variables that hold them, and OAuth tokens live in the
token file.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from flipsync.config_fields import PROBLEM, Section, email_glob, is_loopback_host
from flipsync.config_schema import ConfigFile
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
    "schema_problems",
    "secret_from_env",
    "spelling_key",
]


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
        raise ConfigError(str(config_path), [_yaml_problem(exc)]) from None
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


def parse_settings(raw: Any, config_path: Path) -> Settings:
    """Validate raw YAML data into Settings, raising one ConfigError with every problem."""
    try:
        document = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(str(config_path), schema_problems(exc)) from None
    return document.to_settings(config_path)


def schema_problems(error: ValidationError) -> list[str]:
    """pydantic's errors as flipsync's problem lines: the key path, what is wrong, the fix."""
    found: list[str] = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        path = _path(loc)
        kind = item["type"]
        if kind == PROBLEM:
            for sub, message in item.get("ctx", {})["problems"]:
                found.append(f"`{_join(path, sub)}`: {message}")
        elif kind == "extra_forbidden":
            allowed = tuple(_section_at(loc[:-1]).model_fields)
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            fix = f" (did you mean `{hint[0]}`?)" if hint else f"; allowed: {', '.join(allowed)}"
            found.append(f"`{path}`: unknown key{fix}")
        elif kind == "missing":
            fix = _section_at(loc[:-1]).missing.get(str(loc[-1]), "missing")
            found.append(f"`{path}`: {fix}")
        else:  # not expected from flipsync's models; pydantic's own words still name the key
            found.append(f"`{path}`: {item['msg']}")
    return list(dict.fromkeys(found))


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
    return path


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else (path or key)


def _section_at(loc: tuple[int | str, ...]) -> type[Section]:
    """The model that holds the keys at `loc` (list indexes stay on the item model)."""
    section: type[Section] = ConfigFile
    for part in loc:
        if isinstance(part, str) and part in section.model_fields:
            inner = _section_in(section.model_fields[part].annotation)
            if inner is not None:
                section = inner
    return section


def _section_in(annotation: Any) -> type[Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    for arg in get_args(annotation):
        found = _section_in(arg)
        if found is not None:
            return found
    return None


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
        raise ConfigError(str(path), [_yaml_problem(exc)]) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, in the file's own terms (not the parser's `<unicode string>` marks)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None)
    if not isinstance(problem, str):
        return f"not valid YAML{where}: {exc}"
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if isinstance(context, str) and context_mark is not None:
        problem += f" ({context} at line {context_mark.line + 1})"
    elif isinstance(context, str):
        problem += f" ({context})"
    return f"not valid YAML{where}: {problem}"
