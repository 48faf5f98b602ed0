"""HTTP/1.x parsing and request/response stitching, as the socket tracer needs it.

One :class:`Http1Stitcher` per connection. The caller feeds the bytes of each direction as they
were seen (``feed_request`` for client-to-server bytes, ``feed_response`` for server-to-client
bytes, each with the capture timestamp of the chunk, in capture order) and gets back the
request/response pairs that completed, as :class:`HttpTransaction` records. Framing is done by
llhttp (Node's HTTP parser) through ``httptools``; this module adds what llhttp leaves to its
caller:

* Stitching in order: HTTP/1 has no ids, so the n-th final response answers the n-th request
  (keep-alive and pipelining alike). A response that completes before its request (a server
  answering early while a body is still being sent) waits for it.
* Responses whose framing depends on the request: a response to HEAD carries no body whatever its
  Content-Length says, and a 2xx answer to CONNECT turns the connection into a tunnel. llhttp
  needs its caller to say so, which ``httptools`` cannot, so those responses are framed here
  (headers only) and llhttp is stopped exactly at the preceding message boundary. Any other
  answer to CONNECT (407, 403, 502, ...) opens no tunnel and is framed by its own headers, body
  included (RFC 9110 9.3.6).
* A response that ended before its request began answers some earlier request (whose bytes were
  lost, or an extra response): it is never paired with the later one (``response_before_request``).
  Pixie's stitcher pairs a response only with a request older than it, and drops a response
  without one (``StitchMessagesWithTimestampOrder`` in
  src/stirling/source_connectors/socket_tracer/protocols/common/timestamp_stitcher.h); its HTTP
  parser (protocols/http/parse.cc) frames a CONNECT answer by its headers like any response.
* 1xx interim responses (``100 Continue``) are skipped; ``101 Switching Protocols`` completes the
  upgrade request and everything after it on the connection is no longer HTTP.
* Close-delimited bodies (HTTP/1.0 style: neither Content-Length nor chunked) complete at
  :meth:`Http1Stitcher.close`.
* Bodies are kept up to ``body_limit`` bytes (default 1024, like Pixie); the true size is kept.
* Bytes the kernel counted but did not copy (``sendfile``, the part of a call beyond the tracer's
  copy limit, ``splice``) are taken with :meth:`Http1Stitcher.skip` inside a body of known
  remaining length: the message advances without them, keeps its true size, and its body shows
  :data:`UNCAPTURED_BODY_MARKER` where they were (Pixie passes NUL bytes to its parsers instead,
  ``ExtractFillerEvent`` in ``socket_trace.hpp``; a body of NULs reads as if the bytes were known).
* A body sent with ``Content-Encoding: gzip`` (or ``x-gzip``) or ``deflate`` is kept decoded, as
  Pixie shows gzip response bodies inflated (``PreProcessRespMessage`` in
  src/stirling/source_connectors/socket_tracer/protocols/http/stitcher.cc), for requests and
  responses alike: decoded as it arrives, never past ``body_limit`` decoded bytes (a small body
  that inflates to gigabytes costs no more than any other), and the size stays the wire's. A body
  that is not valid in its coding keeps what decoded before the fault and ends with
  :data:`DECODE_FAILED_MARKER`; one whose compressed stream ends early (bytes not captured, a
  body cut short) ends with :data:`DECODE_TRUNCATED_MARKER`. Other codings (br, zstd, a list of
  several) are kept as sent.
* Garbage or a parse error never raises: the direction is marked broken, the reason is counted in
  :attr:`Http1Stitcher.errors` (``request_invalid_method``, ``response_parse_error``, ...), and
  parsing resumes at the next request line (requests) or status line (responses), also later in
  the same chunk. Each failure counts as one lost message whose partner is dropped with it, so
  later pairs stay aligned (a heuristic: a blob of garbage is taken to be one message), except
  server bytes that failed and ended before the next request began: they answer no request
  (junk after a response), and that request keeps its own answer.
* Leftovers at close are counted too: ``request_unanswered_at_close``,
  ``response_incomplete_at_close``, ``response_without_request``.

Timestamps: ``req_start_ns`` is the timestamp of the chunk holding the request's first byte and
``resp_end_ns`` that of the chunk holding the response's last byte (for a close-delimited body,
the last data chunk before the close). ``latency_ns = resp_end_ns - req_start_ns``. In
``http_events``, ``time_`` is ``resp_end_ns``: Pixie stamps an HTTP record with its response's
timestamp.

``major_version``/``minor_version`` are the response's (Pixie does the same): the version the
server answered with. ``content_type`` follows Pixie's ``HTTPContentType`` enum: 0 = unknown,
1 = JSON (the response's Content-Type mentions "json"), 2 = gRPC (HTTP/2 only, never set here).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import zlib
from collections import Counter, deque
from typing import Literal

import httptools

from pxq.agent.defaults import DEFAULT_BODY_LIMIT
from pxq.agent.native import frame_message, set_message_type

CONTENT_TYPE_UNKNOWN = 0
CONTENT_TYPE_JSON = 1
CONTENT_TYPE_GRPC = 2

# Methods llhttp accepts for HTTP/1.x, as protocol inference recognises them.
HTTP_METHODS = (
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"SEARCH", b"PURGE",
)  # fmt: skip
_METHOD_ALT = b"|".join(HTTP_METHODS)
# Requests whose response may end with its header block, whatever its Content-Length says: any
# answer to HEAD; a 2xx answer to CONNECT (the tunnel starts after it). See _ends_at_headers.
HEADER_ONLY_METHODS = (b"HEAD", b"CONNECT")
# A request line: METHOD SP request-target SP HTTP/1.x CRLF.
_REQUEST_LINE = re.compile(rb"(?:" + _METHOD_ALT + rb") [!-~]+ HTTP/1\.[01]\r\n")
_REQUEST_LINE_START = re.compile(rb"(?:" + _METHOD_ALT + rb") [!-~]")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-5][0-9][0-9][ \r]")
# Where to look for a message start after a parse error or lost bytes: at the beginning of a
# line, or at the beginning of a chunk (one syscall's bytes).
_REQUEST_START = rb"(?:" + _METHOD_ALT + rb") [!-~]+ HTTP/[0-9]\.[0-9]\r\n"
_RESPONSE_START = rb"HTTP/[0-9]\.[0-9] [0-9][0-9][0-9][ \r]"
_RESYNC_REQUEST = re.compile(rb"(?:^|\n)(" + _REQUEST_START + rb")")
_RESYNC_RESPONSE = re.compile(rb"(?:^|\n)(" + _RESPONSE_START + rb")")
_CHUNK_STARTS_REQUEST = re.compile(_REQUEST_START)
_CHUNK_STARTS_RESPONSE = re.compile(_RESPONSE_START)
_HEADER_END = b"\r\n\r\n"

# Content-Encoding values whose bodies are shown decoded, and the zlib container each names
# (RFC 9110 8.4.1: gzip is RFC 1952, deflate the zlib format of RFC 1950; some servers send raw
# deflate under that name, told apart by its first two bytes, see _BodyDecoder).
DECODED_CODINGS = {b"gzip": "gzip", b"x-gzip": "gzip", b"deflate": "deflate"}
# Appended (in the body's coding name) to the decoded part of a body that could not be decoded to
# its end: bytes that are not valid in its coding, or a compressed stream that stopped early.
DECODE_FAILED_MARKER = "<{coding} body failed to decode here>"
DECODE_TRUNCATED_MARKER = "<{coding} body truncated>"

# Bytes kept while looking for the end of a header block or a resync point (bounds memory on a
# garbage stream).
MAX_HEADER_BYTES = 64 * 1024
# What a body shows in place of bytes the kernel counted but did not copy (``%d``: how many).
# In the style of Pixie's own body replacements ("<removed: unknown content-type>", stitcher.cc).
UNCAPTURED_BODY_MARKER = b"<not captured: %d bytes>"
# NUL bytes fed to llhttp to move it through a body without its bytes (see Http1Stitcher.skip).
_SKIP_PIECE = bytes(1 << 16)
# Request bytes kept after an Upgrade request until the response says whether it was accepted.
MAX_UPGRADE_HOLD = 64 * 1024

# The plain message, framed without llhttp (Http1Stitcher._plain_messages): most of the agent's
# CPU per transaction went to llhttp's ten or so Python callbacks per message. A message whose
# every part is of the common, unambiguous shape (described in pxq/agent/_native.c: methods GET,
# HEAD, POST, PUT, DELETE, PATCH, OPTIONS; HTTP/1.1; token headers with printable values;
# Content-Length; Connection keep-alive if any), complete in the bytes at hand, is framed and made
# into the _Message llhttp's callbacks would leave by one C call (``frame_message``;
# tests/agent/test_http1_plain.py checks both ways agree); anything else (other methods or
# versions, obs-text, chunked, encoded or close-delimited bodies, Connection other than
# keep-alive, 1xx/204/304, CONNECT, a message cut by the chunk's end) goes to llhttp as before; an
# answer to HEAD ends with its header block, as _header_only_response frames it.


def looks_like_http_request(first_bytes: bytes) -> bool:
    """Protocol inference: could a client-to-server stream starting with these bytes be HTTP/1.x?

    Needs the method and one byte of the target; when the first line is complete it must be a
    whole request line.
    """
    if not _REQUEST_LINE_START.match(first_bytes):
        return False
    end = first_bytes.find(b"\r\n")
    if end < 0:
        return b"\n" not in first_bytes
    return _REQUEST_LINE.match(first_bytes, 0, end + 2) is not None


def looks_like_http_response(first_bytes: bytes) -> bool:
    """Protocol inference: could a server-to-client stream starting with these bytes be HTTP/1.x?"""
    return _STATUS_LINE.match(first_bytes) is not None


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# Header blocks are kept as the (name, value) byte pairs llhttp reported and turned into text
# once per row (see rows.py).
def headers_dict(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """A header block as text: repeated names (any case) joined with ", " under the name as first
    seen, in first-seen order; bytes that are not UTF-8 become U+FFFD."""
    headers: dict[str, str] = {}
    keys: dict[str, str] = {}  # lower-case name -> the name as first seen
    for name, value in pairs:
        key, val = _text(name), _text(value)
        first = keys.setdefault(key.lower(), key)
        headers[first] = f"{headers[first]}, {val}" if first in headers else val
    return headers


def _is_json(pairs: list[tuple[bytes, bytes]]) -> bool:
    """Does the Content-Type header (any of them) mention json, in any case?"""
    for name, value in pairs:
        if len(name) == 12 and name.lower() == b"content-type" and b"json" in value.lower():
            return True
    return False


_VERSIONS = {"1.1": (1, 1), "1.0": (1, 0)}


def _content_coding(pairs: list[tuple[bytes, bytes]]) -> str | None:
    """The coding a header block's Content-Encoding names when pxq decodes it (one header, one
    coding: gzip or deflate), else None."""
    coding = None
    for name, value in pairs:
        if len(name) == 16 and name.lower() == b"content-encoding":
            if coding is not None:
                return None  # codings applied one after another: not decoded
            coding = DECODED_CODINGS.get(value.strip().lower(), "")
    return coding or None


class _BodyDecoder:
    """Decodes a gzip or deflate body as its bytes arrive, keeping at most ``limit`` decoded
    bytes: each step inflates no more than the room left (``decompressobj`` with
    ``max_length``), and once the room is full the rest of the body is not inflated at all."""

    __slots__ = ("coding", "limit", "out", "inflater", "head", "failed", "uncaptured")

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.out = b""
        self.inflater: zlib._Decompress | None = None
        self.head = b""  # deflate's first byte, until the second tells zlib from raw deflate
        self.failed = False
        self.uncaptured = 0  # body bytes the kernel counted but did not copy: decoding stops there

    def feed(self, data: bytes) -> None:
        if self.failed or self.uncaptured or len(self.out) >= self.limit:
            return
        if self.inflater is None:
            data = self.head + data
            if self.coding == "gzip":
                wbits = 16 + zlib.MAX_WBITS
            elif len(data) < 2:
                self.head = data
                return
            else:  # a zlib header: CM 8 and the check bits (RFC 1950 2.2); else raw deflate
                wbits = (
                    zlib.MAX_WBITS if data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0 else -zlib.MAX_WBITS
                )
            self.inflater = zlib.decompressobj(wbits)
        before = self.inflater.copy()  # a fault discards the output of its whole call
        try:
            self.out += self.inflater.decompress(data, self.limit - len(self.out))
        except zlib.error:
            # Again a byte at a time, to keep what decodes before the fault (rare, and
            # cheap: the output stays within the limit, and a fault ends the decoding).
            self.inflater, self.failed = before, True
            for i in range(len(data)):
                try:
                    self.out += before.decompress(data[i : i + 1], self.limit - len(self.out))
                except zlib.error:
                    break
                if len(self.out) >= self.limit:
                    break

    def body(self) -> bytes:
        """The decoded body (up to the limit), with a marker where decoding stopped short."""
        if self.failed:
            return self.out + DECODE_FAILED_MARKER.format(coding=self.coding).encode()
        if self.uncaptured and len(self.out) < self.limit:
            return self.out + UNCAPTURED_BODY_MARKER % self.uncaptured
        if len(self.out) < self.limit and (self.inflater is None or not self.inflater.eof):
            return self.out + DECODE_TRUNCATED_MARKER.format(coding=self.coding).encode()
        return self.out


class _Message:
    """One HTTP message as llhttp reports it, kept as bytes (decoded when a row is made)."""

    __slots__ = (
        "body_limit", "start_ns", "end_ns", "epoch", "valid_start", "url", "reason", "header_pairs",
        "body", "body_size", "method", "status", "version", "headers_done", "complete", "broken",
        "marker_at", "uncaptured", "uncaptured_end",
        "decoder", "raw_headers",
    )  # fmt: skip

    def __init__(self, body_limit: int, ts_ns: int, epoch: int = -1) -> None:
        self.body_limit = body_limit
        self.start_ns = ts_ns
        self.end_ns = ts_ns
        self.epoch = epoch  # the feed call that saw its first byte
        self.valid_start = False  # llhttp accepted its start line (request target / status seen)
        self.url = b""
        self.reason = b""
        self.header_pairs: list[tuple[bytes, bytes]] = []  # as llhttp reported them, in order
        self.body = b""  # the first body_limit bytes
        self.body_size = 0
        self.method = b""
        self.status = 0
        self.version: tuple[int, ...] = (1, 1)
        self.headers_done = False
        self.complete = False
        self.broken = False  # lost to a parse error: its pair is dropped
        self.marker_at = -1  # where in `body` the last UNCAPTURED_BODY_MARKER starts
        self.uncaptured = 0  # the bytes that marker stands for
        self.uncaptured_end = 0  # the body offset just after them
        # At the first body byte, from the headers: a _BodyDecoder when the Content-Encoding is one
        # pxq decodes, else False (None: no body byte yet, so a bodiless message never looks).
        self.decoder: _BodyDecoder | Literal[False] | None = None
        # A plain message's header lines as sent (None when llhttp parsed it): the row builder
        # keys its cache of header blocks' JSON text by them.
        self.raw_headers: bytes | None = None

    @classmethod
    def lost(cls, ts_ns: int) -> _Message:
        """A placeholder for a message that could not be parsed."""
        msg = cls(0, ts_ns)
        msg.broken = msg.complete = True
        return msg

    @property
    def headers(self) -> dict[str, str]:
        return headers_dict(self.header_pairs)

    def header(self, name: str) -> str:
        """One header's value (repeats joined with ", "); "" when it is absent."""
        key = name.lower().encode()
        return ", ".join(_text(v) for n, v in self.header_pairs if n.lower() == key)

    def finish_body(self) -> None:
        """The message is complete: an encoded body becomes its decoded text."""
        if self.decoder:  # idempotent: the decoder stays, so later looks see an encoded body
            self.body = self.decoder.body()

    def body_left(self) -> int:
        """Body bytes still to come by Content-Length (0 when unknown, chunked or no headers)."""
        if not self.headers_done or "chunked" in self.header("Transfer-Encoding").lower():
            return 0
        length = self.header("Content-Length")
        return int(length) - self.body_size if length.isdigit() else 0

    def mark_uncaptured(self, at: int, n: int) -> None:
        """``n`` body bytes from body offset ``at`` were counted, not copied: within the first
        ``body_limit`` bytes, the body shows a marker for them (one for adjacent runs)."""
        if self.decoder:
            return  # an encoded body: its decoder says where decoding stopped (finish_body)
        body = self.body
        if (
            self.marker_at >= 0
            and at == self.uncaptured_end
            and len(body) == self.marker_at + len(UNCAPTURED_BODY_MARKER % self.uncaptured)
        ):
            body = body[: self.marker_at]  # the body ends with the marker of the bytes just before
            self.uncaptured += n
        elif at < self.body_limit:
            self.marker_at, self.uncaptured = len(body), n
        else:
            return
        self.uncaptured_end = at + n
        self.body = body + UNCAPTURED_BODY_MARKER % self.uncaptured

    @property
    def close_delimited(self) -> bool:
        """A response whose body only the end of the connection ends (RFC 9112 6.3, rule 8)."""
        return (
            self.headers_done
            and not self.complete
            and not self.header("Content-Length")
            and "chunked" not in self.header("Transfer-Encoding").lower()
        )


set_message_type(_Message)  # the plain path's messages are made in C (frame_message), slot by slot

MessagePair = tuple[_Message, _Message]  # a request and its response


class HttpTransaction:
    """One request and its response, with Pixie's ``http_events`` meanings.

    It holds the two messages as parsed and decodes a field when it is read. (The agent does
    not make these: it writes each pair into :class:`HttpRows` as it completes.)
    ``req_start_ns`` and ``resp_end_ns`` may be moved (to epoch time); ``latency_ns`` is always
    their difference.
    """

    __slots__ = ("request", "response", "req_start_ns", "resp_end_ns")
    FIELDS = (
        "req_method", "req_path", "major_version", "minor_version", "req_headers", "req_body",
        "req_body_size", "resp_status", "resp_message", "resp_headers", "resp_body", "resp_body_size",
        "content_type", "req_start_ns", "resp_end_ns", "latency_ns",
    )  # fmt: skip

    def __init__(self, request: _Message, response: _Message) -> None:
        self.request = request
        self.response = response
        self.req_start_ns = request.start_ns
        self.resp_end_ns = response.end_ns

    req_method = property(lambda self: _text(self.request.method))
    req_path = property(lambda self: _text(self.request.url))
    major_version = property(lambda self: self.response.version[0])
    minor_version = property(lambda self: self.response.version[1])
    req_headers = property(lambda self: headers_dict(self.request.header_pairs))
    req_body = property(lambda self: _text(self.request.body))
    req_body_size = property(lambda self: self.request.body_size)
    resp_status = property(lambda self: self.response.status)
    resp_message = property(lambda self: _text(self.response.reason))
    resp_headers = property(lambda self: headers_dict(self.response.header_pairs))
    resp_body = property(lambda self: _text(self.response.body))
    resp_body_size = property(lambda self: self.response.body_size)
    latency_ns = property(lambda self: self.resp_end_ns - self.req_start_ns)

    @property
    def content_type(self) -> int:
        return CONTENT_TYPE_JSON if _is_json(self.response.header_pairs) else CONTENT_TYPE_UNKNOWN

    def values(self) -> tuple[object, ...]:
        """Every field of :attr:`FIELDS`, in that order."""
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HttpTransaction):
            return NotImplemented
        return self.values() == other.values()

    __hash__ = None  # type: ignore[assignment]  # the times may move

    def __repr__(self) -> str:
        return "HttpTransaction(" + ", ".join(f"{n}={v!r}" for n, v in zip(self.FIELDS, self.values())) + ")"


class _Direction:
    """One direction of a connection: an llhttp parser (this object is its callback protocol),
    the message in progress, and the bytes held back while resyncing or framing by hand."""

    # Slots: pxq/agent/_native.c's http1_batch reads and writes some of them (set_http1_classes).
    __slots__ = (
        "stitcher", "is_request", "kind", "parser", "current", "_header_pairs", "ts_ns", "epoch", "valid_starts",
        "completed", "pending", "pending_ts", "carry_len", "begin_ts", "resyncing", "skip_starts",
        "skip_first_at_zero", "skipping", "chunk_open", "chunk_size", "chunk_data", "last_fed", "keep_alive",
        "plain_chunk", "plain_rest", "plain_starts",
    )  # fmt: skip

    def __init__(self, stitcher: Http1Stitcher, is_request: bool) -> None:
        self.stitcher = stitcher
        self.is_request = is_request
        self.kind = "request" if is_request else "response"
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
        self.current: _Message | None = None
        self._header_pairs: list[tuple[bytes, bytes]] = []  # the current message's
        self.ts_ns = 0  # timestamp of the chunk being parsed
        self.epoch = 0  # counts feed_data calls
        self.valid_starts = 0  # messages whose start line lies in the current feed_data call
        self.completed = 0  # messages completed so far
        self.pending = bytearray()  # bytes held back: a partial header block or a resync tail
        self.pending_ts = 0  # timestamp of the chunk the held-back bytes began in
        self.carry_len = 0  # how many bytes at the head of the data being pumped were held back
        self.begin_ts: int | None = None  # start time for the next message, when not ts_ns
        self.resyncing = False
        # After a parse error: how many message starts at the head of the data to pass over
        # when looking for the next one (they were parsed already or are the one that failed).
        self.skip_starts = 0
        self.skip_first_at_zero = False
        self.skipping = False  # bytes fed are stand-ins for uncaptured ones (Http1Stitcher.skip)
        # The chunk of a chunked body llhttp is in (between on_chunk_header and on_chunk_complete):
        # its size from its size line (-1: not known) and its data bytes so far, so that
        # Http1Stitcher.skip knows how much of it is left (llhttp does not say).
        self.chunk_open = False
        self.chunk_size = -1
        self.chunk_data = 0
        self.last_fed = b""  # the bytes of the last feed_data call (a size line may span two)
        # llhttp takes a next message: no message of this parser ended its connection (Connection:
        # close, HTTP/1.0). Plain messages are parsed without llhttp only while it would take them.
        self.keep_alive = True
        # The chunk whose first plain_starts messages were taken without llhttp, while llhttp
        # parses the rest: a parse error there resyncs as if llhttp had been fed all of it.
        self.plain_chunk = b""
        self.plain_rest = b""  # what of it llhttp is to be fed
        self.plain_starts = 0

    # -- llhttp callbacks -------------------------------------------------------------------
    # These run for every message: they keep what llhttp reports as it is (see _Message).
    def on_message_begin(self) -> None:
        ts, self.begin_ts = (self.ts_ns if self.begin_ts is None else self.begin_ts), None
        self.current = msg = _Message(self.stitcher.body_limit, ts, self.epoch)
        self._header_pairs = msg.header_pairs
        if self.is_request:
            self.stitcher._requests.append(msg)

    def _start_line_seen(self, msg: _Message) -> None:
        msg.valid_start = True
        if msg.epoch == self.epoch:
            self.valid_starts += 1

    def on_url(self, url: bytes) -> None:
        msg = self.current
        assert msg is not None  # llhttp calls back within a message, after on_message_begin
        if not msg.valid_start:
            self._start_line_seen(msg)
        msg.url += url

    def on_status(self, status: bytes) -> None:
        msg = self.current
        assert msg is not None
        if not msg.valid_start:
            self._start_line_seen(msg)
        msg.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_pairs.append((name, value))

    def on_headers_complete(self) -> None:
        msg, parser = self.current, self.parser
        assert msg is not None and parser is not None
        if not msg.valid_start:
            self._start_line_seen(msg)  # a status line with an empty reason phrase
        msg.headers_done = True
        msg.end_ns = self.ts_ns
        if self.is_request:
            assert isinstance(parser, httptools.HttpRequestParser)
            msg.method = parser.get_method()
            if msg.method in HEADER_ONLY_METHODS:
                self.stitcher._header_only_requests += 1
        else:
            assert isinstance(parser, httptools.HttpResponseParser)
            msg.status = parser.get_status_code()
            version = parser.get_http_version()
            msg.version = _VERSIONS.get(version) or tuple(int(n) for n in version.split("."))

    def on_body(self, body: bytes) -> None:
        msg = self.current
        assert msg is not None
        room = msg.body_limit - msg.body_size  # the body's first body_limit bytes are kept
        msg.body_size += len(body)
        if self.chunk_open:
            self.chunk_data += len(body)
        decoder = msg.decoder
        if decoder is None:
            coding = _content_coding(msg.header_pairs) if msg.body_limit > 0 else None
            decoder = msg.decoder = _BodyDecoder(coding, msg.body_limit) if coding else False
        if self.skipping:  # stand-ins for uncaptured bytes: an encoded body cannot decode past them
            if decoder:
                decoder.uncaptured += len(body)
        elif decoder:
            decoder.feed(body)
        elif room > 0:
            msg.body += body[:room]
        msg.end_ns = self.ts_ns

    def on_chunk_header(self) -> None:
        self.chunk_open, self.chunk_size, self.chunk_data = True, -1, 0

    def on_chunk_complete(self) -> None:
        self.chunk_open = False

    def chunk_left(self) -> int:
        """Data bytes of the open chunk still to come (0 when none is open or its size line was
        not read)."""
        return self.chunk_size - self.chunk_data if self.chunk_open and self.chunk_size >= 0 else 0

    def _read_chunk_size(self, data: bytes) -> None:
        """After a feed that left a chunk open whose size is not known: its size line ends where
        the chunk's data (the last chunk_data bytes fed) begins."""
        if self.chunk_data > len(data):
            return  # its head was in an earlier feed, whose end did not reach here: unknown
        seen = self.last_fed[-64:] + data[: len(data) - self.chunk_data]
        if not seen.endswith(b"\r\n"):
            return
        line = seen[seen.rfind(b"\n", 0, len(seen) - 2) + 1 : -2]
        digits = line.split(b";", 1)[0].strip()
        with contextlib.suppress(ValueError):
            self.chunk_size = int(digits, 16)

    def on_message_complete(self) -> None:
        msg = self.current
        assert msg is not None
        if msg.decoder:
            msg.finish_body()
        msg.complete = True
        msg.end_ns = self.ts_ns
        self.current = None
        self.completed += 1
        parser = self.parser
        if parser is not None and not parser.should_keep_alive():
            self.keep_alive = False
        if self.is_request:
            self.stitcher._stitch()
        else:
            self.stitcher._response_complete(msg)

    # -- feeding ----------------------------------------------------------------------------
    def new_parser(self) -> None:
        cls = httptools.HttpRequestParser if self.is_request else httptools.HttpResponseParser
        self.parser = cls(self)
        self.current = None
        self.chunk_open = False
        self.keep_alive = True

    def feed(self, data: bytes) -> bytes:
        """Run ``data`` through llhttp. Returns the bytes llhttp did not take: after an upgrade,
        what follows it; after a parse error, all of ``data`` (to resync in)."""
        if self.parser is None:
            self.new_parser()
        assert self.parser is not None
        at_boundary = self.current is None
        self.epoch += 1
        self.valid_starts = 0
        plain_starts, whole = self.plain_starts, self.plain_chunk
        if plain_starts:
            if data is not self.plain_rest:
                plain_starts = 0  # fed something else first (a head framed by hand): resync in it alone
            self.plain_starts, self.plain_chunk, self.plain_rest = 0, b"", b""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as up:
            return self.stitcher._upgraded(self, data[up.args[0] :])
        except httptools.HttpParserError as err:
            self.fail(_error_reason(err))
            if plain_starts:  # resync in the whole chunk, past the plain messages too
                self.skip_starts = self.valid_starts + plain_starts
                self.skip_first_at_zero = False
                return whole
            self.skip_starts = self.valid_starts
            self.skip_first_at_zero = at_boundary and self.valid_starts == 0
            return data
        if self.chunk_open and self.chunk_size < 0:
            self._read_chunk_size(data)
        self.last_fed = data
        return b""

    def fail(self, reason: str) -> None:
        """A parse error: count it, give up the message (one message lost, so that later pairs
        stay aligned), and look for the next message start."""
        stitcher = self.stitcher
        stitcher.errors[f"{self.kind}_{reason}"] += 1
        msg, self.current, self.parser = self.current, None, None
        if self.is_request:
            if msg is None:
                stitcher._requests.append(_Message.lost(self.ts_ns))
            else:
                msg.broken = msg.complete = True
        else:
            stitcher._responses.append(_Message.lost(self.ts_ns))
        self.resyncing = True
        self.skip_starts = 0
        self.skip_first_at_zero = False
        self.pending.clear()
        stitcher._stitch()

    def resync(self, data: bytes) -> bytes:
        """Drop bytes up to the next message start (at a line start) and return the rest; keep
        a tail when there is none yet, in case one is split across chunks."""
        pattern = _RESYNC_REQUEST if self.is_request else _RESYNC_RESPONSE
        skip, skip_zero = self.skip_starts, self.skip_first_at_zero
        self.skip_starts, self.skip_first_at_zero = 0, False
        carry = self.carry_len
        if not skip and not skip_zero and 0 < carry < len(data):
            chunk_start = _CHUNK_STARTS_REQUEST if self.is_request else _CHUNK_STARTS_RESPONSE
            first = pattern.search(data)
            if (first is None or first.start(1) > carry) and chunk_start.match(data, carry):
                # The new chunk begins with a message: the tail held back (the end of a body
                # without a newline, say) was not the beginning of one.
                self.resyncing = False
                self.new_parser()
                return data[carry:]
        floor = 0  # nothing before this may be kept: it holds message starts already passed over
        for found in pattern.finditer(data):
            pos = found.start(1)
            if pos == 0 and skip_zero:
                floor = 1
                continue
            if skip > 0:
                skip -= 1
                floor = pos + 1
                continue
            self.resyncing = False
            self.new_parser()
            if pos < self.carry_len:  # the message began in bytes held back from a past chunk
                self.begin_ts = self.pending_ts
            return data[pos:]
        cut = data.rfind(b"\n") + 1
        keep = max(floor, cut, len(data) - MAX_HEADER_BYTES)
        self.pending += data[keep:]
        if keep >= self.carry_len:
            self.pending_ts = self.ts_ns
        return b""


def _error_reason(err: Exception) -> str:
    """A short counter key for an llhttp error: invalid_method, invalid_status, parse_error..."""
    if isinstance(err, httptools.HttpParserInvalidMethodError):
        return "invalid_method"
    if isinstance(err, httptools.HttpParserInvalidStatusError):
        return "invalid_status"
    if isinstance(err, httptools.HttpParserInvalidURLError):
        return "invalid_url"
    return "parse_error"


class Http1Stitcher:
    """Parse both directions of one HTTP/1.x connection and pair requests with responses.

    ``feed_request``/``feed_response``/``close`` return the transactions that call completed.
    ``errors`` counts, by reason, what could not be parsed or paired; nothing raises.
    """

    # Slots: pxq/agent/_native.c's http1_batch reads and writes some of them (set_http1_classes).
    __slots__ = (
        "body_limit", "errors", "_requests", "_responses", "_header_only_requests", "_done", "_req", "_resp",
        "_upgrade_wait", "_held", "_held_size", "upgraded", "_closed", "pipelined", "sequential", "out_of_step",
        "exchanges", "plain",
    )  # fmt: skip

    def __init__(self, body_limit: int = DEFAULT_BODY_LIMIT) -> None:
        self.body_limit = body_limit
        self.errors: Counter[str] = Counter()
        self._requests: deque[_Message] = deque()  # parsed or in progress, not yet paired
        self._responses: deque[_Message] = deque()  # final responses waiting for their request
        # How many of self._requests are HEAD/CONNECT: none (the usual case) spares the scan of
        # _header_only_later, which would otherwise grow with every request waiting for an answer.
        self._header_only_requests = 0
        self._done: list[MessagePair] = []  # completed pairs, not taken yet
        self._req = _Direction(self, is_request=True)
        self._resp = _Direction(self, is_request=False)
        # Request bytes (with their timestamps) held after an Upgrade/CONNECT request until its
        # response says whether the connection still speaks HTTP.
        self._upgrade_wait = False
        self._held: list[tuple[bytes, int]] = []
        self._held_size = 0
        # True once the connection left HTTP (101 Switching Protocols, CONNECT 2xx): nothing after
        # that is parsed.
        self.upgraded = False
        self._closed = False
        # Pipelining seen: a request began before the response to the one before it ended; and
        # the opposite, a response that ended before the next request began. Only a connection
        # seen doing the latter and never the former pairs by time after lost response bytes
        # (response_gap).
        self.pipelined = False
        self.sequential = False
        # The interface's flag: pipelined, or a response that answers no request waiting.
        self.out_of_step = False
        self.exchanges = 0  # requests answered
        # Plain messages without llhttp (see frame_message); False: llhttp parses all.
        self.plain = True

    # -- public API -------------------------------------------------------------------------
    def feed_request(self, data: bytes, ts_ns: int) -> list[HttpTransaction]:
        """Client-to-server bytes captured at ``ts_ns``."""
        return [HttpTransaction(req, resp) for req, resp in self.feed_messages(True, data, ts_ns)]

    def feed_response(self, data: bytes, ts_ns: int) -> list[HttpTransaction]:
        """Server-to-client bytes captured at ``ts_ns``."""
        return [HttpTransaction(req, resp) for req, resp in self.feed_messages(False, data, ts_ns)]

    def close(self, ts_ns: int) -> list[HttpTransaction]:
        """The connection closed at ``ts_ns``: finish a close-delimited body, count leftovers."""
        return [HttpTransaction(req, resp) for req, resp in self.close_messages(ts_ns)]

    def feed_messages(self, request: bool, data: bytes, ts_ns: int) -> list[MessagePair]:
        """:meth:`feed_request` (``request``) or :meth:`feed_response`, returning the completed
        pairs as parsed messages, for :meth:`HttpRows.add`."""
        self._feed(self._req if request else self._resp, bytes(data), ts_ns)
        return self._take()

    def close_messages(self, ts_ns: int) -> list[MessagePair]:
        """:meth:`close`, returning the completed pairs as parsed messages."""
        if self._closed:
            return []
        self._closed = True
        if not self.upgraded:
            resp = self._resp.current
            if resp is not None and resp.close_delimited:
                resp.finish_body()
                resp.complete = True
                self._resp.current = None
                self._response_complete(resp)  # end_ns: the chunk with its last byte
            elif resp is not None or (self._resp.pending and not self._resp.resyncing):
                self.errors["response_incomplete_at_close"] += 1
            req = self._req.current
            if req is not None and not req.broken:
                self.errors["request_incomplete_at_close"] += 1
            unanswered = sum(1 for r in self._requests if r.complete and not r.broken)
            if unanswered:
                self.errors["request_unanswered_at_close"] += unanswered
            orphans = sum(1 for r in self._responses if not r.broken)
            if orphans:
                self.errors["response_without_request"] += orphans
        self._requests.clear()
        self._header_only_requests = 0
        self._responses.clear()
        self._held.clear()
        self._req.pending.clear()
        self._resp.pending.clear()
        return self._take()

    def skip(self, request: bool, n: int, ts_ns: int) -> tuple[list[HttpTransaction], int]:
        """``n`` bytes of one direction moved at ``ts_ns`` without being seen (the kernel counted
        them: ``sendfile``, a call beyond the copy limit, ``splice``). Inside a body of known
        remaining length (by Content-Length, or the chunk a chunked body is in) the message
        advances over them: it keeps its true
        size, its body shows :data:`UNCAPTURED_BODY_MARKER` for them, and it completes when they
        were its last bytes. Returns the transactions completed and how many of the ``n`` bytes
        could not be skipped (they lie beyond that body, where framing needs the bytes: the
        caller treats them as lost)."""
        done, left = self.skip_messages(request, n, ts_ns)
        return [HttpTransaction(req, resp) for req, resp in done], left

    def skip_messages(self, request: bool, n: int, ts_ns: int) -> tuple[list[MessagePair], int]:
        """:meth:`skip`, returning the completed pairs as parsed messages."""
        side = self._req if request else self._resp
        k = min(n, self._skippable(side))
        if k > 0:
            msg = side.current
            assert msg is not None  # _skippable is 0 without a message in progress
            at = msg.body_size
            side.ts_ns = ts_ns
            side.skipping = True
            try:  # llhttp counts the body down; on_body keeps none of these stand-in bytes
                for start in range(0, k, len(_SKIP_PIECE)):
                    side.feed(_SKIP_PIECE[: min(len(_SKIP_PIECE), k - start)])
            finally:
                side.skipping = False
            msg.mark_uncaptured(at, k)
            side.last_fed = b""  # stand-ins: no size line to find in them
        return self._take(), n - k

    def _skippable(self, side: _Direction) -> int:
        """Body bytes of ``side``'s message in progress that may be skipped: what is left of a
        Content-Length body whose head was parsed, or of the chunk a chunked body is in (0
        anywhere else: a head, a chunk's size line, a body without a length)."""
        if self._closed or self.upgraded or side.resyncing or side.pending or side.parser is None:
            return 0
        if side.is_request and self._upgrade_wait:
            return 0
        msg = side.current
        if msg is None or msg.complete or msg.broken:
            return 0
        return max(0, msg.body_left() or side.chunk_left())

    def response_gap(self, ts_ns: int) -> bool:
        """Response bytes were lost (a hole in the stream that will not fill), and the next
        response bytes, captured at ``ts_ns``, begin with a status line. On a connection seen
        answering each request before the next one began (and never pipelining), that response
        answers the latest request that began before it; the requests older than that lost
        their responses (``request_unanswered_after_gap``), and pairing goes on without starting
        over. The caller must know that no request bytes before ``ts_ns`` were lost (else the
        latest request seen may not be the latest sent). Returns False where pairing by time
        cannot be trusted (pipelining, or no transaction seen yet to tell; an upgrade pending;
        responses waiting for their requests; requests that arrived in one read): then the
        caller starts over at the next request. (A client that switched to pipelining at the
        very moment a response was lost, its requests in separate reads, would be paired
        wrongly. HTTP/1.x clients pipeline from their first requests or never, but a server
        that reads the next request only once it answered the one before, as nginx does, sees a
        pipelining client in step until requests pile up while it answers: then they come in
        one read, which is what gives them away.)"""
        if (
            self.out_of_step
            or not self.sequential
            or self._closed
            or self.upgraded
            or self._upgrade_wait
            or self._responses
        ):
            return False
        answered = -1
        for i, req in enumerate(self._requests):
            if req.start_ns > ts_ns:
                break
            answered = i
        if answered < 1:
            # No request it could answer (something else was lost), or only the oldest one
            # waiting: every request before it was answered whole, so the bytes lost were its
            # answer's (the head, or part of the body), and what follows is the rest of that
            # answer, a status line there being body text. (Or an interim 1xx answer was lost
            # whole: declining costs that exchange.) Start over.
            return False
        waiting = list(itertools.islice(self._requests, answered + 1))
        if any(earlier.start_ns == later.start_ns for earlier, later in zip(waiting, waiting[1:])):
            # Two of them began in the same read (or write): they were in flight together, which
            # no loss explains. The client pipelines; which of them this answers, time cannot tell.
            return False
        self._resp.new_parser()
        self._resp.pending.clear()
        self._resp.begin_ts = None
        self._resp.resyncing = False
        for _ in range(answered):
            lost = self._requests.popleft()
            if lost.headers_done and lost.method in HEADER_ONLY_METHODS:
                self._header_only_requests -= 1
            if not lost.broken:
                self.errors["request_unanswered_after_gap"] += 1
        return True

    # -- internals --------------------------------------------------------------------------
    def _take(self) -> list[MessagePair]:
        if not self._done:
            return []
        done, self._done = self._done, []
        return done

    def _feed(self, side: _Direction, data: bytes, ts_ns: int) -> None:
        if self._closed or self.upgraded or not data:
            return
        if side.is_request and self._upgrade_wait:
            self._hold(data, ts_ns)
            return
        side.ts_ns = ts_ns
        side.carry_len = len(side.pending)
        if side.pending:
            data = bytes(side.pending) + data
            side.pending.clear()
        else:
            side.pending_ts = ts_ns
            if self.plain and side.current is None and side.keep_alive and not side.resyncing and side.begin_ts is None:
                before = side.completed
                rest = self._plain_messages(side, data, ts_ns)
                if not rest:
                    return
                if rest is not data:
                    side.plain_chunk, side.plain_rest = data, rest
                    side.plain_starts = side.completed - before
                data = rest
        self._pump(side, data)

    def _plain_messages(self, side: _Direction, data: bytes, ts_ns: int) -> bytes:
        """Take the plain messages (see frame_message) at the start of ``data`` as llhttp's
        callbacks would; return the bytes from the first one that is not (or not complete) on."""
        is_request = side.is_request
        body_limit, epoch = self.body_limit, side.epoch
        requests, responses = self._requests, self._responses
        at, end = 0, len(data)
        while at < end:
            answers = 0  # what the response to come answers (see frame_message): an ordinary request
            if not is_request and self._header_only_requests and len(requests) > len(responses):
                req = requests[len(responses)]
                if req.headers_done and req.method in HEADER_ONLY_METHODS:
                    answers = 1 if req.method == b"HEAD" else 2
            framed = frame_message(data, at, is_request, answers, body_limit, ts_ns, epoch)
            if framed is None:
                break
            msg, at = framed
            side.completed += 1
            if is_request:
                if msg.method in HEADER_ONLY_METHODS:
                    self._header_only_requests += 1
                requests.append(msg)
                self._stitch()
            else:
                self._response_complete(msg)
        return data[at:] if at else data

    def _pump(self, side: _Direction, data: bytes) -> None:
        """Parse ``data`` on one side, switching between llhttp, hand framing and resync."""
        while data and not self.upgraded:
            if side.is_request and self._upgrade_wait:
                self._hold(data, side.ts_ns)
                return
            if side.resyncing:
                data = side.resync(data)
                side.carry_len = 0  # positions no longer line up with the held-back bytes
            elif side.is_request:
                data = side.feed(data)
            elif side.current is None and self._header_only(0):
                data = self._header_only_response(data)
            elif len(self._requests) - len(self._responses) > 1 and self._header_only_later():
                # A response further on is framed here, so llhttp has to stop exactly where this
                # one ends (rare: HEAD or CONNECT pipelined behind other requests). Step through
                # it: the head a byte at a time, a Content-Length body in one piece.
                done_before, i = side.completed, 0
                while i < len(data) and side.completed == done_before:
                    n = 1 if side.current is None else max(1, side.current.body_left())
                    left = side.feed(data[i : i + n])
                    i += n
                    if left:
                        data = left + data[i:]
                        break
                else:
                    data = data[i:]
            else:
                data = side.feed(data)

    def _header_only(self, ahead: int) -> bool:
        """Is the response ``ahead`` responses after the next one to come an answer to HEAD or
        CONNECT, whose framing llhttp cannot know?"""
        idx = len(self._responses) + ahead
        if idx >= len(self._requests):
            return False
        req = self._requests[idx]
        return req.headers_done and req.method in HEADER_ONLY_METHODS

    def _header_only_later(self) -> bool:
        """Is any response after the next one to come an answer to HEAD or CONNECT?"""
        if not self._header_only_requests:
            return False
        return any(self._header_only(ahead) for ahead in range(1, len(self._requests) - len(self._responses)))

    def _header_only_response(self, data: bytes) -> bytes:
        """Frame a response that ends with its header block; return the bytes after it."""
        side = self._resp
        end = data.find(_HEADER_END)
        if end < 0:
            if len(data) > MAX_HEADER_BYTES:
                side.fail("header_too_long")
                side.skip_first_at_zero = True
                return data
            side.pending += data
            return b""
        head, rest = data[: end + len(_HEADER_END)], data[end + len(_HEADER_END) :]
        side.new_parser()
        if side.carry_len:  # the head began in bytes held back from an earlier chunk: its time
            side.begin_ts, side.carry_len = side.pending_ts, 0
        failed = side.feed(head)
        side.begin_ts = None  # taken by the message's start, or none began
        if failed:
            return head + rest  # parse error: resync from its start
        msg = side.current
        if msg is not None and msg.headers_done:
            if not self._ends_at_headers(msg):
                return rest  # a refused CONNECT: llhttp goes on with its body, as for any response
            side.on_message_complete()  # llhttp would wait for a body there is none of
        side.new_parser()
        return rest

    def _ends_at_headers(self, resp: _Message) -> bool:
        """Does this response (its headers parsed), the answer to the next request waiting for
        one (HEAD or CONNECT), end with its header block? Any answer to HEAD does; of the answers
        to CONNECT only a 2xx one, which opens the tunnel (RFC 9110 9.3.6): a refusal (407, 403,
        502, ...) carries a body framed by its headers, like any response."""
        req = self._requests[len(self._responses)]
        return req.method != b"CONNECT" or 200 <= resp.status < 300

    def _response_complete(self, msg: _Message) -> None:
        if 100 <= msg.status < 200 and msg.status != 101:
            return  # 100 Continue and other interim responses
        idx = len(self._responses)
        req = self._requests[idx] if idx < len(self._requests) else None
        if req is None:
            self.out_of_step = True  # an answer while no request waits for one
        self._responses.append(msg)
        connect_ok = req is not None and req.method == b"CONNECT" and 200 <= msg.status < 300
        if msg.status == 101 or connect_ok:
            self.upgraded = True
        elif self._upgrade_wait and idx == len(self._requests) - 1:
            self._upgrade_refused()
        self._stitch()
        if self.upgraded:
            # Nothing after this is HTTP: an answer still without its request (whose bytes were
            # lost, say) is a transaction lost here, counted (close counts nothing once upgraded).
            orphans = sum(1 for r in self._responses if not r.broken)
            if orphans:
                self.errors["response_without_request"] += orphans
            self._responses.clear()

    def _stitch(self) -> None:
        while self._requests and self._responses and self._requests[0].complete:
            req, resp = self._requests[0], self._responses.popleft()
            if resp.end_ns < req.start_ns and not req.broken:
                # It answers an earlier request (lost, or never made): pairing it here would
                # shift every later pair by one. The request waits for the next response. (Bytes
                # that failed to parse, ended before the request began, answer it no more: junk
                # after a response, counted where it failed.)
                if not resp.broken:
                    self.errors["response_before_request"] += 1
                    self.out_of_step = True
                continue
            self._requests.popleft()
            self.exchanges += 1
            if req.headers_done and req.method in HEADER_ONLY_METHODS:
                self._header_only_requests -= 1
            if self._requests and self._requests[0].start_ns < resp.end_ns:
                # The next request was on its way before this answer ended.
                self.pipelined = self.out_of_step = True
            else:
                self.sequential = True
            if req.broken or resp.broken:
                continue  # counted where the parse failed
            self._done.append((req, resp))

    # -- upgrades ---------------------------------------------------------------------------
    def _upgraded(self, side: _Direction, rest: bytes) -> bytes:
        """llhttp stopped at an upgrade: a request asking for one (Upgrade, CONNECT), or a 101
        granting it. Returns the bytes still to parse on that side (none)."""
        if side.is_request:
            self._upgrade_wait = True
            side.new_parser()
            if rest:
                self._hold(rest, side.ts_ns)
        else:
            self.upgraded = True
        return b""

    def _hold(self, data: bytes, ts_ns: int) -> None:
        self._held_size += len(data)
        if self._held_size > MAX_UPGRADE_HOLD:
            # Whatever this is, it is not HTTP we can follow any more.
            self.errors["request_upgrade_hold_overflow"] += 1
            self.upgraded = True
            self._held.clear()
            return
        self._held.append((data, ts_ns))

    def _upgrade_refused(self) -> None:
        """The server answered the upgrade request without switching protocols: the request
        bytes held back since are HTTP after all."""
        self._upgrade_wait = False
        held, self._held, self._held_size = self._held, [], 0
        for data, ts_ns in held:
            self._feed(self._req, data, ts_ns)
