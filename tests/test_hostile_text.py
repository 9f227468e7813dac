"""Hostile text: payloads are shown on terminals and in spreadsheets, never obeyed by them."""

from __future__ import annotations

import csv
import json
import unicodedata
from pathlib import Path

import pytest
from click.testing import Result

from flipsync.outcomes import Outcome
from flipsync.report import write_outcomes
from flipsync.safe_text import FORMULA_PREFIXES, csv_cell, for_terminal, json_for_terminal
from tests.conftest import Org
from tests.helpers import payload

ESC = "\x1b[2J\x1b[31m\x1b]0;owned\x07"  # clear screen, red, set the window title
RLO = "\u202e"  # right-to-left override
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
C1_CSI = "\x9b"


def raw_controls(text: str) -> list[str]:
    """Characters a terminal would act on: controls other than newline, and bidi controls."""
    return sorted(
        {
            ch
            for ch in text
            if (unicodedata.category(ch) == "Cc" and ch != "\n")
            or ch in BIDI
            or ch in "\u2028\u2029"
        }
    )


def formula_cells(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [
            cell
            for row in csv.reader(fh)
            for cell in row
            if cell.lstrip(" ").startswith(FORMULA_PREFIXES)
        ]


def clean(result: Result) -> Result:
    """No traceback and no raw control character anywhere the user sees."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert raw_controls(result.output) == [], result.output
    return result


# Valid addresses whose local part starts like a formula: synced as they are.
VALID = [
    "=1+1@example.org",
    "+tag@example.org",
    "-dash@example.org",
    "plain@example.org",
    "emoji.name@example.org",
]


def hostile_payloads() -> list[dict[str, str]]:
    names = [
        ('=HYPERLINK("http://x")', "@SUM(A1)"),
        (f"{ESC}Eve", f"Mallory{C1_CSI}2J"),
        (f"{RLO}gnp.exe", "\u200fRTL\u200e"),
        ("\U0001f389 Party", "\U0001f469\u200d\U0001f469\u200d\U0001f467"),
        ("\tTab", "\rReturn"),
    ]
    out = []
    for email, (first, last) in zip(VALID, names, strict=True):
        out.append(
            payload(
                email,
                first=first,
                last=last,
                AD_campaign_title=f"-{ESC}Gala{RLO}\u2028",
                PD_city="+Boston",
            )
        )
    # Invalid: escape sequences inside the email and the record id; shown in "not synced".
    out.append(payload(f"{ESC}bad@example.org", webhook_record_id=f"=id{ESC}{RLO}"))
    out.append(payload(f"@{RLO}evil@example.org"))
    return out


def test_whole_flow_on_hostile_payloads(org: Org, tmp_path: Path) -> None:
    """ingest, dry run with --output, run, explain, status: safe output, every valid person synced."""
    data = tmp_path / "hostile.ndjson"
    data.write_text(
        "\n".join(json.dumps(p, ensure_ascii=False) for p in hostile_payloads()), encoding="utf-8"
    )
    ingested = clean(org.cli("ingest", str(data)))
    assert ingested.exit_code == 0
    assert "stored 7 payload(s)" in ingested.output

    plan = tmp_path / "plan.csv"
    dry = clean(org.cli("run", "--dry-run", "--output", str(plan)))
    assert dry.exit_code == 0
    assert "\\x1b" in dry.output  # shown, visibly, not obeyed (the table masks emails)
    assert formula_cells(plan) == []
    with plan.open(newline="", encoding="utf-8") as fh:
        emails = [row["email"] for row in csv.DictReader(fh)]
    assert "'=1+1@example.org" in emails and "'+tag@example.org" in emails

    dry_json = org.cli("run", "--dry-run", "--json")
    clean(dry_json)
    assert json.loads(dry_json.output)["counts"]["reject"] == 2

    live = clean(org.cli("run"))
    assert live.exit_code == 0, live.output
    for email in VALID:
        assert org.contact(email) is not None, email
    assert org.contact("=1+1@example.org")["email_address"]["address"] == "=1+1@example.org"

    for who in ("=1+1@example.org", f"{ESC}bad@example.org", "nobody\x1b[2J@example.org"):
        explained = clean(org.cli("explain", who))
        assert explained.exit_code == 0
        if who.startswith(ESC):
            assert "\\x1b[2J" in explained.output  # explain shows the email in full, escaped
        clean(org.cli("explain", "--json", who))
    clean(org.cli("status"))
    clean(org.cli("status", "--json"))
    clean(org.cli("run", "--json"))


@pytest.mark.parametrize("prefix", FORMULA_PREFIXES)
def test_every_formula_prefix_is_neutralised(prefix: str) -> None:
    assert csv_cell(f"{prefix}cmd|' /C calc'!A0") == f"'{prefix}cmd|' /C calc'!A0"
    assert csv_cell(f"  {prefix}1") == f"'  {prefix}1"
    assert csv_cell("ada@example.org") == "ada@example.org"
    assert csv_cell(None) is None


def test_terminal_text_keeps_newlines_and_readable_unicode() -> None:
    text = f"Zoë \U0001f389 שלום\nnext{ESC}{C1_CSI}{RLO}\u2028"
    shown = for_terminal(text)
    assert raw_controls(shown) == []
    assert shown.startswith("Zoë \U0001f389 שלום\nnext\\x1b[2J")
    assert "\\x9b" in shown and "\\u202e" in shown and "\\u2028" in shown


def test_terminal_json_means_the_same() -> None:
    data = {"name": f"{ESC}{C1_CSI}{RLO}x\x7f", "emoji": "\U0001f389"}
    text = json_for_terminal(data)
    assert raw_controls(text) == []
    assert json.loads(text) == data and "\U0001f389" in text


def test_json_decision_records_stay_exact(tmp_path: Path) -> None:
    """The JSON --output is data, not a spreadsheet: values are written as they are."""
    out = tmp_path / "plan.json"
    row = {"email": "=1+1@example.org", "action": "create", "reason": "-x"}
    write_outcomes(out, [Outcome.from_json(row)])
    assert json.loads(out.read_text())[0]["email"] == "=1+1@example.org"


def test_console_log_lines_show_escape_sequences_instead_of_running_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A record key with an escape sequence, logged on a terminal, arrives escaped."""
    import structlog

    from flipsync import logs

    logs.configure("info", "console")
    structlog.get_logger("t").info("webhook_stored", record_key=f"wh:{ESC}{RLO}x")
    err = capsys.readouterr().err
    assert "webhook_stored" in err and "\\x1b[2J" in err
    assert raw_controls(err) == []
    logs.configure("info", "json")
    structlog.get_logger("t").info("webhook_stored", record_key=f"wh:{ESC}{RLO}x")
    assert raw_controls(capsys.readouterr().err) == []
