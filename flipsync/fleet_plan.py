"""The fleet's schedule and budget rules, as pure functions over plain numbers.

- **Due**: each organization runs once per cadence slot. Slots are shifted by a stable
  hash of its name, so 500 organizations with a 15-minute cadence spread over the 15
  minutes instead of all starting at :00, :15, ...; a cron line every few minutes
  picks up whoever's slot began since their last run.
- **Shares**: the key's requests left today are shared with a minimum per organization
  first (every organization can always make its small runs) and the rest by backlog
  (the records waiting), so one large backfill cannot starve the others.
- **Stretch**: when today's pace says the budget runs out before 00:00 UTC, the cadence
  of the largest backlogs stretches first: they batch more records per run, which costs
  fewer requests per record, while small organizations keep their cadence.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

DAY_SECONDS = 86_400
MAX_STRETCH = 8


def offset_seconds(name: str, cadence_seconds: int) -> int:
    """Where in each cadence interval the organization's slot starts (stable across runs)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % max(1, cadence_seconds)


def slot(name: str, cadence_seconds: int, now_epoch: float) -> int:
    """The number of the organization's current cadence slot."""
    return math.floor((now_epoch - offset_seconds(name, cadence_seconds)) / cadence_seconds)


def is_due(name: str, cadence_seconds: int, now_epoch: float, last_slot: int | None) -> bool:
    """True when the organization has not run yet in its current slot."""
    return last_slot is None or slot(name, cadence_seconds, now_epoch) != last_slot


def shares(
    *,
    remaining: int,
    used: Mapping[str, int],
    backlog: Mapping[str, int],
    minimum: int,
) -> dict[str, int]:
    """Requests each organization may still send today: its minimum, then by backlog.

    ``used`` holds today's requests per organization (every organization of the fleet is a
    key, even at 0), ``backlog`` its waiting records. The minimum is what an organization
    has not yet used of ``minimum``; when the key cannot cover every minimum, what is left
    is split in proportion to them. Whatever remains goes by backlog; the integer parts
    never add up to more than ``remaining``.
    """
    names = sorted(used)
    remaining = max(0, remaining)
    reserved = {n: max(0, minimum - used[n]) for n in names}
    total_reserved = sum(reserved.values())
    if total_reserved > remaining:
        scale = remaining / total_reserved if total_reserved else 0.0
        return {n: math.floor(reserved[n] * scale) for n in names}
    free = remaining - total_reserved
    weights = {n: max(0, backlog.get(n, 0)) for n in names}
    total_weight = sum(weights.values())
    return {
        n: reserved[n] + (math.floor(free * weights[n] / total_weight) if total_weight else 0)
        for n in names
    }


@dataclass(frozen=True)
class Forecast:
    """Today's pace against the key's daily budget."""

    used: int
    budget: int
    projected: int  # requests by 00:00 UTC at today's pace

    @property
    def short(self) -> bool:
        """True when the budget will not last the day at this pace."""
        return self.projected > self.budget

    @property
    def factor(self) -> int:
        """How many times too fast the key is being spent (1 when it lasts)."""
        if not self.short or self.budget <= 0:
            return 1
        return min(MAX_STRETCH, math.ceil(self.projected / self.budget))


def forecast(used: int, budget: int, seconds_into_day: float) -> Forecast:
    """Project today's usage to the end of the UTC day (no projection in the first hour)."""
    elapsed = max(seconds_into_day, 3600.0)
    return Forecast(used, budget, math.ceil(used * DAY_SECONDS / elapsed))


def stretched_cadences(
    cadences: Mapping[str, int],
    backlog: Mapping[str, int],
    fc: Forecast,
    *,
    large_backlog: int = 1000,
) -> dict[str, int]:
    """Cadences (minutes) after stretching: only organizations with a large backlog change.

    The factor is how many times too fast the key is spent; the largest backlog stretches
    by all of it, smaller large ones by less (at least 2 while short).
    """
    result = dict(cadences)
    if not fc.short:
        return result
    large = {n: b for n, b in backlog.items() if b >= large_backlog and n in cadences}
    if not large:
        return result
    top = max(large.values())
    for name, waiting in large.items():
        factor = max(2, math.ceil(fc.factor * waiting / top))
        result[name] = min(cadences[name] * factor, 24 * 60)
    return result
