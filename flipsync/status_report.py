"""`flipsync status`: where an organization stands, as data (--json) and as a readable table.

The data is read from the state DB (opened read-only), the token file and the request
budget; the problems come from flipsync.health. Text output is for people: labels,
counts and a table of recent runs, never raw Python values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from flipsync.errors import FlipsyncError
from flipsync.health import problems
from flipsync.settings import Settings
from flipsync.state import StateDB, utcnow


def gather(
    settings: Settings, state: StateDB, usage: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Everything `status` shows, as plain data (the --json output)."""
    try:
        requests_today: dict[str, Any] | None = usage()
    except OSError as exc:  # the budget file is unreadable for this user; status still works
        requests_today = {"error": f"{exc.filename or 'budget file'}: {exc.strerror}"}
    return {
        "organization": settings.organization,
        "state_file": str(settings.state_file),
        "checkpoint": state.checkpoint,
        "inbox_total": state.inbox_count(),
        "inbox_waiting": state.inbox_pending_count(),
        "retry_queue": len(state.retry_seqs()),
        "open_batches": [
            {
                "batch": j.batch_id,
                "created_at": j.created_at,
                "ops": {op.op_id: op.state for op in j.ops},
            }
            for j in state.open_journals()
        ],
        "mirror_contacts": state.mirror_count(),
        "mirror_complete": state.get_meta("mirror_complete") == "1",
        "requests_today": requests_today,
        "recent_runs": [
            {k: r[k] for k in ("run_id", "kind", "started_at", "status")}
            for r in state.recent_runs(5)
        ],
        "problems": health(settings, state),
    }


def health(settings: Settings, state: StateDB) -> list[str]:
    """The problems `status --check` reports (see flipsync.health)."""
    from flipsync.ctct.auth import read_token_file, token_status

    token: dict[str, Any] | None = None
    token_error = None
    try:
        token = token_status(read_token_file(settings.constant_contact.token_file), utcnow())
    except FlipsyncError as exc:
        token_error = str(exc)
    oldest = state.oldest_waiting()
    return problems(
        now=utcnow(),
        runs=state.recent_runs(5),
        oldest_waiting=datetime.fromisoformat(oldest) if oldest else None,
        open_batches=[datetime.fromisoformat(j.created_at) for j in state.open_journals()],
        token=token,
        token_error=token_error,
    )


def _requests(usage: Mapping[str, Any] | None) -> str:
    if not usage:
        return "-"
    if "error" in usage:
        return f"unknown ({usage['error']})"
    key_budget = usage.get("application_key_budget")
    org_budget = usage.get("organization_budget")
    return (
        f"{usage.get('application_key', 0)}"
        + (f" of {key_budget}" if key_budget else "")
        + " for the application key, "
        + f"{usage.get('organization', 0)}"
        + (f" of {org_budget}" if org_budget else "")
        + f" for this organization (UTC day {usage.get('day_utc')})"
    )


def _batches(batches: list[Mapping[str, Any]]) -> list[str]:
    if not batches:
        return ["none"]
    lines = []
    for b in batches:
        states: dict[str, int] = {}
        for op_state in b["ops"].values():
            states[op_state] = states.get(op_state, 0) + 1
        done = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no requests"
        lines.append(f"{b['batch']} since {b['created_at']} ({done})")
    return lines


def render(info: Mapping[str, Any]) -> str:
    """The text table of `flipsync status`."""
    mirror = f"{info['mirror_contacts']} contacts" + (
        " (a full copy of the account)" if info["mirror_complete"] else ""
    )
    rows: list[tuple[str, str]] = [
        ("organization", str(info["organization"])),
        ("state file", str(info["state_file"])),
        ("checkpoint", f"inbox record {info['checkpoint']}"),
        (
            "inbox",
            f"{info['inbox_total']} payloads, {info['inbox_waiting']} waiting after the checkpoint",
        ),
        ("retry queue", f"{info['retry_queue']} records"),
    ]
    for i, line in enumerate(_batches(info["open_batches"])):
        rows.append(("unfinished batches" if i == 0 else "", line))
    rows += [
        ("contact mirror", mirror),
        ("requests today", _requests(info["requests_today"])),
    ]
    width = max(len(label) for label, _ in rows)
    out = [f"{label.ljust(width)}  {value}" for label, value in rows]
    runs = info["recent_runs"]
    out.append("")
    if runs:
        header = ("RUN", "KIND", "STARTED", "STATUS")
        cells = [(r["run_id"], r["kind"], r["started_at"], r["status"]) for r in runs]
        widths = [max(len(str(row[i])) for row in [header, *cells]) for i in range(4)]
        out.append("recent runs:")
        for row in [header, *cells]:
            out.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    else:
        out.append("recent runs: none yet")
    out.append("")
    out.extend(check_lines(info["problems"]))
    return "\n".join(line.rstrip() for line in out)


def check_lines(found: list[str]) -> list[str]:
    """`status --check` output: "ok", or one line per problem."""
    return [f"problem: {p}" for p in found] if found else ["ok"]
