"""Field discovery for go-live: which configured Flipcause fields the stored payloads carry.

Flipcause documents only the start of its webhook payloads, so the first real webhooks
decide the field names. This counts, over the payloads in the inbox, how many carry each
configured field with a value, and which keys no setting maps. Only key names and counts
leave this module, never values: payloads hold supporters' personal data.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from flipsync.records import UNRECOGNISED, record_kind
from flipsync.settings import FieldMap, FlipcauseSettings
from flipsync.state import StateDB

PAGE = 1000


@dataclass(frozen=True)
class FieldCount:
    """One configured field: its setting, the payload key it names, and how often it is seen."""

    setting: str
    key: str
    with_value: int
    with_key: int
    similar: tuple[tuple[str, int], ...] = ()

    @property
    def missing(self) -> bool:
        """No stored payload carries it with a value: the setting probably names the wrong key."""
        return self.with_value == 0


@dataclass(frozen=True)
class KeyCount:
    """A payload key that no setting maps (kept in each record's extra data)."""

    key: str
    with_value: int
    with_key: int


@dataclass(frozen=True)
class FieldReport:
    """What `flipsync fields` shows; counts and key names only."""

    payloads: int
    configured: tuple[FieldCount, ...]
    unmapped: tuple[KeyCount, ...]
    kinds: Mapping[str, int]

    @property
    def email(self) -> FieldCount:
        """The email field: without it no payload yields a person."""
        return next(c for c in self.configured if c.setting == "flipcause.fields.email")

    def missing(self) -> list[FieldCount]:
        """Configured fields no stored payload carries with a value (none when the inbox is empty)."""
        return [c for c in self.configured if c.missing] if self.payloads else []

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `--json`."""
        return {
            "payloads": self.payloads,
            "record_kinds": dict(self.kinds),
            "configured": [
                {
                    "setting": c.setting,
                    "key": c.key,
                    "with_value": c.with_value,
                    "with_key": c.with_key,
                    "missing": bool(self.payloads) and c.missing,
                    "similar_unmapped_keys": [{"key": k, "with_key": n} for k, n in c.similar],
                }
                for c in self.configured
            ],
            "unmapped": [
                {"key": k.key, "with_value": k.with_value, "with_key": k.with_key}
                for k in self.unmapped
            ],
        }


def has_value(value: Any) -> bool:
    """Non-empty: blank strings, None and empty containers count as absent."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, dict, tuple)):
        return bool(value)
    return True


def configured_fields(settings: FlipcauseSettings) -> list[tuple[str, str]]:
    """(setting, payload key) for every Flipcause field a setting names."""
    out = [
        (f"flipcause.fields.{f.name}", getattr(settings.fields, f.name)) for f in fields(FieldMap)
    ]
    out += [(f"flipcause.custom_fields.{key}", key) for key in settings.custom_fields]
    return out


def discover(payloads: Iterable[Mapping[str, Any]], settings: FlipcauseSettings) -> FieldReport:
    """Count configured and unmapped keys over the payloads (a single pass)."""
    with_key: Counter[str] = Counter()
    with_value: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    total = 0
    for payload in payloads:
        total += 1
        for key, value in payload.items():
            with_key[key] += 1
            if has_value(value):
                with_value[key] += 1
        kind, _ = record_kind(payload, settings)
        kinds[kind.value if kind else UNRECOGNISED] += 1
    named = configured_fields(settings)
    mapped = {key for _, key in named}
    unmapped = sorted(
        (KeyCount(k, with_value[k], n) for k, n in with_key.items() if k not in mapped),
        key=lambda c: (-c.with_key, c.key),
    )
    candidates = [c.key for c in unmapped if c.with_value]
    configured = []
    for setting, key in named:
        similar: tuple[tuple[str, int], ...] = ()
        if not with_value[key]:
            close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
            similar = tuple((k, with_key[k]) for k in close)
        configured.append(FieldCount(setting, key, with_value[key], with_key[key], similar))
    return FieldReport(total, tuple(configured), tuple(unmapped), dict(sorted(kinds.items())))


def stored_payloads(state: StateDB) -> Iterator[Mapping[str, Any]]:
    """Every payload in the inbox, oldest first, a page at a time."""
    after = 0
    while rows := state.inbox_after(after, PAGE):
        for row in rows:
            yield row.payload
        after = rows[-1].seq


def email_warning(report: FieldReport) -> str | None:
    """`flipsync check`'s warning when no stored payload has an email where the config looks."""
    email = report.email
    if not report.payloads or not email.missing:
        return None
    where = (
        f"is absent from all {report.payloads} stored payload(s)"
        if not email.with_key
        else f"is empty in all {report.payloads} stored payload(s)"
    )
    hint = f" (keys seen like it: {_similar(email)})" if email.similar else ""
    return (
        f"the email field `{email.key}` {where}, so no record yields a person: set "
        f"`flipcause.fields.email` to the key your payloads use{hint}; `flipsync fields` lists them"
    )


def _similar(count: FieldCount) -> str:
    return ", ".join(f"{k} in {n}" for k, n in count.similar)


def render_text(report: FieldReport) -> str:
    """The human report: configured fields, then unmapped keys; never a value."""
    lines = [f"stored payloads: {report.payloads} (key names and counts only, never values)"]
    if not report.payloads:
        lines.append("nothing to report yet: run this again after the first webhooks arrive")
        return "\n".join(lines)
    kinds = ", ".join(f"{k} {n}" for k, n in report.kinds.items())
    lines.append(f"record kinds: {kinds}")
    if report.kinds.get(UNRECOGNISED):
        lines.append(
            f"  {report.kinds[UNRECOGNISED]} payload(s) have a trigger type no kind lists and are "
            "not synced: add their spelling under `flipcause.trigger_types`"
        )
    lines.append("")
    lines.append("configured fields (payloads with a value / with the key):")
    width = max(len(c.setting) for c in report.configured)
    for c in report.configured:
        mark = "missing" if c.missing else "ok"
        line = f"  {mark:<8} {c.setting:<{width}}  {c.key}: {c.with_value}/{c.with_key}"
        if c.missing:
            line += (
                "; present but always empty"
                if c.with_key
                else f"; in no payload: change `{c.setting}` to the key your payloads use"
            )
            if c.similar:
                line += f" (keys seen like it: {_similar(c)})"
        lines.append(line)
    lines.append("")
    if report.unmapped:
        lines.append("keys no setting maps (kept with each record, not synced):")
        for k in report.unmapped:
            lines.append(f"  {k.key}: {k.with_value}/{k.with_key}")
    else:
        lines.append("keys no setting maps: none")
    missing = report.missing()
    if missing:
        lines.append("")
        lines.append(
            f"{len(missing)} configured field(s) missing from every payload; some apply only "
            "to some kinds (amount to gifts, address to forms that ask for it)"
        )
    return "\n".join(lines)
