"""``conn_stats``: connections opened and closed and bytes moved, per process and remote endpoint,
reported at a fixed interval with cumulative counters, as Pixie's socket tracer reports them.

Pixie's model (``src/stirling/source_connectors/socket_tracer/``): ``conn_stats.{h,cc}``
aggregate every connection tracker's counters under an ``AggKey`` of (upid, remote address,
remote port), the remote port set to 0 when the traced process is the server
(``BuildAggKey``: clients' ephemeral ports would make a key per connection); protocol, role,
address family and ssl are the aggregate's last connection's. ``ConnTracker::ConnStatsTracker``
(``conn_tracker.h``) counts a connection as opened once, at the first read of its stats (so a
connection already open when tracing started counts too), as closed once its close was seen, and
its bytes from the kernel's running totals (``conn_stats_event_t``'s ``wr_bytes``/``rd_bytes``).
``SocketTraceConnector::TransferConnStats`` (``socket_trace_connector.cc``) writes one row per
aggregate at every transfer that had an active tracker of it (a live connection, or one closed
but not yet destroyed), with the cumulative ``conn_open``, ``conn_close``,
``conn_active = conn_open - conn_close``, ``bytes_sent`` and ``bytes_recv``; connections whose
role is unknown or whose remote address is not IPv4/IPv6 are left out.

Here: the connection tracker tells :class:`ConnStats` when a connection starts and ends; the
bytes are the kernel's per-connection totals (``bpf/socket_trace.c`` ``conn_t``: counted for
every call of a traced TCP socket, fillers by their size, and still after user space switched the
connection's data off), read from the kernel's map at each report (``kernel_counts``) and carried
by the CLOSE event at the end. A report (every ``interval_ns``, 1 s by default like Pixie's
transfer period) writes a row per aggregate that has a live connection or had one end since the
last report: so a closed connection's final counters are reported once, then its aggregate is
quiet until it has connections again.

Where pxq differs: a connection the tracker ended without a close (its process exited, the fd
got another socket) counts as closed, because it is (Pixie keeps counting it open until its
tracker is destroyed); a connection evicted for idleness, or still open when the capture window
ends, is not closed. The bytes of a connection whose kernel entry is gone before a report (the
map full and its entry evicted) stay at their last reading. When an endpoint gets a connection
after having none, pxq also writes a row of its counters as they were just before, stamped when
the connection was first seen: Pixie's net_flow_graph takes max - min of the counters over its
window, which without that row misses what a connection moved before its first report (all of a
short one). A socket seen only mid-stream whose role protocol inference cannot tell (no protocol
pxq parses) is the server's end when its local port is one its process listens on, else the
client's (Pixie leaves it out).

UDP. Pixie has no UDP connections of its own: ``process_implicit_conn`` (``bcc_bpf/socket_trace.c``)
opens one connection per socket at its first sendto/recvfrom/sendmsg/recvmsg/sendmmsg/recvmmsg,
whose remote endpoint is that first datagram's peer, and counts every later datagram of the
socket under it, to whichever peer (its comment calls this "badly broken" for a server); the
role is the one ``update_traffic_class`` infers from the first datagram of a protocol (a DNS
query sent: client), unknown (so no row) for any other; ``kProtocolDNS`` is 6; conn_close at the
socket's close(). pxq's tracker splits a UDP socket per peer (``conn_tracker.UdpSocket``), and
here each (socket, peer) flow is a connection of its own, so that a resolver asking two servers
and a DNS server answering many clients have a row per peer with that peer's bytes: opened at
its first datagram, closed when its socket closes or its process exits, and also when the
tracker ends it for idleness or for room (``UDP_IDLE_NS``, ``MAX_UDP_PEERS``: a UDP flow has no
end but silence, and a peer that comes back is a new flow), not when the capture window ends.
Its bytes are counted here, per datagram event (copied bytes and fillers alike), since the
kernel's totals are per socket. A flow no protocol recognised takes the role of its first
datagram's direction (sent: client). A socket switched off in the kernel (no protocol
recognised, ``UDP_PROBE_DATAGRAMS``) sends no more datagrams, so its peers are no longer known:
from then on the kernel's per-socket totals beyond what its datagrams showed (read at each report
and carried by its CLOSE) go to its oldest live flow, as Pixie puts a UDP socket's bytes under
its first peer; its flows stay open until the socket closes (no datagram shows them idle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from pxq.agent.conn_tracker import Connection

# Pixie's traffic_protocol_t (src/stirling/source_connectors/socket_tracer/bcc_bpf_intf/common.h),
# by the name pxq's protocol registry gives a protocol.
PROTOCOL_CODES = {
    "http": 1, "http2": 2, "mysql": 3, "cql": 4, "pgsql": 5, "dns": 6, "redis": 7, "nats": 8, "mongo": 9,
    "kafka": 10, "mux": 11, "amqp": 12,
}  # fmt: skip
PROTOCOL_UNKNOWN = 0

# Seconds between two reports (Pixie writes conn_stats at each transfer of the socket tracer's
# data, about once a second). ``#px:set socket_tracer.conn_stats_interval_s=...`` changes it.
DEFAULT_INTERVAL_S = 1.0

ROLE_CLIENT, ROLE_SERVER = 1, 2  # PXQ_ROLE_* (bpf/socket_trace.h)
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp for a listening socket
AF_INET, AF_INET6 = 2, 10

# (sent, received) totals of one connection, from the kernel: None when it has no entry for it.
KernelCounts = Callable[[int, int, int], "tuple[int, int] | None"]

AggKey = tuple[str, str, int]  # upid, remote address, remote port (0 for the server role)


@dataclass
class _Aggregate:
    """One row's counters (Pixie's ``ConnStats::Stats``)."""

    protocol: int = PROTOCOL_UNKNOWN
    role: int = 0
    family: int = 0
    conn_open: int = 0
    conn_close: int = 0
    bytes_sent: int = 0
    bytes_recv: int = 0
    active: bool = False  # a connection of it was live, or ended, since the last report
    live: int = 0  # connections of it being tracked now


@dataclass
class _Tracked:
    """What one live connection has added to its aggregate so far."""

    conn: Connection
    first_ns: int = 0  # when the tracker first saw it (CLOCK_MONOTONIC)
    sent: int = 0  # the kernel's totals, as last read
    recv: int = 0
    counted_sent: int = 0  # what of them its aggregate holds
    counted_recv: int = 0
    key: AggKey | None = None  # its aggregate, once its role and remote address are known
    addr_checked: bool = False
    role: int = 0  # from /proc when the tracker does not know it (see ConnStats._key)
    datagram: bool = False  # a UDP flow: its bytes are counted from its datagrams, not read from the kernel
    own_sent: int = 0  # a UDP flow's bytes seen in its datagram events
    own_recv: int = 0
    extra_sent: int = 0  # its switched-off socket's bytes no datagram showed, given to it
    extra_recv: int = 0


@dataclass
class _UdpSocket:
    """The flows of one UDP socket (pid, fd, generation), for the bytes the kernel counts per
    socket once the socket is switched off (see the module docstring)."""

    seen_sent: int = 0  # bytes of all its flows' datagram events
    seen_recv: int = 0
    flows: list[_Tracked] = field(default_factory=list)  # live, oldest first: flows[0] takes the rest
    given_sent: int = 0  # of the rest, what flows that ended took
    given_recv: int = 0
    switched_off: bool = False
    final: tuple[int, int] | None = None  # the totals its CLOSE carried
    ending: bool = False


@dataclass
class ConnStats:
    """Cumulative per-endpoint counters and the ``conn_stats`` rows of their reports."""

    kernel_counts: KernelCounts | None = None
    interval_ns: int = int(DEFAULT_INTERVAL_S * 1e9)
    clock_offset_ns: int = 0  # CLOCK_MONOTONIC -> epoch, for time_
    # Where a connection's addresses come from when the kernel did not say (a socket opened before
    # the tracer attached): (pid, fd) -> (local addr, local port, remote addr, remote port).
    endpoints: Callable[[int, int], tuple[str, int, str, int] | None] | None = None
    # The TCP ports a process listens on (its network namespace's), to tell the role of a socket
    # seen only mid-stream whose bytes no protocol recognised: a local port that is listened on
    # makes it the server's end.
    listening: Callable[[int], set[int]] | None = None
    aggregates: dict[AggKey, _Aggregate] = field(default_factory=dict)
    # By connection object: the flows of one UDP socket share its (pid, fd, generation).
    live: dict[Connection, _Tracked] = field(default_factory=dict)
    udp_sockets: dict[tuple[int, int, int], _UdpSocket] = field(default_factory=dict)
    # Connections left out (role or remote address never known), as Pixie leaves them out.
    unaddressed: int = 0
    last_report_ns: int = 0
    _rows: list[tuple[object, ...]] = field(default_factory=list)

    # -- from the connection tracker ------------------------------------------------------------
    def opened(self, conn: Connection, *, datagram: bool = False) -> None:
        """The tracker saw a new connection (opened, or already open when first seen);
        ``datagram``: a UDP socket's flow with one peer (its bytes come from :meth:`moved`)."""
        tracked = self.live[conn] = _Tracked(conn, conn.last_ns, datagram=datagram, addr_checked=datagram)
        if datagram:
            self.udp_sockets.setdefault(conn.key, _UdpSocket()).flows.append(tracked)
        self._fold(tracked)  # into its aggregate now, when its role and address are known already

    def moved(self, conn: Connection, *, egress: bool, size: int) -> None:
        """A UDP flow's datagram event: ``size`` bytes sent (``egress``) or received."""
        tracked = self.live.get(conn)
        if tracked is None:
            return
        sock = self.udp_sockets[conn.key]
        if egress:
            tracked.own_sent += size
            sock.seen_sent += size
        else:
            tracked.own_recv += size
            sock.seen_recv += size
        if not tracked.role:  # unless a protocol tells: who sent the flow's first datagram is its client
            tracked.role = ROLE_CLIENT if egress else ROLE_SERVER
        self._count_datagrams(tracked, sock)

    def switched_off(self, socket_key: tuple[int, int, int]) -> None:
        """The UDP socket (pid, fd, generation) sends no more datagrams: its bytes from now on
        are the kernel's per-socket totals."""
        sock = self.udp_sockets.get(socket_key)
        if sock is not None:
            sock.switched_off = True

    def udp_socket_ended(self, socket_key: tuple[int, int, int], totals: tuple[int, int] | None) -> None:
        """The UDP socket is over (its flows end next); ``totals``: what its CLOSE carried."""
        sock = self.udp_sockets.get(socket_key)
        if sock is None:
            return
        sock.final, sock.ending = totals, True
        if not sock.flows:
            del self.udp_sockets[socket_key]

    def ended(self, conn: Connection, *, closed: bool, totals: tuple[int, int] | None = None) -> None:
        """The tracker let ``conn`` go. ``closed``: the connection is over (not merely out of the
        capture window or evicted). ``totals``: its final (sent, received) bytes, when the CLOSE
        event carried them; else the kernel's map is read (while it still has the entry)."""
        tracked = self.live.pop(conn, None)
        if tracked is None:
            return
        if tracked.datagram:
            self._end_datagram_flow(tracked)
        elif totals is not None:
            tracked.sent, tracked.recv = max(tracked.sent, totals[0]), max(tracked.recv, totals[1])
        else:
            self._read_kernel(tracked)
        aggregate = self._fold(tracked)
        if aggregate is None:
            self.unaddressed += 1
            return
        aggregate.live -= 1
        if closed:
            aggregate.conn_close += 1

    # -- reports ----------------------------------------------------------------------------
    def due(self, now_ns: int) -> bool:
        return now_ns - self.last_report_ns >= self.interval_ns

    def report(self, now_ns: int) -> None:
        """Read every live connection's totals and write a row per active aggregate, stamped
        ``now_ns`` (CLOCK_MONOTONIC)."""
        self.last_report_ns = now_ns
        for tracked in self.live.values():
            self._read_kernel(tracked)
            self._fold(tracked)
        for key, a in self.aggregates.items():
            if a.active:
                a.active = False
                self._row(now_ns, key, a)

    def _row(self, ts_ns: int, key: AggKey, a: _Aggregate) -> None:
        upid, raddr, rport = key
        self._rows.append((ts_ns + self.clock_offset_ns, upid, raddr, rport, a.role, a.family, a.protocol, False,
                           a.conn_open, a.conn_close, a.conn_open - a.conn_close, a.bytes_sent,
                           a.bytes_recv))  # fmt: skip

    def __len__(self) -> int:
        return len(self._rows)

    def table(self) -> pa.Table:
        """The rows reported since the last call (the catalog's ``conn_stats`` schema)."""
        from pxq.tables import CATALOG

        schema = CATALOG["conn_stats"].arrow_schema()
        rows, self._rows = self._rows, []
        columns: list[tuple[object, ...]] = list(zip(*rows)) if rows else [() for _ in schema.names]
        return pa.Table.from_arrays(
            [pa.array(values, type=f.type) for values, f in zip(columns, schema, strict=True)], schema=schema
        )

    # -- inside -----------------------------------------------------------------------------
    def _count_datagrams(self, tracked: _Tracked, sock: _UdpSocket, kernel: tuple[int, int] | None = None) -> None:
        """A UDP flow's bytes: its datagrams', and for the oldest flow of a switched-off socket
        also the socket's bytes no datagram event showed (``kernel``: the socket's totals)."""
        if kernel is not None and sock.switched_off and sock.flows and sock.flows[0] is tracked:
            # only grows: a datagram event counted after the kernel's reading moves nothing back
            tracked.extra_sent = max(tracked.extra_sent, kernel[0] - sock.seen_sent - sock.given_sent)
            tracked.extra_recv = max(tracked.extra_recv, kernel[1] - sock.seen_recv - sock.given_recv)
        tracked.sent = tracked.own_sent + tracked.extra_sent
        tracked.recv = tracked.own_recv + tracked.extra_recv

    def _end_datagram_flow(self, tracked: _Tracked) -> None:
        key = tracked.conn.key
        sock = self.udp_sockets.get(key)
        if sock is None:
            return
        self._read_kernel(tracked)  # the switched-off socket's last bytes, while it is still the oldest flow
        sock.given_sent += tracked.extra_sent
        sock.given_recv += tracked.extra_recv
        sock.flows.remove(tracked)
        if sock.ending and not sock.flows:
            del self.udp_sockets[key]

    def _read_kernel(self, tracked: _Tracked) -> None:
        conn = tracked.conn
        if tracked.datagram:
            sock = self.udp_sockets.get(conn.key)
            if sock is None or not sock.switched_off or not sock.flows or sock.flows[0] is not tracked:
                return
            kernel = sock.final
            if kernel is None and self.kernel_counts is not None:
                kernel = self.kernel_counts(conn.pid, conn.fd, conn.gen)
            self._count_datagrams(tracked, sock, kernel)
            return
        if self.kernel_counts is None:
            return
        counts = self.kernel_counts(conn.pid, conn.fd, conn.gen)
        if counts is not None:  # totals only grow; a stale reading never takes bytes back
            tracked.sent, tracked.recv = max(tracked.sent, counts[0]), max(tracked.recv, counts[1])

    def _key(self, tracked: _Tracked) -> AggKey | None:
        conn = tracked.conn
        role_unknown = conn.role not in (ROLE_CLIENT, ROLE_SERVER) and not tracked.role
        if (not conn.raddr or (role_unknown and not conn.lport)) and not tracked.addr_checked and self.endpoints:
            tracked.addr_checked = True
            found = self.endpoints(conn.pid, conn.fd)
            if found is not None:
                conn.laddr, conn.lport, conn.raddr, conn.rport = found
                conn.family = AF_INET6 if ":" in found[2] else AF_INET
        role = conn.role or tracked.role
        if role not in (ROLE_CLIENT, ROLE_SERVER) and conn.lport and self.listening is not None:
            role = tracked.role = ROLE_SERVER if conn.lport in self.listening(conn.pid) else ROLE_CLIENT
        if role not in (ROLE_CLIENT, ROLE_SERVER) or not conn.raddr:
            return None
        return (conn.upid, conn.raddr, 0 if role == ROLE_SERVER else conn.rport)

    def _fold(self, tracked: _Tracked) -> _Aggregate | None:
        """Add what ``tracked`` moved since it was last folded to its aggregate (opening it there
        the first time); None while its aggregate is not known."""
        conn = tracked.conn
        if tracked.key is None:
            tracked.key = self._key(tracked)
            if tracked.key is None:
                return None
            aggregate = self.aggregates.get(tracked.key)
            if aggregate is None:
                aggregate = self.aggregates[tracked.key] = _Aggregate()
                self._describe(aggregate, tracked)
            if aggregate.live == 0:
                # The endpoint has a connection again: a row of its counters as they were just
                # before, at the moment it was first seen (or its address first known), so that a
                # window's max - min of the counters (Pixie's net_flow_graph) holds every
                # connection and byte that began inside it.
                moved = (
                    tracked.sent + tracked.recv and not tracked.datagram
                )  # a flow's bytes all began after its first_ns
                self._row(conn.last_ns if moved else tracked.first_ns, tracked.key, aggregate)
            aggregate.conn_open += 1
            aggregate.live += 1
            self._describe(aggregate, tracked)
        else:
            aggregate = self.aggregates[tracked.key]
            self._describe(aggregate, tracked)
        aggregate.bytes_sent += tracked.sent - tracked.counted_sent
        aggregate.bytes_recv += tracked.recv - tracked.counted_recv
        tracked.counted_sent, tracked.counted_recv = tracked.sent, tracked.recv
        aggregate.active = True
        return aggregate

    @staticmethod
    def _describe(aggregate: _Aggregate, tracked: _Tracked) -> None:
        """Protocol, role and family are the latest connection's (Pixie's Stats fields)."""
        conn = tracked.conn
        aggregate.protocol = PROTOCOL_CODES.get(conn.protocol.name, PROTOCOL_UNKNOWN) if conn.protocol else 0
        aggregate.role = conn.role or tracked.role
        aggregate.family = conn.family or (AF_INET6 if ":" in conn.raddr else AF_INET)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports with a listening socket in ``pid``'s network namespace (/proc/<pid>/net)."""
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == TCP_LISTEN:
                        ports.add(int(fields[1].rpartition(":")[2], 16))
        except OSError:
            continue
    return ports
