"""Connection tracking for the socket tracer: kernel events in, ``http_events`` rows out.

The kernel side (``bpf/socket_trace.c``) reports, per traced process, OPEN (connect/accept),
DATA (bytes sent or received, with their offset in the direction's stream), CLOSE, PROC_EXIT
and PROC_INFO (who a process is) events. :class:`ConnTracker` turns them into HTTP transactions:

* **Identity.** A connection is ``(pid, fd, generation)``. The kernel hands out a new generation
  whenever an fd starts a new connection, so a reused fd never continues an old stream. An event
  with a newer generation for a known ``(pid, fd)`` ends the older connection (its close was
  missed); an event of a generation already ended is ignored (``late_event``).
* **Role.** connect() makes the traced process the client (``trace_role`` 1), accept() the
  server (2). A socket first seen carrying data (opened before the tracer attached) gets its role
  from the first bytes: whoever sends a request line is the client.
* **Reassembly.** Each direction is ordered by the kernel's stream offsets, which start at 0 for
  every generation (for a socket opened before attach, at the first call the kernel saw), so
  lost first bytes are a hole too. Bytes that arrive ahead of a hole wait, and so do the other
  direction's bytes meanwhile, so that both reach the parser in time order (bounded by
  ``reorder_limit`` bytes; more is ``buffer_overflow``); a hole that outlives ``HOLE_BATCHES``
  poll batches, or its connection (a close or process exit in the same batch), means bytes
  were lost (ring buffer full, a call larger than the kernel copies): ``data_gap``, skipped
  to parse what waited behind it. After a gap in the responses of a connection seen answering one request at a
  time, whose request side lost nothing meanwhile, the next response pairs with the latest
  request that began before it (the requests before that one are counted unmatched); after any
  other gap the HTTP parser is discarded and the connection waits for the next request line
  (and the responses after it) to start over. A lost event costs the transaction it belonged to
  (and, when starting over, the one in flight), never a request paired with another's response.
* **Counted bytes.** A filler event (``PXQ_F_FILLER``: bytes of ``sendfile``/``splice``, or the part
  of a call beyond the kernel's copy limit) holds a stream range without its bytes
  (:class:`Uncaptured`). It takes its place in reassembly like any bytes; the stitcher skips it
  inside a body of known length (``Http1Stitcher.skip``: the row keeps its true size and marks the
  body). Where framing needs the bytes (a head), it is a gap (``data_gap``), as above.
* **Protocol inference** from the first bytes of a connection: an HTTP/1.x request line or
  status line. A connection that is not HTTP is switched off in the kernel (``disable``) so that
  its bytes stop crossing the ring buffer.
* **Stitching** is :class:`pxq.agent.protocols.http1.Http1Stitcher`'s: request bytes and response
  bytes in, request/response pairs out. Latency is its definition: from the timestamp of the
  request's first byte to that of the response's last byte.
* **Rows** carry the upid (:class:`pxq.agent.procinfo.ProcessIdentities`: /proc at first sight,
  else what the kernel's PROC_INFO event said: comm, argv, start time) and the
  socket's addresses: from the kernel's ``inet_sock_set_state`` 4-tuple, else (sockets
  established before attach) from ``/proc/<pid>/net/tcp*``, else the peer that connect()/accept()
  saw.

Timestamps from the kernel are CLOCK_MONOTONIC; ``clock_offset_ns`` turns them into epoch time
for ``time_``.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple

import pyarrow as pa

from pxq.agent.bpf_program import header_constants
from pxq.agent.procinfo import ProcessIdentities
from pxq.agent.protocols.http1 import (
    DEFAULT_BODY_LIMIT,
    Http1Stitcher,
    HttpRows,
    HttpTransaction,
    MessagePair,
    looks_like_http_request,
    looks_like_http_response,
)

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
EGRESS = _H["PXQ_DIR_EGRESS"]
INGRESS = _H["PXQ_DIR_INGRESS"]
ROLE_UNKNOWN = _H["PXQ_ROLE_UNKNOWN"]
ROLE_CLIENT = _H["PXQ_ROLE_CLIENT"]
ROLE_SERVER = _H["PXQ_ROLE_SERVER"]

AF_INET = socket.AF_INET.value
AF_INET6 = socket.AF_INET6.value

# Connection states.
PROBING = "probing"  # protocol not known yet
SYNCING = "syncing"  # HTTP, waiting for a request line to (re)start parsing at
HTTP = "http"
OTHER = "other"  # not a protocol pxq parses: ignored (and switched off in the kernel)

# Bytes held while the first bytes of a direction are too few to tell the protocol.
PROBE_MIN_BYTES = 16
# A socket first seen mid-stream (opened before attach) may start inside a message: look at this
# many data events before calling it "not HTTP".
PROBE_TRIES = 8
# Out-of-order bytes held per connection while waiting for a hole to fill.
DEFAULT_REORDER_LIMIT = 4 << 20
# A hole still open after this many poll batches is lost data.
HOLE_BATCHES = 2
# What an Uncaptured range held in reassembly costs of the reorder budget: it holds no bytes.
UNCAPTURED_HELD_COST = 1
# Connections without any event for this long are ended (a process may keep an fd forever).
DEFAULT_IDLE_NS = 600 * 10**9
DEFAULT_MAX_CONNECTIONS = 65536
EVICT_EVERY_NS = 10 * 10**9

# How the stitcher's error reasons are reported in drops().
UNMATCHED_ERRORS = (
    "request_unanswered_at_close",
    "response_without_request",
    "response_incomplete_at_close",
    "request_incomplete_at_close",
)
# Halves lost with bytes the kernel could not deliver (the stitcher pairs on by time after a
# response-side gap), or a response that ended before the request it would pair with began:
# unmatched too, but never a matter of where the capture window ended.
GAP_ERRORS = ("request_unanswered_after_gap", "response_before_request")


class Uncaptured:
    """A range of a stream that the kernel counted but did not copy (a filler event): its length,
    without bytes. Sliced like the bytes it stands for (``span[k:]``), so reassembly treats both
    alike."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, cut: slice) -> Uncaptured:
        start, stop, _ = cut.indices(self.size)
        return Uncaptured(max(0, stop - start))

    def __repr__(self) -> str:
        return f"Uncaptured({self.size})"


def _held_cost(data: bytes | Uncaptured) -> int:
    return len(data) if type(data) is bytes else UNCAPTURED_HELD_COST


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


def socket_endpoints(pid: int, fd: int) -> tuple[str, int, str, int] | None:
    """``(local_addr, local_port, remote_addr, remote_port)`` of a TCP socket fd of a live
    process, from /proc (its own network namespace); None when gone or not TCP."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    if not target.startswith("socket:["):
        return None
    inode = target[8:-1]
    for table in ("tcp", "tcp6"):
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
        "state", "stitcher", "expect", "held", "held_bytes", "blocked", "hole_batches",
        "probe_buf", "probe_ts", "probe_tries", "last_ns", "transactions",
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
        self.stitcher: Http1Stitcher | None = None
        # Next stream offset per direction (None: start where first seen). The kernel counts both
        # directions of every generation from 0, also of a socket opened before the tracer (from
        # the first call it saw): a direction whose first event lies further on lost its first
        # bytes (ring buffer full), a hole like any other. Taking it as the stream's start would
        # pair every later response with an earlier request.
        self.expect: list[int | None] = [0, 0]
        self.held: list[dict[int, tuple[int, bytes]]] = [{}, {}]  # pos -> (ts, data), waiting
        self.held_bytes = 0
        self.blocked = -1  # the direction whose hole the held bytes wait for (-1: none)
        self.hole_batches = 0
        self.probe_buf = [b"", b""]
        self.probe_ts = [0, 0]
        self.probe_tries = 0
        self.last_ns = ts_ns
        self.transactions = 0

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.pid, self.fd, self.gen)

    @property
    def request_direction(self) -> int:
        return EGRESS if self.role == ROLE_CLIENT else INGRESS

    def row_number(self, rows: HttpRows) -> int:
        """The connection as ``rows`` knows it (for :meth:`HttpRows.add`)."""
        return rows.connection(self.upid, self.raddr, self.laddr, self.rport, self.lport, self.role)


class ConnTracker:
    """Turn socket tracer events into HTTP transactions (see the module docstring).

    ``disable(pid, fd, gen)`` is called for connections that are not HTTP (to stop their data in
    the kernel); ``forget(pid, fd, gen)`` when a connection ended without a close() the kernel saw
    (process exit, a newer generation), so the kernel can drop its entry.

    Completed transactions are kept as (connection, :class:`HttpTransaction`) pairs for
    :meth:`take`; with ``columnar`` they are written into :class:`HttpRows` instead, as they
    complete, and only :meth:`take_arrow` gives them (what the socket tracer uses: cheaper).
    """

    def __init__(
        self,
        *,
        body_limit: int = DEFAULT_BODY_LIMIT,
        clock_offset_ns: int = 0,
        disable: Callable[[int, int, int], None] | None = None,
        forget: Callable[[int, int, int], None] | None = None,
        reorder_limit: int = DEFAULT_REORDER_LIMIT,
        idle_ns: int = DEFAULT_IDLE_NS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        columnar: bool = False,
    ) -> None:
        self.body_limit = body_limit
        self.clock_offset_ns = clock_offset_ns
        self._disable = disable
        self._forget = forget
        self.reorder_limit = reorder_limit
        self.idle_ns = idle_ns
        self.max_connections = max_connections
        self.conns: dict[tuple[int, int, int], Connection] = {}
        # pid -> fd -> (newest generation seen, whether the kernel reported its close)
        self._latest_gen: dict[int, dict[int, tuple[int, bool]]] = {}
        self._by_pid: dict[int, set[Connection]] = {}  # live connections of each process
        self.pids_seen: set[int] = set()  # every process a connection was seen of
        self._upids: dict[int, str] = {}
        self.identities = ProcessIdentities()  # the agent may share one between its collectors
        self._done: list[tuple[Connection, HttpTransaction]] = []
        self._rows = HttpRows() if columnar else None
        self._holes: set[Connection] = set()
        self.drops: Counter[str] = Counter()
        self.http_errors: Counter[str] = Counter()  # from stitchers already discarded
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
                conn = self._connection(ev, opened=False)
                if conn is None:
                    return
            else:
                conn.last_ns = ev.ts_ns
            self.counts["bytes"] += ev.data_len
            d = ev.direction
            if conn.state == HTTP and conn.expect[d] == ev.pos and not ev.flags and not conn.held_bytes:
                # The common case: the next bytes of an HTTP connection, in order, nothing waiting.
                conn.expect[d] = ev.pos + ev.data_len
                self._feed(conn, d, ev.ts_ns, ev.data)
            else:
                self._on_data(conn, ev)
        elif kind == EV_OPEN:
            self._connection(ev, opened=True)
        elif kind == EV_CLOSE:
            conn = self.conns.get((ev.pid, ev.fd, ev.gen))
            if conn is not None:
                self._end(conn, ev.ts_ns, forget=False)
            fds = self._latest_gen.setdefault(ev.pid, {})
            latest = fds.get(ev.fd)
            if latest is None or latest[0] <= ev.gen:
                fds[ev.fd] = (ev.gen, True)
        elif kind == EV_PROC_EXIT:
            self.process_exited(ev.pid, ev.ts_ns)
        elif kind == EV_PROC_INFO:
            self._process_info(ev)

    def handle_all(self, events: Iterable[SockEvent]) -> None:
        for ev in events:
            self.handle(ev)
        self.end_batch()

    def process_exited(self, pid: int, ts_ns: int) -> None:
        """A traced process is gone: its connections end (the kernel closed its fds)."""
        for conn in list(self._by_pid.get(pid, ())):
            self._end(conn, ts_ns, forget=True)
        self._latest_gen.pop(pid, None)
        self._upids.pop(pid, None)

    def end_batch(self) -> None:
        """End of one ring buffer drain: holes that stay open for HOLE_BATCHES batches were lost
        data; idle connections are ended."""
        for conn in list(self._holes):
            conn.hole_batches += 1
            if conn.hole_batches >= HOLE_BATCHES:
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
        self._upids[ev.pid] = self.identities.identify(ev.pid, comm=comm, start_boot_ns=ev.pos,
                                                       argv=bytes(data[PROC_COMM_LEN:]))

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
                conn.expect = [None, None]
            self.conns[key] = conn
            self._by_pid.setdefault(ev.pid, set()).add(conn)
            self.pids_seen.add(ev.pid)
            self.counts["connections"] += 1
        conn.last_ns = ev.ts_ns
        if ev.flags & F_TUPLE and not conn.has_tuple:
            conn.family = ev.family
            conn.laddr, conn.lport = ip_text(ev.family, ev.laddr), ev.lport
            conn.raddr, conn.rport = ip_text(ev.family, ev.raddr), ev.rport
            conn.has_tuple = True
        elif ev.flags & F_REMOTE and not conn.has_tuple:
            conn.family = ev.family
            conn.raddr, conn.rport = ip_text(ev.family, ev.raddr), ev.rport
        return conn

    def _end(self, conn: Connection, ts_ns: int, *, forget: bool, window_end: bool = False) -> None:
        """The connection is over: flush the parser and let it go. ``forget``: the kernel still
        has an entry for it (it saw no close()), which can go too. ``window_end``: the tracer
        stops, the connection itself goes on (what is unfinished is not a loss)."""
        self.conns.pop(conn.key, None)
        live = self._by_pid.get(conn.pid)
        if live is not None:
            live.discard(conn)
            if not live:
                del self._by_pid[conn.pid]
        if conn.held_bytes:
            # The connection is over, so the missing bytes are not coming: skip each hole (a
            # data_gap each) and parse what waited behind it, as close_all does, instead of
            # dropping every transaction completed after the hole.
            self._skip_holes(conn)
        self._holes.discard(conn)
        if conn.stitcher is not None:
            self._collect(conn, conn.stitcher.close_messages(ts_ns))
            errors = conn.stitcher.errors
            if window_end:
                errors = Counter({k: n for k, n in errors.items() if k not in UNMATCHED_ERRORS})
            self.http_errors.update(errors)
            conn.stitcher = None
        if forget and self._forget is not None:
            self._forget(conn.pid, conn.fd, conn.gen)

    def _evict_idle(self) -> None:
        cutoff = self._last_ts - self.idle_ns
        idle = [c for c in self.conns.values() if c.last_ns < cutoff]
        if len(self.conns) - len(idle) > self.max_connections:
            by_age = sorted(self.conns.values(), key=lambda c: c.last_ns)
            idle = by_age[: len(self.conns) - self.max_connections]
            self.drops["conn_evicted"] += len(idle)
        for conn in idle:
            self._end(conn, self._last_ts, forget=True)

    # -- bytes ------------------------------------------------------------------------------
    def _on_data(self, conn: Connection, ev: SockEvent) -> None:
        if conn.state == OTHER:
            return
        d = ev.direction
        data: bytes | Uncaptured = ev.data
        if ev.flags & F_FILLER:
            data = Uncaptured(ev.size)
            self.counts["filler_bytes"] += ev.size
        pos = ev.pos
        expect = conn.expect[d]
        if expect is None:
            expect = conn.expect[d] = pos
        if pos < expect:  # overlap with bytes already taken
            data = data[expect - pos :]
            pos = expect
            if not data:
                return
        if pos > expect or conn.held_bytes:
            # Behind a hole, or the connection has bytes waiting behind one (in either
            # direction): wait in line, so both directions reach the parser in time order.
            waiting = conn.held_bytes
            self._hold(conn, d, pos, ev.ts_ns, data)
            if not waiting and conn.held_bytes:
                conn.blocked = d  # a new hole: nothing can go on until it fills
            elif d == conn.blocked and pos <= conn.expect[d] and conn.held_bytes:
                self._release(conn)  # the missing bytes came: go on up to the next hole
            return
        conn.expect[d] = pos + len(data)
        self._deliver(conn, d, ev.ts_ns, data)

    def _hold(self, conn: Connection, d: int, pos: int, ts_ns: int, data: bytes | Uncaptured) -> None:
        conn.held[d][pos] = (ts_ns, data)
        conn.held_bytes += _held_cost(data)
        self._holes.add(conn)
        if conn.held_bytes > self.reorder_limit:
            self.drops["buffer_overflow"] += 1
            self._skip_holes(conn)

    def _release(self, conn: Connection, lost: bool = False) -> None:
        """Deliver held bytes, both directions merged in time order, up to the first piece that
        waits behind a hole. A hole stops the other direction too: were its later bytes parsed
        meanwhile, resynchronising after a lost piece would pair requests with the responses of
        others (or throw away every transaction parsed while the hole waited). ``lost``: the
        missing bytes are not coming: jump over each hole (a ``data_gap``), losing what was there."""
        held = conn.held
        queues = (sorted(held[0]), sorted(held[1]))  # once, not min() per piece: thousands may wait
        heads = [0, 0]
        while True:
            d = -1
            for side in (0, 1):
                if heads[side] < len(queues[side]):
                    ts_ns = held[side][queues[side][heads[side]]][0]
                    if d < 0 or ts_ns < first_ts:
                        d, first_ts = side, ts_ns
            if d < 0:
                break
            pos = queues[d][heads[d]]
            if pos > conn.expect[d]:
                if not lost:
                    conn.blocked = d
                    break
                self.drops["data_gap"] += 1
                other = 1 - d  # its next bytes (later in time) follow on: nothing lost there
                other_intact = heads[other] < len(queues[other]) and queues[other][heads[other]] <= conn.expect[other]
                if not (other_intact and self._response_gap(conn, d, *held[d][pos])):
                    self._gap(conn)
                conn.expect[d] = pos
            heads[d] += 1
            ts_ns, data = held[d].pop(pos)
            conn.held_bytes -= _held_cost(data)
            skip = conn.expect[d] - pos
            if skip < len(data):
                conn.expect[d] = pos + len(data)
                self._deliver(conn, d, ts_ns, data[skip:])
        if not held[0] and not held[1]:
            conn.held_bytes = 0
            conn.blocked = -1
            conn.hole_batches = 0
            self._holes.discard(conn)

    def _skip_holes(self, conn: Connection) -> None:
        """The missing bytes are not coming: jump over each hole, losing what was there."""
        self._release(conn, lost=True)

    def _response_gap(self, conn: Connection, d: int, ts_ns: int, data: bytes) -> bool:
        """Bytes lost on the response side of an HTTP connection, and the bytes after the hole
        (``data`` at ``ts_ns``) begin a response: let the stitcher pair on by time (it declines
        where it cannot tell). The caller has checked that the request side lost nothing up to
        there (its next bytes, later in time, follow on). False: start over with _gap."""
        if conn.state != HTTP or conn.stitcher is None:
            return False
        if d == (EGRESS if conn.role == ROLE_CLIENT else INGRESS):
            return False  # the request side
        if type(data) is not bytes or not looks_like_http_response(data[:64]):
            return False
        return conn.stitcher.response_gap(ts_ns)

    def _gap(self, conn: Connection) -> None:
        """Bytes were lost: the parser cannot continue; restart at the next request line."""
        if conn.stitcher is not None:
            errors = conn.stitcher.errors
            self.http_errors.update({k: v for k, v in errors.items() if k not in UNMATCHED_ERRORS})
            conn.stitcher = None
        if conn.state in (HTTP, SYNCING):
            conn.state = SYNCING
        elif conn.state == PROBING:
            conn.opened = False  # no longer at the stream's start: probe like a mid-stream socket
            conn.probe_buf = [b"", b""]

    # -- protocol ---------------------------------------------------------------------------
    def _deliver(self, conn: Connection, d: int, ts_ns: int, data: bytes | Uncaptured) -> None:
        state = conn.state
        if type(data) is Uncaptured:
            self._uncaptured(conn, d, ts_ns, data.size)
        elif state == HTTP:
            self._feed(conn, d, ts_ns, data)
        elif state == SYNCING:
            if d == conn.request_direction and looks_like_http_request(data[:256]):
                self._start_http(conn, d, ts_ns, data)
        elif state == PROBING:
            self._probe(conn, d, ts_ns, data)

    def _uncaptured(self, conn: Connection, d: int, ts_ns: int, size: int) -> None:
        """``size`` bytes moved unseen: skipped inside a body of known length; anywhere else the
        parser cannot go on without them (a gap, counted)."""
        if conn.state == HTTP and conn.stitcher is not None:
            stitcher = conn.stitcher
            done, left = stitcher.skip_messages(d == conn.request_direction, size, ts_ns)
            if done:
                self._collect(conn, done)
            if not left:
                return
        elif conn.state != PROBING:
            return  # SYNCING drops bytes up to a request line anyway; OTHER is not parsed
        self.drops["data_gap"] += 1
        self._gap(conn)

    def _probe(self, conn: Connection, d: int, ts_ns: int, data: bytes) -> None:
        if conn.probe_buf[d]:
            data = conn.probe_buf[d] + data
            ts_ns = conn.probe_ts[d]
            conn.probe_buf[d] = b""
        head = data[:256]
        if len(head) < PROBE_MIN_BYTES and b"\n" not in head:
            conn.probe_buf[d], conn.probe_ts[d] = data, ts_ns  # too few bytes to tell yet
            return
        sender_is_client = None
        if looks_like_http_request(head):
            sender_is_client = True
        elif looks_like_http_response(head):
            sender_is_client = False
        if sender_is_client is not None:
            role = ROLE_CLIENT if (d == EGRESS) == sender_is_client else ROLE_SERVER
            if conn.role == ROLE_UNKNOWN:
                conn.role = role
            if conn.role == role:
                self.counts["http_connections"] += 1
                if sender_is_client:
                    self._start_http(conn, d, ts_ns, data)
                else:
                    conn.state = SYNCING  # a response whose request went by before we looked
                return
        conn.probe_tries += 1
        if conn.opened or conn.probe_tries >= PROBE_TRIES:
            conn.state = OTHER
            conn.probe_buf = [b"", b""]
            self.counts["other_connections"] += 1
            if self._disable is not None:
                self._disable(conn.pid, conn.fd, conn.gen)

    def _start_http(self, conn: Connection, d: int, ts_ns: int, data: bytes) -> None:
        conn.state = HTTP
        conn.stitcher = Http1Stitcher(body_limit=self.body_limit)
        self._feed(conn, d, ts_ns, data)

    def _feed(self, conn: Connection, d: int, ts_ns: int, data: bytes) -> None:
        stitcher = conn.stitcher
        assert stitcher is not None
        done = stitcher.feed_messages(d == (EGRESS if conn.role == ROLE_CLIENT else INGRESS), data, ts_ns)
        if done:
            self._collect(conn, done)
        if stitcher.upgraded:  # websocket or a CONNECT tunnel: not HTTP from here on
            self._end_parsing(conn)

    def _end_parsing(self, conn: Connection) -> None:
        assert conn.stitcher is not None
        self.http_errors.update(conn.stitcher.errors)
        conn.stitcher = None
        conn.state = OTHER
        if self._disable is not None:
            self._disable(conn.pid, conn.fd, conn.gen)

    def _collect(self, conn: Connection, pairs: list[MessagePair]) -> None:
        if not pairs:
            return
        if not conn.has_tuple and not conn.addr_checked:
            conn.addr_checked = True
            found = socket_endpoints(conn.pid, conn.fd)
            if found is not None:
                conn.laddr, conn.lport, conn.raddr, conn.rport = found
        offset = self.clock_offset_ns
        rows = self._rows
        if rows is not None:
            number = conn.row_number(rows)
            for req, resp in pairs:
                rows.add(number, req, resp, req.start_ns + offset, resp.end_ns + offset)
        else:
            for req, resp in pairs:
                tx = HttpTransaction(req, resp)
                tx.req_start_ns += offset
                tx.resp_end_ns += offset
                self._done.append((conn, tx))
        conn.transactions += len(pairs)
        self.counts["transactions"] += len(pairs)

    # -- results ----------------------------------------------------------------------------
    def pending(self) -> int:
        """Transactions completed and not yet taken."""
        return len(self._done) if self._rows is None else len(self._rows)

    def take(self) -> list[tuple[Connection, HttpTransaction]]:
        """The completed transactions (and forget them); not of a ``columnar`` tracker."""
        if self._rows is not None:
            raise RuntimeError("a columnar ConnTracker gives its transactions as rows: take_arrow()")
        done, self._done = self._done, []
        return done

    def take_arrow(self) -> pa.Table:
        """The completed transactions as ``http_events`` rows (and forget them)."""
        return self._rows.table() if self._rows is not None else rows_to_arrow(self.take())

    def http_error_counts(self) -> Counter[str]:
        """Parse and pairing problems of every HTTP connection, ended or live."""
        total = Counter(self.http_errors)
        for conn in self.conns.values():
            if conn.stitcher is not None:
                total.update(conn.stitcher.errors)
        return total

    def drop_counts(self) -> dict[str, int]:
        """User-side losses: data_gap, buffer_overflow, late_event, conn_evicted, parse_error,
        unmatched (requests or responses without their other half)."""
        out = dict(self.drops)
        errors = self.http_error_counts()
        unmatched = UNMATCHED_ERRORS + GAP_ERRORS
        out["parse_error"] = sum(n for k, n in errors.items() if k not in unmatched)
        out["unmatched"] = sum(n for k, n in errors.items() if k in unmatched)
        for name in ("data_gap", "buffer_overflow", "late_event", "conn_evicted"):
            out.setdefault(name, 0)
        return out


def rows_to_arrow(done: list[tuple[Connection, HttpTransaction]]) -> pa.Table:
    """``http_events`` rows for transactions of many connections."""
    rows = HttpRows()
    for conn, tx in done:
        rows.add(conn.row_number(rows), tx.request, tx.response, tx.req_start_ns, tx.resp_end_ns)
    return rows.table()


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
