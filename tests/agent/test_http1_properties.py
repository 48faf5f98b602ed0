"""Property tests for the HTTP/1.x stitcher: how a stream is cut into chunks never changes what
comes out, generated exchanges come back exactly, and no input makes it raise."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings, strategies as st

from pxq.agent.protocols.http1 import RECORDED_STREAMS, Http1Stitcher
from pxq.testing.streams import load_stream, replay

STREAMS = sorted(RECORDED_STREAMS.glob("*.json"))
RECORDED = {p.stem: load_stream(p) for p in STREAMS}
# PXQ_HYPOTHESIS_EXAMPLES=5000 for a deeper run than CI's.
EXAMPLES = int(os.environ.get("PXQ_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


# -- 1. re-splitting real streams -------------------------------------------------------------
@SETTINGS
@given(name=st.sampled_from(sorted(RECORDED)), data=st.data())
def test_resplitting_a_recorded_stream_gives_the_same_transactions(name, data):
    stream = RECORDED[name]
    expected, expected_st = replay(stream.chunks)
    rechunked = []
    for direction, ts, chunk in stream.chunks:
        cuts = data.draw(st.lists(st.integers(0, len(chunk)), max_size=8), label=f"cuts@{ts}")
        rechunked += [(direction, ts, piece) for piece in split(chunk, cuts)]
    got, got_st = replay(rechunked, close_ts=stream.chunks[-1][1])
    assert got == expected
    assert got_st.errors == expected_st.errors


# -- 2. generated exchanges -------------------------------------------------------------------
@dataclass
class Exchange:
    method: str
    path: str
    req_body: bytes
    req_chunked: bool
    status: int
    reason: str
    resp_body: bytes
    resp_chunked: bool
    interim: bool  # a 100 Continue before the final response


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
PATHS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/-_.~%=&?", max_size=30).map(lambda s: "/" + s)
REASONS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz ", max_size=20).map(str.strip)
BODIES = st.one_of(st.just(b""), st.binary(max_size=64), st.binary(min_size=1000, max_size=3000))


@st.composite
def exchanges(draw) -> Exchange:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]))
    has_req_body = method in ("POST", "PUT", "PATCH")
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 400, 404, 418, 500, 503]))
    no_resp_body = method == "HEAD" or status in (204, 304)
    return Exchange(
        method=method,
        path=draw(PATHS),
        req_body=draw(BODIES) if has_req_body else b"",
        req_chunked=has_req_body and draw(st.booleans()),
        status=status,
        reason=draw(REASONS),
        resp_body=b"" if no_resp_body and method != "HEAD" else draw(BODIES),
        resp_chunked=status not in (204, 304) and draw(st.booleans()),
        interim=has_req_body and draw(st.booleans()),
    )


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i = b"", 0
    for size in sizes:
        piece = body[i : i + size]
        if piece:
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
        i += size
    if i < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - i, body[i:])
    return out + b"0\r\n\r\n"


def encode_request(ex: Exchange, sizes: list[int]) -> bytes:
    head = f"{ex.method} {ex.path} HTTP/1.1\r\nHost: test\r\nX-Token: {ex.method.lower()}\r\n"
    if ex.req_chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunked(ex.req_body, sizes)
    if ex.method in ("POST", "PUT", "PATCH"):
        return (head + f"Content-Length: {len(ex.req_body)}\r\n\r\n").encode() + ex.req_body
    return (head + "\r\n").encode()


def encode_response(ex: Exchange, sizes: list[int]) -> bytes:
    out = b"HTTP/1.1 100 Continue\r\n\r\n" if ex.interim else b""
    head = f"HTTP/1.1 {ex.status} {ex.reason}\r\nContent-Type: application/json\r\n"
    if ex.method == "HEAD":  # headers describe the body a GET would get; none follows
        framing = "Transfer-Encoding: chunked" if ex.resp_chunked else f"Content-Length: {len(ex.resp_body)}"
        return out + f"{head}{framing}\r\n\r\n".encode()
    if ex.resp_chunked:
        return out + (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunked(ex.resp_body, sizes)
    return out + (head + f"Content-Length: {len(ex.resp_body)}\r\n\r\n").encode() + ex.resp_body


def expected_body(ex_body: bytes, sent: bool) -> tuple[str, int]:
    body = ex_body if sent else b""
    return body[:1024].decode("utf-8", errors="replace"), len(body)


@SETTINGS
@given(
    exs=st.lists(exchanges(), min_size=1, max_size=6),
    sizes=st.lists(st.integers(1, 700), max_size=5),
    pipelined=st.booleans(),
    data=st.data(),
)
def test_generated_exchanges_come_back_whatever_the_chunking(exs, sizes, pipelined, data):
    reqs = [encode_request(ex, sizes) for ex in exs]
    resps = [encode_response(ex, sizes) for ex in exs]
    if pipelined:  # every request first, then every response
        plan = [("req", b"".join(reqs)), ("resp", b"".join(resps))]
    else:
        plan = [item for pair in zip((("req", r) for r in reqs), (("resp", r) for r in resps)) for item in pair]
    stitcher, got, ts = Http1Stitcher(), [], 0
    for direction, blob in plan:
        cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=10))
        for piece in split(blob, cuts):
            ts += 1
            got += (stitcher.feed_request if direction == "req" else stitcher.feed_response)(piece, ts)
    got += stitcher.close(ts + 1)
    assert not stitcher.errors
    assert len(got) == len(exs)
    for tx, ex in zip(got, exs):
        assert (tx.req_method, tx.req_path, tx.resp_status, tx.resp_message) == (
            ex.method,
            ex.path,
            ex.status,
            ex.reason,
        )
        assert (tx.req_body, tx.req_body_size) == expected_body(ex.req_body, True)
        assert (tx.resp_body, tx.resp_body_size) == expected_body(ex.resp_body, ex.method != "HEAD")
        assert tx.req_headers["X-Token"] == ex.method.lower()
        assert tx.content_type == 1
        assert tx.latency_ns == tx.resp_end_ns - tx.req_start_ns >= 0


# -- 3. nothing raises ------------------------------------------------------------------------
@SETTINGS
@given(
    steps=st.lists(st.tuples(st.sampled_from(["req", "resp"]), st.binary(max_size=300)), max_size=20),
    body_limit=st.integers(0, 2048),
)
def test_random_bytes_never_raise(steps, body_limit):
    stitcher = Http1Stitcher(body_limit=body_limit)
    for i, (direction, blob) in enumerate(steps):
        (stitcher.feed_request if direction == "req" else stitcher.feed_response)(blob, i)
    stitcher.close(len(steps))
    assert all(isinstance(n, int) and n > 0 for n in stitcher.errors.values())


HTTPISH = st.sampled_from(
    [b"GET ", b"HEAD ", b"POST ", b" HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 101 X\r\n",
     b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", b"Connection: Upgrade\r\n",
     b"Upgrade: websocket\r\n", b"CONNECT a:1 HTTP/1.1\r\n", b"\r\n", b"0\r\n\r\n", b"5\r\nabcde\r\n",
     b"/p", b"\x00", b"\xff", b"\n", b"100 Continue\r\n"]
)  # fmt: skip


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["req", "resp"]), st.lists(HTTPISH, max_size=12).map(b"".join)), max_size=25))
def test_http_shaped_garbage_never_raises(steps):
    stitcher = Http1Stitcher()
    for i, (direction, blob) in enumerate(steps):
        for tx in (stitcher.feed_request if direction == "req" else stitcher.feed_response)(blob, i):
            assert tx.latency_ns == tx.resp_end_ns - tx.req_start_ns
    stitcher.close(len(steps))


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
    replay(chunks)
