"""The HTTP/1.x stitcher on byte streams recorded from real servers (pxq/agent/protocols/http1/streams/,
made by tests/agent/record_streams.py from nginx and the http.server backend on loopback)."""

from __future__ import annotations

import json

import pytest

from pxq.agent.protocols.http1 import CONTENT_TYPE_JSON, CONTENT_TYPE_UNKNOWN, RECORDED_STREAMS, Http1Stitcher
from pxq.testing.streams import load_stream, replay
from pxq.testing.workload import BIG_JSON

STREAMS = RECORDED_STREAMS


def recorded(name: str):
    stream = load_stream(STREAMS / f"{name}.json")
    txs, stitcher = replay(stream.chunks)
    return stream, txs, stitcher


def summary(txs):
    return [(t.req_method, t.req_path, t.resp_status) for t in txs]


def test_every_recorded_stream_parses_without_errors():
    names = sorted(p.stem for p in STREAMS.glob("*.json"))
    assert len(names) >= 6
    for name in names:
        _, txs, stitcher = recorded(name)
        assert txs, name
        assert not stitcher.errors, (name, stitcher.errors)


def test_keepalive_mix_from_nginx():
    stream, txs, _ = recorded("keepalive_mix")
    assert summary(txs) == [
        ("GET", "/", 200),
        ("GET", "/api/items", 200),
        ("POST", "/api/echo", 200),
        ("POST", "/api/echo", 200),
        ("GET", "/missing", 404),
        ("GET", "/api/error", 500),
        ("HEAD", "/static/big.json", 200),
        ("GET", "/static/big.json", 200),
        ("GET", "/api/stream", 200),
    ]
    root, items, post, chunked_post, missing, error, head, big, stream_resp = txs
    # Reason phrases from the status line, headers as sent (original case), JSON-serialisable.
    assert (missing.resp_message, error.resp_message) == ("Not Found", "Internal Server Error")
    assert root.resp_headers["Server"].startswith("nginx/")
    assert root.req_headers["Host"].startswith("127.0.0.1:")
    json.dumps([t.req_headers for t in txs] + [t.resp_headers for t in txs])
    # Content-Length request body, kept whole (under the limit) and echoed back.
    assert post.req_body.startswith('{"order": 42') and post.req_body_size == len(post.req_body) == 70
    assert json.loads(post.resp_body)["size"] == 70
    # A chunked upload: the body is the de-chunked bytes.
    assert chunked_post.req_headers["Transfer-Encoding"] == "chunked"
    assert (chunked_post.req_body, chunked_post.req_body_size) == ("first-chunk;second-chunk;", 25)
    # HEAD: Content-Length says 4017, but there is no body, and the next response still parses.
    assert head.resp_headers["Content-Length"] == "4017"
    assert (head.resp_body, head.resp_body_size) == ("", 0)
    # A body over the 1024-byte limit is cut; its true size is kept.
    assert big.resp_body_size == 4017 and len(big.resp_body) == 1024
    assert big.resp_body.encode() == BIG_JSON[:1024]  # the file nginx served, cut
    # nginx re-chunks the backend's chunked body: decoded body, decoded size.
    assert stream_resp.resp_headers["Transfer-Encoding"] == "chunked"
    assert stream_resp.resp_body == '{"part": 1}, {"part": 2}, {"part": 3}'
    assert stream_resp.resp_body_size == 37
    # Content type from the response's Content-Type (Pixie: 1 = JSON).
    assert items.content_type == CONTENT_TYPE_JSON and root.content_type == CONTENT_TYPE_UNKNOWN
    for t in txs:
        assert (t.major_version, t.minor_version) == (1, 1)
        assert 0 <= t.req_start_ns <= t.resp_end_ns
        assert t.latency_ns == t.resp_end_ns - t.req_start_ns


def test_pipelined_requests_with_head_from_nginx():
    stream, txs, _ = recorded("pipelined")
    # All four requests went out in one write, and the first two responses share one read.
    assert [d for d, _, _ in stream.chunks].count("req") == 1
    assert summary(txs) == [
        ("GET", "/static/hello.txt", 200),
        ("HEAD", "/static/big.json", 200),
        ("GET", "/api/items", 200),
        ("GET", "/static/big.json", 200),
    ]
    hello, head, items, big = txs
    assert hello.resp_body == "hello from nginx\n"
    assert head.resp_body_size == 0
    assert items.resp_body.startswith('{"items": [')
    assert big.resp_body_size == 4017
    # Pipelined requests share the write's timestamp; each response ends when its bytes came.
    assert len({t.req_start_ns for t in txs}) == 1
    assert hello.resp_end_ns <= items.resp_end_ns <= big.resp_end_ns


def test_expect_100_continue_interim_response_is_skipped():
    stream, txs, _ = recorded("expect_continue")
    assert b"HTTP/1.1 100 Continue" in stream.side("resp")
    assert summary(txs) == [("POST", "/api/echo", 200)]
    (tx,) = txs
    assert tx.req_headers["Expect"] == "100-continue"
    assert tx.req_body == '{"waited": "for 100 Continue"}'
    assert tx.resp_message == "OK"


def test_upgrade_refused_by_nginx_keeps_parsing_http():
    _, txs, stitcher = recorded("upgrade_refused")
    assert summary(txs) == [("GET", "/static/hello.txt", 200), ("GET", "/static/index.html", 200)]
    assert txs[0].req_headers["Upgrade"] == "websocket"
    assert not stitcher.upgraded


def test_upgrade_101_then_non_http_bytes():
    stream, txs, stitcher = recorded("upgrade_101")
    assert b"not HTTP at all" in stream.side("req") and b"not HTTP at all" in stream.side("resp")
    assert summary(txs) == [("GET", "/ws", 101)]
    assert txs[0].resp_message == "Switching Protocols"
    assert stitcher.upgraded and not stitcher.errors


def test_http10_close_delimited_body_completes_on_close():
    stream, _, _ = recorded("http10_close_delimited")
    st = Http1Stitcher()
    got = []
    for direction, ts, data in stream.chunks:
        got += (st.feed_request if direction == "req" else st.feed_response)(data, ts)
    assert got == []  # no Content-Length, no chunking: only the close ends the body
    last_data_ts = stream.chunks[-1][1]
    (tx,) = st.close(last_data_ts + 5_000_000)
    assert (tx.req_method, tx.req_path, tx.resp_status) == ("GET", "/legacy", 200)
    assert "Content-Length" not in tx.resp_headers
    assert tx.resp_body == "an old-style body, ended by closing the connection\n"
    assert tx.resp_body_size == len(tx.resp_body)
    assert tx.resp_end_ns == last_data_ts  # the last byte's chunk, not the close


@pytest.mark.parametrize("limit", [0, 10, 4017, 10_000])
def test_body_limit_is_configurable(limit):
    stream = load_stream(STREAMS / "keepalive_mix.json")
    txs, _ = replay(stream.chunks, Http1Stitcher(body_limit=limit))
    big = txs[7]
    assert big.resp_body_size == 4017
    assert len(big.resp_body) == min(limit, 4017)
