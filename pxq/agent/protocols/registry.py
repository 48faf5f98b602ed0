"""The protocols the socket tracer parses: one :class:`ProtocolSpec` per protocol.

Adding a protocol is a folder ``pxq/agent/protocols/<name>/`` (its stitcher, its row buffer, its
inference test) plus one entry in :data:`PROTOCOLS`; the connection tracker, the socket tracer and
the embedded agent read everything else from here. The model is Pixie's socket tracer, whose
``SocketTraceConnector::InitProtocolTransferSpecs`` (socket_trace_connector.cc) holds one
``TransferSpec`` per protocol (its table, its roles, its transfer function over the protocol's
``ProtocolTraits``; ``struct TransferSpec`` in socket_trace_connector.h), and whose per-protocol
parsers live in ``protocols/<p>/`` behind ``protocols/common/interface.h`` (here
:mod:`pxq.agent.protocols.interface`).

Protocol selection happens in user space: the kernel program copies the bytes of every TCP
connection of the traced processes, and a connection that no entry here recognises from its
first bytes is switched off in the kernel (the tracker's ``disable``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pxq.agent.protocols import dns, http1, mysql, pgsql, redis
from pxq.agent.protocols.interface import ParseOptions, RowBuffer, Stitcher

# Payload bytes (an HTTP body) kept per row unless asked otherwise, for every protocol (Pixie's
# default too).
DEFAULT_BODY_LIMIT = http1.DEFAULT_BODY_LIMIT


@dataclass(frozen=True)
class ProtocolSpec:
    """One protocol, as the connection tracker and the collectors need it."""

    # What scripts ask for: the catalog's TableSchema.protocol of the table below.
    name: str
    # The table its rows fill (a catalog table name).
    table: str
    # Protocol inference on a stream's first bytes (up to 256): could a client's first bytes look
    # like this (a request), could a server's (a response)? The sender's side follows from it.
    looks_like_request: Callable[[bytes], bool]
    looks_like_response: Callable[[bytes], bool]
    # Bytes of a message's framing its parser may need before the payload starts (for HTTP/1.x the
    # header block it keeps while looking for its end): the kernel copies this much of a call,
    # plus the body limit, and counts the rest (see socket_tracer.copy_limit_for).
    head_bytes: int
    # A stitcher for one new connection, given what the user chose to keep (body limit, secrets).
    make_stitcher: Callable[[ParseOptions], Stitcher]
    # The buffer its table's rows are built in (the same options: secrets are dropped before a row
    # is kept, by the stitcher or here).
    make_rows: Callable[[ParseOptions], RowBuffer]
    # A pair as one record with a field per column (Pixie's record_type), for tests and tools
    # that read pairs without building a table.
    make_record: Callable[[Any, Any], Any]
    # Error reasons that are a request or response without its other half (``unmatched`` in the
    # drop counters, every other reason is a ``parse_error``). ``unmatched_at_close``: leftovers
    # when a connection ends, which are no loss when it was the capture window that ended.
    unmatched_at_close: tuple[str, ...]
    # Unmatched halves due to bytes the kernel could not deliver (or a response that ended before
    # the request it would pair with began): unmatched too, whenever the window ends.
    unmatched_after_gap: tuple[str, ...]
    # Protocols that also run over UDP (DNS): how they are recognised and parsed there, where a
    # datagram is one message. None: the protocol is TCP only.
    datagrams: DatagramSpec | None = None
    # Inference on a new connection's first bytes that could begin this protocol's first message
    # but do not hold enough of it to tell (a DNS query over TCP, read in parts): True makes the
    # tracker wait for more bytes before it gives the connection up.
    head_incomplete: Callable[[bytes], bool] = lambda _first: False
    # Answers come in the order of the requests and carry nothing naming their request (HTTP/1,
    # PostgreSQL, MySQL, Redis): after a loss the tracker restarts such a connection only if it
    # was never seen out of step, on probation (see conn_tracker). False: pairing by ids (DNS),
    # the tracker restarts it as it is.
    pairs_in_order: bool = True
    # First bytes of a client that can only begin a connection (PostgreSQL's startup message or
    # SSLRequest): a socket whose first bytes they are is seen from its start though no OPEN was
    # (a forking server's child, which did not accept() it), so it needs no probation.
    session_start: Callable[[bytes], bool] = lambda _first: False

    def sender_is_client(self, first_bytes: bytes) -> bool | None:
        """Inference: True when these first bytes of a stream are a request (their sender is the
        client), False when a response (the server), None when neither."""
        if self.looks_like_request(first_bytes):
            return True
        if self.looks_like_response(first_bytes):
            return False
        return None

    @property
    def unmatched(self) -> tuple[str, ...]:
        return self.unmatched_at_close + self.unmatched_after_gap


@dataclass(frozen=True)
class DatagramSpec:
    """A protocol over UDP: inference on one whole datagram, and a stitcher that is fed one
    datagram per call (its connections are one UDP socket's traffic with one peer)."""

    looks_like_request: Callable[[bytes], bool]
    looks_like_response: Callable[[bytes], bool]
    make_stitcher: Callable[[ParseOptions], Stitcher]

    def sender_is_client(self, datagram: bytes) -> bool | None:
        if self.looks_like_request(datagram):
            return True
        if self.looks_like_response(datagram):
            return False
        return None


HTTP = ProtocolSpec(
    name="http",
    table="http_events",
    looks_like_request=http1.looks_like_http_request,
    looks_like_response=http1.looks_like_http_response,
    head_bytes=http1.MAX_HEADER_BYTES,
    make_stitcher=lambda options: http1.Http1Stitcher(body_limit=options.body_limit),
    make_rows=lambda options: http1.HttpRows(keep_secrets=options.keep_secrets),
    make_record=http1.HttpTransaction,
    unmatched_at_close=(
        "request_unanswered_at_close",
        "response_without_request",
        "response_incomplete_at_close",
        "request_incomplete_at_close",
    ),
    unmatched_after_gap=("request_unanswered_after_gap", "response_before_request"),
)

# The int32 after the length of a client's first message: protocol 3.0 (the startup message), an
# SSLRequest, a GSSENCRequest.
_PGSQL_SESSION_CODES = frozenset(code.to_bytes(4, "big") for code in (196608, 80877103, 80877104))

PGSQL = ProtocolSpec(
    name="pgsql",
    table="pgsql_events",
    looks_like_request=pgsql.looks_like_pgsql_request,
    looks_like_response=pgsql.looks_like_pgsql_response,
    head_bytes=pgsql.PgsqlStitcher.HEAD_BYTES,
    make_stitcher=lambda options: pgsql.PgsqlStitcher(options.body_limit, options.keep_secrets),
    make_rows=lambda _options: pgsql.PgsqlRows(),
    make_record=pgsql.make_record,
    session_start=lambda first: first[4:8] in _PGSQL_SESSION_CODES,
    unmatched_at_close=("request_unanswered_at_close", "response_without_request", "response_incomplete_at_close",
                        "request_incomplete_at_close"),
    unmatched_after_gap=(),
)  # fmt: skip

MYSQL = ProtocolSpec(
    name="mysql",
    table="mysql_events",
    looks_like_request=mysql.looks_like_mysql_request,
    looks_like_response=mysql.looks_like_mysql_response,
    head_bytes=mysql.HEAD_BYTES,
    make_stitcher=mysql.MysqlStitcher,
    make_rows=lambda _options: mysql.MysqlRows(),
    make_record=mysql.MysqlRecord,
    unmatched_at_close=(
        "request_unanswered_at_close",
        "response_incomplete_at_close",
        "request_incomplete_at_close",
        "response_without_request",
    ),
    unmatched_after_gap=("request_unanswered", "request_unanswered_after_desync", "response_before_request"),
    head_incomplete=mysql.head_incomplete,
)

REDIS = ProtocolSpec(
    name="redis",
    table="redis_events",
    looks_like_request=redis.looks_like_redis_request,
    looks_like_response=redis.looks_like_redis_response,
    # RESP frames every value (a bulk string's length, its CRLF): a call's bytes beyond what the kernel
    # copies cost the transactions they hold.
    head_bytes=redis.MAX_INLINE,
    make_stitcher=redis.RedisStitcher,
    make_rows=lambda _options: redis.RedisRows(),
    make_record=redis.make_record,
    unmatched_at_close=(
        "request_unanswered_at_close",
        "response_without_request",
        "response_incomplete_at_close",
        "request_incomplete_at_close",
    ),  # fmt: skip
    unmatched_after_gap=("request_unanswered_after_error", "response_before_request"),
    # A server's first read cut before the end of its first line ("-ERR unknown subcomm"): wait.
    head_incomplete=lambda first: first[:1] in redis.stitcher.resp_type_bytes and b"\r\n" not in first[:64],
)

DNS = ProtocolSpec(
    name="dns",
    table="dns_events",
    looks_like_request=dns.looks_like_query_stream,
    looks_like_response=dns.looks_like_response_stream,
    head_bytes=64 * 1024,  # a message whole (at most 65535 bytes and its 2-byte length over TCP)
    make_stitcher=lambda _options: dns.DnsStitcher(datagrams=False),
    make_rows=lambda _options: dns.DnsRows(),
    make_record=dns.dns_record,
    unmatched_at_close=("request_incomplete_at_close", "response_incomplete_at_close"),
    # A response whose query was never seen (lost, or before the window): counted whenever it ends.
    unmatched_after_gap=("response_without_request",),
    head_incomplete=dns.head_incomplete,
    pairs_in_order=False,  # by transaction id and question
    datagrams=DatagramSpec(
        looks_like_request=dns.looks_like_query_datagram,
        looks_like_response=dns.looks_like_response_datagram,
        make_stitcher=lambda _options: dns.DnsStitcher(datagrams=True),
    ),
)

# Every protocol the socket tracer parses, by name; inference tries them in this order (DNS over
# TCP last: its inference is the loosest).
PROTOCOLS: dict[str, ProtocolSpec] = {spec.name: spec for spec in (HTTP, PGSQL, MYSQL, REDIS, DNS)}
# The names, as the socket tracer and the embedded agent list them.
SUPPORTED_PROTOCOLS: tuple[str, ...] = tuple(PROTOCOLS)
# The most framing bytes any protocol's parser needs before a payload.
MAX_HEAD_BYTES = max(spec.head_bytes for spec in PROTOCOLS.values())


def protocol_tables() -> dict[str, str]:
    """protocol name -> the table it fills."""
    return {spec.name: spec.table for spec in PROTOCOLS.values()}
