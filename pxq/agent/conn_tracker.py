"""Connection tracking for the socket tracer: kernel events in, protocol table rows out.

The kernel side (``bpf/socket_trace.c``) reports, per traced process, OPEN (connect/accept),
DATA (bytes sent or received, with their offset in the direction's stream), CLOSE, PROC_EXIT
and PROC_INFO (who a process is) events. :class:`ConnTracker` keeps each connection's identity
and lifecycle and hands its bytes to the parser of its protocol:

* **Identity.** A connection is ``(pid, fd, generation)``. The kernel hands out a new generation
  whenever an fd starts a new connection, so a reused fd never continues an old stream. An event
  with a newer generation for a known ``(pid, fd)`` ends the older connection (its close was
  missed); an event of a generation already ended is ignored (``late_event``).
* **Role.** connect() makes the traced process the client (``trace_role`` 1), accept() the
  server (2). A socket first seen carrying data (opened before the tracer attached) gets its role
  from the first bytes: whoever sends a request is the client.
* **Reassembly** is :class:`pxq.agent.data_stream.DataStream`'s: each direction ordered by the
  kernel's stream offsets, bytes behind a hole waiting (with the other direction's) so that both
  reach the parser in time order, bounded by ``reorder_limit`` bytes (more is
  ``buffer_overflow``). A hole that outlives ``HOLE_BATCHES`` poll batches, or its connection (a
  close or process exit in the same batch), means bytes were lost (ring buffer full, a call
  larger than the kernel copies): ``data_gap``, skipped to parse what waited behind it. After a
  gap in the responses of a connection whose request side lost nothing meanwhile, the stitcher
  may pair on (``response_gap``: HTTP/1 does on a connection seen answering one request at a
  time, the next response pairing with the latest request that began before it); after any
  other gap the stitcher is discarded and the connection waits for the next request (and the
  responses after it) to start over. A lost event costs the transaction it belonged to (and,
  when starting over, the ones in flight), never a request paired with another's response.
* **Pipelining after a loss** (protocols answering in order, the registry's ``pairs_in_order``:
  HTTP/1, PostgreSQL, MySQL, Redis). Starting over at the next request is right for a client
  that waits for each answer before its next request, and wrong for one that pipelines: answers
  to requests lost (or sent before the tracer looked) are still coming, and without request ids
  they look like the answers to the requests seen. So the rule is about what was *seen* of the
  connection: its stitcher reports ``out_of_step`` (more than one exchange in flight at once, or
  an answer with no exchange waiting). A connection seen out of step before a loss is given up
  (``out_of_step_after_loss``: switched off in the kernel like one of no protocol, conn_stats keep
  counting, the requests waiting counted as unmatched). Any other (in step so far, or a socket
  seen mid-stream) starts over *on probation*: the pairs its new stitcher completes are held
  until it has answered PROBATION_EXCHANGES exchanges in step; if it goes out of step, loses
  bytes again, or ends (or the window does) first, they are discarded, counted
  (``unconfirmed_after_loss``), and out of step the connection is given up. Lost bytes make a
  stitcher look out of step (an answer whose request was lost) before the hole shows: a sign
  counts only if it came before the lost bytes (the time of the bytes after which the stitcher
  was out of step, against that of the last bytes fed before the hole); a restarted connection
  out of step is given up once both directions went on past that point with nothing lost.
  The guarantee: no pair is emitted from a restarted connection unless it was seen answering
  in turn for PROBATION_EXCHANGES exchanges, and any change of the client's depth of requests
  in flight shows as out of step. The one residual case: a client that keeps exactly the same
  number of extra requests in flight at every moment from before the loss (or pickup) onward,
  for longer than the probation, is indistinguishable from one in step (nothing observable
  tells them apart without ids); its rows after the probation can pair wrongly, until its depth
  changes (then the connection is given up). DNS pairs by id and question: it starts over as
  it is.
* **Counted bytes.** A filler event (``PXQ_F_FILLER``: bytes of ``sendfile``/``splice``, or the part
  of a call beyond the kernel's copy limit) holds a stream range without its bytes
  (:class:`~pxq.agent.data_stream.Uncaptured`). It takes its place in reassembly like any bytes;
  the stitcher skips it inside a body of known length (``skip_messages``: the row keeps its true
  size and marks the body). Where framing needs the bytes (a head), it is a gap (``data_gap``).
* **Protocol inference** from the first bytes of a connection, by each protocol of the registry
  (:mod:`pxq.agent.protocols.registry`) in turn: a request (for HTTP/1.x, a request line) or a
  response (a status line), which also says which side sent it. A connection that no protocol
  recognises is switched off in the kernel (``disable``) so that its bytes stop crossing the
  ring buffer (the kernel still counts them). With no protocol asked for (``conn_stats`` alone),
  every connection is switched off when first seen.
* **conn_stats** (:class:`pxq.agent.conn_stats.ConnStats`, when given): told of each connection's
  start and end (with the byte totals its CLOSE event carries); it reads live connections' totals
  from the kernel at each report (:meth:`ConnTracker.report_conn_stats`). A UDP socket's flows
  (one per peer) are its connections too, their bytes told per datagram event (the kernel counts
  per socket).
* **Stitching** is the protocol's stitcher's (:class:`pxq.agent.protocols.interface.Stitcher`):
  request bytes and response bytes in, completed (request, response) pairs out, as many as a
  call completes (several requests may be in flight). For HTTP, latency is from the timestamp of
  the request's first byte to that of the response's last byte.
* **Rows** go into the protocol's row buffer as pairs complete; they carry the upid
  (:class:`pxq.agent.procinfo.ProcessIdentities`: /proc at first sight, else what the kernel's
  PROC_INFO event said: comm, argv, start time) and the socket's addresses: from the kernel's
  ``inet_sock_set_state`` 4-tuple, else (sockets established before attach) from
  ``/proc/<pid>/net/tcp*``, else the peer that connect()/accept() saw.

Timestamps from the kernel are CLOCK_MONOTONIC; ``clock_offset_ns`` turns them into epoch time
for ``time_``.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import NamedTuple

import pyarrow as pa

from pxq.agent import native
from pxq.agent.bpf_program import header_constants
from pxq.agent.conn_stats import ConnStats
from pxq.agent.data_stream import Arrival, Data, DataStream, Piece, Uncaptured
from pxq.agent.procinfo import ProcessIdentities
from pxq.agent.protocols.http1.rows import HttpRows
from pxq.agent.protocols.http1.stitcher import Http1Stitcher, _Direction
from pxq.agent.protocols.interface import Pair, ParseOptions, RowBuffer, Stitcher
from pxq.agent.protocols.registry import DEFAULT_BODY_LIMIT, PROTOCOLS, ProtocolSpec

_H = header_constants("socket_trace.h")
EV_DATA = _H["PXQ_EV_DATA"]
EV_OPEN = _H["PXQ_EV_OPEN"]
EV_CLOSE = _H["PXQ_EV_CLOSE"]
EV_PROC_EXIT = _H["PXQ_EV_PROC_EXIT"]
EV_PROC_INFO = _H["PXQ_EV_PROC_INFO"]
PROC_COMM_LEN = _H["PXQ_PROC_COMM_LEN"]  # PROC_INFO data: comm, then argv
F_TUPLE = _H["PXQ_F_TUPLE"]
F_REMOTE = _H["PXQ_F_REMOTE"]
F_FILLER = _H["PXQ_F_FILLER"]
F_DATAGRAM = _H["PXQ_F_DATAGRAM"]
EGRESS = _H["PXQ_DIR_EGRESS"]
INGRESS = _H["PXQ_DIR_INGRESS"]
ROLE_UNKNOWN = _H["PXQ_ROLE_UNKNOWN"]
ROLE_CLIENT = _H["PXQ_ROLE_CLIENT"]
ROLE_SERVER = _H["PXQ_ROLE_SERVER"]

AF_INET = socket.AF_INET.value
AF_INET6 = socket.AF_INET6.value

# Connection states.
PROBING = "probing"  # protocol not known yet
SYNCING = "syncing"  # protocol known, waiting for a request to (re)start parsing at
PARSING = "parsing"  # its stitcher takes its bytes
OTHER = "other"  # not a protocol pxq parses: ignored (and switched off in the kernel)

# Bytes held while the first bytes of a direction are too few to tell the protocol.
PROBE_MIN_BYTES = 16
# How many first bytes protocol inference looks at.
PROBE_BYTES = 256
# A socket first seen mid-stream (opened before attach) may start inside a message: look at this
# many data events before calling it "none of the protocols".
PROBE_TRIES = 8
# Out-of-order bytes held per connection while waiting for a hole to fill.
DEFAULT_REORDER_LIMIT = 4 << 20
# A hole still open after this many poll batches is lost data.
HOLE_BATCHES = 2
# Connections without any event for this long are ended (a process may keep an fd forever).
DEFAULT_IDLE_NS = 600 * 10**9
DEFAULT_MAX_CONNECTIONS = 65536
EVICT_EVERY_NS = 10 * 10**9
# A UDP peer (one "connection" of a UDP socket) without a datagram for this long is ended: its
# unanswered queries become rows, its memory goes.
UDP_IDLE_NS = 15 * 10**9
# Peers tracked per UDP socket (a server answering many clients); beyond it the least recently
# active one is ended (conn_evicted).
MAX_UDP_PEERS = 4096
# Datagrams of a UDP socket that no protocol recognised before it is switched off in the kernel
# (unless one of its peers was recognised).
UDP_PROBE_DATAGRAMS = 8
# Parsing of an in-order protocol restarted after a loss or on a socket picked up mid-stream: its
# pairs are held until its stitcher has answered this many exchanges without being out of step
# (see the module docstring). A lag of unseen requests shows as soon as the client's depth of
# requests in flight changes; 3 exchanges cover a client that drains a pipeline of 2 and one of
# 2 refilled once (it looks in step for 2 exchanges), at the cost of the rows of a connection
# that ends within 3 exchanges of a loss (discarded, counted).
PROBATION_EXCHANGES = 3
# Pairs held on probation per connection: beyond it, the connection is given up (counted).
MAX_PROBATION_PAIRS = 64


class SockEvent(NamedTuple):
    """One kernel event: the fields of ``struct pxq_sock_event`` in order, then the data."""

    ts_ns: int
    pos: int
    size: int
    pid: int
    fd: int
    gen: int
    data_len: int
    kind: int
    flags: int
    direction: int
    role: int
    family: int
    lport: int
    rport: int
    syscall: int
    reserved: int
    laddr: bytes
    raddr: bytes
    data: bytes = b""


def ip_text(family: int, raw: bytes) -> str:
    """An address from the kernel (network byte order) as text: ``127.0.0.1``, ``::1``."""
    if family == AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return ""


def _proc_net_address(hex_addr: str) -> str:
    """An address as /proc/net/tcp{,6} writes it (32-bit words in host order) as text."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)


def socket_endpoints(pid: int, fd: int, tables: tuple[str, ...] = ("tcp", "tcp6")) -> tuple[str, int, str, int] | None:
    """``(local_addr, local_port, remote_addr, remote_port)`` of a TCP socket fd of a live
    process, from /proc (its own network namespace); None when gone or not TCP. ``tables``
    ``("udp", "udp6")``: of a UDP socket (an unconnected one's remote is 0.0.0.0:0)."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    if not target.startswith("socket:["):
        return None
    inode = target[8:-1]
    for table in tables:
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[9] == inode:
                        local, _, lport = fields[1].partition(":")
                        remote, _, rport = fields[2].partition(":")
                        return _proc_net_address(local), int(lport, 16), _proc_net_address(remote), int(rport, 16)
        except OSError:
            continue
    return None


class Connection:
    """What the tracker knows about one (pid, fd, generation)."""

    __slots__ = (
        "pid", "fd", "gen", "role", "opened", "upid",
        "family", "laddr", "lport", "raddr", "rport", "has_tuple", "addr_checked",
        "state", "protocol", "stitcher", "stream",
        "probe_buf", "probe_ts", "probe_tries", "probe_dropped", "last_ns", "transactions", "passed_response_ns",
        "in_order", "fed_ns", "out_of_step_ns", "restarted", "held", "had_gap",
    )  # fmt: skip

    def __init__(self, pid: int, fd: int, gen: int, role: int, opened: bool, upid: str, ts_ns: int) -> None:
        self.pid, self.fd, self.gen = pid, fd, gen
        self.role = role
        self.opened = opened  # seen from connect()/accept(): its streams start at a message
        self.upid = upid
        self.family = 0
        self.laddr, self.lport, self.raddr, self.rport = "", 0, "", 0
        self.has_tuple = False
        self.addr_checked = False
        self.state = PROBING
        self.protocol: ProtocolSpec | None = None  # known from SYNCING on
        self.stitcher: Stitcher | None = None  # while PARSING
        self.stream = DataStream()
        self.probe_buf = [b"", b""]
        self.probe_ts = [0, 0]
        self.probe_tries = 0
        self.probe_dropped = False  # bytes were let go while probing (not recognised, not held)
        # While SYNCING: the time of the latest server bytes let go by. A request that began
        # before them may have had its answer among them: parsing starts at a later request.
        self.passed_response_ns = 0
        # Of an in-order protocol: the time of the last bytes of each direction fed to the stitcher
        # (bytes lost later were sent after them), and the time of the bytes after which the
        # stitcher was first out of step (0: not out of step). Bytes lost make the stitcher look out
        # of step (an answer to a request lost, a request while the answer before it was lost) before
        # the hole shows: only a stitcher out of step before the lost bytes was seen out of step.
        self.in_order = False  # its protocol's pairs_in_order, once known
        self.fed_ns = [0, 0]
        self.out_of_step_ns = 0
        # Parsing (re)started after lost bytes or from mid-stream: its stitcher must stay in step.
        self.restarted = False
        # On probation: pairs of the restarted stitcher not yet let through (None: not on probation).
        self.held: list[Pair] | None = None
        self.had_gap = False  # bytes of it were lost
        self.last_ns = ts_ns
        self.transactions = 0

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.pid, self.fd, self.gen)

    @property
    def request_direction(self) -> int:
        """The direction the client's bytes go: out of a client, into a server."""
        return EGRESS if self.role == ROLE_CLIENT else INGRESS


native.set_http1_classes(
    Connection, DataStream, Http1Stitcher, _Direction, PARSING, EV_DATA, EGRESS, INGRESS, ROLE_CLIENT
)
# The steady state of HTTP/1 connections in C (see handle_batch): a ConnTracker takes the function
# this names when made (tests name another build's, or run with native_http1=False).
HTTP1_BATCH: Callable[[list[SockEvent], int, dict[tuple[int, int, int], Connection], HttpRows, int],
                      tuple[int, int, int, int, int]] = native.http1_batch  # fmt: skip
# A walk of records for ConnTracker.handle_records: (conns, HTTP/1 rows or None, clock offset,
# the Python path for one event) -> (records, taken in C, their bytes, transactions, latest ts).
RecordWalk = Callable[
    [dict[tuple[int, int, int], Connection], HttpRows | None, int, Callable[[SockEvent], None]],
    tuple[int, int, int, int, int],
]


class PartialDatagram:
    """A datagram the kernel sent in several events (longer than one event holds)."""

    __slots__ = ("next_pos", "left", "pieces", "ts_ns", "family", "raddr", "rport", "complete")

    def __init__(self, ev: SockEvent) -> None:
        self.next_pos = ev.pos
        self.left = ev.size  # the first event's size is the datagram's length
        self.pieces: list[bytes] = []
        self.ts_ns = ev.ts_ns
        self.family, self.raddr, self.rport = ev.family, ev.raddr, ev.rport
        self.complete = True  # False once a piece was counted, not copied


class UdpSocket:
    """One UDP socket (pid, fd, generation) of a traced process: its traffic with each peer is a
    :class:`Connection` of its own (``flows``, by peer), so that a resolver asking two servers, or
    a server answering many clients on one socket, pairs each answer with a query of the same
    peer. A peer's role comes from its first datagram: sending a query (or receiving a response)
    makes the process the client."""

    __slots__ = ("pid", "fd", "gen", "upid", "flows", "partial", "recognised", "other_datagrams", "disabled",
                 "local", "last_ns")  # fmt: skip

    def __init__(self, pid: int, fd: int, gen: int, upid: str, ts_ns: int) -> None:
        self.pid, self.fd, self.gen, self.upid = pid, fd, gen, upid
        self.flows: dict[tuple[int, bytes, int], Connection] = {}  # (family, raddr, rport) -> its traffic
        self.partial: list[PartialDatagram | None] = [None, None]  # by direction
        self.recognised = False  # a peer's datagrams were a protocol's
        self.other_datagrams = 0
        self.disabled = False
        self.local: tuple[str, int] | None = None  # (laddr, lport) from /proc, once looked up
        self.last_ns = ts_ns


class ConnTracker:
    """Turn socket tracer events into protocol table rows (see the module docstring).

    ``protocols``: the registry entries to recognise and parse (default: every one).
    ``disable(pid, fd, gen)`` is called for connections of none of them (to stop their data in
    the kernel); ``forget(pid, fd, gen)`` when a connection ended without a close() the kernel saw
    (process exit, a newer generation), so the kernel can drop its entry.

    Completed pairs are written into their protocol's row buffer as they complete;
    :meth:`take_tables` gives them as Arrow tables. ``native_http1=False`` keeps HTTP/1's steady
    state in Python too (see :meth:`handle_batch`): the same results, for tests that compare.
    """

    def __init__(
        self,
        *,
        protocols: Iterable[ProtocolSpec] | None = None,
        body_limit: int = DEFAULT_BODY_LIMIT,
        keep_secrets: bool = False,
        clock_offset_ns: int = 0,
        disable: Callable[[int, int, int], None] | None = None,
        forget: Callable[[int, int, int], None] | None = None,
        reorder_limit: int = DEFAULT_REORDER_LIMIT,
        idle_ns: int = DEFAULT_IDLE_NS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        conn_stats: ConnStats | None = None,
        native_http1: bool = True,
    ) -> None:
        self.protocols = tuple(PROTOCOLS.values() if protocols is None else protocols)
        self.body_limit = body_limit
        self.parse_options = ParseOptions(body_limit=body_limit, keep_secrets=keep_secrets)
        self.clock_offset_ns = clock_offset_ns
        self._disable = disable
        self._forget = forget
        self.reorder_limit = reorder_limit
        self.idle_ns = idle_ns
        self.max_connections = max_connections
        # conn_stats counters, when asked for: told of every connection's start and end.
        self.conn_stats = conn_stats
        self.conns: dict[tuple[int, int, int], Connection] = {}
        # UDP sockets by (pid, fd), and the fds of each process that have one.
        self.udp: dict[tuple[int, int], UdpSocket] = {}
        self._udp_by_pid: dict[int, set[int]] = {}
        # pid -> fd -> (newest generation seen, whether the kernel reported its close)
        self._latest_gen: dict[int, dict[int, tuple[int, bool]]] = {}
        self._by_pid: dict[int, set[Connection]] = {}  # live connections of each process
        self.pids_seen: set[int] = set()  # every process a connection was seen of
        self._upids: dict[int, str] = {}
        self.identities = ProcessIdentities()  # the agent may share one between its collectors
        # One row buffer per protocol, by protocol name.
        self.rows: dict[str, RowBuffer] = {spec.name: spec.make_rows(self.parse_options) for spec in self.protocols}
        # HTTP/1's steady state in C (handle_batch); ``native_http1=False``: all in Python (for tests).
        http_rows = self.rows.get("http")
        self._http1_rows = http_rows if native_http1 and type(http_rows) is HttpRows else None
        self._http1_batch = HTTP1_BATCH
        # Connections with bytes waiting behind a hole, in the order their holes opened (a dict, not
        # a set: end_batch skips them in that order, so rows come in the same order every run).
        self._holes: dict[Connection, None] = {}
        self.drops: Counter[str] = Counter()
        # Protocol name -> its stitchers' error counts, of stitchers already discarded.
        self.protocol_errors: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.counts: Counter[str] = Counter()
        self._last_ts = 0
        self._last_evict_ns = 0

    # -- events -----------------------------------------------------------------------------
    def handle(self, ev: SockEvent) -> None:
        """Take one kernel event (in ring buffer order)."""
        self.counts["events"] += 1
        if ev.ts_ns > self._last_ts:
            self._last_ts = ev.ts_ns
        kind = ev.kind
        if kind == EV_DATA:
            conn = self.conns.get((ev.pid, ev.fd, ev.gen))
            if conn is None or ev.flags:
                if ev.flags & F_DATAGRAM:
                    self._on_datagram(ev)
                    return
                conn = self._connection(ev, opened=False)
                if conn is None:
                    return
            else:
                conn.last_ns = ev.ts_ns
            self.counts["bytes"] += ev.data_len
            d = ev.direction
            stream = conn.stream
            if conn.state == PARSING and stream.expect[d] == ev.pos and not ev.flags and not stream.held_bytes:
                # The common case: the next bytes of a parsed connection, in order, nothing waiting.
                stream.expect[d] = ev.pos + ev.data_len
                self._feed(conn, d, ev.ts_ns, ev.data)
            else:
                self._on_data(conn, ev)
        elif kind == EV_OPEN:
            self._connection(ev, opened=True)
        elif kind == EV_CLOSE:
            conn = self.conns.get((ev.pid, ev.fd, ev.gen))
            if conn is not None:  # the event carries the connection's byte totals (conn_stats)
                self._end(conn, ev.ts_ns, forget=False, totals=(ev.pos, ev.size))
            sock = self.udp.get((ev.pid, ev.fd))
            if sock is not None and sock.gen <= ev.gen:
                self._end_udp(sock, ev.ts_ns, forget=False, totals=(ev.pos, ev.size) if sock.gen == ev.gen else None)
            fds = self._latest_gen.setdefault(ev.pid, {})
            latest = fds.get(ev.fd)
            if latest is None or latest[0] <= ev.gen:
                fds[ev.fd] = (ev.gen, True)
        elif kind == EV_PROC_EXIT:
            self.process_exited(ev.pid, ev.ts_ns)
        elif kind == EV_PROC_INFO:
            self._process_info(ev)

    def handle_all(self, events: Iterable[SockEvent]) -> None:
        self.handle_batch(events)
        self.end_batch()

    def handle_batch(self, events: Iterable[SockEvent]) -> None:
        """:meth:`handle` each event, in order. The common event (the next bytes of a connection
        being parsed, in order, nothing waiting) is taken without handle()'s dispatch
        (:meth:`take_event`). Of those, the ones of an HTTP/1 connection in its steady state
        (whole plain messages, in step, nothing unusual) are taken by one C call per run of them
        (``http1_batch`` in pxq/agent/_native.c), which leaves everything as the Python path would
        and stops at the first event it does not take."""
        if type(events) is not list:
            events = list(events)
        conns = self.conns
        take_event = self.take_event
        http1_rows, http1_batch = self._http1_rows, self._http1_batch
        offset = self.clock_offset_ns
        i, n = 0, len(events)
        while i < n:
            if http1_rows is not None:
                i, taken, taken_bytes, transactions, max_ts = http1_batch(events, i, conns, http1_rows, offset)
                if taken:
                    self._taken_in_c(taken, taken_bytes, transactions, max_ts)
                if i >= n:
                    break
            take_event(events[i])
            i += 1

    def handle_records(self, walk: RecordWalk) -> int:
        """:meth:`handle_batch` of the records ``walk`` reads (a ring buffer's, RingReader.take in
        pxq/agent/socket_tracer.py), with no SockEvent made for the HTTP/1 steady state: the walk
        takes those events in C straight from the ring buffer's memory, and hands every other one
        to :meth:`take_event` as a SockEvent, in order. Returns the records read."""
        records, taken, taken_bytes, transactions, max_ts = walk(
            self.conns, self._http1_rows, self.clock_offset_ns, self.take_event
        )
        if taken:
            self._taken_in_c(taken, taken_bytes, transactions, max_ts)
        return records

    def _taken_in_c(self, events: int, nbytes: int, transactions: int, max_ts: int) -> None:
        counts = self.counts
        counts["events"] += events
        counts["bytes"] += nbytes
        if transactions:
            counts["transactions"] += transactions
        if max_ts > self._last_ts:
            self._last_ts = max_ts

    def take_event(self, ev: SockEvent) -> None:
        """:meth:`handle` one event, the common one (the next bytes of a connection being parsed,
        in order, nothing waiting) without handle()'s dispatch."""
        ts_ns, pos, _, pid, fd, gen, data_len, kind, flags, d, _, _, _, _, _, _, _, _, data = ev
        if kind == EV_DATA and not flags:
            conn = self.conns.get((pid, fd, gen))
            if conn is not None and conn.state == PARSING:
                stream = conn.stream
                if stream.expect[d] == pos and not stream.held_bytes:
                    counts = self.counts
                    counts["events"] += 1
                    counts["bytes"] += data_len
                    if ts_ns > self._last_ts:
                        self._last_ts = ts_ns
                    conn.last_ns = ts_ns
                    stream.expect[d] = pos + data_len
                    self._feed(conn, d, ts_ns, data)
                    return
        self.handle(ev)

    def process_exited(self, pid: int, ts_ns: int) -> None:
        """A traced process is gone: its connections end (the kernel closed its fds)."""
        for conn in list(self._by_pid.get(pid, ())):
            self._end(conn, ts_ns, forget=True)
        for fd in list(self._udp_by_pid.get(pid, ())):
            self._end_udp(self.udp[(pid, fd)], ts_ns, forget=True)
        self._latest_gen.pop(pid, None)
        self._upids.pop(pid, None)

    def end_batch(self) -> None:
        """End of one ring buffer drain: holes that stay open for HOLE_BATCHES batches were lost
        data; idle connections are ended."""
        for conn in list(self._holes):
            conn.stream.hole_batches += 1
            if conn.stream.hole_batches >= HOLE_BATCHES:
                self._skip_holes(conn)
        if len(self.conns) > self.max_connections or self._last_ts - self._last_evict_ns > EVICT_EVERY_NS:
            self._last_evict_ns = self._last_ts
            self._evict_idle()

    def close_all(self) -> None:
        """The tracer stops: finish every connection (close-delimited bodies complete). A request
        still waiting for its response was cut by the end of the capture window, not lost: it is
        not counted as unmatched."""
        for conn in list(self._holes):
            self._skip_holes(conn)
        for conn in list(self.conns.values()):
            self._end(conn, self._last_ts, forget=False, window_end=True)
        for sock in list(self.udp.values()):
            self._end_udp(sock, self._last_ts, forget=False, window_end=True)

    # -- connections ------------------------------------------------------------------------
    def _upid(self, pid: int) -> str:
        upid = self._upids.get(pid)
        if upid is None:  # no PROC_INFO event (lost): /proc, or start time 0 when gone already
            upid = self._upids[pid] = self.identities.identify(pid)
        return upid

    def _process_info(self, ev: SockEvent) -> None:
        """The kernel says who process ``ev.pid`` is, before its first connection's events."""
        data = ev.data[: ev.data_len]
        comm = bytes(data[:PROC_COMM_LEN]).split(b"\0", 1)[0].decode(errors="replace")
        self._upids[ev.pid] = self.identities.identify(
            ev.pid, comm=comm, start_boot_ns=ev.pos, argv=bytes(data[PROC_COMM_LEN:])
        )

    def _connection(self, ev: SockEvent, opened: bool) -> Connection | None:
        key = (ev.pid, ev.fd, ev.gen)
        conn = self.conns.get(key)
        if conn is None:
            fds = self._latest_gen.setdefault(ev.pid, {})
            latest = fds.get(ev.fd)
            if latest is not None:
                gen, closed = latest
                if ev.gen < gen or (ev.gen == gen and closed):
                    self.drops["late_event"] += 1  # of a connection already over
                    return None
                if ev.gen > gen:
                    old = self.conns.get((ev.pid, ev.fd, gen))
                    if old is not None:  # its close was missed: the fd holds a new connection now
                        self._end(old, ev.ts_ns, forget=False)
                else:
                    opened = False  # ended by the tracker (idle): pick it up again mid-stream
            fds[ev.fd] = (ev.gen, False)
            conn = Connection(ev.pid, ev.fd, ev.gen, ev.role, opened, self._upid(ev.pid), ev.ts_ns)
            if latest is not None and latest[0] == ev.gen:  # its offsets went on meanwhile
                conn.stream.start_anywhere()
            self.conns[key] = conn
            self._by_pid.setdefault(ev.pid, set()).add(conn)
            self.pids_seen.add(ev.pid)
            self.counts["connections"] += 1
            new = True
        else:
            new = False
            if opened and not conn.opened and not conn.had_gap and conn.state == PROBING and not conn.probe_dropped:
                # Its OPEN came after its first bytes (events of two CPUs), all still held whole:
                # it is seen from its start after all.
                conn.opened = True
                if conn.role == ROLE_UNKNOWN:
                    conn.role = ev.role
            elif opened and not conn.opened and not conn.had_gap and conn.state in (SYNCING, PARSING):
                # The same, its first bytes already recognised: no restart, nothing to prove.
                conn.opened = True
                conn.restarted = False
                held, conn.held = conn.held, None
                if held:
                    self._collect(conn, held)
        conn.last_ns = ev.ts_ns
        if ev.flags & F_TUPLE and not conn.has_tuple:
            conn.family = ev.family
            conn.laddr, conn.lport = ip_text(ev.family, ev.laddr), ev.lport
            conn.raddr, conn.rport = ip_text(ev.family, ev.raddr), ev.rport
            conn.has_tuple = True
        elif ev.flags & F_REMOTE and not conn.has_tuple:
            conn.family = ev.family
            conn.raddr, conn.rport = ip_text(ev.family, ev.raddr), ev.rport
        if new:
            if self.conn_stats is not None:
                self.conn_stats.opened(conn)
            if not self.protocols:  # conn_stats only: no data of any connection is wanted
                self._give_up(conn)
        return conn

    def _end(self, conn: Connection, ts_ns: int, *, forget: bool, window_end: bool = False, evicted: bool = False,
             totals: tuple[int, int] | None = None) -> None:  # fmt: skip
        """The connection is over: flush the parser and let it go. ``forget``: the kernel still
        has an entry for it (it saw no close()), which can go too. ``window_end``: the tracer
        stops, the connection itself goes on (what is unfinished is not a loss). ``evicted``:
        idle, it may still be open. ``totals``: its (sent, received) bytes, from its CLOSE."""
        if self.conn_stats is not None:  # before _forget: the kernel's entry still has its totals
            self.conn_stats.ended(conn, closed=not (window_end or evicted), totals=totals)
        self.conns.pop(conn.key, None)
        live = self._by_pid.get(conn.pid)
        if live is not None:
            live.discard(conn)
            if not live:
                del self._by_pid[conn.pid]
        if conn.stream.held_bytes:
            # The connection is over, so the missing bytes are not coming: skip each hole (a
            # data_gap each) and parse what waited behind it, as close_all does, instead of
            # dropping every transaction completed after the hole.
            self._skip_holes(conn)
        self._holes.pop(conn, None)
        if conn.stitcher is not None:
            before_close = Counter(conn.stitcher.errors)
            self._stitched(conn, conn.stitcher.close_messages(ts_ns), ts_ns)
            if conn.stitcher is not None:
                self._drop_stitcher(conn, keep_unmatched_at_close=not window_end, counted_before=before_close)
        self._discard_held(conn)  # never confirmed in step: not emitted
        if forget and self._forget is not None:
            self._forget(conn.pid, conn.fd, conn.gen)

    def _drop_stitcher(
        self, conn: Connection, *, keep_unmatched_at_close: bool = True, counted_before: Counter[str] | None = None
    ) -> None:
        """The connection's stitcher goes: keep its error counts. Without
        ``keep_unmatched_at_close``, the halves left unmatched at its end are not counted (the
        capture window ended, not the connection; or bytes were lost and the stitcher restarts,
        where the gap is what is counted). ``counted_before``: its counts before the end was
        flushed; those were losses in the middle of the connection (a response without its
        request, say) and stay counted whatever ended it."""
        stitcher, spec = conn.stitcher, conn.protocol
        assert stitcher is not None and spec is not None
        errors = stitcher.errors
        if not keep_unmatched_at_close:
            kept = counted_before if counted_before is not None else Counter()
            errors = Counter({k: (n if k not in spec.unmatched_at_close else kept[k]) for k, n in errors.items()})
            errors = +errors  # drop zero counts
        self.protocol_errors[spec.name].update(errors)
        conn.stitcher = None

    def _evict_idle(self) -> None:
        cutoff = self._last_ts - self.idle_ns
        idle = [c for c in self.conns.values() if c.last_ns < cutoff]
        if len(self.conns) - len(idle) > self.max_connections:
            by_age = sorted(self.conns.values(), key=lambda c: c.last_ns)
            idle = by_age[: len(self.conns) - self.max_connections]
            self.drops["conn_evicted"] += len(idle)
        for conn in idle:
            self._end(conn, self._last_ts, forget=True, evicted=True)
        self._evict_idle_udp()

    # -- UDP ---------------------------------------------------------------------------------
    def _on_datagram(self, ev: SockEvent) -> None:
        """An event of a UDP datagram (or a piece of one): whole datagrams go to their peer's
        :class:`Connection`; a datagram with bytes the kernel did not copy cannot be parsed
        (``data_gap``)."""
        key = (ev.pid, ev.fd)
        sock = self.udp.get(key)
        if (
            sock is not None
            and sock.gen == ev.gen
            and ev.flags == F_DATAGRAM
            and ev.data_len == ev.size
            and not sock.disabled
            and sock.partial[ev.direction] is None
        ):  # the usual case, in short: a whole datagram in one event, of a socket known
            sock.last_ns = ev.ts_ns
            self.counts["bytes"] += ev.data_len
            if self.conn_stats is not None:
                self._count_peer_bytes(sock, ev, ev.data_len)
            self._datagram(sock, ev.direction, ev.ts_ns, ev.family, ev.raddr, ev.rport, bytes(ev.data[: ev.data_len]))
            return
        if sock is None or sock.gen != ev.gen:
            if sock is not None:
                if ev.gen < sock.gen:
                    self.drops["late_event"] += 1
                    return
                self._end_udp(sock, ev.ts_ns, forget=False)  # the fd holds another socket now
            fds = self._latest_gen.setdefault(ev.pid, {})
            latest = fds.get(ev.fd)
            if latest is not None and (ev.gen < latest[0] or (ev.gen == latest[0] and latest[1])):
                self.drops["late_event"] += 1  # of a socket already closed
                return
            fds[ev.fd] = (ev.gen, False)
            sock = self.udp[key] = UdpSocket(ev.pid, ev.fd, ev.gen, self._upid(ev.pid), ev.ts_ns)
            self._udp_by_pid.setdefault(ev.pid, set()).add(ev.fd)
            self.pids_seen.add(ev.pid)
            self.counts["udp_sockets"] += 1
        sock.last_ns = ev.ts_ns
        self.counts["bytes"] += ev.data_len
        d = ev.direction
        filler = bool(ev.flags & F_FILLER)
        if self.conn_stats is not None:
            self._count_peer_bytes(sock, ev, ev.size if filler else ev.data_len)
        if sock.disabled:
            return
        part = sock.partial[d]
        if filler:
            self.counts["filler_bytes"] += ev.size
        if part is not None and part.next_pos == ev.pos and part.left > 0:
            pass  # the next piece of the datagram in progress
        elif filler:
            self.drops["data_gap"] += 1  # the rest of a datagram whose head was lost
            sock.partial[d] = None
            return
        else:
            if part is not None:
                self.drops["data_gap"] += 1  # a datagram whose last pieces were lost
                sock.partial[d] = None
            data = ev.data[: ev.data_len]
            if ev.data_len == ev.size:  # the usual case: the whole datagram in one event
                self._datagram(sock, d, ev.ts_ns, ev.family, ev.raddr, ev.rport, bytes(data))
                return
            part = sock.partial[d] = PartialDatagram(ev)
        if filler:
            part.complete = False
            size = ev.size
        else:
            part.pieces.append(bytes(ev.data[: ev.data_len]))
            size = ev.data_len
        part.next_pos = ev.pos + size
        part.left -= size
        if part.left <= 0:
            sock.partial[d] = None
            if not part.complete:
                self.drops["data_gap"] += 1  # longer than the kernel copies: not parsed
                return
            self._datagram(sock, d, part.ts_ns, part.family, part.raddr, part.rport, b"".join(part.pieces))

    def _count_peer_bytes(self, sock: UdpSocket, ev: SockEvent, size: int) -> None:
        """conn_stats of a UDP peer: the kernel counts per socket, each peer's bytes are counted here."""
        assert self.conn_stats is not None
        peer = (ev.family, bytes(ev.raddr[:16]), ev.rport)
        flow = sock.flows.get(peer) or self._new_flow(sock, peer, ev.ts_ns)
        self.conn_stats.moved(flow, egress=ev.direction == EGRESS, size=size)

    def _datagram(self, sock: UdpSocket, d: int, ts_ns: int, family: int, raddr: bytes, rport: int,
                  data: bytes) -> None:  # fmt: skip
        peer = (family, bytes(raddr[:16]), rport)
        flow = sock.flows.get(peer)
        if flow is None:
            flow = self._new_flow(sock, peer, ts_ns)
        flow.last_ns = ts_ns
        if flow.state == OTHER:
            if flow.probe_tries >= PROBE_TRIES:
                return
            flow.probe_tries += 1
        if flow.state != PARSING and not self._probe_datagram(sock, flow, d, data):
            return
        stitcher = flow.stitcher
        assert stitcher is not None
        done = stitcher.feed_messages(d == flow.request_direction, data, ts_ns)
        if done:
            self._collect(flow, done)

    def _new_flow(self, sock: UdpSocket, peer: tuple[int, bytes, int], ts_ns: int) -> Connection:
        if len(sock.flows) >= MAX_UDP_PEERS:
            oldest = min(sock.flows.values(), key=lambda c: c.last_ns)
            self.drops["conn_evicted"] += 1
            self._end_flow(sock, oldest, ts_ns, window_end=False)
        family, raddr, rport = peer
        flow = Connection(sock.pid, sock.fd, sock.gen, ROLE_UNKNOWN, True, sock.upid, ts_ns)
        flow.family = family
        flow.raddr, flow.rport = ip_text(family, raddr), rport
        flow.addr_checked = True  # the local end is the socket's, looked up once per socket
        flow.state = OTHER
        sock.flows[peer] = flow
        self.counts["connections"] += 1
        if self.conn_stats is not None:
            self.conn_stats.opened(flow, datagram=True)
        return flow

    def _probe_datagram(self, sock: UdpSocket, flow: Connection, d: int, data: bytes) -> bool:
        """Protocol inference on a whole datagram, by each protocol that runs over UDP; True when
        one recognised it (the flow is PARSING then). A socket none of whose peers was recognised
        after UDP_PROBE_DATAGRAMS datagrams is switched off in the kernel."""
        for spec in self.protocols:
            over_udp = spec.datagrams
            if over_udp is None:
                continue
            sender_is_client = over_udp.sender_is_client(data)
            if sender_is_client is None:
                continue
            flow.role = ROLE_CLIENT if (d == EGRESS) == sender_is_client else ROLE_SERVER
            flow.protocol = spec
            flow.state = PARSING
            flow.stitcher = over_udp.make_stitcher(self.parse_options)
            if sock.local is None:
                found = socket_endpoints(sock.pid, sock.fd, ("udp", "udp6"))
                sock.local = (found[0], found[1]) if found is not None else ("", 0)
            flow.laddr, flow.lport = sock.local
            if not sock.recognised:
                sock.recognised = True
                self.counts[f"{spec.name}_connections"] += 1
            return True
        sock.other_datagrams += 1
        if not sock.recognised and sock.other_datagrams >= UDP_PROBE_DATAGRAMS:
            sock.disabled = True
            self.counts["other_connections"] += 1
            if self.conn_stats is not None:
                self.conn_stats.switched_off((sock.pid, sock.fd, sock.gen))
            if self._disable is not None:
                self._disable(sock.pid, sock.fd, sock.gen)
        return False

    def _end_flow(self, sock: UdpSocket, flow: Connection, ts_ns: int, *, window_end: bool) -> None:
        sock.flows.pop((flow.family, _raw_ip(flow.family, flow.raddr), flow.rport), None)
        if self.conn_stats is not None:  # a UDP flow ends only by silence or with its socket: closed
            self.conn_stats.ended(flow, closed=not window_end)
        if flow.stitcher is not None:
            before_close = Counter(flow.stitcher.errors)
            self._collect(flow, flow.stitcher.close_messages(ts_ns))
            self._drop_stitcher(flow, keep_unmatched_at_close=not window_end, counted_before=before_close)

    def _end_udp(self, sock: UdpSocket, ts_ns: int, *, forget: bool, window_end: bool = False,
                 totals: tuple[int, int] | None = None) -> None:  # fmt: skip
        """The socket is closed (or its process gone, or the window over): every peer ends.
        ``totals``: the socket's (sent, received) bytes, from its CLOSE."""
        if self.conn_stats is not None:
            self.conn_stats.udp_socket_ended((sock.pid, sock.fd, sock.gen), totals)
        for flow in list(sock.flows.values()):
            self._end_flow(sock, flow, ts_ns, window_end=window_end)
        if sock.partial != [None, None]:
            sock.partial = [None, None]
            self.drops["data_gap"] += 1  # a datagram whose last pieces never came
        if self.udp.get((sock.pid, sock.fd)) is sock:
            del self.udp[(sock.pid, sock.fd)]
            fds = self._udp_by_pid.get(sock.pid)
            if fds is not None:
                fds.discard(sock.fd)
                if not fds:
                    del self._udp_by_pid[sock.pid]
        if forget and self._forget is not None:
            self._forget(sock.pid, sock.fd, sock.gen)

    def _evict_idle_udp(self) -> None:
        """Peers without a datagram for UDP_IDLE_NS end; so do sockets left without any."""
        cutoff = self._last_ts - UDP_IDLE_NS
        for sock in list(self.udp.values()):
            if sock.disabled:  # no datagram shows its peers active: they last as long as it does
                continue
            for flow in [f for f in sock.flows.values() if f.last_ns < cutoff]:
                self._end_flow(sock, flow, self._last_ts, window_end=False)
            if not sock.flows and sock.last_ns < cutoff and not sock.disabled:
                self._end_udp(sock, self._last_ts, forget=True)

    # -- bytes ------------------------------------------------------------------------------
    def _on_data(self, conn: Connection, ev: SockEvent) -> None:
        if conn.state == OTHER:
            return
        data: Data = ev.data
        if ev.flags & F_FILLER:
            data = Uncaptured(ev.size)
            self.counts["filler_bytes"] += ev.size
        arrival, data = conn.stream.arrive(ev.direction, ev.pos, ev.ts_ns, data)
        if arrival == Arrival.IN_ORDER:
            self._deliver(conn, ev.direction, ev.ts_ns, data)
        elif arrival != Arrival.OLD:
            self._holes[conn] = None
            if conn.stream.held_bytes > self.reorder_limit:
                self.drops["buffer_overflow"] += 1
                self._skip_holes(conn)
            elif arrival == Arrival.FILLED:
                self._release(conn)

    def _release(self, conn: Connection, lost: bool = False) -> None:
        """Parse the bytes that waited behind a hole, up to the next hole (see
        :meth:`DataStream.release`). ``lost``: the missing bytes are not coming: each hole is a
        ``data_gap``."""
        for piece in conn.stream.release(lost):
            if piece.after_gap:
                self.drops["data_gap"] += 1
                if not (piece.other_intact and self._response_gap(conn, piece)):
                    self._gap(conn, conn.fed_ns[piece.direction])
            if piece.data:
                self._deliver(conn, piece.direction, piece.ts_ns, piece.data)
        if not conn.stream.waiting:
            self._holes.pop(conn, None)

    def _skip_holes(self, conn: Connection) -> None:
        """The missing bytes are not coming: jump over each hole, losing what was there."""
        self._release(conn, lost=True)

    def _response_gap(self, conn: Connection, piece: Piece) -> bool:
        """Bytes lost on the response side of a parsed connection, and the bytes after the hole
        begin a response: let the stitcher pair on by time (it declines where it cannot tell).
        The caller has checked that the request side lost nothing up to there (its next bytes,
        later in time, follow on). False: start over with _gap."""
        if conn.state != PARSING or conn.stitcher is None or conn.protocol is None:
            return False
        if piece.direction == conn.request_direction:
            return False
        data = piece.data
        if type(data) is not bytes or not conn.protocol.looks_like_response(data[:64]):
            return False
        return conn.stitcher.response_gap(piece.ts_ns)

    def _gap(self, conn: Connection, lost_after_ns: int) -> None:
        """Bytes sent after ``lost_after_ns`` were lost: the parser cannot continue; restart at the
        next request. A connection of an in-order protocol seen out of step before the loss is
        given up instead (see the module docstring)."""
        spec = conn.protocol
        if spec is not None and spec.pairs_in_order and conn.state in (PARSING, SYNCING):
            if 0 < conn.out_of_step_ns <= lost_after_ns:
                self._give_up_out_of_step(conn, [])
                return
            conn.restarted = conn.had_gap = True
            self._discard_held(conn)  # what it paired since the last restart was never confirmed
        if conn.stitcher is not None:
            self._drop_stitcher(conn, keep_unmatched_at_close=False)
        if conn.state in (PARSING, SYNCING):
            conn.state = SYNCING
            conn.probe_buf = [b"", b""]  # bytes held before the gap do not continue after it
        elif conn.state == PROBING:
            conn.opened = False  # no longer at the stream's start: probe like a mid-stream socket
            conn.had_gap = conn.probe_dropped = True
            conn.probe_buf = [b"", b""]

    # -- protocol ---------------------------------------------------------------------------
    def _deliver(self, conn: Connection, d: int, ts_ns: int, data: Data) -> None:
        state = conn.state
        if isinstance(data, Uncaptured):
            self._uncaptured(conn, d, ts_ns, data.size)
        elif state == PARSING:
            self._feed(conn, d, ts_ns, data)
        elif state == SYNCING:
            spec = conn.protocol
            assert spec is not None
            if d != conn.request_direction:
                conn.passed_response_ns = max(conn.passed_response_ns, ts_ns)
            else:
                if conn.probe_buf[d]:  # a short read held back: a MySQL server reads a packet's header alone
                    data, ts_ns, conn.probe_buf[d] = conn.probe_buf[d] + data, conn.probe_ts[d], b""
                if ts_ns > conn.passed_response_ns and spec.looks_like_request(data[:PROBE_BYTES]):
                    self._start_parsing(conn, d, ts_ns, data)
                elif len(data) < PROBE_MIN_BYTES:
                    conn.probe_buf[d], conn.probe_ts[d] = data, ts_ns
        elif state == PROBING:
            self._probe(conn, d, ts_ns, data)

    def _uncaptured(self, conn: Connection, d: int, ts_ns: int, size: int) -> None:
        """``size`` bytes moved unseen: skipped inside a body of known length; anywhere else the
        parser cannot go on without them (a gap, counted)."""
        if conn.state == PARSING and conn.stitcher is not None:
            conn.fed_ns[d] = ts_ns
            done, left = conn.stitcher.skip_messages(d == conn.request_direction, size, ts_ns)
            self._stitched(conn, done, ts_ns)
            if not left or conn.state != PARSING:
                return
        elif conn.state != PROBING and not (conn.state == SYNCING and d == conn.request_direction):
            return  # OTHER is not parsed; SYNCING drops server bytes up to a request anyway
        # (SYNCING, client bytes: the request it would start at, or its rest, lost: counted)
        self.drops["data_gap"] += 1
        self._gap(conn, ts_ns)

    def _probe(self, conn: Connection, d: int, ts_ns: int, data: bytes) -> None:
        held = conn.probe_buf[d]
        if not held:
            self._probe_bytes(conn, d, ts_ns, data)
            return
        conn.probe_buf[d] = b""
        if self._probe_bytes(conn, d, conn.probe_ts[d], held + data) or conn.opened or conn.state != PROBING:
            return
        # A socket not seen opening held bytes that might have begun a message; with these they
        # begin none: they were from inside one (mid-stream). These may begin one on their own.
        self._probe_bytes(conn, d, ts_ns, data)

    def _probe_bytes(self, conn: Connection, d: int, ts_ns: int, data: bytes) -> bool:
        """Protocol inference on ``data``: False when they were let go (not recognised, not held)."""
        head = data[:PROBE_BYTES]
        if len(head) < PROBE_MIN_BYTES and b"\n" not in head:
            conn.probe_buf[d], conn.probe_ts[d] = data, ts_ns  # too few bytes to tell yet
            return True
        for spec in self.protocols:
            sender_is_client = spec.sender_is_client(head)
            if sender_is_client is None:
                continue
            role = ROLE_CLIENT if (d == EGRESS) == sender_is_client else ROLE_SERVER
            if conn.role == ROLE_UNKNOWN:
                conn.role = role
            if conn.role != role:
                continue
            self.counts[f"{spec.name}_connections"] += 1
            conn.protocol = spec
            if sender_is_client:
                self._start_parsing(conn, d, ts_ns, data)
            else:
                conn.state = SYNCING  # a response whose request went by before we looked
                conn.passed_response_ns = ts_ns
            return True
        conn.probe_tries += 1
        if (
            (conn.opened or not conn.probe_dropped)
            and conn.probe_tries < PROBE_TRIES
            and any(spec.head_incomplete(head) for spec in self.protocols)
        ):
            # A connection's first message split over reads that a protocol could still
            # recognise once it is whole (a DNS query over TCP read as its length, then in parts);
            # also on a socket not seen opening while nothing of it was let go: its OPEN may
            # still come (events of two CPUs), and these bytes are then its start.
            conn.probe_buf[d], conn.probe_ts[d] = data, ts_ns
            return True
        conn.probe_dropped = True
        if conn.opened or conn.probe_tries >= PROBE_TRIES:
            self._give_up(conn)
        return False

    def _give_up(self, conn: Connection) -> None:
        """Not a protocol pxq parses: no more of its bytes (the kernel still counts them)."""
        conn.state = OTHER
        conn.probe_buf = [b"", b""]
        self.counts["other_connections"] += 1
        if self._disable is not None:
            self._disable(conn.pid, conn.fd, conn.gen)

    def _start_parsing(self, conn: Connection, d: int, ts_ns: int, data: bytes) -> None:
        spec = conn.protocol
        assert spec is not None
        conn.state = PARSING
        conn.stitcher = spec.make_stitcher(self.parse_options)
        conn.out_of_step_ns = 0
        conn.in_order = spec.pairs_in_order
        if not conn.opened and not conn.had_gap and d == conn.request_direction and spec.session_start(data[:8]):
            conn.opened = True  # its first bytes begin a session: nothing went by before
        if spec.pairs_in_order and (conn.restarted or not conn.opened):
            conn.restarted = True
            conn.held = []  # on probation
        self._feed(conn, d, ts_ns, data)

    def _feed(self, conn: Connection, d: int, ts_ns: int, data: bytes) -> None:
        stitcher = conn.stitcher
        assert stitcher is not None
        conn.fed_ns[d] = ts_ns
        done = stitcher.feed_messages(d == conn.request_direction, data, ts_ns)
        if conn.restarted or (conn.in_order and not conn.out_of_step_ns and stitcher.out_of_step):
            self._stitched(conn, done, ts_ns)
        elif done:
            self._collect(conn, done)
        if stitcher.upgraded and conn.stitcher is stitcher:
            self._end_parsing(conn)  # websocket or a CONNECT tunnel: not the protocol from here on

    def _stitched(self, conn: Connection, pairs: list[Pair], ts_ns: int) -> None:
        """After a call at ``ts_ns`` to the stitcher of a TCP connection: its pairs go to the
        rows, unless its parsing restarted after a loss or from mid-stream and it is on probation
        (held until it has answered PROBATION_EXCHANGES exchanges in step) or out of step (held
        until both directions went on past that point with nothing lost: then the connection is
        given up; a loss found before then restarts it, see _gap)."""
        stitcher = conn.stitcher
        assert stitcher is not None
        if conn.in_order and not conn.out_of_step_ns and stitcher.out_of_step:
            conn.out_of_step_ns = ts_ns
        if conn.restarted:
            held = conn.held
            if conn.out_of_step_ns:
                if held is None:
                    held = conn.held = []
                held += pairs
                if min(conn.fed_ns) > conn.out_of_step_ns or len(held) > MAX_PROBATION_PAIRS:
                    self._give_up_out_of_step(conn, [])
                return
            if held is not None:
                held += pairs
                if len(held) > MAX_PROBATION_PAIRS:
                    self._give_up_out_of_step(conn, [])
                    return
                if stitcher.exchanges < PROBATION_EXCHANGES:
                    return
                pairs, conn.held = held, None  # in step long enough: confirmed
        if pairs:
            self._collect(conn, pairs)

    def _discard_held(self, conn: Connection) -> None:
        """Pairs on probation that will not be confirmed: counted, never emitted."""
        if conn.held:
            self.drops["unconfirmed_after_loss"] += len(conn.held)
        conn.held = None

    def _give_up_out_of_step(self, conn: Connection, pairs: list[Pair]) -> None:
        """A loss on a connection of an in-order protocol seen out of step, or a restarted one
        going out of step: answers of requests never seen may be on their way, and nothing tells
        which. No more parsing (switched off in the kernel; conn_stats keep counting). Its pairs
        on probation (and ``pairs``) are discarded, the requests waiting counted as unmatched."""
        self.drops["out_of_step_after_loss"] += 1
        if conn.held is None:
            conn.held = []
        conn.held += pairs
        stitcher = conn.stitcher
        if stitcher is not None:
            conn.held += stitcher.close_messages(self._last_ts)  # leftovers counted by the stitcher
            self._drop_stitcher(conn)
        self._discard_held(conn)
        conn.state = OTHER
        conn.probe_buf = [b"", b""]
        if self._disable is not None:
            self._disable(conn.pid, conn.fd, conn.gen)

    def _end_parsing(self, conn: Connection) -> None:
        self._discard_held(conn)
        self._drop_stitcher(conn)
        conn.state = OTHER
        if self._disable is not None:
            self._disable(conn.pid, conn.fd, conn.gen)

    def _collect(self, conn: Connection, pairs: list[Pair]) -> None:
        if not pairs:
            return
        if not conn.has_tuple and not conn.addr_checked:
            conn.addr_checked = True
            found = socket_endpoints(conn.pid, conn.fd)
            if found is not None:
                conn.laddr, conn.lport, conn.raddr, conn.rport = found
        spec = conn.protocol
        assert spec is not None
        self.rows[spec.name].add_pairs(conn, pairs, self.clock_offset_ns)
        conn.transactions += len(pairs)
        self.counts["transactions"] += len(pairs)

    # -- results ----------------------------------------------------------------------------
    def pending(self) -> int:
        """Rows completed and not yet taken."""
        stats = 0 if self.conn_stats is None else len(self.conn_stats)
        return sum(len(rows) for rows in self.rows.values()) + stats

    def take_tables(self) -> dict[str, pa.Table]:
        """The rows completed since the last call, one Arrow table per protocol table (the
        catalog's schema), by table name; and forget them."""
        tables = {spec.table: self.rows[spec.name].table() for spec in self.protocols}
        if self.conn_stats is not None:
            tables["conn_stats"] = self.conn_stats.table()
        return tables

    def report_conn_stats(self, now_ns: int) -> None:
        """A conn_stats report now (CLOCK_MONOTONIC ns), if conn_stats are kept."""
        if self.conn_stats is not None:
            self.conn_stats.report(now_ns)

    def error_counts(self, protocol: str) -> Counter[str]:
        """Parse and pairing problems of every connection of ``protocol``, ended or live."""
        total = Counter(self.protocol_errors.get(protocol, ()))
        udp_flows = (flow for sock in self.udp.values() for flow in sock.flows.values())
        for conn in (*self.conns.values(), *udp_flows):
            if conn.stitcher is not None and conn.protocol is not None and conn.protocol.name == protocol:
                total.update(conn.stitcher.errors)
        return total

    def drop_counts(self) -> dict[str, int]:
        """User-side losses: data_gap, buffer_overflow, late_event, conn_evicted, parse_error,
        unmatched (requests or responses without their other half), out_of_step_after_loss
        (connections no longer parsed: seen pipelining, then bytes lost) and unconfirmed_after_loss
        (pairs of a connection restarted after a loss or picked up mid-stream that were never
        confirmed in step, so never emitted)."""
        out = dict(self.drops)
        out["parse_error"] = out["unmatched"] = 0
        for spec in self.protocols:
            for reason, n in self.error_counts(spec.name).items():
                out["unmatched" if reason in spec.unmatched else "parse_error"] += n
        for name in ("data_gap", "buffer_overflow", "late_event", "conn_evicted", "out_of_step_after_loss",
                     "unconfirmed_after_loss"):  # fmt: skip
            out.setdefault(name, 0)
        return out


def _raw_ip(family: int, text: str) -> bytes:
    """:func:`ip_text` undone: the kernel's 16 address bytes (zero-padded)."""
    if family in (AF_INET, AF_INET6) and text:
        return socket.inet_pton(family, text).ljust(16, b"\0")
    return bytes(16)


def monotonic_to_epoch_offset() -> int:
    """ns to add to a CLOCK_MONOTONIC timestamp (bpf_ktime_get_ns) to get epoch time: the
    tightest of a few paired readings."""
    best = None
    for _ in range(5):
        m0 = time.monotonic_ns()
        wall = time.time_ns()
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, wall - (m0 + m1) // 2)
    assert best is not None
    return best[1]
