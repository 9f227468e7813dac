"""Ingest protects the inbox: wrong files are refused early, rejects are short and recorded once."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner, Result

from flipsync.cli import cli
from flipsync.errors import ExitCode
from flipsync.intake import SNIFF_LINES, ingest_stream
from flipsync.state import StateDB
from tests.helpers import config_dict, payload, write_config

PASSWD = "".join(
    f"user{i}:x:{1000 + i}:{1000 + i}:User {i},,,:/home/user{i}:/bin/bash\n" for i in range(40)
)


def ingest(tmp_path: Path, *args: str) -> Result:
    config = write_config(tmp_path, config_dict())
    return CliRunner().invoke(cli, ["-c", str(config), "ingest", *args])


def table(tmp_path: Path, query: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(tmp_path / "state.db")
    try:
        return list(conn.execute(query))
    finally:
        conn.close()


def test_a_passwd_file_is_refused_with_a_summary_and_nothing_stored(tmp_path: Path) -> None:
    """/etc/passwd: exit 2, "N of the first M lines are not JSON objects", one reject recorded."""
    passwd = tmp_path / "passwd"
    passwd.write_text(PASSWD, encoding="utf-8")
    result = ingest(tmp_path, str(passwd))
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "40 of the first 40 lines are not JSON objects" in result.output
    assert "nothing was stored" in result.output
    assert result.output.count("  rejected ") == 20  # the first 20, then a count
    assert "and 20 more (--json lists every one)" in result.output
    assert table(tmp_path, "SELECT count(*) FROM inbox") == [(0,)]
    assert table(tmp_path, "SELECT location, reason FROM intake_rejects") == [
        (str(passwd), "refused: 40 of the first 40 lines are not JSON objects")
    ]


def test_fifty_megabytes_of_junk_is_refused_after_a_bounded_read(tmp_path: Path) -> None:
    """A 50 MB text file of junk: a short answer, a tiny state DB, and only SNIFF_LINES read."""
    junk = tmp_path / "junk.log"
    line = b"2026-11-30 12:00:00 kernel: something happened here, nothing to see\n"
    with junk.open("wb") as fh:
        fh.write(line * (50 * 1024 * 1024 // len(line)))
    result = ingest(tmp_path, str(junk))
    assert result.exit_code == ExitCode.CONFIG
    assert f"{SNIFF_LINES} of the first {SNIFF_LINES} lines are not JSON objects" in result.output
    assert len(result.output) < 5000
    assert (tmp_path / "state.db").stat().st_size < 1024 * 1024
    assert table(tmp_path, "SELECT count(*) FROM intake_rejects") == [(1,)]

    class Counting(io.BytesIO):
        read_bytes = 0

        def readline(self, size: int | None = -1) -> bytes:
            data = super().readline(size)
            Counting.read_bytes += len(data)
            return data

    with StateDB.open(tmp_path / "other.db") as state:
        report = ingest_stream(
            state, Counting(line * 100_000), name="j", source="file:j", id_field="x"
        )
    assert report.refused and Counting.read_bytes == SNIFF_LINES * len(line)


def test_one_huge_line_without_newlines_is_never_held_whole(tmp_path: Path) -> None:
    """A single 20 MB line is skipped in pieces and reported with its size."""
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"A" * (20 * 1024 * 1024))
    result = ingest(tmp_path, str(blob))
    assert result.exit_code == ExitCode.CONFIG
    assert "line is 20971520 bytes" in result.output
    assert "1 of the first 1 lines are not JSON objects" in result.output


def test_json_lists_every_reject(tmp_path: Path) -> None:
    """--json gives all rejects, not the first 20."""
    data = tmp_path / "mixed.ndjson"
    lines = [json.dumps(payload(f"p{i}@example.org")) for i in range(60)] + ["{bad"] * 30
    data.write_text("\n".join(lines), encoding="utf-8")
    result = ingest(tmp_path, "--json", str(data))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["added"], len(report["rejected"]), report["refused"]) == (60, 30, [])
    text = ingest(tmp_path, str(data))
    assert text.exit_code == 0
    assert "stored 0 payload(s), 60 already in the inbox, 30 rejected" in text.output
    assert text.output.count("  rejected ") == 20 and "and 10 more" in text.output


def test_re_ingesting_a_file_records_its_rejects_once(tmp_path: Path) -> None:
    """The same file twice: the same rejects are not recorded again (nor is a refusal)."""
    data = tmp_path / "some-bad.ndjson"
    good = [json.dumps(payload(f"g{i}@example.org")) for i in range(5)]
    data.write_text("\n".join([*good, "{oops", "[1]"]), encoding="utf-8")
    passwd = tmp_path / "passwd"
    passwd.write_text(PASSWD, encoding="utf-8")
    for _ in range(3):
        ingest(tmp_path, str(data))
        ingest(tmp_path, str(passwd))
    rows = table(tmp_path, "SELECT location FROM intake_rejects ORDER BY id")
    assert rows == [(f"{data}: line 6",), (f"{data}: line 7",), (str(passwd),)]


def test_nothing_stored_but_something_rejected_exits_non_zero(tmp_path: Path) -> None:
    """Only rejects: exit 2. Rejects beside payloads already in the inbox: exit 0."""
    only_bad = tmp_path / "bad.ndjson"
    only_bad.write_text('{"a": 1} trailing\n', encoding="utf-8")
    assert ingest(tmp_path, str(only_bad)).exit_code == ExitCode.CONFIG
    mixed = tmp_path / "mixed.ndjson"
    mixed.write_text(json.dumps(payload()) + "\n" + json.dumps(payload()) + "\n{x\n")
    assert ingest(tmp_path, str(mixed)).exit_code == 0
    assert ingest(tmp_path, str(mixed)).exit_code == 0  # already stored counts as stored


def test_a_file_that_turns_to_junk_stops_and_keeps_what_came_before(tmp_path: Path) -> None:
    """Good data, then far more junk: reading stops, the good payloads stay, exit 2."""
    data = tmp_path / "tail.ndjson"
    good = [json.dumps(payload(f"t{i}@example.org")) for i in range(150)]
    data.write_text("\n".join(good + ["junk"] * 5000), encoding="utf-8")
    result = ingest(tmp_path, str(data))
    assert result.exit_code == ExitCode.CONFIG
    assert "stopped reading, 151 of the first 301 lines are not JSON objects" in result.output
    assert table(tmp_path, "SELECT count(*) FROM inbox") == [(150,)]


def test_good_files_with_a_few_bad_lines_still_go_in(tmp_path: Path) -> None:
    """A real export with a broken line or two is not mistaken for junk."""
    data = tmp_path / "real.ndjson"
    lines = [json.dumps(payload(f"r{i}@example.org")) for i in range(3)] + ["{cut off"]
    data.write_text("\n".join(lines), encoding="utf-8")
    result = ingest(tmp_path, str(data))
    assert result.exit_code == 0
    assert "stored 3 payload(s), 0 already in the inbox, 1 rejected" in result.output


def test_a_csv_that_is_mostly_broken_rows_is_refused(tmp_path: Path) -> None:
    """The same guard for exports: rows that cannot be read outnumber good ones."""
    data = tmp_path / "export.csv"
    rows = ["First Name,Email", "Ada,ada@example.org"] + ["a,b,c,d"] * 5
    data.write_text("\n".join(rows), encoding="utf-8")
    result = ingest(tmp_path, str(data))
    assert result.exit_code == ExitCode.CONFIG
    assert "5 of the first 6 rows cannot be read as export rows" in result.output
    assert table(tmp_path, "SELECT count(*) FROM inbox") == [(0,)]


def test_rejects_recorded_per_file_are_capped(tmp_path: Path) -> None:
    """A big file with many (but not most) bad lines records 1000 rejects and one count."""
    from flipsync.intake import MAX_RECORDED_REJECTS

    data = tmp_path / "big.ndjson"
    good = [json.dumps(payload(f"c{i}@example.org")) for i in range(1500)]
    data.write_text("\n".join(good + ["{bad"] * 1200), encoding="utf-8")
    result = ingest(tmp_path, "--json", str(data))
    assert result.exit_code == 0
    assert len(json.loads(result.output)["rejected"]) == 1200  # --json still lists all
    ingest(tmp_path, str(data))
    assert table(tmp_path, "SELECT count(*) FROM intake_rejects") == [(MAX_RECORDED_REJECTS + 1,)]
    assert table(tmp_path, "SELECT reason FROM intake_rejects ORDER BY id DESC LIMIT 1") == [
        ("200 more rejects, not recorded one by one",)
    ]


def test_a_csv_export_streams_and_rejects_only_its_rows_that_are_not_utf8(tmp_path: Path) -> None:
    """An export saved as Windows-1252: the rows with such bytes are rejected, the rest stored."""
    data = tmp_path / "export.csv"
    rows = ["First Name,Email"] + [f"P{i},p{i}@example.org" for i in range(5)]
    data.write_bytes(
        ("\r\n".join(rows) + "\r\n").encode() + "Zoë,zoe@example.org\r\n".encode("cp1252")
    )
    result = ingest(tmp_path, str(data))
    assert result.exit_code == 0, result.output
    assert "stored 5 payload(s), 0 already in the inbox, 1 rejected" in result.output
    assert (
        f'rejected {data}: line 7: not UTF-8 text (in Excel, save the export as "CSV UTF-8")'
        in (result.output)
    )


def test_a_huge_junk_csv_is_refused_at_its_header(tmp_path: Path) -> None:
    """A 20 MB single-line .csv: the header is read (cut at a bound) and refused."""
    data = tmp_path / "junk.csv"
    data.write_bytes(b"x" * (20 * 1024 * 1024))
    result = ingest(tmp_path, str(data))
    assert result.exit_code == ExitCode.CONFIG
    assert "unreadable CSV header (field larger than field limit" in result.output
    assert len(result.output) < 2000
