"""Property tests for the DNS stitcher and the tracker's UDP side: how a recorded TCP
conversation is cut into reads never changes what comes out, random garbage never raises, and
garbage mixed into a real conversation never pairs a query with another query's answer."""

from __future__ import annotations

import os
import socket

from hypothesis import HealthCheck, example, given, settings, strategies as st

from pxq.agent.conn_tracker import EGRESS, EV_DATA, F_DATAGRAM, F_FILLER, INGRESS, ConnTracker, SockEvent
from pxq.agent.protocols import registry
from pxq.agent.protocols.dns import (
    RECORDED_DATAGRAMS,
    RECORDED_STREAMS,
    DnsStitcher,
    looks_like_query_datagram,
    looks_like_query_stream,
    looks_like_response_datagram,
    looks_like_response_stream,
)
from pxq.testing.streams import load_stream, replay

STREAMS = {p.stem: load_stream(p) for p in sorted(RECORDED_STREAMS.glob("*.json"))}
DATAGRAMS = load_stream(RECORDED_DATAGRAMS / "udp_four_queries.json")
EXAMPLES = int(os.environ.get("PXQ_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


def consistent(pairs) -> bool:
    """Every pair is a query and the response to it: same id, same question."""
    return all(resp is None or (resp.txid == req.txid and resp.question == req.question) for req, resp in pairs)


@SETTINGS
@given(name=st.sampled_from(sorted(STREAMS)), data=st.data())
def test_resplitting_a_recorded_tcp_conversation_gives_the_same_rows(name, data):
    stream = STREAMS[name]
    expected, expected_st = replay(stream.chunks, protocol="dns")
    rechunked = []
    for direction, ts, chunk in stream.chunks:
        cuts = data.draw(st.lists(st.integers(0, len(chunk)), max_size=8), label=f"cuts@{ts}")
        rechunked += [(direction, ts, piece) for piece in split(chunk, cuts)]
    got, got_st = replay(rechunked, close_ts=stream.chunks[-1][1], protocol="dns")
    assert [r[:4] for r in got] == [r[:4] for r in expected]  # the texts (times move with the cuts)
    assert got_st.errors == expected_st.errors


@SETTINGS
@given(chunks=st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=20), datagrams=st.booleans())
@example(chunks=[(True, b"\x00\x11" + b"\x00" * 17)], datagrams=False)  # a header of zeros: a query of nothing
@example(chunks=[(True, b"\xff\xff")], datagrams=False)  # a length that never comes
def test_random_bytes_never_raise(chunks, datagrams):
    st_ = DnsStitcher(datagrams=datagrams)
    pairs = []
    for i, (request, data) in enumerate(chunks):
        pairs += st_.feed_messages(request, data, i)
    pairs += st_.close_messages(len(chunks))
    assert consistent(pairs)
    for data in (b"".join(d for _, d in chunks), *(d for _, d in chunks)):
        for infer in (looks_like_query_datagram, looks_like_response_datagram, looks_like_query_stream,
                      looks_like_response_stream):  # fmt: skip
            infer(data[:256])


@SETTINGS
@given(noise=st.lists(st.tuples(st.integers(0, 8), st.booleans(), st.binary(min_size=1, max_size=80)), max_size=10),
       flips=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 400), st.integers(1, 255)), max_size=3))  # fmt: skip
@example(noise=[], flips=[(6, 76, 1)])  # an A record's class turned from IN into CH: no address to show
def test_garbage_and_damaged_datagrams_in_a_real_conversation_never_mispair(noise, flips):
    chunks = [list(c) for c in DATAGRAMS.chunks]
    for index, at, xor in flips:  # damage some bytes of some datagrams
        data = bytearray(chunks[index][2])
        data[at % len(data)] ^= xor
        chunks[index][2] = bytes(data)
    for position, request, data in sorted(noise, key=lambda n: -n[0]):
        chunks.insert(position, ["req" if request else "resp", chunks[min(position, 7)][1], data])
    st_ = DnsStitcher(datagrams=True)
    pairs = []
    for direction, ts, data in chunks:
        pairs += st_.feed_messages(direction == "req", data, ts)
    pairs += st_.close_messages(chunks[-1][1])
    assert consistent(pairs)
    if not flips:  # the real conversation comes through whole, whatever noise surrounds it
        answered = {req.question: resp for req, resp in pairs if resp is not None}
        assert len(answered) >= 4


def _event(fd: int, direction: int, pos: int, data: bytes, size: int, filler: bool, port: int, ts: int) -> SockEvent:
    return SockEvent(ts_ns=ts, pos=pos, size=size, pid=77, fd=fd, gen=1, data_len=0 if filler else len(data),
                     kind=EV_DATA, flags=F_DATAGRAM | (F_FILLER if filler else 0), direction=direction, role=0,
                     family=socket.AF_INET, lport=0, rport=port, syscall=0, reserved=0,
                     laddr=bytes(16), raddr=socket.inet_aton("127.0.0.1").ljust(16, b"\0"),
                     data=b"" if filler else data)  # fmt: skip


@SETTINGS
@given(events=st.lists(st.tuples(st.integers(3, 4), st.booleans(), st.integers(0, 300), st.binary(max_size=120),
                                 st.integers(0, 200), st.booleans(), st.integers(53, 55)), max_size=30))  # fmt: skip
def test_the_tracker_survives_any_sequence_of_datagram_events(events):
    tracker = ConnTracker(protocols=[registry.HTTP, registry.DNS])
    real = [(d == "req", data) for d, _, data in DATAGRAMS.chunks]
    for i, (fd, egress, pos, data, size, filler, port) in enumerate(events):
        if i < len(real) and size % 3 == 0:  # mix real datagrams in
            egress, data = real[i]
            size = len(data)
        tracker.handle(_event(fd, EGRESS if egress else INGRESS, pos, data, size, filler, port, i))
    tracker.end_batch()
    tracker.close_all()
    tracker.take_tables()
    tracker.drop_counts()
