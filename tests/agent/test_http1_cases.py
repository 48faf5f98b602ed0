"""The HTTP/1.x stitcher on hand-written byte sequences: the framing rules one at a time, error
handling, protocol inference and the Arrow rows."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib

import pyarrow as pa
import pytest

from pxq.agent.protocols.http1 import (
    Http1Stitcher,
    looks_like_http_request,
    looks_like_http_response,
    transactions_to_arrow,
)
from pxq.tables import CATALOG

GET = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
HEAD = b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n"
OK3 = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
OK0 = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def run(req: bytes, resp: bytes, *, close: bool = True, **kw):
    st = Http1Stitcher(**kw)
    out = st.feed_request(req, 100) + st.feed_response(resp, 200)
    if close:
        out += st.close(300)
    return out, st


def statuses(txs):
    return [(t.req_method, t.req_path, t.resp_status, t.resp_body_size) for t in txs]


def test_keep_alive_sequence_with_timestamps():
    st = Http1Stitcher()
    assert st.feed_request(GET, 10) == []
    (first,) = st.feed_response(OK3, 25)
    assert st.feed_request(b"GET /b HTTP/1.1\r\n\r\n", 40) == []
    (second,) = st.feed_response(OK0, 70)
    assert (first.req_start_ns, first.resp_end_ns, first.latency_ns) == (10, 25, 15)
    assert (second.req_path, second.latency_ns) == ("/b", 30)
    assert st.close(80) == [] and not st.errors


def test_request_start_is_its_first_byte_and_response_end_its_last():
    st = Http1Stitcher()
    st.feed_request(GET[:5], 1)
    st.feed_request(GET[5:], 2)
    st.feed_response(OK3[:-1], 3)
    (tx,) = st.feed_response(OK3[-1:], 9)
    assert (tx.req_start_ns, tx.resp_end_ns, tx.latency_ns) == (1, 9, 8)


def test_pipelined_head_between_bodies_in_one_chunk():
    head_resp = b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\nContent-Type: application/json\r\n\r\n"
    txs, st = run(GET + HEAD + GET, OK3 + head_resp + OK3)
    assert statuses(txs) == [("GET", "/a", 200, 3), ("HEAD", "/h", 200, 0), ("GET", "/a", 200, 3)]
    assert txs[1].resp_headers["Content-Length"] == "500" and txs[1].content_type == 1
    assert not st.errors


def test_head_first_and_head_response_split_inside_the_header_end():
    st = Http1Stitcher()
    st.feed_request(HEAD + GET, 1)
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n" + OK3
    cut = resp.index(b"\r\n\r\n") + 2
    assert st.feed_response(resp[:cut], 2) == []
    txs = st.feed_response(resp[cut:], 3)
    assert statuses(txs) == [("HEAD", "/h", 200, 0), ("GET", "/a", 200, 3)]
    assert txs[0].resp_end_ns == 3


def test_head_response_that_claims_chunked_has_no_body():
    txs, st = run(HEAD + GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + OK3)
    assert statuses(txs) == [("HEAD", "/h", 200, 0), ("GET", "/a", 200, 3)] and not st.errors


@pytest.mark.parametrize("status, reason", [(204, b"No Content"), (304, b"Not Modified")])
def test_204_and_304_have_no_body_whatever_the_headers_say(status, reason):
    resp = b"HTTP/1.1 %d %s\r\nContent-Length: 7\r\n\r\n" % (status, reason) + OK3
    txs, st = run(GET + GET, resp)
    assert statuses(txs) == [("GET", "/a", status, 0), ("GET", "/a", 200, 3)]
    assert txs[0].resp_message == reason.decode() and not st.errors


def test_interim_responses_are_skipped():
    req = b"POST /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    st = Http1Stitcher()
    st.feed_request(req, 1)
    assert st.feed_response(b"HTTP/1.1 100 Continue\r\n\r\n", 2) == []
    assert st.feed_response(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n", 3) == []
    st.feed_request(b"body", 4)
    (tx,) = st.feed_response(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 5)
    assert (tx.resp_status, tx.req_body, tx.latency_ns) == (201, "body", 4)


def test_response_before_request_body_is_complete_waits_for_it():
    st = Http1Stitcher()
    st.feed_request(b"POST /big HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc", 1)
    assert st.feed_response(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n", 2) == []
    (tx,) = st.feed_request(b"def", 3)
    assert (tx.resp_status, tx.req_body, tx.resp_end_ns) == (413, "abcdef", 2)


def test_chunked_both_ways_with_extensions_and_trailers():
    req = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
    (tx,), st = run(req, resp)
    assert (tx.req_body, tx.req_body_size, tx.resp_body, tx.resp_body_size) == ("abcde", 5, "hello", 5)
    assert not st.errors


def test_one_byte_at_a_time():
    st = Http1Stitcher()
    out = []
    for i, b in enumerate(GET + HEAD):
        out += st.feed_request(bytes([b]), i)
    resp = OK3 + b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    for i, b in enumerate(resp):
        out += st.feed_response(bytes([b]), 1000 + i)
    assert statuses(out) == [("GET", "/a", 200, 3), ("HEAD", "/h", 200, 0)]
    assert out[0].req_start_ns == 0 and out[1].req_start_ns == len(GET)


def test_many_messages_in_one_chunk():
    txs, st = run(GET * 50, OK3 * 50)
    assert len(txs) == 50 and not st.errors


def test_http10_close_delimited_and_truncated_body():
    txs, st = run(b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 3000, body_limit=100)
    (tx,) = txs
    assert (tx.minor_version, tx.resp_body_size, len(tx.resp_body)) == (0, 3000, 100)
    assert not st.errors


def test_close_with_a_short_content_length_body_is_an_error_not_a_row():
    txs, st = run(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert txs == [] and st.errors["response_incomplete_at_close"] == 1


def test_unanswered_requests_and_orphan_responses_are_counted():
    _, st = run(GET + GET, OK3)
    assert st.errors["request_unanswered_at_close"] == 1
    _, st = run(b"", OK3 + OK3)
    assert st.errors["response_without_request"] == 2


def test_close_is_idempotent_and_later_bytes_are_ignored():
    st = Http1Stitcher()
    st.feed_request(GET, 1)
    st.close(2)
    assert st.close(3) == [] and st.feed_response(OK3, 4) == []


def test_upgrade_101_stops_http_parsing():
    req = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x85garbage"
    resp = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi"
    st = Http1Stitcher()
    st.feed_request(req, 1)
    (tx,) = st.feed_response(resp, 2)
    assert tx.resp_status == 101 and st.upgraded
    assert st.feed_request(b"\x00\xffmore frames", 3) == [] and st.close(4) == [] and not st.errors


def test_upgrade_refused_releases_held_requests_with_their_timestamps():
    st = Http1Stitcher()
    st.feed_request(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", 1)
    st.feed_request(GET, 2)  # pipelined behind the upgrade request: held until the answer
    txs = st.feed_response(OK0 + OK3, 3)
    assert statuses(txs) == [("GET", "/ws", 200, 0), ("GET", "/a", 200, 3)]
    assert txs[1].req_start_ns == 2 and not st.errors


def test_connect_tunnel_and_refused_connect():
    connect = b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n"
    st = Http1Stitcher()
    st.feed_request(connect + b"\x16\x03\x01tls bytes", 1)
    (tx,) = st.feed_response(b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x03server tls", 2)
    assert (tx.req_method, tx.req_path, tx.resp_status) == ("CONNECT", "example.test:443", 200)
    assert st.upgraded and not st.errors
    refused = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    txs, st = run(connect + GET, refused + OK3)
    assert statuses(txs) == [("CONNECT", "example.test:443", 407, 0), ("GET", "/a", 200, 3)]
    assert not st.upgraded and not st.errors


CONNECT = b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n"
DENIED = b"denied: example.test:443\n"
REFUSALS = {
    "407 Content-Length": b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(DENIED), DENIED),
    "403 chunked": b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"%x\r\n%s\r\n0\r\n\r\n" % (len(DENIED), DENIED),
    "502 Content-Length": b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n%s" % (len(DENIED), DENIED),
}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
@pytest.mark.parametrize("pipelined", [False, True])
def test_connect_refused_with_a_body_is_framed_by_its_headers(refusal, pipelined):
    """Only a 2xx answer to CONNECT opens a tunnel and ends at its header block (RFC 9110 9.3.6);
    any other answer is framed like any response, body included. Framed header-only, its body
    was read as the next response: every later pair shifted by one (negative latencies)."""
    second = b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
    answer_b = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n/b\n"
    st = Http1Stitcher()
    if pipelined:
        txs = st.feed_request(CONNECT + GET + second, 10) + st.feed_response(REFUSALS[refusal] + OK3 + answer_b, 20)
    else:
        txs = []
        for t, (request, response) in enumerate(((CONNECT, REFUSALS[refusal]), (GET, OK3), (second, answer_b))):
            txs += st.feed_request(request, 10 + 20 * t) + st.feed_response(response, 20 + 20 * t)
    txs += st.close(100)
    status = int(refusal.split()[0])
    assert [(t.req_method, t.req_path, t.resp_status, t.resp_body) for t in txs] == [
        ("CONNECT", "example.test:443", status, DENIED.decode()), ("GET", "/a", 200, "abc"), ("GET", "/b", 200, "/b\n"),
    ]  # fmt: skip
    assert [t.resp_body_size for t in txs] == [len(DENIED), 3, 3]
    assert [t.latency_ns for t in txs] == [10, 10, 10]
    assert not st.upgraded and not st.errors


def test_connect_pipelined_behind_a_get_refused_then_accepted():
    """CONNECT behind a GET in one write: the GET's answer is stepped through so llhttp stops at
    its end; the refusal's body is still its own, and a later accepted CONNECT is a tunnel."""
    after = b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
    txs, st = run(GET + CONNECT + after, OK3 + REFUSALS["407 Content-Length"] + OK3)
    assert [(t.req_method, t.req_path, t.resp_status, t.resp_body) for t in txs] == [
        ("GET", "/a", 200, "abc"), ("CONNECT", "example.test:443", 407, DENIED.decode()), ("GET", "/b", 200, "abc"),
    ]  # fmt: skip
    assert not st.errors
    txs, st = run(GET + CONNECT, OK3 + b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x03", close=False)
    assert [(t.req_method, t.resp_status, t.resp_body_size) for t in txs] == [("GET", 200, 3), ("CONNECT", 200, 0)]
    assert st.upgraded and not st.errors


def test_connect_refused_without_length_ends_at_close():
    """A non-2xx answer to CONNECT with neither Content-Length nor chunked is close-delimited."""
    st = Http1Stitcher()
    st.feed_request(CONNECT, 1)
    assert st.feed_response(b"HTTP/1.1 403 Forbidden\r\n\r\n" + DENIED, 2) == []
    (tx,) = st.close(3)
    assert (tx.resp_status, tx.resp_body, tx.resp_body_size) == (403, DENIED.decode(), len(DENIED))
    assert not st.errors


def test_connect_accepted_with_a_content_length_is_still_a_tunnel():
    """A 2xx answer to CONNECT has no body whatever its headers say (RFC 9110 9.3.6)."""
    st = Http1Stitcher()
    st.feed_request(CONNECT, 1)
    (tx,) = st.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n\x16\x03\x03tls", 2)
    assert (tx.resp_status, tx.resp_body_size) == (200, 0) and st.upgraded


def test_a_response_that_ended_before_its_request_began_is_never_paired_with_it():
    """An extra response (its request never seen) waits for the next request; pairing it there
    would give a negative latency and shift every later pair. Pixie's stitcher pairs a response
    only with an earlier request (StitchMessagesWithTimestampOrder); here it is dropped and
    counted, and the next request waits for its own answer."""
    st = Http1Stitcher()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n%s"
    txs = st.feed_request(GET, 10) + st.feed_response(answer % b"/a\n" + answer % b"/x\n", 20)
    txs += st.feed_request(b"GET /b HTTP/1.1\r\n\r\n", 30) + st.feed_response(answer % b"/b\n", 40)
    txs += st.feed_request(b"GET /c HTTP/1.1\r\n\r\n", 50) + st.feed_response(answer % b"/c\n", 60)
    txs += st.close(70)
    assert [(t.req_path, t.resp_body, t.latency_ns) for t in txs] == [
        ("/a", "/a\n", 10),
        ("/b", "/b\n", 10),
        ("/c", "/c\n", 10),
    ]
    assert st.errors == {"response_before_request": 1}


def test_repeated_headers_are_joined_case_insensitively():
    resp = b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 0\r\n\r\n"
    (tx,), _ = run(b"GET / HTTP/1.1\r\nAccept: x\r\nAccept: y\r\n\r\n", resp)
    assert tx.req_headers == {"Accept": "x, y"}
    assert tx.resp_headers == {"Set-Cookie": "a=1, b=2", "Content-Length": "0"}


def test_non_utf8_bytes_become_replacement_characters():
    req = b"POST /p%C3%A9 HTTP/1.1\r\nX-Name: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\n\xff\xfe"
    (tx,), _ = run(req, b"HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 0\r\n\r\n")
    assert tx.req_path == "/p%C3%A9" and tx.req_headers["X-Name"] == "café"
    assert (tx.req_body, tx.req_body_size) == ("\ufffd\ufffd", 2)
    assert tx.resp_message == "\ufffdt\ufffd"
    json.dumps([tx.req_headers, tx.resp_message])


def test_non_ascii_request_target_is_rejected_like_llhttp_does():
    _, st = run(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", OK3)
    assert st.errors["request_invalid_url"] == 1


def test_empty_reason_phrase():
    (tx,), _ = run(GET, b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")
    assert (tx.resp_status, tx.resp_message) == (200, "")


# -- errors and recovery ----------------------------------------------------------------------
def test_garbage_before_a_request_in_the_same_chunk_is_skipped():
    txs, st = run(
        b"\x16\x03\x01\x02\x00garbage\r\n" + GET, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" + OK3
    )
    # The garbage counts as one lost request; its 400 answer is dropped with it.
    assert statuses(txs) == [("GET", "/a", 200, 3)]
    assert st.errors["request_invalid_method"] == 1


def test_garbage_chunk_then_requests_in_later_chunks():
    st = Http1Stitcher()
    st.feed_request(b"\x00\x01\x02 not http at all", 1)
    st.feed_request(b" still garbage\nGET /b HT", 2)
    st.feed_request(b"TP/1.1\r\n\r\n", 3)
    out = st.feed_response(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 4)
    out += st.feed_response(OK3, 5)
    assert statuses(out) == [("GET", "/b", 200, 3)] and out[0].req_start_ns == 2
    assert sum(st.errors.values()) == 1


def test_broken_request_in_the_middle_of_a_pipeline_keeps_pairs_aligned():
    bad = b"GET /bad HTTP/1.1\r\nContent-Length: zz\r\n\r\n"
    resp = OK3 + b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" + OK0
    txs, st = run(GET + bad + b"GET /c HTTP/1.1\r\n\r\n", resp)
    assert statuses(txs) == [("GET", "/a", 200, 3), ("GET", "/c", 200, 0)]
    assert st.errors["request_parse_error"] == 1


def test_garbage_response_loses_one_pair_and_resyncs():
    st = Http1Stitcher()
    st.feed_request(GET + b"GET /b HTTP/1.1\r\n\r\n", 1)
    out = st.feed_response(b"HTTP/1.1 2x0 Broken\r\n\r\n" + OK3, 2)
    assert statuses(out) == [("GET", "/b", 200, 3)]
    assert st.errors["response_invalid_status"] == 1


def test_a_rejected_start_line_is_not_found_again_when_resyncing():
    # llhttp rejects the version; the resync must not land on that same line forever.
    out, st = run(
        b"GET /x HTTP/9.9\r\n\r\n" + GET, b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Length: 0\r\n\r\n" + OK3
    )
    assert statuses(out) == [("GET", "/a", 200, 3)]
    assert sum(st.errors.values()) == 1


def test_endless_garbage_is_bounded():
    st = Http1Stitcher()
    for i in range(50):
        st.feed_request(b"\x00" * 65536, i)
        st.feed_response(b"\x01" * 65536, i)
    assert len(st._req.pending) <= 65536 and len(st._resp.pending) <= 65536
    st.close(99)


# -- protocol inference -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, expected",
    [
        (b"GET / HTTP/1.1\r\n", True),
        (b"POST /api/echo?x=1 HTTP/1.0\r\nHost: a\r\n", True),
        (b"DELETE /x", True),
        (b"OPTIONS * HTTP/1.1\r\n", True),
        (b"GET", False),  # not enough bytes yet
        (b"GET / HTTP/2.0\r\n", False),
        (b"GET /\r\n", False),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False),
        (b"\x16\x03\x01\x00\xa5\x01", False),
        (b"get / HTTP/1.1\r\n", False),
        (b"", False),
    ],
)
def test_looks_like_http_request(data, expected):
    assert looks_like_http_request(data) is expected


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"HTTP/1.1 200 OK\r\n", True),
        (b"HTTP/1.0 404 Not Found", True),
        (b"HTTP/1.1 204\r\n", True),
        (b"HTTP/1.1 200", False),
        (b"HTTP/2 200", False),
        (b"HTTP/1.1 999 x", False),
        (b"GET / HTTP/1.1\r\n", False),
        (b"", False),
    ],
)
def test_looks_like_http_response(data, expected):
    assert looks_like_http_response(data) is expected


# -- Arrow ------------------------------------------------------------------------------------
def test_transactions_to_arrow_follows_the_catalog():
    txs, _ = run(
        GET + b"POST /e HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        OK3 + b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    table = transactions_to_arrow(
        txs, upid="0:42:1234", remote_addr="127.0.0.1", remote_port=50000,
        local_addr="127.0.0.1", local_port=8080, trace_role=2,
    )  # fmt: skip
    assert table.schema == CATALOG["http_events"].arrow_schema()
    rows = table.to_pylist()
    assert [r["req_path"] for r in rows] == ["/a", "/e"]
    second = rows[1]
    assert second["time_"] == pa.scalar(200, pa.timestamp("ns")).as_py()  # the response end
    assert second["latency"] == 100 and second["trace_role"] == 2 and second["encrypted"] is False
    assert (second["resp_status"], second["resp_message"], second["content_type"]) == (201, "Created", 1)
    assert json.loads(second["req_headers"]) == {"Content-Length": "2"}
    assert (second["req_body"], second["req_body_size"]) == ("hi", 2)
    assert second["upid"] == "0:42:1234" and second["local_port"] == 8080


def test_transactions_to_arrow_with_no_rows():
    table = transactions_to_arrow(
        [], upid="0:1:1", remote_addr="", remote_port=0, local_addr="", local_port=0, trace_role=2
    )
    assert table.num_rows == 0 and table.schema == CATALOG["http_events"].arrow_schema()


# -- bytes the kernel counted but did not copy (Http1Stitcher.skip) -------------------------------
HEAD_5000 = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"


def test_skip_a_whole_body_completes_the_response_with_its_true_size_and_a_marker():
    st = Http1Stitcher()
    st.feed_request(GET, 10)
    assert st.feed_response(HEAD_5000, 20) == []
    (tx,), left = st.skip(False, 5000, 30)
    assert left == 0
    assert (tx.resp_status, tx.resp_body_size, tx.resp_body) == (200, 5000, "<not captured: 5000 bytes>")
    assert (tx.req_start_ns, tx.resp_end_ns) == (10, 30)  # the skipped bytes' time ends it
    # The next transaction on the connection is intact.
    st.feed_request(b"GET /next HTTP/1.1\r\n\r\n", 40)
    (nxt,) = st.feed_response(OK3, 50)
    assert (nxt.req_path, nxt.resp_body, nxt.resp_body_size) == ("/next", "abc", 3)
    assert not st.errors


def test_skip_after_a_copied_prefix_keeps_the_prefix_then_the_marker():
    st = Http1Stitcher()
    st.feed_request(GET, 10)
    st.feed_response(HEAD_5000 + b"x" * 100, 20)
    (tx,), left = st.skip(False, 4900, 30)
    assert left == 0
    assert tx.resp_body == "x" * 100 + "<not captured: 4900 bytes>"
    assert tx.resp_body_size == 5000


def test_skip_beyond_the_body_limit_shows_the_copied_prefix_only():
    st = Http1Stitcher(body_limit=16)
    st.feed_request(GET, 10)
    st.feed_response(HEAD_5000 + b"y" * 100, 20)
    (tx,), left = st.skip(False, 4900, 30)
    assert (left, tx.resp_body, tx.resp_body_size) == (0, "y" * 16, 5000)


def test_adjacent_skips_make_one_marker_and_bytes_after_them_follow_it():
    st = Http1Stitcher()
    st.feed_request(GET, 10)
    st.feed_response(HEAD_5000 + b"ab", 20)
    assert st.skip(False, 10, 21) == ([], 0)
    assert st.skip(False, 20, 22) == ([], 0)
    st.feed_response(b"cd", 23)
    (tx,), left = st.skip(False, 5000 - 34, 24)
    assert left == 0
    assert tx.resp_body == "ab<not captured: 30 bytes>cd<not captured: 4966 bytes>"
    assert tx.resp_body_size == 5000


def test_skip_past_the_end_of_a_body_returns_what_it_could_not_skip():
    st = Http1Stitcher()
    st.feed_request(GET + GET, 10)
    st.feed_response(HEAD_5000, 20)
    (tx,), left = st.skip(False, 5100, 30)
    assert (left, tx.resp_body_size) == (100, 5000)


@pytest.mark.parametrize(
    "response",
    [
        b"",  # between messages: the next head needs its bytes
        b"HTTP/1.1 200 OK\r\nContent-Len",  # inside a head
        b"HTTP/1.1 200 OK\r\n\r\n",  # a close-delimited body: no known length
    ],
)
def test_skip_outside_a_body_of_known_length_skips_nothing(response):
    st = Http1Stitcher()
    st.feed_request(GET, 10)
    st.feed_response(response, 20)
    assert st.skip(False, 50, 30) == ([], 50)
    assert not st.errors


def test_skip_a_request_body():
    st = Http1Stitcher()
    head = b"POST /upload HTTP/1.1\r\nContent-Length: 3145728\r\n\r\n"
    st.feed_request(head + b"abc", 10)
    assert st.skip(True, 3145728 - 3, 20) == ([], 0)
    (tx,) = st.feed_response(OK3, 30)
    assert (tx.req_path, tx.req_body_size, tx.req_body) == ("/upload", 3145728, "abc<not captured: 3145725 bytes>")
    assert (tx.resp_body, tx.latency_ns) == ("abc", 20)


def test_a_skip_right_after_a_marker_past_the_body_limit_grows_that_marker():
    """sendfile in pieces (nginx: 2 MiB, then 1 MiB): one marker for the whole run."""
    st = Http1Stitcher()
    st.feed_request(GET, 10)
    st.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3145728\r\n\r\n", 20)
    assert st.skip(False, 2097152, 30) == ([], 0)
    (tx,), left = st.skip(False, 1048576, 40)
    assert (left, tx.resp_body, tx.resp_body_size) == (0, "<not captured: 3145728 bytes>", 3145728)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("split", [0, 3, len(CHUNKED_HEAD) + 2, len(CHUNKED_HEAD) + 6])
def test_skip_inside_a_chunk_then_the_next_chunks_parse(split):
    """A chunk of 0x1000 bytes whose data went by unseen (its size line possibly split across
    two feeds): skipped, and the chunks after it parse."""
    wire = CHUNKED_HEAD + b"1000;ext=1\r\nab"
    st = Http1Stitcher()
    st.feed_request(GET, 10)
    st.feed_response(wire[:split], 20)
    st.feed_response(wire[split:], 21)
    assert st.skip(False, 0x1000 - 2, 30) == ([], 0)
    (tx,) = st.feed_response(b"\r\n3\r\nxyz\r\n0\r\n\r\n", 40)
    assert tx.resp_body_size == 0x1000 + 3
    assert tx.resp_body == "ab<not captured: 4094 bytes>"
    assert not st.errors


def test_skip_past_a_chunk_end_skips_only_the_chunk():
    st = Http1Stitcher()
    st.feed_request(GET, 10)
    st.feed_response(CHUNKED_HEAD + b"10\r\n", 20)
    assert st.skip(False, 40, 30) == ([], 24)  # the size line of the next chunk needs its bytes


def test_skip_at_a_chunk_size_line_skips_nothing():
    st = Http1Stitcher()
    st.feed_request(GET, 10)
    st.feed_response(CHUNKED_HEAD + b"3\r\nabc\r\n", 20)
    assert st.skip(False, 5, 30) == ([], 5)


# -- Content-Encoding ------------------------------------------------------------------------------
TEXT = b"".join(b"line %d of an encoded body\n" % i for i in range(200))  # 5,490 bytes


def _encoded_response(coding: bytes, body: bytes, *, chunked: bool = False) -> bytes:
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\n%s\r\n\r\n" % (coding, framing)
    if chunked:
        body = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7))
        body += b"0\r\n\r\n"
    return head + body


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


CODINGS = {
    "gzip": (b"gzip", gzip.compress),
    "x-gzip": (b"x-gzip", gzip.compress),
    "deflate (zlib)": (b"deflate", zlib.compress),
    "deflate (raw)": (b"Deflate", _raw_deflate),
}


@pytest.mark.parametrize("coding", sorted(CODINGS))
@pytest.mark.parametrize("chunked", [False, True])
def test_encoded_response_body_is_shown_decoded_with_its_wire_size(coding, chunked):
    name, encode = CODINGS[coding]
    wire = encode(TEXT[:800])
    st = Http1Stitcher()
    st.feed_request(GET, 1)
    resp = _encoded_response(name, wire, chunked=chunked)
    txs = [tx for i in range(len(resp)) for tx in st.feed_response(resp[i : i + 1], 2 + i)]  # a byte at a time
    (tx,) = txs
    assert (tx.resp_body, tx.resp_body_size) == (TEXT[:800].decode(), len(wire))
    assert not st.errors


def test_encoded_body_is_decoded_up_to_the_limit_only():
    wire = gzip.compress(TEXT)
    (tx,), _ = run(GET, _encoded_response(b"gzip", wire), body_limit=1000)
    assert (tx.resp_body, tx.resp_body_size) == (TEXT[:1000].decode(), len(wire))


def test_a_compression_bomb_is_never_inflated_past_the_limit():
    """256 MiB of zeros in 255 KiB of gzip: decoding it whole would hold 256 MiB."""
    packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    wire = b"".join(packer.compress(block) for _ in range(256)) + packer.flush()
    tracemalloc.start()
    try:
        (tx,), _ = run(GET, _encoded_response(b"gzip", wire))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tx.resp_body, tx.resp_body_size) == ("\0" * 1024, len(wire))
    assert peak < 8 * len(wire)


def test_encoded_request_body_is_decoded_too():
    wire = gzip.compress(b'{"order": 42}')
    post = b"POST /o HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(wire), wire)
    (tx,), st = run(post, OK3)
    assert (tx.req_body, tx.req_body_size, tx.resp_body) == ('{"order": 42}', len(wire), "abc")
    assert not st.errors


def _flushed_then(first: bytes, tail: bytes) -> bytes:
    """gzip of ``first``, flushed so that it decodes whole on its own (Z_SYNC_FLUSH), then ``tail``."""
    packer = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    return packer.compress(first) + packer.flush(zlib.Z_SYNC_FLUSH) + tail


def test_a_body_that_fails_to_decode_keeps_what_decoded_and_says_where_it_stopped():
    wire = _flushed_then(TEXT[:300], b"\xff\xff\xff\xff")  # then a block of the reserved type 3
    (tx,), _ = run(GET, _encoded_response(b"gzip", wire))
    assert tx.resp_body == TEXT[:300].decode() + "<gzip body failed to decode here>"
    assert tx.resp_body_size == len(wire)
    (tx,), _ = run(GET, _encoded_response(b"gzip", b"not gzip at all"))
    assert tx.resp_body == "<gzip body failed to decode here>"


def test_a_body_whose_compressed_stream_stops_early_is_marked_truncated():
    wire = _flushed_then(TEXT[:300], b"")  # no final block, no gzip trailer
    (tx,), _ = run(GET, _encoded_response(b"gzip", wire))
    assert (tx.resp_body, tx.resp_body_size) == (TEXT[:300].decode() + "<gzip body truncated>", len(wire))
    close_delimited = b"HTTP/1.0 200 OK\r\nContent-Encoding: deflate\r\n\r\n" + zlib.compress(TEXT[:50])[:-4]
    (tx,), _ = run(GET, close_delimited)  # all but the zlib trailer (the Adler-32 check)
    assert tx.resp_body == TEXT[:50].decode() + "<deflate body truncated>"


def test_bodies_without_a_decoded_coding_are_kept_as_sent():
    wire = gzip.compress(b"twice")
    for coding in (b"gzip, br", b"br", b"identity"):
        (tx,), _ = run(GET, _encoded_response(coding, wire))
        assert (tx.resp_body, tx.resp_body_size) == (wire.decode("utf-8", "replace"), len(wire))
    head_resp = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 40\r\n\r\n"
    (tx,), _ = run(HEAD, head_resp)
    assert (tx.resp_body, tx.resp_body_size) == ("", 0)  # no body: nothing decoded, no marker


def test_an_encoded_body_cut_by_uncaptured_bytes_shows_what_decoded_and_the_count():
    # Both features at once: a gzip body whose second half the kernel counted but did not copy.
    text = b"".join(b"line %05d of a compressible body\n" % i for i in range(400))
    wire = gzip.compress(text)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(wire)
    half = len(wire) // 2
    st = Http1Stitcher(body_limit=100_000)
    st.feed_request(GET, 10)
    assert st.feed_response(head + wire[:half], 20) == []
    (tx,), left = st.skip(False, len(wire) - half, 30)
    expected_prefix = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(wire[:half])
    assert left == 0 and expected_prefix and len(expected_prefix) < len(text)
    assert tx.resp_body == (expected_prefix + b"<not captured: %d bytes>" % (len(wire) - half)).decode()
    assert tx.resp_body_size == len(wire)
