"""Property tests for the Redis parser and stitcher: how a conversation is cut into reads never
changes the rows, no input makes it raise, and bytes lost on the way (events the kernel could not
deliver) cost rows but never pair a command with another command's reply."""

from __future__ import annotations

import os
import socket
from collections import Counter

from hypothesis import HealthCheck, example, given, settings, strategies as st

from pxq.agent.conn_tracker import (
    EGRESS,
    EV_CLOSE,
    EV_DATA,
    EV_OPEN,
    F_REMOTE,
    INGRESS,
    ROLE_CLIENT,
    ConnTracker,
    SockEvent,
)
from pxq.agent.protocols import registry
from pxq.agent.protocols.interface import ParseOptions
from pxq.agent.protocols.redis import RECORDED_STREAMS, RedisStitcher
from pxq.testing.streams import load_stream, replay

STREAMS = sorted(RECORDED_STREAMS.glob("*.json"))
RECORDED = {p.stem: load_stream(p) for p in STREAMS}
# PXQ_HYPOTHESIS_EXAMPLES=5000 for a deeper run than CI's.
EXAMPLES = int(os.environ.get("PXQ_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPTIONS = ParseOptions(body_limit=1024)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


def triples(records) -> list[tuple]:
    return [(r.req_cmd, r.req_args, r.resp, r.req_start_ns, r.resp_end_ns) for r in records]


def test_the_recordings_are_all_here():
    assert set(RECORDED) >= {"basic", "pipeline", "multi_exec", "pubsub", "resp3", "auth", "hello_auth", "inline"}


@SETTINGS
@given(name=st.sampled_from(sorted(RECORDED)), data=st.data())
def test_resplitting_a_recorded_stream_gives_the_same_rows(name, data):
    stream = RECORDED[name]
    expected, expected_st = replay(stream.chunks, protocol="redis")
    rechunked = []
    for direction, ts, chunk in stream.chunks:
        cuts = data.draw(st.lists(st.integers(0, len(chunk)), max_size=8), label=f"cuts@{ts}")
        rechunked += [(direction, ts, piece) for piece in split(chunk, cuts)]
    got, got_st = replay(rechunked, close_ts=stream.chunks[-1][1], protocol="redis")
    assert triples(got) == triples(expected)
    assert got_st.errors == expected_st.errors


RESP_PIECES = [b"*", b"$", b"+", b"-", b":", b"_", b"#", b",", b"(", b"!", b"=", b"%", b"~", b">", b"|", b"\r\n",
               b"\r", b"\n", b"-1", b"0", b"1", b"3", b"99999999", b"-2", b"txt:", b"OK", b"GET", b"message",
               b"subscribe", b"SUBSCRIBE", b"\x00", b"\xff", b" ", b'"', b"'"]  # fmt: skip


@SETTINGS
@given(
    steps=st.lists(
        st.tuples(st.booleans(), st.one_of(st.binary(max_size=64), st.lists(st.sampled_from(RESP_PIECES), max_size=24)
                                           .map(b"".join))),
        max_size=30,
    ),
    keep=st.booleans(),
)  # fmt: skip
@example(steps=[(True, b"*1\r\n" * 40)], keep=False)
@example(steps=[(False, b"*2000000000\r\n"), (False, b"_\r\n" * 10)], keep=False)
@example(steps=[(True, b'SET "a'), (True, b"\n")], keep=False)
@example(steps=[(True, b"\x00\r\n")], keep=False)  # an inline line with a NUL once looped forever
def test_no_input_makes_it_raise(steps, keep):
    st_ = RedisStitcher(ParseOptions(body_limit=64, keep_secrets=keep))
    for i, (request, data) in enumerate(steps):
        st_.feed_messages(request, data, i)
        st_.skip_messages(request, 3, i)
    st_.close_messages(len(steps))
    st_.response_gap(len(steps))


@SETTINGS
@given(name=st.sampled_from(sorted(RECORDED)), data=st.data())
def test_damaged_real_streams_never_raise(name, data):
    stream = RECORDED[name]
    chunks = list(stream.chunks)
    for _ in range(data.draw(st.integers(1, 4), label="damages")):
        i = data.draw(st.integers(0, len(chunks) - 1), label="chunk")
        d, ts, chunk = chunks[i]
        at = data.draw(st.integers(0, len(chunk)), label="at")
        junk = data.draw(st.binary(min_size=1, max_size=16), label="junk")
        chunks[i] = (d, ts, chunk[:at] + junk + chunk[at + data.draw(st.integers(0, 8), label="cut") :])
    replay(chunks, protocol="redis")


# -- lost events through the connection tracker ---------------------------------------------------
PID = 5151
REMOTE = socket.inet_aton("127.0.0.1") + bytes(12)


def _event(kind: int, ts: int, **kw) -> SockEvent:
    fields = dict(ts_ns=ts, pos=0, size=0, pid=PID, fd=9, gen=1, data_len=0, kind=kind, flags=0, direction=0,
                  role=ROLE_CLIENT, family=socket.AF_INET, lport=40000, rport=6379, syscall=0, reserved=0,
                  laddr=REMOTE, raddr=REMOTE, data=b"")  # fmt: skip
    fields.update(kw)
    return SockEvent(**fields)


def client_events(chunks: list[tuple[str, int, bytes]], lost: set[int]) -> list[SockEvent]:
    """The kernel's events for a client connection carrying ``chunks``, minus the ``lost`` ones
    (their stream offsets still advance: the next event shows the hole)."""
    pos = {EGRESS: 0, INGRESS: 0}
    events = [_event(EV_OPEN, 1, flags=F_REMOTE)]
    for i, (direction, ts, data) in enumerate(chunks):
        d = EGRESS if direction == "req" else INGRESS
        if i not in lost:
            events.append(_event(EV_DATA, 10 + ts, pos=pos[d], size=len(data), data_len=len(data), direction=d,
                                 data=data))  # fmt: skip
        pos[d] += len(data)
    events.append(_event(EV_CLOSE, 10 + chunks[-1][1] + 1))
    return events


def tracked_rows(events: list[SockEvent], batch: int) -> tuple[list[tuple], dict[str, int]]:
    tracker = ConnTracker(protocols=[registry.REDIS])
    for i in range(0, len(events), batch):
        tracker.handle_all(events[i : i + batch])
        tracker.end_batch()
    tracker.close_all()
    table = tracker.take_tables()["redis_events"]
    rows = [(r["req_cmd"], r["req_args"], r["resp"]) for r in table.to_pylist()]
    return rows, tracker.drop_counts()


# Inline commands never make a connection Redis (inference): the tracker ignores that recording.
TRACKED = sorted(set(RECORDED) - {"inline"})


@SETTINGS
@given(name=st.sampled_from(TRACKED), data=st.data())
@example(name="pipeline", data=None)
def test_lost_events_never_pair_a_command_with_another_commands_reply(name, data):
    chunks = RECORDED[name].chunks
    truth, truth_drops = tracked_rows(client_events(chunks, set()), batch=len(chunks) + 2)
    assert truth and truth_drops["data_gap"] == 0 and truth_drops["parse_error"] == 0
    if data is None:  # the explicit example: the pipeline's one request write is lost
        lost = {next(i for i, (d, _, c) in enumerate(chunks) if d == "req" and c.count(b"INCRBY") > 1)}
        batch = 3
    else:
        lost = set(data.draw(st.lists(st.integers(0, len(chunks) - 1), max_size=4), label="lost"))
        batch = data.draw(st.integers(1, 6), label="batch")
    got, drops = tracked_rows(client_events(chunks, lost), batch)
    # Every row is one of the true rows (as many times at most): a lost event costs rows, never
    # makes a wrong one.
    assert not Counter(got) - Counter(truth), (sorted(lost), got, truth)

    # Rows lost are counted when the loss can be seen: a later event of the same direction starts
    # past it. (The tracker takes a direction's first event as its start, DataStream.arrive, and a
    # close carries no offsets: a loss before the first or after the last event shows no hole.)
    def seen(i: int) -> bool:
        later = [j for j in range(i + 1, len(chunks)) if chunks[j][0] == chunks[i][0] and j not in lost]
        earlier = [j for j in range(i) if chunks[j][0] == chunks[i][0]]
        return bool(later and earlier)

    if lost and len(got) < len(truth) and all(map(seen, lost)):
        assert drops["data_gap"] + drops["unmatched"] + drops["parse_error"] > 0


# -- the fast command path agrees with the general parser --------------------------------------------
@SETTINGS
@given(words=st.lists(st.binary(max_size=40), min_size=1, max_size=8), cut=st.integers(0, 400))
@example(words=[b"GET", b"\r\n"], cut=10**6)
def test_parse_command_reads_what_parse_reads(words, cut):
    from pxq.agent.protocols.redis import resp

    data = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
    fast, end = resp.parse_command(data, 0)
    assert (fast, end) == resp.parse(data) == ([w.decode("utf-8", "replace") for w in words], len(data))
    prefix = data[: min(cut, len(data) - 1)]
    for parser in (resp.parse_command, resp.parse):
        try:
            parser(prefix, 0)
        except resp.NeedMore as more:
            assert len(prefix) < more.total <= len(data)
        else:
            raise AssertionError(f"{parser.__name__} parsed a prefix")


def _encode(value) -> bytes:
    """A generated RESP value (RESP2 and RESP3 types) as a server writes it."""
    kind, v = value
    if kind == "bulk":
        return b"$%d\r\n%s\r\n" % (len(v), v)
    if kind == "simple":
        return b"+%s\r\n" % v
    if kind == "error":
        return b"-%s\r\n" % v
    if kind == "int":
        return b":%d\r\n" % v
    if kind == "null":
        return b"_\r\n"
    if kind == "verbatim":
        return b"=%d\r\ntxt:%s\r\n" % (len(v) + 4, v)
    marker = {"array": b"*", "set": b"~", "push": b">"}.get(kind)
    if marker is not None:
        return marker + b"%d\r\n" % len(v) + b"".join(map(_encode, v))
    return b"%%%d\r\n" % len(v) + b"".join(_encode(k) + _encode(x) for k, x in v)  # map


_line_text = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_scalars = st.one_of(
    st.tuples(st.just("bulk"), st.binary(max_size=20)),
    st.tuples(st.just("simple"), _line_text),
    st.tuples(st.just("error"), _line_text),
    st.tuples(st.just("int"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("null"), st.none()),
    st.tuples(st.just("verbatim"), st.binary(max_size=12)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.tuples(st.sampled_from(["array", "set", "push"]), st.lists(inner, max_size=4)),
        st.tuples(st.just("map"), st.lists(st.tuples(inner, inner), max_size=3)),
    ),
    max_leaves=12,
)


@SETTINGS
@given(value=_values)
def test_every_prefix_of_a_reply_asks_for_no_more_than_the_reply_has(value):
    """NeedMore's byte count is a lower bound (the stitcher waits for that many bytes before parsing
    again: more would leave a complete reply waiting)."""
    from pxq.agent.protocols.redis import resp

    data = _encode(value)
    _, end = resp.parse(data)
    assert end == len(data)
    for cut in range(len(data)):
        try:
            resp.parse(data[:cut])
        except resp.NeedMore as more:
            assert cut < more.total <= len(data)
        else:
            raise AssertionError(f"parsed a prefix of {cut} bytes of {data!r}")
