"""Reading typed values back out of stored JSON (journal rows, spilled outcomes).

The journal outlives the code that wrote it, so every field is checked as it is read: a
wrong type is a clear error naming the field, never a silent `Any` flowing into a commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

JSON: TypeAlias = "str | int | float | bool | list[JSON] | dict[str, JSON] | None"
JSONObject: TypeAlias = "dict[str, JSON]"


class StoredDataError(ValueError):
    """Stored JSON that does not have the shape flipsync wrote."""


def _bad(key: str, want: str, value: object) -> StoredDataError:
    return StoredDataError(f"stored field {key!r}: expected {want}, found {type(value).__name__}")


def req_str(data: Mapping[str, object], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _bad(key, "text", value)
    return value


def opt_str(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(key, "text or null", value)
    return value


def opt_int(data: Mapping[str, object], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, "a whole number or null", value)
    return value


def opt_bool(data: Mapping[str, object], key: str) -> bool | None:
    value = data.get(key)
    if value is not None and not isinstance(value, bool):
        raise _bad(key, "true, false or null", value)
    return value


def str_tuple(data: Mapping[str, object], key: str) -> tuple[str, ...]:
    """A list of text; a missing key is an empty list (older rows left some out)."""
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(key, "a list of text", value)
    return tuple(str(v) for v in value)


def int_tuple(data: Mapping[str, object], key: str) -> tuple[int, ...]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise _bad(key, "a list of whole numbers", value)
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise _bad(key, "a list of whole numbers", value)
        out.append(int(v))
    return tuple(out)


def obj(data: Mapping[str, object], key: str) -> Mapping[str, object]:
    """A JSON object; a missing key is an empty one."""
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise _bad(key, "an object", value)
    return {str(k): v for k, v in value.items()}


def str_lists(data: Mapping[str, object], key: str) -> dict[str, tuple[str, ...]]:
    """An object of text lists, e.g. Flipcause ids by kind of id."""
    inner = obj(data, key)
    return {k: str_tuple(inner, k) for k in inner}
