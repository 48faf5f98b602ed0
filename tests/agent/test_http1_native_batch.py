"""The connection tracker's HTTP/1 steady state in C (``http1_batch`` in pxq/agent/_native.c, called
by ``ConnTracker.handle_batch``; ``ring_take``, the ring walk and the same steady state in one, called
by ``ConnTracker.handle_records``) against the Python path it stands in for: the same kernel events,
fed through one tracker with the C path and one without it (``native_http1=False``: every event
through ``ConnTracker._feed``, ``Http1Stitcher._feed`` and ``HttpRows.add``), must give the same
tables and leave the same state behind: every counter of the tracker, every slot of each
connection, its stream, its stitcher and both its directions, and the requests still waiting.
The reference is the Python path, which the rest of tests/agent checks against llhttp, real
clients and Pixie; these tests check that the C path is the same thing, faster, and that it does
take the events it is for (a differential test that the C path never joined would prove nothing)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import example, given, settings, strategies as st

from pxq.agent import conn_tracker
from pxq.agent.conn_tracker import F_REMOTE, F_TUPLE, ROLE_CLIENT, ROLE_SERVER, Connection, ConnTracker, SockEvent
from pxq.agent.native import _native
from pxq.agent.protocols import registry
from pxq.agent.protocols.http1.stitcher import Http1Stitcher, _Direction, _Message
from pxq.testing.streams import load_stream
from tests.agent.native_scenarios import TRACED_PID, Ring, RingWalk, TracedConn, ring_record

STREAMS = Path(registry.__file__).parent / "http1" / "streams"


Conn = TracedConn  # one connection's events
PID = TRACED_PID


# -- running both ways -------------------------------------------------------------------------
def message_state(msg: _Message) -> tuple:
    return tuple((name, getattr(msg, name)) for name in _Message.__slots__ if name != "decoder") + (
        ("decoder", type(msg.decoder).__name__ if msg.decoder else msg.decoder),
    )


def direction_state(side: _Direction) -> tuple:
    skip = {"stitcher", "parser", "current", "_header_pairs", "pending"}
    return (
        tuple((name, getattr(side, name)) for name in _Direction.__slots__ if name not in skip),
        bytes(side.pending),
        None if side.current is None else message_state(side.current),
        side.parser is None,
    )


def stitcher_state(s: Http1Stitcher) -> tuple:
    skip = {"_req", "_resp", "_requests", "_responses", "_done", "errors"}
    return (
        tuple((name, getattr(s, name)) for name in Http1Stitcher.__slots__ if name not in skip),
        dict(+s.errors),
        [message_state(m) for m in s._requests],
        [message_state(m) for m in s._responses],
        len(s._done),
        direction_state(s._req),
        direction_state(s._resp),
    )


def connection_state(c: Connection) -> tuple:
    skip = {"stitcher", "stream", "protocol", "held"}
    return (
        tuple((name, getattr(c, name)) for name in Connection.__slots__ if name not in skip),
        (c.stream.expect, c.stream.held_bytes, c.stream.blocked, c.stream.hole_batches),
        None if c.held is None else [(message_state(a), message_state(b)) for a, b in c.held],
        None if c.stitcher is None else stitcher_state(c.stitcher),
    )


def tracker_state(t: ConnTracker) -> tuple:
    return (
        dict(t.counts),
        t.drop_counts(),
        {name: dict(+errors) for name, errors in t.protocol_errors.items()},
        t._last_ts,
        {key: connection_state(c) for key, c in t.conns.items()},
    )


RING_WALK_LIMIT = 3  # records a ring_take walk takes at most: a batch in several walks


def run(steps: list, native: bool | str, keep_secrets: bool = False, body_limit: int = 1024) -> tuple[list, list]:
    """``steps``: lists of events (a batch each), "end" (end of a ring buffer drain), "take"
    (tables taken), "close" (the tracer stops). The tables' rows and the state after each step.
    ``native``: True (http1_batch), False (Python only), "ring" (each batch's events written
    into a ring buffer and taken by ring_take, RING_WALK_LIMIT records a walk)."""
    t = ConnTracker(protocols=[registry.PROTOCOLS["http"]], native_http1=bool(native), keep_secrets=keep_secrets,
                    body_limit=body_limit, clock_offset_ns=7_000)  # fmt: skip
    ring = Ring(size=1 << 20)
    walk = RingWalk(_native, ring, RING_WALK_LIMIT)
    rows, states = [], []
    for step in steps:
        if step == "end":
            t.end_batch()
        elif step == "take":
            rows.append(t.take_tables()["http_events"].to_pylist())
        elif step == "close":
            t.close_all()
        elif native == "ring":
            for ev in step:
                record = ring_record(ev)
                assert record is not None
                ring.add_raw(len(record), record)
            while t.handle_records(walk):
                pass
        else:
            t.handle_batch(step)
        states.append(tracker_state(t))
    rows.append(t.take_tables()["http_events"].to_pylist())
    return rows, states


class Taken:
    """Counts the events the C path took: http1_batch's (wraps conn_tracker.HTTP1_BATCH) and
    ring_take's (wraps RingWalk), while in use."""

    def __init__(self, monkeypatch) -> None:
        self.events = self.ring_events = 0
        inner, inner_walk = conn_tracker.HTTP1_BATCH, RingWalk.__call__

        def counting(*args):
            out = inner(*args)
            self.events += out[1]
            return out

        def counting_walk(walk, *args):
            out = inner_walk(walk, *args)
            self.ring_events += out[1]
            return out

        monkeypatch.setattr(conn_tracker, "HTTP1_BATCH", counting)
        monkeypatch.setattr(RingWalk, "__call__", counting_walk)


def as_recorded(steps: list) -> list | None:
    """``steps`` with each event as the ring walk decodes it (addresses 16 bytes, data bytes), or
    None when one cannot be a ring buffer record (an odd pid or fd of a test)."""
    out: list = []
    for step in steps:
        if isinstance(step, str):
            out.append(step)
            continue
        batch = []
        for ev in step:
            if ring_record(ev) is None:
                return None
            batch.append(ev._replace(laddr=ev.laddr.ljust(16, b"\0"), raddr=ev.raddr.ljust(16, b"\0"),
                                     data=bytes(ev.data)))  # fmt: skip
        out.append(batch)
    return out


def assert_same(steps: list, **options) -> None:
    """The C paths leave what the Python path leaves: http1_batch on ``steps``, and ring_take on
    them written into a ring buffer (when each event can be a record)."""
    recorded = as_recorded(steps)
    if recorded is not None:
        steps = recorded
    slow_rows, slow_states = run(steps, False, **options)
    for native in (True, "ring") if recorded is not None else (True,):
        fast_rows, fast_states = run(steps, native, **options)
        assert fast_rows == slow_rows, native
        for i, (fast, slow) in enumerate(zip(fast_states, slow_states)):
            assert fast == slow, f"{native}: after step {i}"


# -- steady state ------------------------------------------------------------------------------
REQ = b"GET /small.html?i=%d HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: pxq-test\r\n\r\n"
RESP = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 12\r\n"
        b"Connection: keep-alive\r\n\r\nhello world!")  # fmt: skip


def keep_alive(n: int, conns: int = 3) -> list[SockEvent]:
    cs = [Conn(10 + i) for i in range(conns)]
    events = [c.open(1000 + i) for i, c in enumerate(cs)]
    ts = 10_000
    for i in range(n):
        c = cs[i % conns]
        events.append(c.data(ts, True, REQ % i))
        events.append(c.data(ts + 500, False, RESP))
        ts += 1000
    return events


def test_keep_alive_steady_state_goes_through_c_and_matches_python(monkeypatch):
    taken = Taken(monkeypatch)
    events = keep_alive(60)
    steps = [events[:40], "end", "take", events[40:77], "end", events[77:], "end"]
    assert_same(steps)
    fast_rows, _ = run(steps, True)
    assert sum(len(r) for r in fast_rows) == 60
    # Python takes each connection's first request (its protocol is not known yet) and the first
    # response of all (its header blocks are not cached yet: the same blocks on every connection);
    # C every other event, in the two runs with it (assert_same's and the one above).
    assert taken.events == 2 * (2 * 60 - 3 - 1)
    assert taken.ring_events == 2 * 60 - 3 - 1  # ring_take, in assert_same's run: the same events


def test_head_exchanges_go_through_c_and_match_python(monkeypatch):
    """An answer to HEAD ends with its head whatever its Content-Length says (RFC 9112 6.3): the
    C path takes it (every 10th request of the bench's client is a HEAD), and its row has no body."""
    taken = Taken(monkeypatch)
    c = Conn(60)
    events = [c.open(1)]
    for i in range(30):
        head = i % 3 == 2
        events.append(c.data(100 * i + 10, True, (HEAD if head else REQ % i)))
        events.append(c.data(100 * i + 60, False, RESP[: RESP.index(b"\r\n\r\n") + 4] if head else RESP))
    steps = [events[:25], "end", events[25:], "end"]
    assert_same(steps)
    assert taken.ring_events == 2 * 30 - 3  # ring_take (assert_same's run), as http1_batch below
    taken.events = 0
    rows = run(steps, True)[0][0]
    # Python takes the first request (the protocol not known yet) and the first response of each
    # header block (its JSON made in Python): the GET's, the HEAD's; C every other event.
    assert taken.events == 2 * 30 - 3
    heads = [r for r in rows if r["req_method"] == "HEAD"]
    assert len(heads) == 10 and len(rows) == 30
    assert {(r["req_path"], r["resp_status"], r["resp_body"], r["resp_body_size"]) for r in heads} == {
        ("/h", 200, "", 0)
    }


def test_rows_hold_what_was_sent(monkeypatch):
    """The C path's rows, from the bytes sent (not from the Python path)."""
    events = keep_alive(4, conns=1)
    rows = run([events], True)[0][0]
    assert [r["req_path"] for r in rows] == [f"/small.html?i={i}" for i in range(4)]
    assert {
        (r["req_method"], r["resp_status"], r["resp_message"], r["resp_body"], r["resp_body_size"]) for r in rows
    } == {("GET", 200, "OK", "hello world!", 12)}
    assert rows[3]["req_headers"] == '{"Host": "127.0.0.1:8080", "User-Agent": "pxq-test"}'
    assert rows[3]["latency"] == 500
    assert rows[3]["remote_addr"] == "10.1.2.3" and rows[3]["local_port"] == 8080


def test_a_record_whose_python_path_raises_is_consumed_and_the_rows_before_it_stay():
    """ring_take: an event the Python path raises on was acted on, so it is not read again; the
    rows C wrote before it are counted in the row buffer, and the next walk goes on after it."""
    c = Conn(80)
    events = [c.open(1)]
    for i in range(8):
        events += [c.data(100 * i + 10, True, REQ % i), c.data(100 * i + 60, False, RESP)]
    strange = c.data(900, True, b"\x00not http")._replace(flags=F_REMOTE)  # the Python path's
    ring = Ring(size=1 << 16)
    at = {}  # where each record starts
    for ev in [*events, strange, c.data(1000, True, REQ % 8), c.data(1060, False, RESP)]:
        record = ring_record(ev)
        at[ev.ts_ns] = ring.add_raw(len(record), record)
    t = ConnTracker(protocols=[registry.PROTOCOLS["http"]])
    take_event = t.take_event

    def failing(ev):
        if ev.flags == F_REMOTE:
            raise RuntimeError("the Python path failed")
        take_event(ev)

    t.take_event = failing  # type: ignore[method-assign]
    walk = RingWalk(_native, ring, 1 << 20)
    with pytest.raises(RuntimeError, match="Python path failed"):
        t.handle_records(walk)
    assert ring.consumer_pos == at[1000]  # past the one that raised, before the next
    rows = t.take_tables()["http_events"].to_pylist()
    assert [r["req_path"] for r in rows] == [f"/small.html?i={i}" for i in range(8)]
    t.take_event = take_event  # type: ignore[method-assign]
    assert t.handle_records(walk) == 2  # the two records after the one that raised
    assert ring.consumer_pos == ring.prod


# -- uncommon cases among plain ones ------------------------------------------------------------
GET = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
HEAD = b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n"
OK_HEAD = OK[:-5]  # its answer to HEAD: the head alone, Content-Length as a GET's (RFC 9110 9.3.2)
PLAIN_REQUESTS = [
    GET,
    HEAD,
    b"GET /b?q=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Type: application/json\r\n\r\n{1}",
    b"PUT /u HTTP/1.1\r\nContent-Length: 4\r\n\r\n\xc3\xbc\xc3\xbc",  # a body not ASCII
    b"DELETE /d HTTP/1.1\r\nAuthorization: Bearer s3cr3t\r\n\r\n",  # a credential
    b"OPTIONS /o HTTP/1.1\r\nCookie: a=b\r\n\r\n",
]
OTHER_REQUESTS = [
    b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET /old HTTP/1.0\r\n\r\n",
    b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
    b"GET /u HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"PROPFIND /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"\x00garbage\r\n\r\n",
]
PLAIN_RESPONSES = [
    OK,
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}',
    b"HTTP/1.1 500 Server Error\r\nContent-Length: 4\r\n\r\n\xff\xfe\xfd\xfc",  # a body not ASCII
    b"HTTP/1.1 200 OK\r\nSet-Cookie: s=1\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * 1500 + b"\r\nContent-Length: 2000\r\n\r\n" + b"b" * 2000,
]
OTHER_RESPONSES = [
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n" + OK,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 2OO junk\r\n\r\n",
]


@st.composite
def scripts(draw) -> list:
    """Connections (server or client side, seen opening or picked up mid-stream) exchanging mostly
    plain messages, some of every other shape: one at a time or pipelined, each message in one
    event or cut at random points, events now and then lost (a hole: data_gap, a restart), equal
    or out-of-order timestamps; all interleaved, cut into batches at random, tables taken and
    drains ended at random, sometimes a close or the tracer's end."""
    n_conns = draw(st.integers(1, 3))
    cs = [Conn(20 + i, draw(st.sampled_from([ROLE_SERVER, ROLE_CLIENT]))) for i in range(n_conns)]
    # A service's messages repeat: a few plain ones most of the time (the C path's, once their
    # header blocks are known), any other now and then.
    usual_requests = draw(st.lists(st.sampled_from(PLAIN_REQUESTS), min_size=1, max_size=3))
    usual_responses = draw(st.lists(st.sampled_from(PLAIN_RESPONSES), min_size=1, max_size=3))
    requests = st.sampled_from(usual_requests) | st.sampled_from(PLAIN_REQUESTS + OTHER_REQUESTS)
    responses = st.sampled_from(usual_responses) | st.sampled_from(PLAIN_RESPONSES + OTHER_RESPONSES)
    ts = 1_000
    per_conn: list[list[SockEvent]] = []
    for c in cs:
        events: list[SockEvent] = []
        if draw(st.integers(0, 4)):
            events.append(c.open(ts, draw(st.sampled_from([F_TUPLE, F_REMOTE]))))
        for _ in range(draw(st.integers(1, 10))):
            depth = draw(st.sampled_from([1] * 8 + [2, 3]))  # requests in flight at once
            usual = draw(st.integers(0, 3)) > 0
            reqs = [draw(st.sampled_from(usual_requests) if usual else requests) for _ in range(depth)]
            resps = [draw(st.sampled_from(usual_responses) if usual else responses) for _ in range(depth)]
            for k, request in enumerate(reqs):
                if request.startswith(b"HEAD ") and b"\r\n\r\n" in resps[k] and draw(st.integers(0, 5)):
                    resps[k] = resps[k][: resps[k].index(b"\r\n\r\n") + 4]  # (else: a body it should not have)
            for request, stream in ((True, reqs), (False, resps)):
                pieces = [b"".join(stream)] if draw(st.booleans()) else list(stream)
                for piece in pieces:
                    bounds = [0, len(piece)]
                    if len(piece) > 1 and draw(st.integers(0, 4)) == 0:
                        bounds = sorted({0, len(piece), *draw(st.lists(st.integers(1, len(piece) - 1), max_size=2))})
                    for a, b in zip(bounds, bounds[1:]):
                        ts += draw(st.sampled_from([0] + [100] * 8 + [-50]))
                        ev = c.data(ts, request, piece[a:b], lost=draw(st.integers(0, 60)) == 0)
                        if ev is not None:
                            events.append(ev)
        if draw(st.integers(0, 3)) == 0:
            events.append(c.close(ts + 1))
        per_conn.append(events)
    merged: list[SockEvent] = []
    while any(per_conn):
        live = [e for e in per_conn if e]
        merged.append(draw(st.sampled_from(live)).pop(0))
    steps: list = []
    at = 0
    while at < len(merged):
        size = draw(st.integers(1, 12))
        steps.append(merged[at : at + size])
        at += size
        extra = draw(st.sampled_from(["", "", "end", "end", "take"]))
        if extra:
            steps.append(extra)
    steps += ["end", "end"]
    if draw(st.booleans()):
        steps.append("close")
    return steps


def one_conn(*chunks: tuple[bool, bytes], role: int = ROLE_SERVER, opened: bool = True) -> list:
    c = Conn(30, role)
    events = [c.open(10)] if opened else []
    events += [c.data(100 * (i + 1), request, data) for i, (request, data) in enumerate(chunks)]
    return [events, "end", "end"]


STEADY = [(True, GET), (False, OK)] * 3


@settings(max_examples=300, deadline=None)
@given(scripts(), st.booleans(), st.sampled_from([1024, 3, 0]))
@example(one_conn(*STEADY), False, 1024)
@example(one_conn(*STEADY, role=ROLE_CLIENT), False, 1024)
@example(one_conn(*STEADY, opened=False), False, 1024)  # picked up mid-stream: on probation
@example(one_conn(*STEADY, (True, GET + GET), (False, OK + OK), *STEADY), False, 1024)  # pipelined
@example(one_conn(*STEADY, (True, GET + GET), (False, OK), (False, OK)), False, 1024)
@example(one_conn(*STEADY, (True, HEAD), (False, OK_HEAD), *STEADY), False, 1024)  # HEAD
@example(one_conn(*STEADY, (True, HEAD), (False, OK_HEAD + OK), (True, GET), *STEADY), False, 1024)  # early bytes
@example(one_conn(*STEADY, (True, HEAD), (False, OK), *STEADY), False, 1024)  # a body after a HEAD's answer
@example(one_conn(*STEADY, (True, HEAD + GET), (False, OK_HEAD + OK), *STEADY), False, 1024)  # pipelined
@example(one_conn(*STEADY, (True, GET + HEAD), (False, OK), (False, OK_HEAD), *STEADY), False, 1024)
@example(one_conn(*STEADY, (True, HEAD), (False, OK_HEAD), *STEADY, role=ROLE_CLIENT), False, 1024)
@example(one_conn(*STEADY, (True, HEAD), (False, OTHER_RESPONSES[0]), *STEADY), False, 1024)  # 204
@example(one_conn(*STEADY, (True, HEAD), (False, OTHER_RESPONSES[3][:-15]), *STEADY), False, 1024)  # chunked
@example(one_conn(*STEADY, (False, OK), *STEADY), False, 1024)  # an answer without a request
@example(one_conn(*STEADY, (True, PLAIN_REQUESTS[4]), (False, OK), *STEADY), True, 1024)  # a credential kept
@example(one_conn(*STEADY, (True, PLAIN_REQUESTS[4]), (False, OK), *STEADY), False, 1024)
@example(one_conn(*STEADY, (True, PLAIN_REQUESTS[3]), (False, PLAIN_RESPONSES[3]), *STEADY), False, 3)
@example(one_conn(*STEADY, (True, GET), (False, OTHER_RESPONSES[2]), *STEADY), False, 1024)  # 100 Continue
@example(one_conn(*STEADY, (True, GET), (False, OTHER_RESPONSES[6]), *STEADY), False, 1024)  # 101
@example(one_conn(*STEADY, (True, GET), (False, OTHER_RESPONSES[3]), *STEADY), False, 1024)  # chunked
@example(one_conn(*STEADY, (True, GET[:10]), (True, GET[10:]), (False, OK), *STEADY), False, 1024)
@example(one_conn(*STEADY, (True, GET), (False, PLAIN_RESPONSES[5]), *STEADY), False, 0)
def test_c_path_leaves_what_the_python_path_leaves(steps, keep_secrets, body_limit):
    assert_same(steps, keep_secrets=keep_secrets, body_limit=body_limit)


def test_a_response_timed_before_its_request_is_left_to_python(monkeypatch):
    """Events of two CPUs: a response stamped before the request it follows answers an earlier one
    (response_before_request, out of step): the C path must not pair it."""
    c = Conn(40)
    events = [c.open(1)] + [c.data(100 * (i + 1), i % 2 == 0, GET if i % 2 == 0 else OK) for i in range(6)]
    events += [c.data(1000, True, GET), c.data(900, False, OK), c.data(1100, True, GET), c.data(1200, False, OK)]
    assert_same([events, "end"])
    _, states = run([events, "end"], True)
    conn = states[-1][4][(PID, 40, 1)]
    assert dict(conn[3][1]).get("response_before_request") == 1


def test_recorded_streams_give_the_same_both_ways(monkeypatch):
    """Every recorded real conversation (pxq/agent/protocols/http1/streams/), one event per chunk
    as the server's side saw it, with the steady state repeated after it so the C path joins."""
    taken = Taken(monkeypatch)
    for path in sorted(STREAMS.glob("*.json")):
        stream = load_stream(path)
        c = Conn(50)
        chunks = [(d == "req", data) for d, _, data in stream.chunks]
        events = [c.open(1)] + [c.data(1000 + ts, request, data) for (request, data), (_, ts, _) in
                                zip(chunks, stream.chunks)]  # fmt: skip
        last = 1000 + stream.chunks[-1][1]
        events += [c.data(last + 10 * (i + 1), i % 2 == 0, GET if i % 2 == 0 else OK) for i in range(8)]
        events.append(c.close(last + 1000))
        for cut in (1, 3, len(events)):
            steps = [events[i : i + cut] for i in range(0, len(events), cut)]
            assert_same([*steps, "end", "end"])
    assert taken.events > 0 and taken.ring_events > 0


def test_tables_are_arrow_equal_too():
    events = keep_alive(20)
    fast = ConnTracker(protocols=[registry.PROTOCOLS["http"]])
    slow = ConnTracker(protocols=[registry.PROTOCOLS["http"]], native_http1=False)
    for t in (fast, slow):
        t.handle_all(events)
    a, b = fast.take_tables()["http_events"], slow.take_tables()["http_events"]
    assert isinstance(a, pa.Table) and a.num_rows == 20
    assert a.equals(b)


def test_a_connection_picked_up_mid_stream_joins_the_c_path_after_its_probation(monkeypatch):
    """A socket opened before the tracer looked is parsed on probation: its pairs are held until
    it has answered PROBATION_EXCHANGES exchanges in step (Python's); after that its events are C's."""
    taken = Taken(monkeypatch)
    steps = one_conn(*STEADY * 3, opened=False)  # 9 exchanges, no OPEN event
    assert_same(steps)
    assert taken.events > 0 and taken.ring_events > 0
    rows, states = run(steps, True)
    assert sum(len(r) for r in rows) == 9
    assert dict(states[-1][4][(PID, 30, 1)][0])["restarted"] is True  # parsed on probation, then let through


def test_the_c_path_reads_the_stitchers_count_of_head_requests_as_python_does():
    """Which answer ends with its head follows the stitcher's count of HEAD requests waiting
    (_header_only_requests), read as Python reads it: given the same count, even one no parse
    could leave, both paths leave the same state (and the C path takes the answer when the count
    is the true one)."""
    c = Conn(70)
    first = [c.open(1), *(c.data(10 * (i + 1), i % 2 == 0, GET if i % 2 == 0 else OK) for i in range(6))]
    head = [c.data(100, True, HEAD)]
    answer_scripts = [
        [c.data(200, False, OK_HEAD), c.data(300, True, GET), c.data(400, False, OK)],
        [c.data(200, False, OK)],  # with no count, a head and a body of 5 bytes
    ]
    for count, answers in itertools.product((1, 0, 2, -1), answer_scripts):
        outcomes = []
        for native in (True, False):
            t = ConnTracker(protocols=[registry.PROTOCOLS["http"]], native_http1=native)
            t.handle_batch(first)
            t.handle_batch(head)
            t.conns[(PID, 70, 1)].stitcher._header_only_requests = count
            taken = []

            def counting(*args, c_path=t._http1_batch, taken=taken):
                out = c_path(*args)
                taken.append(out[1])
                return out

            t._http1_batch = counting
            t.handle_batch(answers)
            t.end_batch()
            outcomes.append((t.take_tables()["http_events"].to_pylist(), tracker_state(t)))
            if native and count == 1 and answers is answer_scripts[0]:
                assert sum(taken) == len(answers)
        assert outcomes[0] == outcomes[1], (count, answers)
