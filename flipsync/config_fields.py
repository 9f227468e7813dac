"""The building blocks of the config schema: leaf checks that name their fix, and `Section`.

Each leaf check converts one YAML value the way flipsync always has (no coercion of
"true" or "4": YAML already typed them) or says what the value must be and what it got.
`Section` is the pydantic model every mapping in the file is: unknown keys refused,
`key: null` meaning the default, and rules across keys reported with the keys' own errors.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, TypeVar, cast
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from flipsync.settings import DEFAULT_ACTIVITY_TYPES, EXISTING_FIELDS, STATUSES

T = TypeVar("T")
NO_STRS: tuple[str, ...] = ()
DEFAULT_EXISTING_FIELDS: tuple[str, ...] = ("first_name", "last_name")
PROBLEM = "flipsync"  # the error type of every problem raised here


def problem(message: str, *more: tuple[str, str]) -> PydanticCustomError:
    """One or more problems at the failing location; `more` adds (sub-key, message) pairs."""
    found = ([("", message)] if message else []) + list(more)
    return PydanticCustomError(PROBLEM, "{summary}", {"summary": message, "problems": found})


def checked(convert: Callable[[Any], T], expected: str) -> Any:
    """A leaf validator: `convert` the YAML value, or say what it must be and what it got."""

    def run(value: Any) -> T:
        try:
            return convert(value)
        except PydanticCustomError:
            raise  # already says what is wrong and the fix
        except (TypeError, ValueError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise problem(f"must be {expected}, got {value!r}{detail}") from None

    return PlainValidator(run)


# -- leaf conversions -------------------------------------------------------------------------


def as_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError
    text = str(value).strip()
    if not text:
        raise ValueError("empty")
    return text


def as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def positive_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError
    return float(value)


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError
    return value


def bounded_int(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        number = positive_int(value)
        if not low <= number <= high:
            raise ValueError
        return number

    return convert


def str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise TypeError
    return tuple(as_text(v) for v in value)


def choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError
        return cast(str, value)

    return convert


def _url(value: Any) -> str:
    text = as_text(value).rstrip("/")
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


def secure_url(value: Any) -> str:
    """An http(s) URL that is https unless it points at this machine."""
    text = _url(value)
    parts = urlsplit(text)
    if parts.scheme.lower() != "https" and not is_loopback_host(parts.hostname):
        raise ValueError("http to a remote host would send tokens in clear")
    return text


def env_name(value: Any) -> str:
    text = as_text(value)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", text):
        raise ValueError("the NAME of an environment variable, not its value")
    return text


def email_glob(value: Any) -> str:
    """A test-address glob; one that matches every address is refused (it would mark everyone)."""
    text = as_text(value)
    if not re.sub(r"[*?@.\[\]!-]", "", text):
        raise ValueError(
            "it matches every address; name the test addresses, like *@test.example.org"
        )
    return text


def as_date(value: Any) -> date:
    if isinstance(value, datetime):
        raise TypeError
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise TypeError
    return date.fromisoformat(value.strip())


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


def custom_fields(value: Any) -> dict[str, str]:
    """Flipcause field -> Constant Contact custom field name, each name checked."""
    if not isinstance(value, dict):
        raise problem("must map Flipcause field -> Constant Contact custom field name")
    found: list[tuple[str, str]] = []
    custom: dict[str, str] = {}
    for key, item in value.items():
        try:
            custom[str(key)] = as_text(item)
        except (TypeError, ValueError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            found.append((str(key), f"must be a custom field name, got {item!r}{detail}"))
    if len(value) > 25:
        found.append(("", "at most 25 custom fields per contact in Constant Contact; map fewer"))
    if found:
        raise problem("", *found)
    return custom


LISTS = "a list of list names or ids"
Name = Annotated[str, checked(as_text, "a short name")]
FilePath = Annotated[str, checked(as_text, "a file path")]
Flag = Annotated[bool, checked(as_bool, "true or false")]
Seconds = Annotated[float, checked(positive_float, "a positive number of seconds")]
Requests = Annotated[int, checked(positive_int, "a whole number of requests")]
EnvName = Annotated[str, checked(env_name, "an environment variable name")]
SecureUrl = Annotated[str, checked(secure_url, HTTPS_ONLY)]
ListRefs = Annotated[tuple[str, ...], checked(str_tuple, LISTS)]
StatusChoice = Annotated[str, checked(choice(STATUSES), f"one of {', '.join(STATUSES)}")]
CustomFields = Annotated[dict[str, str], PlainValidator(custom_fields)]


# -- checks of policy and test-record values --------------------------------------------------


CONDITION_KEYS = (
    "activity_type",
    "campaign_id",
    "campaign_title",
    "amount_at_least",
    "recurring",
    "email_matches",
    "trigger_type",
)
NEEDS_A_CONDITION = f"needs at least one condition: {', '.join(CONDITION_KEYS)}"


def activity_kinds(value: Any) -> tuple[str, ...]:
    kinds = str_tuple(value)
    unknown = [kind for kind in kinds if kind not in DEFAULT_ACTIVITY_TYPES]
    if unknown:
        known = ", ".join(sorted(DEFAULT_ACTIVITY_TYPES))
        raise problem(
            "", *(("", f"unknown activity kind {kind!r}; use one of {known}") for kind in unknown)
        )
    return kinds


def rule_lists(value: Any) -> tuple[str, ...]:
    refs = str_tuple(value)
    if not refs:
        raise problem("missing; name the list(s) this rule adds")
    return refs


def existing_fields(value: Any) -> tuple[str, ...]:
    names = str_tuple(value)
    refused = [name for name in names if name not in EXISTING_FIELDS]
    if refused:
        raise problem(
            "",
            *(
                (
                    "",
                    f"{name!r} cannot be written to existing contacts; allowed: "
                    f"{', '.join(EXISTING_FIELDS)} (phone, address and permission never are)",
                )
                for name in refused
            ),
        )
    return names


def rule_list(value: Any) -> Any:
    if not isinstance(value, list):
        raise problem("must be a list of rules")
    return value


def email_globs(value: Any) -> tuple[str, ...]:
    return tuple(email_glob(item) for item in str_tuple(value))


# -- sections -------------------------------------------------------------------------------


class Section(BaseModel):
    """A mapping of known keys: unknown ones are refused, `key: null` means the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Key -> the fix when a required key is absent (used by flipsync.config's error mapping).
    missing: ClassVar[dict[str, str]] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _mapping(cls, data: Any, handler: ModelWrapValidatorHandler[Section]) -> Section:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise problem(f"must be a mapping, got {type(data).__name__}")
        cls.check_raw(data)
        known = cls.model_fields
        data = {
            str(key): value
            for key, value in data.items()
            if value is not None or str(key) not in known  # an unknown key stays an error
        }
        # Rules across keys run on the values as written, so they are reported even when
        # another key of the section is wrong (that key then counts as its default).
        found = cls.cross_check(data)
        try:
            section = handler(data)
        except ValidationError as exc:
            if not found:
                raise
            raise _joined(exc, problem("", *found), data) from None
        if found:
            raise problem("", *found)
        return section

    @classmethod
    def check_raw(cls, data: dict[Any, Any]) -> None:
        """Checks on the mapping as written, before anything else (raise to stop there)."""

    @classmethod
    def cross_check(cls, data: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems that tie several keys together, as (key, message) pairs."""
        return []


def _joined(exc: ValidationError, more: PydanticCustomError, data: Any) -> ValidationError:
    """The section's own errors and its cross-key problems as one ValidationError."""
    errors: list[InitErrorDetails] = []
    for item in exc.errors():
        if item["type"] == PROBLEM:
            kind = PydanticCustomError(PROBLEM, "{summary}", item.get("ctx"))
            errors.append(InitErrorDetails(type=kind, loc=item["loc"], input=item["input"]))
        else:
            errors.append(cast(InitErrorDetails, item))
    errors.append(InitErrorDetails(type=more, loc=(), input=data))
    return ValidationError.from_exception_data(exc.title, errors)


def or_default(convert: Callable[[Any], T], value: Any, default: T) -> T:
    """`convert(value)`, or `default` when it does not fit (its own error is reported apart)."""
    try:
        return convert(value)
    except (TypeError, ValueError):
        return default


def given_raw(raw: Any, defaults: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Defaults with the valid given kinds of a raw mapping replaced."""
    given = raw if isinstance(raw, dict) else {}
    return {key: or_default(str_tuple, given.get(key), value) for key, value in defaults.items()}
