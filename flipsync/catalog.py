"""The account's lists and custom fields that the config names, resolved to their ids.

A run needs them before its first write, and `flipsync check` shows them; both ask
this module, so `check` proves exactly what a run would find.
"""

from __future__ import annotations

from dataclasses import dataclass

from flipsync.errors import AccountMismatch
from flipsync.ports import ConstantContactAPI
from flipsync.settings import Settings, is_list_id


@dataclass(frozen=True)
class Catalog:
    """The account's lists and custom fields, resolved once per run."""

    list_ids: dict[str, str]
    list_names: dict[str, str]
    field_ids: dict[str, str]


def resolve_catalog(settings: Settings, api: ConstantContactAPI) -> Catalog:
    """Lists (and custom fields) named by the config must exist before any write.

    Raises AccountMismatch naming every missing one; reads only (one or two requests).
    """
    refs = settings.policy.all_list_refs()
    lists = api.list_lists()
    by_name = {lst.name: lst.list_id for lst in lists}
    names = {lst.list_id: lst.name for lst in lists}
    resolved: dict[str, str] = {}
    missing = []
    for ref in refs:
        if is_list_id(ref) and ref.lower() in {i.lower() for i in names}:
            resolved[ref] = next(i for i in names if i.lower() == ref.lower())
        elif ref in by_name:
            resolved[ref] = by_name[ref]
        else:
            missing.append(ref)
    field_ids: dict[str, str] = {}
    wanted = list(dict.fromkeys(settings.flipcause.custom_fields.values()))
    missing_fields: list[str] = []
    if wanted:
        fields = {f.name: f.custom_field_id for f in api.list_custom_fields()}
        field_ids = {n: fields[n] for n in wanted if n in fields}
        missing_fields = [n for n in wanted if n not in fields]
    if missing or missing_fields:
        parts = []
        if missing:
            parts.append(
                "lists not found in the Constant Contact account: "
                + ", ".join(repr(m) for m in missing)
                + " (create them in Constant Contact, or fix the names under policy)"
            )
        if missing_fields:
            parts.append(
                "custom fields not found: "
                + ", ".join(repr(m) for m in missing_fields)
                + " (create them, or fix flipcause.custom_fields)"
            )
        raise AccountMismatch("; ".join(parts) + ". Nothing was written.")
    return Catalog(
        list_ids=resolved,
        list_names={ref: names[i] for ref, i in resolved.items()},
        field_ids=field_ids,
    )
