"""The import matching rule: when an uncertain import POST may be taken to have made an activity.

After an import POST fails with a 5xx, a timeout or a broken connection, the client reads
``GET /activities`` and adopts an activity as the answer to the uncertain POST
(``import_matches`` plus uniqueness) only when all hold:

1. flipsync never recorded it before, in any run: the caller passes every activity id of
   its journal and history (``exclude``), and this client adds the ids it returned;
2. its ``created_at`` is no earlier than the moment the POST was sent, in Constant
   Contact's clock: our send time plus the *measured* lower bound of the server's clock
   offset (``ServerClock``, from the ``Date`` headers of recent answers), less the one
   second that ``Date`` and ``created_at`` may be truncated by. With no measured offset
   nothing is adopted;
3. it looks like a contacts import: no ``status.list_count`` (list-membership jobs) and no
   ``_links.results`` (exports);
4. its row count matches: ``items_total_count`` is the number of rows sent (or one more,
   for CC's header row), or, without it, ``person_count`` equals that number. An activity
   with no counts yet proves nothing and is never adopted;
5. it is the only activity that passes 1 to 4.

Imports are upserts by email, so a needless second post costs requests; adopting an
activity that is not ours would cost people. The rule errs towards the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from flipsync.ctct.parse import _dict, _parse_time

# Date headers and created_at stamps may be truncated to the second.
CLOCK_RESOLUTION: Final = timedelta(seconds=1)


def import_matches(
    raw: Mapping[str, Any], *, people: int, since: datetime, claimed: set[str] | frozenset[str]
) -> bool:
    """Whether a raw activity can be the import an uncertain POST of ``people`` rows created.

    Points 1 to 4 of the module docstring's rule; the caller checks uniqueness (point 5).
    """
    activity_id = raw.get("activity_id")
    if not isinstance(activity_id, str) or not activity_id or activity_id in claimed:
        return False
    created_at = _parse_time(raw.get("created_at"))
    if created_at is None or created_at < since:
        return False
    status = _dict(raw.get("status"))
    links = _dict(raw.get("_links"))
    if "list_count" in status or "results" in links:
        return False
    # items_total_count counts every row sent (plus CC's header row) from the start;
    # person_count only the rows CC accepted, once it finished.
    total = status.get("items_total_count")
    if isinstance(total, int) and total > 0:
        return total in (people, people + 1)
    person_count = status.get("person_count")
    if isinstance(person_count, int) and person_count > 0:
        return person_count == people
    # No counts (yet): nothing proves this activity holds our rows.
    return False
