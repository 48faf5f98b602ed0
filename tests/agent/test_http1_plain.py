"""The HTTP/1 stitcher's plain-message path (messages framed without llhttp, by ``frame_plain`` of
the C extension pxq/agent/_native.c, see ``Http1Stitcher._plain_messages``) against llhttp itself: the same
bytes, cut the same way, fed to a stitcher with the path on and one with it off (every message
through llhttp, as before the path existed) must give the same pairs, field by field, the same
error counts and the same pairing state. The reference is llhttp's framing (through httptools),
not the path under test."""

from __future__ import annotations

import json

from hypothesis import example, given, settings, strategies as st

from pxq.agent.protocols.http1.stitcher import Http1Stitcher, _Message

# Every slot of a message but those only the path keeps (raw_headers) or that count feed calls
# (epoch: llhttp's are numbered per feed_data call, which the plain path does not make).
FIELDS = tuple(name for name in _Message.__slots__ if name not in ("raw_headers", "epoch", "decoder"))


def message_fields(msg: _Message) -> tuple:
    return tuple(getattr(msg, name) for name in FIELDS) + (bool(msg.decoder),)


def stitcher_state(s: Http1Stitcher) -> tuple:
    return (
        dict(+s.errors), s.out_of_step, s.exchanges, s.pipelined, s.sequential, s.upgraded,
        len(s._requests), len(s._responses),
    )  # fmt: skip


def run(chunks: list[tuple[bool, bytes]], plain: bool) -> tuple[list, tuple, int]:
    """Feed ``chunks`` (request side?, bytes) in order; the pairs (as fields), the final state and
    how many messages went the plain way."""
    s = Http1Stitcher(body_limit=16)
    s.plain = plain
    pairs = []
    for ts, (request, data) in enumerate(chunks, 1):
        pairs += s.feed_messages(request, data, ts * 10)
    pairs += s.close_messages(len(chunks) * 10 + 5)
    taken = sum(1 for pair in pairs for msg in pair if msg.raw_headers is not None)
    return [(message_fields(a), message_fields(b)) for a, b in pairs], stitcher_state(s), taken


def assert_same(chunks: list[tuple[bool, bytes]]) -> int:
    fast, fast_state, taken = run(chunks, plain=True)
    slow, slow_state, slow_taken = run(chunks, plain=False)
    assert slow_taken == 0
    assert fast == slow
    assert fast_state == slow_state
    return taken


GET = b"GET /a?i=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: t/1\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nServer: n\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"


def test_plain_exchanges_take_the_plain_path_and_match_llhttp():
    chunks = [(True, GET), (False, OK)] * 3 + [(True, GET + GET), (False, OK + OK)]
    assert assert_same(chunks) == 10  # every message of them


def test_answers_to_head_end_at_their_headers_both_ways():
    head = b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n"
    head_ok = OK[:-5]  # its Content-Length says 5; an answer to HEAD has no body
    assert assert_same([(True, head), (False, head_ok), (True, GET), (False, OK)]) == 4
    # pipelined: GET, HEAD, GET answered in one read
    assert assert_same([(True, GET + head + GET), (False, OK + head_ok + OK)]) == 6
    # an answer to CONNECT goes to llhttp (a tunnel may start)
    connect = b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n"
    assert assert_same([(True, connect), (False, b"HTTP/1.1 200 OK\r\n\r\n")]) == 0


def test_messages_after_connection_close_are_llhttp_errors_both_ways():
    closing = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
    taken = assert_same([(True, closing), (False, OK), (True, GET), (False, OK)])
    assert taken == 1  # the first response only: llhttp refuses bytes after `Connection: close`


def test_a_body_cut_by_the_chunk_goes_to_llhttp():
    post = b"POST /p HTTP/1.1\r\nContent-Length: 40\r\n\r\n" + b"x" * 40
    assert assert_same([(True, post[:50]), (True, post[50:]), (False, OK)]) == 1


METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"CONNECT", b"PROPFIND", b"get"]
TARGETS = [b"/", b"/a?i=1&b=%20", b"/a#frag", b"/{x}", b"/\xc3\xbc", b"*", b"http://h/p", b"/a b", b"/~x;y=(1)"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]
NAMES = [
    b"Host", b"Content-Length", b"content-length", b"Connection", b"Transfer-Encoding", b"Content-Encoding",
    b"Upgrade", b"X-A", b"Bad Name", b"Authorization", b"Content-Type", b"x_y",
]  # fmt: skip
VALUES = [
    b"keep-alive", b"Keep-Alive", b"close", b"upgrade", b"chunked", b"gzip", b"", b"  x  ", b"\tv", b"0", b"3",
    b"05", b"x\xff", b"a b", b"a\tb", b"application/json", b"-1", b"3 ",
]  # fmt: skip
SEPARATORS = [b": ", b":", b":  ", b": \t", b" : "]
STATUSES = [b"200", b"204", b"304", b"101", b"100", b"404", b"500", b"599", b"600", b"20"]
REASONS = [b"OK", b"", b"Not Found", b"A  B", b"x ", b"\xff"]

headers = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(SEPARATORS), st.sampled_from(VALUES)), max_size=4)
body = st.binary(max_size=24) | st.sampled_from([b"", b"abc", b"0\r\n\r\n", b"3\r\nabc\r\n0\r\n\r\n"])


def head(start: bytes, fields: list[tuple[bytes, bytes, bytes]]) -> bytes:
    return start + b"\r\n" + b"".join(n + sep + v + b"\r\n" for n, sep, v in fields) + b"\r\n"


request = st.builds(
    lambda m, t, v, h, b: head(m + b" " + t + b" " + v, h) + b,
    st.sampled_from(METHODS), st.sampled_from(TARGETS), st.sampled_from(VERSIONS), headers, body,
)  # fmt: skip
response = st.builds(
    lambda v, code, r, h, b: head(v + b" " + code + (b" " + r if r else b""), h) + b,
    st.sampled_from(VERSIONS), st.sampled_from(STATUSES), st.sampled_from(REASONS), headers, body,
)  # fmt: skip
plain_request = st.builds(
    lambda t, n, b: (
        b"POST " + t + b" HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n" % len(b) + b"X-N: %d\r\n\r\n" % n + b
    ),
    st.sampled_from([b"/", b"/a?i=1"]), st.integers(0, 3), st.binary(max_size=24),
)  # fmt: skip
plain_response = st.builds(
    lambda code, b: b"HTTP/1.1 " + code + b" OK\r\nContent-Length: %d\r\n\r\n" % len(b) + b,
    st.sampled_from([b"200", b"404", b"503"]),
    st.binary(max_size=24),
)


# Bytes that are no message, or a plain one with a byte changed: the C framing must leave them to
# llhttp, whose errors are counted (the same counts both ways).
garbage = st.binary(max_size=40) | st.builds(
    lambda msg, at, byte: msg[:at] + bytes([byte]) + msg[at + 1 :],
    plain_request | plain_response, st.integers(0, 60), st.integers(0, 255),
)  # fmt: skip


@st.composite
def conversations(draw) -> list[tuple[bool, bytes]]:
    """Requests and responses (mostly plain, some of every other shape), each side's stream cut at
    random points, the cuts of both sides interleaved in a random order."""
    n = draw(st.integers(1, 5))
    reqs = b"".join(draw(st.lists(plain_request | request | garbage, min_size=n, max_size=n)))
    resps = b"".join(draw(st.lists(plain_response | response | garbage, min_size=n, max_size=n)))
    sides = []
    for request_side, stream in ((True, reqs), (False, resps)):
        cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=4)))
        bounds = [0, *cuts, len(stream)]
        sides.append([(request_side, stream[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a])
    out = []
    while sides[0] or sides[1]:
        take = 0 if not sides[1] else 1 if not sides[0] else draw(st.integers(0, 1))
        out.append(sides[take].pop(0))
    return out


@settings(max_examples=400, deadline=None)
@given(conversations())
@example([(True, GET), (False, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"), (True, GET), (False, OK)])
@example([(True, b"HEAD / HTTP/1.1\r\n\r\n"), (False, OK[:-5]), (True, GET), (False, OK)])
@example([(True, b"GET / HTTP/1.0\r\n\r\n" + GET), (False, OK + OK)])
@example([(True, GET), (False, b"HTTP/1.1 200 OK\r\nX: a\r\n\r\nclose-delimited")])
@example([(True, GET), (False, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")])
@example([(True, b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), (False, OK)])
@example([(True, GET + b"\x00\xffGET\r\n" + GET), (False, OK + b"HTTP/1.1 2OO OK\r\n\r\n" + OK)])
@example([(True, GET.replace(b"Host", b"Ho\x00t")), (False, OK.replace(b"200", b"20\x80")), (True, GET), (False, OK)])
@example(
    [(True, b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"), (True, b"cGET / HTTP/1.1\r\n\r\n"), (False, OK + OK)]
)
def test_plain_path_agrees_with_llhttp(chunks):
    assert_same(chunks)


# Header names a plain message may carry (tokens), credentials among them in several spellings.
ROW_NAMES = [b"Host", b"Authorization", b"PROXY-AUTHORIZATION", b"cookie", b"Set-Cookie", b"Cookie2", b"X-A",
             b"content-type", b"x-authorization-id"]  # fmt: skip
CREDENTIALS = {"authorization", "proxy-authorization", "cookie", "set-cookie"}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(ROW_NAMES), st.sampled_from([b"", b"a", b'"q"', b"app/json", b"x y", b"s3cr3t"])),
        max_size=6,
    )
)
def test_rows_keyed_by_raw_header_lines_match_json_dumps(pairs):
    """HttpRows caches a plain message's header JSON by its raw lines: the text is still
    json.dumps of the header dict, credentials still redacted, also from the cache."""
    from pxq.agent.protocols.http1.rows import HttpRows
    from pxq.agent.protocols.http1.stitcher import headers_dict

    raw = b"".join(name + b": " + value + b"\r\n" for name, value in pairs)
    kept = json.dumps(headers_dict(pairs)).encode()
    redacted = [(n, b"<redacted>" if n.decode().lower() in CREDENTIALS else v) for n, v in pairs]
    hidden = json.dumps(headers_dict(redacted)).encode()
    for keep_secrets, want in ((True, kept), (False, hidden)):
        rows = HttpRows(keep_secrets=keep_secrets)
        for attempt in range(2):  # the second from the cache
            assert rows._header_block(list(pairs), raw)[0] == want, (keep_secrets, attempt)
