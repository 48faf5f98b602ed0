"""Protocol tables made from recorded real conversations, for tests of scripts over captures.

A recorded stream (:mod:`pxq.testing.streams`) is replayed through a new stitcher of its
protocol (:mod:`pxq.agent.protocols.registry`) and its pairs become rows of the protocol's table
on a connection, as the socket tracer would have filled them: the same conversation may be added
from the client's end and from the server's (both traced on one host), shifted in time.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pxq.agent.conn_stats import AF_INET, AF_INET6, ConnStats
from pxq.agent.conn_tracker import Connection as TrackedConnection
from pxq.agent.protocols.interface import Pair, ParseOptions, RowBuffer
from pxq.agent.protocols.registry import PROTOCOLS
from pxq.testing.streams import RecordedStream

CLIENT, SERVER = 1, 2  # trace_role values (Pixie's kRoleClient, kRoleServer)


@dataclass
class Connection:
    """One traced end of a connection: the columns a row buffer takes from the connection."""

    upid: str
    laddr: str
    lport: int
    raddr: str
    rport: int
    role: int


def both_ends(
    client_upid: str, client: tuple[str, int], server_upid: str, server: tuple[str, int]
) -> tuple[Connection, Connection]:
    """The client's end and the server's end of one connection between ``client`` and ``server``
    (address, port)."""
    return (
        Connection(client_upid, client[0], client[1], server[0], server[1], CLIENT),
        Connection(server_upid, server[0], server[1], client[0], client[1], SERVER),
    )


def conversation_pairs(
    protocol: str, stream: RecordedStream, *, datagrams: bool = False, body_limit: int = 1024
) -> list[Pair]:
    """The pairs a new stitcher of ``protocol`` makes from the stream's chunks (times relative to
    the stream's start), the connection closed after its last chunk. ``datagrams``: each chunk is
    one UDP datagram (the protocol's datagram stitcher)."""
    spec = PROTOCOLS[protocol]
    options = ParseOptions(body_limit=body_limit)
    if datagrams:
        if spec.datagrams is None:
            raise ValueError(f"{protocol} does not run over UDP")
        stitcher = spec.datagrams.make_stitcher(options)
    else:
        stitcher = spec.make_stitcher(options)
    pairs: list[Pair] = []
    for direction, ts, data in stream.chunks:
        pairs += stitcher.feed_messages(direction == "req", data, ts)
    pairs += stitcher.close_messages(stream.chunks[-1][1] if stream.chunks else 0)
    return pairs


def new_rows(protocol: str, body_limit: int = 1024) -> RowBuffer:
    """An empty row buffer of the protocol's table."""
    return PROTOCOLS[protocol].make_rows(ParseOptions(body_limit=body_limit))


def add_conversation(rows: RowBuffer, pairs: list[Pair], ends: tuple[Connection, ...], start_ns: int) -> None:
    """The pairs as rows seen from each of ``ends``, the conversation starting at ``start_ns``."""
    for end in ends:
        rows.add_pairs(end, pairs, start_ns)


@dataclass
class _Span:
    protocol: str
    end: Connection
    start_ns: int
    end_ns: int
    sent: int
    received: int


class ConversationCapture:
    """Tables of a capture made of recorded conversations: each protocol's table and, for the TCP
    ones, ``conn_stats`` as the agent's :class:`~pxq.agent.conn_stats.ConnStats` reports the
    connections (opened at the conversation's first chunk, closed after its last one, with the
    bytes each end sent and received)."""

    def __init__(self, body_limit: int = 1024) -> None:
        self.body_limit = body_limit
        self.rows: dict[str, RowBuffer] = {}
        self.spans: list[_Span] = []

    def add(
        self,
        protocol: str,
        stream: RecordedStream,
        ends: tuple[Connection, ...],
        start_ns: int,
        *,
        datagrams: bool = False,
    ) -> None:
        """The stream as one connection seen from each of ``ends``, starting at ``start_ns``."""
        pairs = conversation_pairs(protocol, stream, datagrams=datagrams, body_limit=self.body_limit)
        rows = self.rows.get(protocol)
        if rows is None:
            rows = self.rows[protocol] = new_rows(protocol, self.body_limit)
        add_conversation(rows, pairs, ends, start_ns)
        if datagrams:
            return  # conn_stats counts TCP connections only
        last_ns = stream.chunks[-1][1] if stream.chunks else 0
        requests, responses = len(stream.side("req")), len(stream.side("resp"))
        for end in ends:
            sent, received = (requests, responses) if end.role == CLIENT else (responses, requests)
            self.spans.append(_Span(protocol, end, start_ns, start_ns + last_ns, sent, received))

    def tables(self) -> dict[str, pa.Table]:
        """Catalog table name -> rows (each protocol's table, and conn_stats when a TCP
        conversation was added)."""
        tables = {PROTOCOLS[protocol].table: rows.table() for protocol, rows in self.rows.items()}
        if self.spans:
            tables["conn_stats"] = self._conn_stats()
        return tables

    def _conn_stats(self) -> pa.Table:
        stats = ConnStats()
        events: list[tuple[int, int, int]] = []  # (time, 0 open / 1 close, span)
        for i, span in enumerate(self.spans):
            events += [(span.start_ns, 0, i), (span.end_ns, 1, i)]
        conns: dict[int, TrackedConnection] = {}
        for ts, kind, i in sorted(events):
            span = self.spans[i]
            if kind == 0:
                pid = int(span.end.upid.split(":")[1])
                conn = conns[i] = TrackedConnection(pid, 100 + i, 0, span.end.role, True, span.end.upid, ts)
                conn.laddr, conn.lport, conn.raddr, conn.rport = (
                    span.end.laddr,
                    span.end.lport,
                    span.end.raddr,
                    span.end.rport,
                )
                conn.family = AF_INET6 if ":" in span.end.raddr else AF_INET
                conn.protocol = PROTOCOLS[span.protocol]
                stats.opened(conn)
            else:
                stats.ended(conns[i], closed=True, totals=(span.sent, span.received))
            stats.report(ts)
        return stats.table()
