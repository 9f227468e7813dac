"""Matching Flipcause records against the config's routing and skip conditions (pure)."""

from __future__ import annotations

import fnmatch

from flipsync.emails import normalize_email
from flipsync.records import FlipcauseRecord
from flipsync.settings import Condition, PolicySettings, SkipRule


def matches(condition: Condition, record: FlipcauseRecord) -> bool:
    """True when every condition that is set holds for the record (an AND of the keys).

    Values inside one key are alternatives (an OR): `activity_type: [donation, refund]`.
    Campaign titles and trigger types compare case-insensitively. A refund never matches
    an amount or recurring condition: its amount is money returned, not a gift, so no
    amount or recurring list is ever added (or skip made) because of one.
    """
    if record.is_refund and (
        condition.amount_at_least is not None or condition.recurring is not None
    ):
        return False
    if condition.activity_types and record.activity_kind not in condition.activity_types:
        return False
    if condition.campaign_ids and record.campaign_id not in condition.campaign_ids:
        return False
    if condition.campaign_titles:
        title = (record.campaign_title or "").casefold()
        if title not in {t.casefold() for t in condition.campaign_titles}:
            return False
    if condition.amount_at_least is not None and (
        record.amount is None or record.amount < condition.amount_at_least
    ):
        return False
    if condition.recurring is not None and record.is_recurring != condition.recurring:
        return False
    if condition.email_patterns and not any(
        fnmatch.fnmatchcase(record.email_key, normalize_email(pattern))
        for pattern in condition.email_patterns
    ):
        return False
    return not (
        condition.trigger_types
        and (record.trigger_type or "").casefold()
        not in {t.casefold() for t in condition.trigger_types}
    )


def skip_rule_for(record: FlipcauseRecord, policy: PolicySettings) -> SkipRule | None:
    """The first skip rule that drops this record, if any."""
    for rule in policy.skip:
        if matches(rule.when, record):
            return rule
    return None


def rule_lists(
    records: tuple[FlipcauseRecord, ...], policy: PolicySettings
) -> list[tuple[str, str]]:
    """(rule name, list ref) for every routing rule matched by any of a person's records."""
    added: list[tuple[str, str]] = []
    for rule in policy.rules:
        if any(matches(rule.when, r) for r in records):
            added.extend((rule.name, ref) for ref in rule.add_lists)
    return added
