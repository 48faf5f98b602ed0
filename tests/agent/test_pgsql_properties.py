"""Property tests for the PostgreSQL stitcher (hypothesis): how real conversations are cut into
reads never changes the rows, no input makes it raise, and events lost on the way (ring buffer
drops) cost rows but never pair a request with another request's response."""

from __future__ import annotations

import os
import socket

from hypothesis import HealthCheck, example, given, settings, strategies as st

from pxq.agent.conn_tracker import EGRESS, EV_CLOSE, EV_DATA, EV_OPEN, INGRESS, ROLE_CLIENT, ConnTracker, SockEvent
from pxq.agent.protocols.interface import ParseOptions
from pxq.agent.protocols.pgsql import RECORDED_STREAMS, PgsqlStitcher
from pxq.agent.protocols.registry import PGSQL
from pxq.testing.streams import load_stream, replay

RECORDED = {p.stem: load_stream(p) for p in sorted(RECORDED_STREAMS.glob("*.json"))}
EXAMPLES = int(os.environ.get("PXQ_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


@SETTINGS
@given(name=st.sampled_from(sorted(RECORDED)), data=st.data())
def test_resplitting_a_recorded_stream_gives_the_same_rows(name, data):
    stream = RECORDED[name]
    expected, expected_st = replay(stream.chunks, protocol="pgsql")
    rechunked = []
    for direction, ts, chunk in stream.chunks:
        cuts = data.draw(st.lists(st.integers(0, len(chunk)), max_size=8), label=f"cuts@{ts}")
        rechunked += [(direction, ts, piece) for piece in split(chunk, cuts)]
    got, got_st = replay(rechunked, close_ts=stream.chunks[-1][1], protocol="pgsql")
    assert [(r.req_cmd, r.req, r.resp, r.req_start_ns, r.resp_end_ns) for r in got] == [
        (r.req_cmd, r.req, r.resp, r.req_start_ns, r.resp_end_ns) for r in expected
    ]
    assert got_st.errors == expected_st.errors


@SETTINGS
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=64)), max_size=30), st.integers(0, 2048))
@example([(True, b"Q\x00\x00\x00\x05\x00"), (False, b"T\x00\x00\x00\x06\x00\x01")], 1024)
@example([(True, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), (False, b"N"), (False, b"E\x00\x00\x00\x04")], 0)
def test_random_bytes_never_raise(steps, body_limit):
    st_ = PgsqlStitcher(body_limit)
    for ts, (request, data) in enumerate(steps):
        st_.feed_messages(request, data, ts)
        st_.skip_messages(request, ts % 7, ts)
    st_.close_messages(len(steps))


# Bytes that look like the protocol: tags, small lengths, NULs.
PGISH = st.sampled_from([b"Q", b"P", b"B", b"E", b"D", b"S", b"T", b"C", b"Z", b"1", b"2", b"\x00\x00\x00\x04",
                         b"\x00\x00\x00\x05", b"\x00\x00\x00\x0a", b"\x00", b"\xff\xff", b"SELECT", b"I"])  # fmt: skip


@SETTINGS
@given(st.lists(st.tuples(st.booleans(), st.lists(PGISH, max_size=12).map(b"".join)), max_size=25))
def test_protocol_shaped_garbage_never_raises(steps):
    st_ = PgsqlStitcher(64)
    for ts, (request, data) in enumerate(steps):
        st_.feed_messages(request, data, ts)
    st_.close_messages(len(steps))


@SETTINGS
@given(name=st.sampled_from(sorted(RECORDED)), data=st.data())
def test_damaged_real_streams_never_raise(name, data):
    chunks = []
    for direction, ts, chunk in RECORDED[name].chunks:
        blob = bytearray(chunk)
        for _ in range(data.draw(st.integers(0, 3))):
            pos = data.draw(st.integers(0, len(blob)))
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        chunks.append((direction, ts, bytes(blob)))
    replay(chunks, protocol="pgsql")


def _events(chunks: list[tuple[str, int, bytes]]) -> list[SockEvent]:
    """A client's view of a recorded connection as kernel events (requests sent, responses received)."""
    pos = {EGRESS: 0, INGRESS: 0}
    out = []
    for direction, ts, data in chunks:
        d = EGRESS if direction == "req" else INGRESS
        out.append(SockEvent(ts_ns=ts + 1, pos=pos[d], size=len(data), pid=77, fd=5, gen=1, data_len=len(data),
                             kind=EV_DATA, flags=0, direction=d, role=0, family=socket.AF_INET, lport=0, rport=0,
                             syscall=0, reserved=0, laddr=bytes(16), raddr=bytes(16), data=data))  # fmt: skip
        pos[d] += len(data)
    return out


def _tracker_rows(events: list[SockEvent], end_ts: int) -> list[tuple[str, str, str]]:
    tracker = ConnTracker(protocols=[PGSQL])
    # The connection seen from its connect() (else rows wait for the tracker's probation).
    tracker.handle_all(
        [events[0]._replace(kind=EV_OPEN, ts_ns=0, role=ROLE_CLIENT, pos=0, size=0, data_len=0, data=b"")]
    )
    tracker.handle_all(events)
    tracker.handle_all([events[0]._replace(kind=EV_CLOSE, ts_ns=end_ts, data=b"", data_len=0, size=0)])
    table = tracker.take_tables()["pgsql_events"]
    return list(zip(table["req_cmd"].to_pylist(), table["req"].to_pylist(), table["resp"].to_pylist(), strict=True))


@settings(SETTINGS, max_examples=min(EXAMPLES, 40))
@given(name=st.sampled_from(sorted(RECORDED)), data=st.data())
def test_lost_events_never_pair_a_request_with_another_response(name, data):
    stream = RECORDED[name]
    # Finer reads than recorded, so that a loss can fall inside a pipeline or a response.
    chunks = []
    for direction, ts, chunk in stream.chunks:
        cuts = data.draw(st.lists(st.integers(0, len(chunk)), max_size=4), label=f"cuts@{ts}")
        chunks += [(direction, ts, piece) for piece in split(chunk, cuts)]
    events = _events(chunks)
    end_ts = stream.chunks[-1][1] + 10
    every = _tracker_rows(events, end_ts)
    expected, _ = replay(stream.chunks, protocol="pgsql")
    assert every == [(r.req_cmd, r.req, r.resp) for r in expected]  # nothing lost: every row
    lost = data.draw(st.sets(st.integers(0, len(events) - 1), min_size=1, max_size=3), label="lost")
    kept = [ev for i, ev in enumerate(events) if i not in lost]
    assert {_pairing(row) for row in _tracker_rows(kept, end_ts)} <= {_pairing(row) for row in every}


def test_a_startup_whose_first_read_ends_at_its_version_after_ssl_refused_is_parsed():
    # Found by the property above: psql's startup message after a refused SSLRequest, cut by the
    # read after its length and version; the probe saw those 16 bytes, said no, and the
    # connection made no row at all.
    stream = RECORDED["multi_statement"]
    assert stream.chunks[0][2][4:8] == b"\x04\xd2\x16\x2f"  # 80877103: an SSLRequest first
    startup = stream.chunks[2]
    chunks = [
        *stream.chunks[:2],
        *((startup[0], startup[1], p) for p in split(startup[2], [8, 48])),
        *stream.chunks[3:],
    ]
    expected, _ = replay(stream.chunks, protocol="pgsql")
    assert _tracker_rows(_events(chunks), stream.chunks[-1][1] + 10) == [(r.req_cmd, r.req, r.resp) for r in expected]


def _pairing(row: tuple[str, str, str]) -> tuple[str, str, str]:
    """What a row says about which request got which response. A Bind's or an Execute's text
    depends on the Parse before it (lost, its statement shows as not seen and binary values
    undecoded): for those, the response alone identifies the transaction."""
    cmd, req, resp = row
    return (cmd, "" if cmd in ("Bind", "Execute") else req, resp)


def test_recorded_streams_parse_with_the_registry_options():
    for stream in RECORDED.values():
        stitcher = PGSQL.make_stitcher(ParseOptions(body_limit=16))
        records, _ = replay(stream.chunks, stitcher, protocol="pgsql")
        assert records
