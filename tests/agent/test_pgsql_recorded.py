"""The PostgreSQL stitcher over conversations recorded from a real PostgreSQL 15
(pxq/agent/protocols/pgsql/streams/, tests/agent/record_pgsql_streams.py) and over messages built
here from the protocol's documented layouts
(https://www.postgresql.org/docs/15/protocol-message-formats.html). Expected values: the SQL the
recorded client sent, what it saw (``client_view`` in each stream: statusmessage, rowcount,
e.sqlstate, the rows), and Pixie's text formats (``types.h`` of its pgsql protocol)."""

from __future__ import annotations

import json
import struct

import pytest

from pxq.agent.conn_tracker import EGRESS, EV_DATA, F_FILLER, INGRESS, ConnTracker, SockEvent
from pxq.agent.protocols.interface import SECRET_MARKER, ParseOptions
from pxq.agent.protocols.pgsql import (
    RECORDED_STREAMS,
    PgsqlStitcher,
    looks_like_pgsql_request,
    looks_like_pgsql_response,
)
from pxq.agent.protocols.registry import PROTOCOLS
from pxq.testing.streams import load_stream, replay

STREAMS = {p.stem: p for p in sorted(RECORDED_STREAMS.glob("*.json"))}


def recorded(name: str):
    stream = load_stream(STREAMS[name])
    view = json.loads(STREAMS[name].read_text())["client_view"]
    records, stitcher = replay(stream.chunks, protocol="pgsql")
    return records, stitcher, view, stream


def rows(records) -> list[tuple[str, str, str]]:
    return [(r.req_cmd, r.req, r.resp) for r in records]


def test_simple_queries_as_the_client_sent_and_saw_them():
    records, stitcher, view, _ = recorded("simple_queries")
    assert [r.req for r in records] == [
        "CREATE TABLE items (id int PRIMARY KEY, name text, price float8)",
        "INSERT INTO items VALUES (1, 'apple', 1.5), (2, 'pear', NULL)",
        "SELECT id, name FROM items ORDER BY id",
        "SELECT * FROM no_such_table",
        "SELECT pg_sleep(0.05)",
    ]
    assert {r.req_cmd for r in records} == {"Query"}
    create, insert, select, error, sleep = records
    assert create.resp == view["create"]
    assert insert.resp == view["insert"][0] == f"INSERT 0 {view['insert'][1]}"
    status, fetched = view["select"]
    assert select.resp == "\n".join(["id,name", *(f"{i},{n}" for i, n in fetched), status])
    sqlstate, message, severity = view["error"]
    assert error.resp.startswith(f"ERROR RESPONSE [Severity={severity} InternalSeverity={severity} Code={sqlstate} "
                                 f"Message={message} ")  # fmt: skip
    assert sleep.resp == f"pg_sleep\n\n{view['sleep']}"  # pg_sleep returns void: an empty value
    assert sleep.latency >= 50_000_000
    assert all(r.latency > 0 for r in records)
    assert not stitcher.errors


def test_multi_statement_query_is_one_row_with_each_result():
    records, stitcher, view, stream = recorded("multi_statement")
    assert stream.chunks[0][2] == SSL_REQUEST and stream.chunks[1][2] == b"N"  # refused, then in the clear
    (row,) = records
    assert (row.req_cmd, row.req) == ("Query", view["sql"])
    # psql -A printed: one\n1\n(1 row)\nletter|nothing\nx|\n(1 row): the same values; NULL as Pixie shows it.
    assert row.resp == "one\n1\nSELECT 1\nletter,nothing\nx,[NULL]\nSELECT 1"
    assert not stitcher.errors


def test_prepared_statements_bound_values_of_each_type():
    records, stitcher, view, _ = recorded("prepared_types")
    query = view["sql"].replace("%s", "{}").format(*(f"${i}" for i in range(1, 8)))
    # The values as PostgreSQL's text output writes them (psycopg sent several in binary format).
    values = "42, it's, 2.5, t, [NULL], 2024-05-06 07:08:09+00, \\x00ff6162"
    executes = [r for r in records if r.req_cmd == "Execute"]
    assert len(executes) == 3  # twice the typed SELECT, once the INSERT
    for row in executes[:2]:
        assert row.req == f"query=[{query}] params=[{values}]"
        assert row.resp == ("int8,text,float8,bool,text,timestamptz,bytea\n"
                            + values.replace(", ", ",") + "\n" + view["first"][0])  # fmt: skip
    assert executes[2].req == "query=[INSERT INTO t VALUES ($1, $2), ($3, $4)] params=[1, one, 2, two]"
    assert executes[2].resp == view["insert"][0] == f"INSERT 0 {view['insert'][1]}"
    # The statement is parsed once (prepare=True) and bound again on reuse.
    assert [r.req for r in records if r.req_cmd == "Parse"] == [query, "INSERT INTO t VALUES ($1, $2), ($3, $4)",
                                                                 "SELECT 1 / $1::int"]  # fmt: skip
    assert [r.resp for r in records if r.req_cmd == "Parse"] == ["PARSE COMPLETE"] * 3
    binds = [r for r in records if r.req_cmd == "Bind"]
    assert binds[0].req.startswith("portal= statement=_pg3_0 parameters=[[format=kBinary value=42], "
                                   "[format=kText value=it's], ")  # fmt: skip
    # The division by zero fails at Bind; the Describe/Execute after it are skipped to the Sync.
    sqlstate, message = view["error"]
    assert binds[-1].resp.startswith(f"ERROR RESPONSE [Severity=ERROR InternalSeverity=ERROR Code={sqlstate} "
                                     f"Message={message} ")  # fmt: skip
    assert records[-1] is not None and records[-1].req_cmd == "Bind"
    describes = [r for r in records if r.req_cmd == "Describe"]
    assert describes[0].req == "type=kPortal name="
    assert describes[0].resp.startswith("ROW DESCRIPTION [name=int8 table_oid=0 attr_num=0 type_oid=20 type_size=8 "
                                        "type_modifier=-1 fmt_code=kText] [name=text ")  # fmt: skip
    assert describes[2].resp == "ROW DESCRIPTION []"  # the INSERT returns no rows (NoData)
    assert not stitcher.errors


def test_copy_out_rows_and_copy_in_count():
    records, stitcher, view, _ = recorded("copy_in_out")
    assert [r.req for r in records] == ["CREATE TEMP TABLE c (a int, b text)", "COPY c FROM STDIN",
                                        "COPY c TO STDOUT"]  # fmt: skip
    assert records[1].resp == view["copy_in"][0] == f"COPY {view['copy_in'][1]}"
    copied = view["copy_out"][1].splitlines()
    assert records[2].resp == "\n".join([*copied, f"COPY {len(copied)}"])
    assert not stitcher.errors


def test_scram_password_and_sasl_data_are_never_kept():
    records, stitcher, view, stream = recorded("scram_login")
    client_bytes = stream.side("req")
    assert b"SCRAM-SHA-256" in client_bytes  # the exchange is there in the bytes...
    assert [(r.req_cmd, r.req) for r in records[:2]] == [("Password Message", SECRET_MARKER)] * 2
    assert records[0].resp == f"AUTHENTICATION SASLContinue {SECRET_MARKER}"
    assert records[1].resp == f"AUTHENTICATION SASLFinal {SECRET_MARKER}"
    text = repr(rows(records))
    for secret_part in (b"n,,n=", b"c=biws", b"p=", b"r=", b"v="):
        assert secret_part.decode() not in text  # ...and none of it is in a row
    assert records[2].req == "SELECT current_user" and records[2].resp == f"current_user\n{view['select'][0]}\nSELECT 1"
    # Kept only by the user's explicit choice.
    kept, _ = replay(stream.chunks, PROTOCOLS["pgsql"].make_stitcher(ParseOptions(1024, keep_secrets=True)),
                     protocol="pgsql")  # fmt: skip
    assert "n=" in kept[0].req and "SCRAM-SHA-256" in kept[0].req and SECRET_MARKER not in kept[0].resp


# -- messages built from the documented layouts ---------------------------------------------------
def msg(tag: bytes, payload: bytes = b"") -> bytes:
    return tag + struct.pack(">i", len(payload) + 4) + payload


def cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


def startup(user: str = "app") -> bytes:
    body = struct.pack(">i", 196608) + cstr("user") + cstr(user) + b"\x00"
    return struct.pack(">i", len(body) + 4) + body


SSL_REQUEST = struct.pack(">ii", 8, 80877103)
READY = msg(b"Z", b"I")
AUTH_OK = msg(b"R", struct.pack(">i", 0))


def row_description(*names: str) -> bytes:
    fields = b"".join(cstr(n) + struct.pack(">ihihih", 0, 0, 25, -1, -1, 0) for n in names)
    return msg(b"T", struct.pack(">h", len(names)) + fields)


def data_row(*values: bytes | None) -> bytes:
    cols = b"".join(struct.pack(">i", -1) if v is None else struct.pack(">i", len(v)) + v for v in values)
    return msg(b"D", struct.pack(">h", len(values)) + cols)


def error(code: str, message: str) -> bytes:
    return msg(b"E", b"SERROR\x00C" + cstr(code) + b"M" + cstr(message) + b"\x00")


def parse(name: str, query: str) -> bytes:
    return msg(b"P", cstr(name) + cstr(query) + struct.pack(">h", 0))


def bind(portal: str, statement: str, *values: bytes) -> bytes:
    params = b"".join(struct.pack(">i", len(v)) + v for v in values)
    return msg(
        b"B", cstr(portal) + cstr(statement) + struct.pack(">hh", 0, len(values)) + params + struct.pack(">h", 0)
    )


def execute(portal: str = "") -> bytes:
    return msg(b"E", cstr(portal) + struct.pack(">i", 0))


def feed(stitcher: PgsqlStitcher, steps: list[tuple[bool, bytes]]) -> list[tuple[str, str, str]]:
    out = []
    for ts, (request, data) in enumerate(steps, 1):
        out += stitcher.feed_messages(request, data, ts * 1000)
    return [(req.cmd, req.text, resp.text) for req, resp in out]


def test_ssl_refusal_then_startup_and_a_query():
    st = PgsqlStitcher(1024)
    got = feed(st, [(True, SSL_REQUEST), (False, b"N"), (True, startup()), (False, AUTH_OK + READY),
                    (True, msg(b"Q", cstr("SELECT 1"))),
                    (False, row_description("x") + data_row(b"1") + msg(b"C", cstr("SELECT 1")) + READY)])  # fmt: skip
    assert got == [("Query", "SELECT 1", "x\n1\nSELECT 1")]
    assert not st.errors and not st.upgraded


def test_ssl_accepted_leaves_the_protocol():
    st = PgsqlStitcher(1024)
    feed(st, [(True, SSL_REQUEST), (False, b"S\x16\x03\x01")])
    assert st.upgraded


def test_an_error_in_the_extended_protocol_skips_to_the_sync():
    st = PgsqlStitcher(1024)
    pipeline = parse("s1", "SELECT $1") + bind("", "s1", b"7") + execute() + msg(b"S")
    pipeline += parse("", "SELEKT") + bind("", "") + execute() + msg(b"S")
    pipeline += parse("", "SELECT 2") + bind("", "") + execute() + msg(b"S")
    answers = msg(b"1") + msg(b"2") + data_row(b"7") + msg(b"C", cstr("SELECT 1")) + READY
    answers += error("42601", "syntax error") + READY
    answers += msg(b"1") + msg(b"2") + data_row(b"2") + msg(b"C", cstr("SELECT 1")) + READY
    got = feed(st, [(True, pipeline), (False, answers)])
    assert got == [
        ("Parse", "SELECT $1", "PARSE COMPLETE"),
        ("Bind", "portal= statement=s1 parameters=[[format=kText value=7]] result_format_codes=[]", "BIND COMPLETE"),
        ("Execute", "query=[SELECT $1] params=[7]", "7\nSELECT 1"),
        ("Parse", "SELEKT", "ERROR RESPONSE [Severity=ERROR Code=42601 Message=syntax error]"),
        ("Parse", "SELECT 2", "PARSE COMPLETE"),
        ("Bind", "portal= statement= parameters=[] result_format_codes=[]", "BIND COMPLETE"),
        ("Execute", "query=[SELECT 2] params=[]", "2\nSELECT 1"),
    ]
    assert not st.errors


def test_a_message_that_cannot_answer_the_oldest_request_is_never_paired():
    st = PgsqlStitcher(1024)
    # A Bind whose BindComplete is answered by a ParseComplete: not its answer.
    got = feed(st, [(True, bind("", "") + msg(b"S")), (False, msg(b"1") + READY),
                    (True, msg(b"Q", cstr("SELECT 3"))), (False, msg(b"C", cstr("SELECT 0")) + READY)])  # fmt: skip
    assert got == [("Query", "SELECT 3", "SELECT 0")]
    assert st.errors["unexpected_message"] == 2


def test_rows_past_the_body_limit_are_counted_not_kept():
    st = PgsqlStitcher(body_limit=10)
    answer = row_description("n") + b"".join(data_row(b"%04d" % i) for i in range(5)) + msg(b"C", cstr("SELECT 5"))
    got = feed(st, [(True, msg(b"Q", cstr("SELECT n"))), (False, answer + READY)])
    assert got == [("Query", "SELECT n", "n\n0000\n0001\n<3 more rows not kept>\nSELECT 5")]


def test_uncopied_bytes_inside_a_data_row_are_skipped():
    st = PgsqlStitcher(1024)
    big = data_row(b"a" * 5000)
    feed(st, [(True, msg(b"Q", cstr("SELECT big")))])
    assert st.feed_messages(False, row_description("v") + big[:100], 2000) == []
    done, left = st.skip_messages(False, len(big) - 100, 3000)
    assert done == [] and left == 0
    out = st.feed_messages(False, msg(b"C", cstr("SELECT 1")) + READY, 4000)
    assert [(q.cmd, r.text[:6]) for q, r in out] == [("Query", "v\naaaa")]


def test_uncopied_bytes_inside_a_row_description_are_not_skippable():
    # Found by the registry-wide tracker property (a filler event inside a RowDescription): the
    # skip left the description short, it read as malformed, and "<malformed response>" answered
    # the query at once; its rows and ReadyForQuery then answered nothing. The column formats
    # are needed to read the rows: the bytes are a lost stretch (the tracker restarts).
    st = PgsqlStitcher(1024)
    description = row_description("alpha", "beta")
    feed(st, [(True, msg(b"Q", cstr("SELECT alpha, beta")))])
    assert st.feed_messages(False, description[:12], 2000) == []
    assert st.skip_messages(False, len(description) - 12, 3000) == ([], len(description) - 12)


def _client_events(steps: list[tuple[bool, bytes | int]]) -> list[SockEvent]:
    """A client's connection as kernel events: (request side, bytes) sent or received, or
    (side, n) for n bytes the kernel counted without copying them (a filler event)."""
    pos = {EGRESS: 0, INGRESS: 0}
    out = []
    for ts, (request, data) in enumerate(steps, 1):
        d = EGRESS if request else INGRESS
        size = data if isinstance(data, int) else len(data)
        flags, copied = (F_FILLER, b"") if isinstance(data, int) else (0, data)
        out.append(SockEvent(ts_ns=ts * 1000, pos=pos[d], size=size, pid=77, fd=5, gen=1, data_len=len(copied),
                             kind=EV_DATA, flags=flags, direction=d, role=0, family=2, lport=0, rport=0, syscall=0,
                             reserved=0, laddr=bytes(16), raddr=bytes(16), data=copied))  # fmt: skip
        pos[d] += size
    return out


def test_a_filler_inside_a_row_description_loses_that_query_not_its_pairing():
    answer_a = row_description("alpha", "beta") + data_row(b"1", b"2") + msg(b"C", cstr("SELECT 1")) + READY
    answer_b = row_description("gamma") + data_row(b"3") + msg(b"C", cstr("SELECT 1")) + READY
    tracker = ConnTracker(protocols=[PROTOCOLS["pgsql"]])
    tracker.handle_all(_client_events([
        (True, msg(b"Q", cstr("SELECT alpha, beta"))), (False, answer_a[:12]), (False, 10), (False, answer_a[22:]),
        (True, msg(b"Q", cstr("SELECT gamma"))), (False, answer_b),
        # Two more queries answered in turn: after a restart, rows wait for the tracker's probation.
        (True, msg(b"Q", cstr("SELECT gamma"))), (False, answer_b),
        (True, msg(b"Q", cstr("SELECT gamma"))), (False, answer_b),
    ]))  # fmt: skip
    tracker.close_all()
    table = tracker.take_tables()["pgsql_events"]
    assert (
        list(zip(table["req"].to_pylist(), table["resp"].to_pylist(), strict=True))
        == [("SELECT gamma", "gamma\n3\nSELECT 1")] * 3
    )
    assert tracker.drop_counts()["data_gap"] == 1  # the first query's row: lost, and counted


def test_a_parse_whose_query_end_was_not_copied_keeps_what_was():
    # Skipped inside a Parse's query text, the query's NUL went uncopied: the Parse read as
    # malformed and made no row.
    st = PgsqlStitcher(1024)
    query = "SELECT " + "x" * 200
    message = parse("", query)
    assert st.feed_messages(True, message[:40], 1000) == []
    assert st.skip_messages(True, len(message) - 40, 2000) == ([], 0)
    got = feed(st, [(True, msg(b"S")), (False, msg(b"1") + READY)])
    assert got == [("Parse", query[: 40 - 6] + f"<not captured: {len(message) - 40} bytes>", "PARSE COMPLETE")]
    assert not st.errors


def test_a_row_description_longer_than_the_kept_bytes_does_not_answer_the_query():
    # A RowDescription past the bytes a message keeps (HEAD_BYTES + body limit: some thousand
    # long column names) read as malformed and answered the query with "<malformed response>".
    names = [f"column_{i:04d}_" + "n" * 40 for i in range(1500)]
    description = row_description(*names)
    assert len(description) > PgsqlStitcher.HEAD_BYTES + 16
    st = PgsqlStitcher(16)
    got = feed(st, [(True, msg(b"Q", cstr("SELECT wide"))), (False, description),
                    (False, data_row(b"1") + msg(b"C", cstr("SELECT 1")) + READY)])  # fmt: skip
    ((cmd, req, resp),) = got
    header, row, tag = resp.split("\n")
    kept_names = header.split(",")
    # The fields lying whole in the kept payload (a 2-byte count, then each field: name, NUL, 18 bytes).
    whole = (PgsqlStitcher.HEAD_BYTES + 16 - 2) // (len(names[0]) + 1 + 18)
    assert (cmd, req, row, tag) == ("Query", "SELECT wide", "1", "SELECT 1")
    assert kept_names[:-1] == names[:whole]
    missing = len(description) - 5 - (PgsqlStitcher.HEAD_BYTES + 16)
    assert kept_names[-1] == f"<not captured: {missing} bytes>"
    assert not st.errors


def test_a_parameter_description_longer_than_the_kept_bytes_does_not_answer_the_describe():
    # The same with a ParameterDescription (the types of some 17000 parameters): the Describe
    # took "<malformed response>" and its NoData went unpaired.
    st = PgsqlStitcher(16)
    oids = struct.pack(">h", 17000) + struct.pack(">i", 23) * 17000
    assert len(oids) > PgsqlStitcher.HEAD_BYTES + 16
    request = parse("s", "SELECT 1") + msg(b"D", b"S" + cstr("s")) + msg(b"S")
    got = feed(st, [(True, request), (False, msg(b"1") + msg(b"t", oids) + msg(b"n") + READY)])
    assert got == [
        ("Parse", "SELECT 1", "PARSE COMPLETE"),
        ("Describe", "type=kStatement name=s", "ROW DESCRIPTION []"),
    ]
    assert not st.errors


def test_invalid_length_stops_parsing_without_raising():
    st = PgsqlStitcher(1024)
    assert feed(st, [(True, b"Q\x00\x00\x00\x01garbage")]) == []
    assert st.upgraded and st.errors["invalid_message_length"] == 1


def test_a_fatal_error_ending_the_session_is_no_loss():
    st = PgsqlStitcher(1024)
    fatal = msg(b"E", b'SFATAL\x00C3D000\x00Mdatabase "nope" does not exist\x00\x00')
    assert feed(st, [(True, startup()), (False, AUTH_OK + fatal)]) == []
    assert st.close_messages(9000) == [] and not st.errors


def test_unanswered_requests_are_counted_at_close():
    st = PgsqlStitcher(1024)
    feed(st, [(True, msg(b"Q", cstr("SELECT 1")) + msg(b"Q", cstr("SELECT 2")))])
    assert st.close_messages(9000) == []
    assert st.errors["request_unanswered_at_close"] == 2


# -- inference ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_recorded_first_bytes_are_recognised_by_their_side(name):
    stream = load_stream(STREAMS[name])
    assert looks_like_pgsql_request(stream.side("req")[:256])
    assert not looks_like_pgsql_response(stream.side("req")[:256])


@pytest.mark.parametrize(
    ("first", "is_request", "is_response"),
    [
        (msg(b"Q", cstr("SELECT 1")), True, False),  # mid-stream simple query
        (parse("", "SELECT $1") + bind("", "", b"1"), True, False),  # mid-stream extended query
        (bind("", "s", b"42") + execute(), True, False),  # a prepared statement's reuse
        (SSL_REQUEST, True, False),
        # Found by the lost-events property: psql's startup after a refused SSLRequest, its first
        # read only the length and version (the probe had 16 bytes and said no to the connection).
        (SSL_REQUEST + startup()[:8], True, False),
        (SSL_REQUEST + startup()[:8] + b"\x01\x02\x03", False, False),  # no parameter name after it
        (row_description("a") + data_row(b"1"), False, True),
        (msg(b"C", cstr("INSERT 0 1")) + READY, False, True),
        (AUTH_OK + msg(b"S", cstr("a") + cstr("b")), False, True),
        # Found by the tracker property (the startup lost): SASL's offer cut by the server's first
        # read; taken for no protocol, the connection's losses went uncounted.
        (msg(b"R", struct.pack(">i", 10) + cstr("SCRAM-SHA-256") + b"\x00")[:20], False, True),
        (msg(b"R", struct.pack(">i", 99) + cstr("SCRAM-SHA-256") + b"\x00")[:20], False, False),  # no such code
        # Also found there (the SSLRequest and the startup lost): the refusal, then the startup's answer.
        (b"N" + AUTH_OK + msg(b"S", cstr("a") + cstr("b")), False, True),
        (b"N" + msg(b"R", struct.pack(">i", 99)), False, False),  # no such authentication code
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False, False),
        (b"*1\r\n$4\r\nPING\r\n", False, False),  # Redis
        (b"\x21\x00\x00\x00\x03SELECT * FROM t WHERE a = 1", False, False),  # MySQL COM_QUERY
        (b"Q\x00\x00\x00\x03abc", False, False),  # a length shorter than the smallest query
        (b"Q\x00\x00\x00\x0cSELECT 1X", False, False),  # whole, but no terminating NUL
        (b"HTTP/1.1 200 OK\r\n\r\n", False, False),
    ],
)  # fmt: skip
def test_inference(first, is_request, is_response):
    assert looks_like_pgsql_request(first) is is_request
    assert looks_like_pgsql_response(first) is is_response


def test_a_query_inside_copy_data_after_a_client_hole_is_never_paired():
    """Recorded (wire_query_in_copy): a binary COPY FROM STDIN whose bytea value holds a whole Query
    message, then three queries. The kernel loses the client's bytes of the CopyData up to that
    value (a ring-buffer drop), so the bytes after the hole begin with what looks like a Query;
    the parser restarts there, and the COPY's end ("COPY 1") would answer it. Expected pairs:
    the SQL the client sent with what psycopg saw (client_view), never the query inside the data."""
    stream = load_stream(STREAMS["wire_query_in_copy"])
    view = json.loads(STREAMS["wire_query_in_copy"].read_text())["client_view"]
    assert view["copy_in"] == ["COPY 1", 1]
    truth = {("CREATE TEMP TABLE w (b bytea)", "CREATE TABLE"), ("COPY w FROM STDIN (FORMAT binary)", "COPY 1")}
    truth |= {(f"SELECT 'after {i}'", f"?column?\n{value}\nSELECT 1") for i, (value,) in enumerate(view["selects"])}
    inside = b"Q\x00\x00\x00\x1dSELECT 'inside the data'\x00"
    for role, sent in ((1, EGRESS), (2, INGRESS)):  # the client's end, and the server's
        received = INGRESS if sent == EGRESS else EGRESS
        pos, events = {EGRESS: 0, INGRESS: 0}, []
        for direction, ts, data in stream.chunks:
            d = sent if direction == "req" else received
            hole = data.find(inside) if direction == "req" else -1
            if hole > 0:
                pos[d] += hole  # the event holding the CopyData up to the value: lost
                data = data[hole:]
            events.append(SockEvent(ts_ns=ts + 1, pos=pos[d], size=len(data), pid=77, fd=5, gen=1,
                                    data_len=len(data), kind=EV_DATA, flags=0, direction=d, role=role, family=2,
                                    lport=0, rport=0, syscall=0, reserved=0, laddr=bytes(16), raddr=bytes(16),
                                    data=data))  # fmt: skip
            pos[d] += len(data)
        tracker = ConnTracker(protocols=[PROTOCOLS["pgsql"]])
        for ev in events:
            tracker.handle(ev)
            tracker.end_batch()  # a poll batch each: the hole is found lost after HOLE_BATCHES
        tracker.close_all()
        table = tracker.take_tables()["pgsql_events"]
        got = list(zip(table["req"].to_pylist(), table["resp"].to_pylist(), strict=True))
        assert [pair for pair in got if pair not in truth] == [], role
        assert tracker.drop_counts()["data_gap"] == 1


def test_a_copy_of_a_file_on_the_server_is_answered_without_copy_messages():
    """COPY to or from a file on the server (https://www.postgresql.org/docs/15/sql-copy.html)
    sends no CopyIn/OutResponse: the CommandComplete "COPY n" alone answers it, and still does
    after the check that keeps a COPY's end from answering a query never sent."""
    st = PgsqlStitcher(1024)
    got = feed(st, [(True, msg(b"Q", cstr("copy t from '/tmp/t.csv'"))), (False, msg(b"C", cstr("COPY 3")) + READY),
                    (True, msg(b"Q", cstr("SELECT 1"))), (False, msg(b"C", cstr("COPY 3")) + READY)])  # fmt: skip
    # The second: no COPY began, none was named; its ReadyForQuery makes no row of it either.
    assert got == [("Query", "copy t from '/tmp/t.csv'", "COPY 3")]
    assert st.out_of_step and st.errors == {"unexpected_message": 1, "request_answer_unexpected": 1}


def test_a_query_whose_answer_held_a_message_it_cannot_have_makes_no_row():
    # A BindComplete cannot answer a simple Query (protocol-flow.html, "Simple Query"): the
    # query was not what it seemed, and its ReadyForQuery ends it without a row.
    st = PgsqlStitcher(1024)
    got = feed(st, [(True, msg(b"Q", cstr("SELECT 1"))), (False, msg(b"2") + READY),
                    (True, msg(b"Q", cstr("SELECT 2"))),
                    (False, row_description("x") + data_row(b"2") + msg(b"C", cstr("SELECT 1")) + READY)])  # fmt: skip
    assert got == [("Query", "SELECT 2", "x\n2\nSELECT 1")]
    assert st.errors == {"unexpected_message": 1, "request_answer_unexpected": 1}
