"""Rendering run reports and decision records for people (text, tables) and files (CSV, JSON).

Everything rendered for a terminal goes through `safe_text.for_terminal`, and every
CSV cell through `safe_text.csv_cell`: payload text is shown, never obeyed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from flipsync.cleanup import CleanupReport, Verdict
from flipsync.intake import IngestReport
from flipsync.json_fields import JSONObject
from flipsync.outcomes import NOT_SYNCED, PUBLIC_OUTCOME_KEYS, Outcome, RunReport
from flipsync.safe_text import csv_cell, for_terminal, json_for_terminal
from flipsync.state import OutcomeRecord

OUTCOME_COLUMNS = PUBLIC_OUTCOME_KEYS
_EMAIL_RE = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+")
FULL_EMAILS_HINT = (
    "emails shortened; `--json`, `--output FILE` or `flipsync explain EMAIL` show them"
)


def mask_email(value: str | None) -> str:
    """ "jane@example.org" -> "j***@example.org": enough to recognise, not to copy.

    Emails appear in full only where a person asks for them (explain, --output, --json);
    printed reports, which end up in terminals, logs and screenshots, shorten them.
    """
    if not value:
        return ""
    local, at, domain = value.partition("@")
    return f"{local[:1]}***{at}{domain}"


def scrub_emails(text: str) -> str:
    """Replace anything that looks like an email in free text (warnings, messages)."""
    return _EMAIL_RE.sub(lambda m: mask_email(m.group(0)), text)


def run_summary(report: RunReport) -> dict[str, Any]:
    """The run report as one log event (`run_finished`): counts and ids, no personal data."""
    data = report.history_record()
    data["message"] = scrub_emails(report.message) if report.message else None
    data["warnings"] = [scrub_emails(w) for w in report.warnings]
    data["activities"] = [
        {k: a.get(k) for k in ("activity_id", "state", "person_count") if k in a}
        for a in report.activities
    ]
    return data


def report_level(report: RunReport) -> str:
    """The log level of a run's `run_finished` event: error when it failed."""
    return "error" if report.status == "error" else "info"


def _who(o: Outcome) -> str:
    """A person in printed output: the shortened email and the Flipcause ids."""
    ids = _ids(o.flipcause_ids) or ",".join(o.record_keys)
    email = mask_email(o.email)
    return f"{email} ({ids})" if email and ids else email or ids


def _ids(ids: Mapping[str, Sequence[str]] | None) -> str:
    if not ids:
        return ""
    return " ".join(f"{k}={','.join(v)}" for k, v in ids.items())


def render_text(report: RunReport) -> str:
    """The human summary printed after a run."""
    c = report.counts()
    kind = "dry run" if report.dry_run else report.kind
    lines = [f"flipsync {kind} {report.run_id}: {report.status}"]
    if report.message:
        lines.append(f"  {report.message}")
    lines.append(
        f"  records read: {report.records_read} ({report.records_retried} retried), "
        f"people: {report.people}"
    )
    lines.append(
        f"  created {c['create']}, updated {c['update']}, skipped {c['skip']}, "
        f"rejected {c['reject']}, deferred {c['deferred']}"
    )
    if report.record_kinds:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(report.record_kinds.items()))
        lines.append(f"  record kinds: {kinds}")
    if report.merchant_records():
        lines.append(
            f"  merchant account payments and credits: {report.merchant_records()} "
            "(never synced: not supporters)"
        )
    if report.knowledge:
        lines.append(f"  contact state from: {', '.join(dict.fromkeys(report.knowledge))}")
    total = sum(report.requests.values())
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(report.requests.items()))
    lines.append(f"  requests to Constant Contact: {total}" + (f" ({by_kind})" if by_kind else ""))
    if report.dry_run:
        writes = report.planned_writes
        imports = writes.get("json_import", 0)
        singles = sum(writes.values()) - imports
        lines.append(
            f"  a live run would send {imports} import(s) (plus about {imports} status "
            f"poll(s)) and {singles} single-contact request(s)"
        )
    else:
        lines.append(f"  checkpoint: {report.checkpoint_before} -> {report.checkpoint_after}")
    for activity in report.activities:
        lines.append(
            f"  import {activity.get('activity_id')}: {activity.get('state')}"
            + (
                f", {activity.get('person_count')} contacts"
                if activity.get("person_count") is not None
                else ""
            )
        )
    if not report.dry_run and any(report.by_action[a] for a in NOT_SYNCED):
        lines.append("  not synced:")
        for o in report.not_synced():
            lines.append(f"    {o.action.value:<8} {_who(o)}: {o.reason}")
        lines.append(f"  ({FULL_EMAILS_HINT})")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    return for_terminal("\n".join(lines))


def _table_cells(o: Outcome) -> tuple[str, ...]:
    cells = (
        mask_email(o.email) or _ids(o.flipcause_ids) or "(no email)",
        o.action.value,
        o.endpoint.value,
        f"{o.status_before or '-'} -> {o.status_after or '-'}",
        ", ".join(o.lists) or "-",
        o.reason,
    )
    return tuple(for_terminal(c) for c in cells)  # escaped first, so columns align


_TABLE_HEADER = ("EMAIL", "ACTION", "VIA", "STATUS", "LISTS", "REASON")


def table_lines(outcomes: Iterable[Outcome]) -> Iterator[str]:
    """The dry-run plan, line by line: one row per person or record, with the reason in full.

    Two passes over ``outcomes`` (a list, or a run's OutcomeLog read twice): one for the
    column widths, one for the rows, so no row is held in memory.
    """
    widths = [min(40, len(h)) for h in _TABLE_HEADER[:-1]]
    for o in outcomes:
        cells = _table_cells(o)
        widths = [min(40, max(w, len(c))) for w, c in zip(widths, cells, strict=False)]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[i][: widths[i]].ljust(widths[i]) for i in range(len(widths))]
        return "  ".join(parts) + "  " + cells[-1]

    yield line(_TABLE_HEADER)
    for o in outcomes:
        yield line(_table_cells(o))
    yield f"({FULL_EMAILS_HINT})"


def render_table(outcomes: Iterable[Outcome]) -> str:
    """The dry-run plan as one text (see `table_lines`)."""
    return "\n".join(table_lines(outcomes))


def _private(path: Path) -> Path:
    """Create (or empty) `path` as 0600 before writing: a decision record is personal data."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    os.close(fd)
    return path


def _json_items(items: Iterable[JSONObject], indent: str, *, escape: bool) -> Iterator[str]:
    """The text of a JSON array, piece by piece, exactly as json.dumps(indent=2) writes it.

    Each item is dumped alone and its lines indented one level deeper (JSON strings hold no
    raw newline, so this is exact); an empty array is ``[]``.
    """
    first = True
    for item in items:
        text = json_for_terminal(item) if escape else json.dumps(item, indent=2, ensure_ascii=False)
        body = text.replace("\n", "\n" + indent + "  ")
        yield ("[\n" if first else ",\n") + indent + "  " + body
        first = False
    yield "[]" if first else "\n" + indent + "]"


def write_outcomes(path: Path, outcomes: Iterable[Outcome]) -> None:
    """Write the decision record as CSV (by .csv suffix) or JSON (anything else), mode 0600."""
    _private(path)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=OUTCOME_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for o in outcomes:
                row: dict[str, object] = {
                    **o.public(),
                    "lists": "; ".join(o.lists),
                    "fields": "; ".join(o.fields),
                    "flipcause_ids": _ids(o.flipcause_ids),
                    "record_keys": "; ".join(o.record_keys),
                }
                writer.writerow({k: csv_cell(v) for k, v in row.items()})
    else:
        with path.open("w", encoding="utf-8") as fh:
            for piece in _json_items((o.public() for o in outcomes), "", escape=False):
                fh.write(piece)
            fh.write("\n")


def report_json(
    report: RunReport, *, with_outcomes: bool, extra: Mapping[str, object] | None = None
) -> Iterator[str]:
    """`--json`: the text json_for_terminal gives for `as_dict` (plus ``extra`` keys after it),
    with the listed outcomes streamed from the run's spill instead of built as one list."""
    marker = f"flipsync-outcomes-{uuid.uuid4().hex}"  # unguessable: no payload can forge it
    data = report.as_dict(with_outcomes=with_outcomes, listing=False)
    data[report.listed_key(with_outcomes=with_outcomes)] = marker
    data.update(extra or {})
    head, tail = json_for_terminal(data).split(json.dumps(marker), 1)
    yield head
    listed = (o.public() for o in report.listed(with_outcomes=with_outcomes))
    yield from _json_items(listed, "  ", escape=True)
    yield tail


def render_cleanup(report: CleanupReport) -> str:
    """`flipsync cleanup-test-contacts`: one line per email of a test record, with its reason."""
    doing = "applied" if report.apply else "listed, nothing written"
    lines = [f"test-contact clean-up {report.run_id}: {report.status} ({doing})"]
    if report.message:
        lines.append(f"  {report.message}")
    lines.append(f"test markers: {'; '.join(report.markers)}")
    lines.append(
        f"test records in the inbox: {report.test_records}, for {len(report.candidates)} email(s)"
    )
    width = max((len(c.email) for c in report.candidates), default=0)
    for c in report.candidates:
        verdict = c.verdict.value.replace("_", " ")
        lines.append(f"  {verdict:<10}  {c.email:<{width}}  {c.reason}")
    doomed = report.count(Verdict.DELETE)
    if not report.apply:
        lines.append(
            f"Nothing was written. --apply deletes the {doomed} contact(s) marked delete and "
            + _marking(report)
        )
        return for_terminal("\n".join(lines))
    lines.append(
        f"deleted {len(report.deleted)} contact(s) in {len(report.activities)} activity(ies)"
    )
    if report.not_deleted:
        lines.append(f"not confirmed deleted: {', '.join(report.not_deleted)}")
    if report.marked:
        lines.append(
            f"marked {report.marked} test record(s): no later run or backfill sends them again"
        )
    return for_terminal("\n".join(lines))


def _marking(report: CleanupReport) -> str:
    waiting = report.test_records - report.already_marked
    if report.test_records and not waiting:
        return (
            f"changes no record: all {report.test_records} test record(s) are already marked, "
            "so no run or backfill sends them again."
        )
    already = f" ({report.already_marked} already are)" if report.already_marked else ""
    return (
        f"marks the {waiting} test record(s) not marked yet{already}, so no run or backfill "
        "sends them again."
    )


def render_history(email: str, rows: Sequence[OutcomeRecord]) -> str:
    """`flipsync explain EMAIL`: every outcome for one person, oldest first."""
    if not rows:
        return for_terminal(f"{email}: flipsync has no record of this email.")
    lines = [f"{email}: {len(rows)} outcome(s)"]
    for r in rows:
        lines.append(
            f"- {r.at} run {r.run_id}: {r.action} via {r.endpoint}, "
            f"{r.status_before or '-'} -> {r.status_after or '-'}"
        )
        if r.lists:
            lines.append(f"    lists: {', '.join(r.lists)}")
        if r.fields:
            lines.append(f"    fields written: {', '.join(r.fields)}")
        lines.append(f"    reason: {r.reason}")
        ids = _ids(r.flipcause_ids)
        if ids:
            lines.append(f"    flipcause: {ids}")
    return for_terminal("\n".join(lines))


def render_ingest(report: IngestReport, *, shown: int = 20) -> str:
    """The ingest summary: counts, refused files, and the first `shown` rejects (--json: all)."""
    lines = [
        f"stored {report.added} payload(s), {report.duplicates} already in the inbox, "
        f"{len(report.rejected)} rejected"
    ]
    lines += [f"  {refusal}" for refusal in report.refused]
    for bad in report.rejected[:shown]:
        lines.append(f"  rejected {bad.location}: {bad.reason}")
    if len(report.rejected) > shown:
        lines.append(f"  ... and {len(report.rejected) - shown} more (--json lists every one)")
    return for_terminal("\n".join(lines))
