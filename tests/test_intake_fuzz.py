"""Hostile input for every intake path: the receiver (WSGI and raw sockets) and both parsers.

The properties: never a 500, never an exception escaping, and never a valid record
lost because something else in the same body, file or batch was bad.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flipsync.csv_intake import CsvRow, parse_csv_text
from flipsync.errors import InputError
from flipsync.intake import BadItem, check_item, parse_payload_text
from flipsync.receiver import (
    Receiver,
    build_receiver,
    make_server,
    run_until_stopped,
)
from flipsync.state import StateDB, record_key_for
from flipsync.webhook_body import BodyError, parse_body
from tests.helpers import config_dict, settings_from

SECRET = secrets.token_urlsafe(24)
# Modest by default for CI; FLIPSYNC_FUZZ_EXAMPLES=5000 for a deeper local hunt.
EXAMPLES = int(os.environ.get("FLIPSYNC_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(
    max_examples=max(1, EXAMPLES // 3),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SETTINGS = settings_from(config_dict(intake={"max_body_bytes": 64 * 1024}))
ALLOWED_STATUSES = {200, 400, 401, 404, 405, 413, 415}

# Text that includes the nasty parts of Unicode: lone surrogates, NUL and other controls,
# bidi overrides, non-characters, astral characters.
NASTY = st.sampled_from(
    ["\ud800", "\udfff", "\x00", "\u202e", "\u200f", "\ufeff", "\uffff", "\U0001f600", "\r\n", '"']
)
TEXT = st.text(max_size=40) | st.lists(NASTY | st.text(max_size=5), max_size=8).map("".join)
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=utf-16",
        "application/json; charset=nonsense",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=latin-1",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        'multipart/form-data; boundary="a b"',
        "text/plain",
        "text/html",
        "application/xml",
        "application/vnd.flipcause+json",
        ";;;=;",
        "application/json; charset=",
        "\x00/\x00",
    ]
)


def dumps(value: Any, *, ensure_ascii: bool) -> str:
    """JSON as a sender would write it: a lone surrogate can only travel as a \\u escape."""
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text)


def valid_payload(values: st.SearchStrategy[Any] = JSON_VALUE) -> st.SearchStrategy[dict[str, Any]]:
    """A payload the receiver must store: unique id plus arbitrary (even nasty) fields."""
    return st.dictionaries(TEXT, values, max_size=6).map(
        lambda d: {**d, "webhook_record_id": f"fz-{uuid.uuid4().hex}"}
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    path = tmp_path_factory.mktemp("fuzz") / "state.db"
    receiver = build_receiver(SETTINGS, SECRET, state_path=path)
    yield receiver
    receiver.close()


def call(
    app: Receiver,
    body: bytes,
    *,
    content_type: str | None = "application/json",
    path: str = f"/flipcause/{SECRET}",
    method: str = "POST",
    extra: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        **(extra or {}),
    }
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    status: list[int] = []
    chunks = app(environ, lambda s, h: status.append(int(s.split()[0])))
    return status[0], json.loads(b"".join(chunks))


def stored_keys(app: Receiver, keys: list[str]) -> set[str]:
    """Which of these record keys the inbox holds (read through a fresh connection)."""
    path = app.writer._path
    with StateDB.open(path, create=False) as state:
        found: set[str] = set()
        conn = state._conn
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found |= {
                r[0]
                for r in conn.execute(
                    f"SELECT record_key FROM inbox WHERE record_key IN ({marks})", chunk
                )
            }
        return found


# -- body parsing ---------------------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=2048), content_type=CONTENT_TYPES)
def test_parse_body_on_random_bytes_raises_only_body_error(
    body: bytes, content_type: str | None
) -> None:
    """Random bytes under any Content-Type parse to storable items or a BodyError, nothing else."""
    try:
        parsed = parse_body(body, content_type)
    except BodyError as exc:
        assert exc.status in {400, 413, 415} and 0 < len(exc.reason) < 200
        return
    for item in parsed.items:
        if isinstance(item, dict):
            json.dumps(item, ensure_ascii=False).encode("utf-8")  # storable as UTF-8 text


@FUZZ
@given(doc=JSON_VALUE, charset=st.sampled_from(["utf-8", "utf-16", "utf-16le", "latin-1"]))
def test_parse_body_on_random_json_documents(doc: Any, charset: str) -> None:
    """Any JSON document, in any supported charset, is stored, itemised or refused with a reason."""
    text = dumps(doc, ensure_ascii=charset == "latin-1")
    try:
        parsed = parse_body(text.encode(charset), f"application/json; charset={charset}")
    except BodyError as exc:
        assert exc.status == 400
        assert not isinstance(doc, dict)
        return
    objects = [doc] if isinstance(doc, dict) else [i for i in doc if isinstance(i, dict)]
    assert len([i for i in parsed.items if isinstance(i, dict)]) == len(objects)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000,
        b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
        b"[" * 900 + b"{}" + b"]" * 900,
        b'{"n": ' + b"9" * 5000 + b"}",
        b'{"n": NaN, "m": Infinity, "o": -Infinity, "p": 1e999999}',
        b'{"a": "\\ud800", "\\udfff": "\\u0000\\u202e"}',
        b'\xef\xbb\xbf{"bom": "yes"}',
        b'{"dup": 1, "dup": 2}',
        b'{"big": "' + b"x" * 60_000 + b'"}',
    ],
)
def test_hostile_json_never_escapes(app: Receiver, body: bytes) -> None:
    """Deep nesting, huge numbers, NaN, surrogates, BOMs and big strings: an answer, never a 500."""
    status, answer = call(app, body)
    assert status in {200, 400, 413}
    if status == 200:
        assert answer["stored"] + answer["duplicates"] == 1


# -- the WSGI application -------------------------------------------------------------------


@FUZZ
@given(
    body=st.binary(max_size=1024) | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
    content_type=CONTENT_TYPES,
    path=st.sampled_from(
        [f"/flipcause/{SECRET}", "/flipcause", "/flipcause/x", "/", "/healthz", f"/{SECRET}"]
    )
    | TEXT,
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "OPTIONS", "HEAD", "", "P\x00ST"]),
    length=st.none() | st.sampled_from(["", "-1", "0", "5", "99999999999", "1, 1", " 7", "x"]),
    secret_header=st.none() | st.just(SECRET) | TEXT,
)
def test_the_receiver_never_answers_500_or_raises(
    app: Receiver,
    body: bytes,
    content_type: str | None,
    path: str,
    method: str,
    length: str | None,
    secret_header: str | None,
) -> None:
    """Whatever arrives (paths, methods, lengths, secrets, bodies), the answer is a JSON 4xx/2xx."""
    extra: dict[str, str] = {}
    if length is not None:
        extra["CONTENT_LENGTH"] = length
    if secret_header is not None:
        extra["HTTP_X_FLIPSYNC_SECRET"] = secret_header
    environ_path = path.encode("utf-8", "surrogatepass").decode("latin-1")
    status, answer = call(
        app, body, content_type=content_type, path=environ_path, method=method, extra=extra
    )
    assert status in ALLOWED_STATUSES, (status, answer)


@FUZZ
@given(
    # mostly flat fields, some nested: generating deep values for every field is most of the cost
    good=st.lists(valid_payload(JSON_LEAF | JSON_VALUE), min_size=1, max_size=6),
    junk=st.lists(
        st.none() | st.integers() | TEXT | st.lists(st.integers(), max_size=3), max_size=6
    ),
    data=st.data(),
)
def test_no_valid_record_is_lost_from_a_mixed_batch(
    app: Receiver, good: list[dict[str, Any]], junk: list[Any], data: st.DataObject
) -> None:
    """Every object in an array is stored, however much junk shares the array with it."""
    items: list[Any] = [*good, *junk]
    order = data.draw(st.permutations(range(len(items))))
    body = dumps([items[i] for i in order], ensure_ascii=data.draw(st.booleans()))
    status, answer = call(app, body.encode("utf-8"))
    assert status == 200, answer
    assert answer["stored"] == len(good)
    assert len(answer["rejected"]) == len(junk)
    expected = []
    for item in good:
        checked = check_item(item, "x")
        assert isinstance(checked, dict)
        expected.append(record_key_for(checked, "webhook_record_id"))
    assert stored_keys(app, expected) == set(expected)


@FEW
@given(fields=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=30), max_size=8))
def test_form_bodies_round_trip_as_flat_strings(app: Receiver, fields: dict[str, str]) -> None:
    """Any form (keys and values with any valid Unicode) is stored exactly as sent."""
    clean = {k: v for k, v in fields.items() if not any("\ud800" <= ch <= "\udfff" for ch in k + v)}
    clean["webhook_record_id"] = f"form-{uuid.uuid4().hex}"
    body = urlencode(clean).encode("ascii")
    status, _ = call(app, body, content_type="application/x-www-form-urlencoded")
    if clean and next(iter(urlencode(clean)), "") in "{[":
        return  # a body starting with { or [ is read as JSON by design
    assert status == 200
    with StateDB.open(app.writer._path, create=False) as state:
        row = state._conn.execute(
            "SELECT payload FROM inbox WHERE record_key=?", (f"wh:{clean['webhook_record_id']}",)
        ).fetchone()
    assert json.loads(row[0]) == clean


# -- the saved-payload parser ---------------------------------------------------------------


@FUZZ
@given(
    text=st.text(max_size=500)
    | st.lists(NASTY | st.sampled_from(["{", "}", "[", "]", "\n"])).map("".join)
)
def test_payload_text_parser_never_raises(text: str) -> None:
    """parse_payload_text yields storable objects or BadItems for any text, never an exception."""
    for item in parse_payload_text(text, "fuzz.ndjson"):
        if isinstance(item, dict):
            json.dumps(item, ensure_ascii=False).encode("utf-8")
        else:
            assert isinstance(item, BadItem) and item.location.startswith("fuzz.ndjson")


@FUZZ
@given(
    # flat values: nesting inside a line is json.loads's business, the lines are this test's
    good=st.lists(valid_payload(JSON_LEAF), min_size=2, max_size=6),
    junk=st.lists(
        st.sampled_from(["{", "not json", "[1,", '"str"', "42", "{]", "\x00"]), max_size=5
    ),
    data=st.data(),
)
def test_ndjson_keeps_every_valid_line_among_bad_ones(
    good: list[dict[str, Any]], junk: list[str], data: st.DataObject
) -> None:
    """In NDJSON, each valid object line is yielded whatever the other lines hold."""
    lines = [json.dumps(p) for p in good] + junk
    order = data.draw(st.permutations(range(len(lines))))
    newline = data.draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines[i] for i in order)
    objects = [i for i in parse_payload_text(text, "f") if isinstance(i, dict)]
    expected = [check_item(p, "x") for p in good]
    ids = sorted(o["webhook_record_id"] for o in objects if "webhook_record_id" in o)
    assert ids == sorted(e["webhook_record_id"] for e in expected if isinstance(e, dict))


# -- the CSV parser -------------------------------------------------------------------------


@FUZZ
@given(
    text=st.text(max_size=600)
    | st.lists(
        st.sampled_from(['"', ",", "\n", "\r", "Email", "a@b.c", "\x00", "\ufeff", "\ud800"])
    ).map("".join)
)
def test_csv_parser_raises_only_input_error(text: str) -> None:
    """Any text yields rows or BadItems, or one InputError about the header; nothing else."""
    try:
        for item in parse_csv_text("Email,Name\n" + text, "fuzz.csv", SETTINGS.flipcause):
            if isinstance(item, CsvRow):
                json.dumps(item.payload, ensure_ascii=False).encode("utf-8")
        list(parse_csv_text(text, "fuzz.csv", SETTINGS.flipcause))
    except InputError as exc:
        assert "fuzz.csv" in str(exc)


CELL = st.text(st.characters(blacklist_categories=["Cs"]), max_size=15)


@FUZZ
@given(
    good=st.lists(st.tuples(CELL, CELL, CELL), min_size=1, max_size=8),
    bad=st.lists(st.lists(CELL, min_size=4, max_size=6), max_size=4),
    data=st.data(),
)
def test_csv_keeps_every_good_row_among_bad_ones(
    good: list[tuple[str, str, str]], bad: list[list[str]], data: st.DataObject
) -> None:
    """Rows with quotes, commas and newlines in cells survive; misaligned rows cost only themselves."""
    good_rows = [[f"p{i}@example.org", a, b + c] for i, (a, b, c) in enumerate(good)]
    bad_rows = [[*cells[:3], "extra", *cells[3:]] for cells in bad]
    rows = good_rows + bad_rows
    order = data.draw(st.permutations(range(len(rows))))
    out = io.StringIO()
    # A cell with a bare CR must be quoted; csv.writer only does so if CR is in its terminator.
    style = data.draw(st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL)]))
    writer = csv.writer(out, lineterminator=style[0], quoting=style[1])
    writer.writerow(["Email", "First Name", "Notes"])
    for i in order:
        writer.writerow(rows[i])
    text = data.draw(st.sampled_from(["", "\ufeff"])) + out.getvalue()
    items = list(parse_csv_text(text, "mixed.csv", SETTINGS.flipcause))
    kept = [
        (i.payload["PD_email"], i.payload["PD_first_name"], i.payload["Notes"])
        for i in items
        if isinstance(i, CsvRow)
    ]
    expected = [tuple(r) for r in good_rows if any(cell.strip() for cell in r)]
    assert sorted(kept) == sorted(expected)
    assert sum(isinstance(i, BadItem) for i in items) == len(bad_rows)


# -- raw HTTP against a real server ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(app: Receiver) -> Iterator[int]:
    srv = make_server(app, SETTINGS, host="127.0.0.1", port=0, threads=4)
    stop = threading.Event()
    runner = threading.Thread(
        target=run_until_stopped, args=(srv, stop), kwargs={"drain_seconds": 2}
    )
    runner.start()
    yield int(srv.effective_port)
    stop.set()
    srv.pull_trigger()
    runner.join(10)


def raw(port: int, request: bytes) -> bytes:
    """Send raw bytes, return whatever comes back before the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


BODY = b'{"webhook_record_id": "raw-1"}'
HEAD = (
    f"POST /flipcause/{SECRET} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
)


@pytest.mark.parametrize(
    "request_bytes",
    [
        HEAD + b"Content-Length: 30\r\nContent-Length: 30\r\n\r\n" + BODY,
        HEAD + b"Content-Length: 30\r\nContent-Length: 5\r\n\r\n" + BODY,
        HEAD + b"Content-Length: 99999999999999999999999\r\n\r\n" + BODY,
        HEAD + b"Content-Length: 999999\r\n\r\n" + BODY,
        HEAD + b"Content-Length: -30\r\n\r\n" + BODY,
        HEAD + b"Content-Length: 0x1e\r\n\r\n" + BODY,
        HEAD
        + b"Content-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\n"
        + BODY
        + b"\r\n0\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + BODY + b"\r\n0\r\n\r\n",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n" + BODY,
        HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n1e\r\n" + BODY + b"\r\n0\r\n\r\n",
        HEAD + b"Content-Length: 30\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n" + BODY,
        HEAD + b"Content-Length: 30\r\nX-Bad\x00Header: 1\r\n\r\n" + BODY,
        HEAD + b"Content-Length: 30\r\nX-Folded: a\r\n b\r\n\r\n" + BODY,
        HEAD + b"Content-Length: 30\r\n" + b"X-Many: 1\r\n" * 3000 + b"\r\n" + BODY,
        HEAD + b"Content-Length : 30\r\n\r\n" + BODY,
        HEAD + b"Content-Length: 30\r\nContent-Type: text/xml\r\n\r\n" + BODY,
        b"POST /flipcause HTTP/1.1\r\nHost: x\r\nX-Flipsync-Secret: "
        + SECRET.encode()
        + b"\r\nX-Flipsync-Secret: other\r\nContent-Length: 30\r\n\r\n"
        + BODY,
        b"GARBAGE\r\n\r\n",
        b"POST /flipcause/" + b"%" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
        HEAD + b"Content-Length: 30\r\n\r\n" + BODY[:10],  # the body never completes
    ],
)
def test_raw_http_tricks_never_get_a_500_and_the_server_stays_up(
    server: int, request_bytes: bytes
) -> None:
    """Header tricks (duplicate/oversized lengths, smuggling shapes, junk) never cause a 500."""
    answer = raw(server, request_bytes)
    if answer:
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.")
        status = int(status_line.split()[1])
        # 501 is HTTP's answer to a transfer coding the server does not implement (gzip).
        assert status < 500 or status == 501, status_line
    ok = raw(
        server,
        HEAD + b"Content-Length: 30\r\nConnection: close\r\n\r\n" + BODY,
    )
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]
