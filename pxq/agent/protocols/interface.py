"""What the connection tracker asks of a protocol: a stitcher per connection and a row buffer per
table. The model is Pixie's ``src/stirling/source_connectors/socket_tracer/protocols/common/
interface.h`` (``ParseFrame``/``StitchFrames`` per protocol, record pairs out); here one object
per connection does both, because llhttp parses incrementally and keeps its own state.

Pairs, not one transaction at a time: every call returns the list of (request, response) pairs
it completed, in the order the stitcher paired them, so a protocol with many requests in flight
on one connection (HTTP/2 streams, pipelined Redis, MySQL with several statements) fits as well
as one answering requests in turn. What a request and a response are is the protocol's business:
the tracker only hands them to the same protocol's row buffer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

# A request and its response, as the protocol's stitcher made them and its row buffer reads them.
Pair = tuple[Any, Any]


@dataclass(frozen=True)
class ParseOptions:
    """What the user chose about how much of a conversation is kept, the same for every protocol."""

    # Payload bytes kept per row (an HTTP body, a query's result text); the rest is counted.
    body_limit: int
    # False (the default everywhere): credentials (a PostgreSQL password message, the MySQL auth
    # response, Redis AUTH arguments, HTTP Authorization/Cookie values) are replaced by
    # SECRET_MARKER in the rows before anything keeps them. True only by the user's explicit choice.
    keep_secrets: bool = False


# What a row shows in place of a credential the agent did not keep.
SECRET_MARKER = "<redacted>"


class Stitcher(Protocol):
    """Both directions of one connection of one protocol: bytes in, completed pairs out.

    ``request`` says which side the bytes are: True for what the client sent, False for what the
    server sent. Nothing raises: what cannot be parsed or paired is counted in :attr:`errors`.
    """

    # Reason -> count; the protocol's registry entry says which reasons are unmatched halves.
    errors: Counter[str]
    # True once the connection left the protocol (an HTTP upgrade, a CONNECT tunnel): the tracker
    # stops parsing it and switches its data off in the kernel.
    upgraded: bool
    # Protocols that answer in order (the registry's ``pairs_in_order``): True once this stitcher
    # has seen more than one exchange in flight at once (pipelining) or an answer arriving while no
    # exchange waited for one. An "exchange" is the protocol's unit of answering in turn (an HTTP
    # request, a Redis command, a MySQL command, a PostgreSQL simple Query or extended-protocol
    # batch up to its Sync). Without request ids nothing else tells, after lost bytes, whether
    # answers to requests never seen are still coming: the tracker does not restart such a
    # connection after a loss (see conn_tracker). Protocols pairing by id leave it False.
    out_of_step: bool
    # Exchanges answered in full so far (how long a restarted connection has been seen in step).
    exchanges: int

    def feed_messages(self, request: bool, data: bytes, ts_ns: int) -> list[Pair]:
        """Bytes of one side captured at ``ts_ns``, in stream order."""
        ...

    def skip_messages(self, request: bool, n: int, ts_ns: int) -> tuple[list[Pair], int]:
        """``n`` bytes of one side that the kernel counted without copying. Returns the pairs
        completed and how many of the ``n`` bytes could not be skipped (framing needed them: the
        tracker treats those as lost)."""
        ...

    def close_messages(self, ts_ns: int) -> list[Pair]:
        """The connection ended: finish what only the end completes, count leftovers."""
        ...

    def response_gap(self, ts_ns: int) -> bool:
        """Server-side bytes were lost and the next server bytes (at ``ts_ns``) begin a response.
        True when the stitcher can go on pairing without them; False: the tracker restarts it
        at the next request."""
        ...


class ConnectionColumns(Protocol):
    """The columns every protocol table has of the connection a pair was seen on."""

    upid: str
    raddr: str
    laddr: str
    rport: int
    lport: int
    role: int


class RowBuffer(Protocol):
    """Rows of one protocol table being built, taken as an Arrow table with the catalog's schema."""

    def add_pairs(self, conn: ConnectionColumns, pairs: list[Pair], clock_offset_ns: int) -> None:
        """One row per pair; ``clock_offset_ns`` turns the pairs' timestamps into epoch time."""
        ...

    def table(self) -> Any:
        """The rows added since the last call, as a ``pyarrow.Table`` (and start over)."""
        ...

    def __len__(self) -> int: ...
