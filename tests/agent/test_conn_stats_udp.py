"""conn_stats of UDP sockets from hand-made datagram events (no kernel needed): each (socket,
peer) flow a connection of its own with the bytes of its datagrams, DNS flows with Pixie's
kProtocolDNS (6) and the role DNS says, flows of no protocol with the role of their first
datagram, the bytes of a socket switched off in the kernel under its oldest flow (Pixie puts a
UDP socket's bytes under its first peer), and when a flow counts as closed. The live test is in
tests/agent/test_conn_stats_live.py; the model is described in pxq/agent/conn_stats.py."""

from __future__ import annotations

import socket

import dns.message
import dns.rrset

from pxq.agent.conn_stats import ConnStats
from pxq.agent.conn_tracker import (
    EGRESS,
    EV_CLOSE,
    EV_DATA,
    EV_PROC_EXIT,
    F_DATAGRAM,
    F_FILLER,
    INGRESS,
    ROLE_CLIENT,
    ROLE_SERVER,
    UDP_IDLE_NS,
    UDP_PROBE_DATAGRAMS,
    ConnTracker,
)
from tests.agent.test_conn_stats import PID, SECOND, event, row, rows

DNS = 6  # Pixie's kProtocolDNS (src/stirling/source_connectors/socket_tracer/bcc_bpf_intf/common.h)


def dns_pair(name: str, txid: int, *addresses: str) -> tuple[bytes, bytes]:
    """A query and its answer on the wire, as dnspython writes them."""
    query = dns.message.make_query(name, "A", id=txid, use_edns=False)
    answer = dns.message.make_response(query)
    if addresses:
        answer.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "A", *addresses))
    return query.to_wire(), answer.to_wire()


class Udp:
    """One UDP socket's kernel events; its byte totals per direction kept as the kernel keeps them
    (per socket, whatever the peer)."""

    def __init__(self, fd: int, gen: int) -> None:
        self.fd, self.gen = fd, gen
        self.totals = [0, 0]  # egress, ingress

    def datagram(self, ts: int, direction: int, peer: tuple[str, int], data: bytes, copied: int | None = None):
        """The events of one datagram: its bytes in one event, or (``copied``) the first bytes
        copied and the rest a filler, as the kernel sends a datagram longer than it copies."""
        raddr = socket.inet_aton(peer[0]) + bytes(12)
        common = dict(flags=F_DATAGRAM, direction=direction, family=socket.AF_INET, rport=peer[1], raddr=raddr)
        pos = self.totals[direction]
        self.totals[direction] += len(data)
        if copied is None:
            return [event(EV_DATA, self.fd, self.gen, ts, pos=pos, size=len(data), data_len=len(data), data=data,
                          **common)]  # fmt: skip
        head = event(EV_DATA, self.fd, self.gen, ts, pos=pos, size=len(data), data_len=copied, data=data[:copied],
                     **common)  # fmt: skip
        rest = dict(common, flags=F_DATAGRAM | F_FILLER)
        return [head, event(EV_DATA, self.fd, self.gen, ts, pos=pos + copied, size=len(data) - copied, **rest)]

    def uncopied(self, direction: int, size: int) -> None:
        """Bytes the kernel counted without an event (the socket's data is switched off)."""
        self.totals[direction] += size

    def close(self, ts: int):
        return event(EV_CLOSE, self.fd, self.gen, ts, pos=self.totals[0], size=self.totals[1])


def udp_tracker(kernel: dict | None = None, **kw) -> tuple[ConnTracker, list]:
    """A tracker keeping conn_stats; ``kernel``: (pid, fd, gen) -> Udp, what the kernel's map holds."""
    disabled: list = []

    def kernel_counts(pid: int, fd: int, gen: int):
        sock = (kernel or {}).get((pid, fd, gen))
        return None if sock is None else tuple(sock.totals)

    stats = ConnStats(kernel_counts, SECOND)
    return ConnTracker(disable=lambda *a: disabled.append(a), conn_stats=stats, **kw), disabled


def last_rows(table_rows: list[dict]) -> dict[tuple, tuple]:
    """Each endpoint's last row: (remote, port, role) -> (protocol, open, close, active, sent, recv)."""
    return {
        (r["remote_addr"], r["remote_port"], r["trace_role"]): (r["protocol"], r["conn_open"], r["conn_close"],
                                                                r["conn_active"], r["bytes_sent"], r["bytes_recv"])
        for r in table_rows
    }  # fmt: skip


def test_each_peer_of_an_unconnected_dns_client_socket_is_a_row_with_its_own_bytes():
    """A resolver's one socket asks two servers: a row per server with exactly the bytes of the
    datagrams exchanged with it, not the socket's total under its first peer as Pixie has it."""
    t, _ = udp_tracker()
    s = Udp(5, 1)
    first, second = ("10.0.0.1", 53), ("10.0.0.2", 5353)
    q1, a1 = dns_pair("www.test", 1, "192.0.2.10", "192.0.2.11")
    q2, a2 = dns_pair("alias.test", 2, "192.0.2.12")
    q3, a3 = dns_pair("missing.test", 3)
    events = s.datagram(1, EGRESS, first, q1) + s.datagram(2, EGRESS, second, q2)
    events += s.datagram(3, INGRESS, second, a2) + s.datagram(4, INGRESS, first, a1)
    events += s.datagram(5, EGRESS, first, q3) + s.datagram(6, INGRESS, first, a3)
    t.handle_all(events)
    t.report_conn_stats(SECOND)
    assert rows(t) == [
        # the endpoints' counters before their flows (described by them: DNS already)
        row(*first, ROLE_CLIENT, DNS, 0, 0, 0, 0),
        row(*second, ROLE_CLIENT, DNS, 0, 0, 0, 0),
        row(*first, ROLE_CLIENT, DNS, 1, 0, len(q1) + len(q3), len(a1) + len(a3)),
        row(*second, ROLE_CLIENT, DNS, 1, 0, len(q2), len(a2)),
    ]
    t.handle_all([s.close(SECOND + 1)])
    t.report_conn_stats(2 * SECOND)
    assert rows(t) == [
        row(*first, ROLE_CLIENT, DNS, 1, 1, len(q1) + len(q3), len(a1) + len(a3)),
        row(*second, ROLE_CLIENT, DNS, 1, 1, len(q2), len(a2)),
    ]
    assert t.conn_stats is not None and t.conn_stats.live == {} and t.conn_stats.udp_sockets == {}


def test_a_dns_servers_clients_are_one_row_per_address_with_remote_port_0():
    """The server role from DNS (a query received), Pixie's BuildAggKey (remote port 0): two
    clients on 127.0.0.1 are one row of two connections; a query split into a copied head and a
    filler counts whole."""
    t, _ = udp_tracker()
    s = Udp(7, 3)
    clients = [("127.0.0.1", 40001), ("127.0.0.1", 40002), ("10.0.0.9", 40003)]
    pairs = [dns_pair("www.test", 10 + i, "192.0.2.10") for i in range(3)]
    events = []
    for i, (client, (query, answer)) in enumerate(zip(clients, pairs, strict=True)):
        events += s.datagram(10 * i + 1, INGRESS, client, query)
        events += s.datagram(10 * i + 2, EGRESS, client, answer, copied=12 if i == 2 else None)
    t.handle_all(events)
    t.report_conn_stats(SECOND)
    got = last_rows(rows(t))
    loopback_sent = len(pairs[0][1]) + len(pairs[1][1])
    loopback_recv = len(pairs[0][0]) + len(pairs[1][0])
    assert got == {
        ("127.0.0.1", 0, ROLE_SERVER): (DNS, 2, 0, 2, loopback_sent, loopback_recv),
        ("10.0.0.9", 0, ROLE_SERVER): (DNS, 1, 0, 1, len(pairs[2][1]), len(pairs[2][0])),
    }


def test_a_socket_switched_off_puts_its_uncounted_bytes_under_its_oldest_flow():
    """No protocol recognised: after UDP_PROBE_DATAGRAMS datagrams the socket is switched off and
    the kernel counts its bytes per socket only. Its second peer keeps exactly what its datagrams
    showed; the rest of the socket's bytes, read at each report and carried by its CLOSE, go to
    its first peer's row. Neither peer is closed while the socket lives (no datagram can show it
    idle); the role of a flow of no protocol is its first datagram's direction (sent: client)."""
    kernel: dict = {}
    t, disabled = udp_tracker(kernel)
    s = Udp(9, 4)
    kernel[(PID, 9, 4)] = s
    a, b = ("10.0.0.1", 8125), ("10.0.0.2", 9999)
    blob = b"\x00\x01not a protocol\xff" * 3
    events = s.datagram(1, EGRESS, a, blob) + s.datagram(2, INGRESS, b, blob[:20])
    for i in range(UDP_PROBE_DATAGRAMS - 2):
        events += s.datagram(3 + i, EGRESS, a, blob)
    t.handle_all(events)
    assert disabled == [(PID, 9, 4)]
    a_sent, b_recv = (UDP_PROBE_DATAGRAMS - 1) * len(blob), 20
    s.uncopied(EGRESS, 1000)  # to a or to b: the kernel does not say
    s.uncopied(INGRESS, 300)
    t.report_conn_stats(SECOND)
    assert last_rows(rows(t)) == {
        (*a, ROLE_CLIENT): (0, 1, 0, 1, a_sent + 1000, 300),
        (b[0], 0, ROLE_SERVER): (0, 1, 0, 1, 0, b_recv),  # b spoke first: the server's remote port is 0
    }
    # A minute without a datagram event: the peers of a switched-off socket stay.
    other = Udp(11, 5)
    t.handle_all(other.datagram(60 * SECOND, EGRESS, ("10.0.0.3", 1), blob))
    s.uncopied(EGRESS, 50_000)
    t.handle_all([s.close(61 * SECOND)])
    t.report_conn_stats(62 * SECOND)
    got = last_rows(rows(t))
    assert got[(*a, ROLE_CLIENT)] == (0, 1, 1, 0, a_sent + 51_000, 300)
    assert got[(b[0], 0, ROLE_SERVER)] == (0, 1, 1, 0, 0, b_recv)
    assert sum(v[4] for v in got.values() if v != got[("10.0.0.3", 1, ROLE_CLIENT)]) == s.totals[0]


def test_an_idle_flow_is_closed_and_its_peer_coming_back_is_a_new_connection():
    """A UDP flow ends by silence (UDP_IDLE_NS): closed; the same peer later is a second
    connection of the same endpoint. The window's end closes nothing; a process exit closes."""
    t, _ = udp_tracker()
    s = Udp(5, 1)
    server = ("10.0.0.1", 53)
    q1, a1 = dns_pair("www.test", 1, "192.0.2.10")
    q2, a2 = dns_pair("www.test", 2, "192.0.2.10")
    t.handle_all(s.datagram(1, EGRESS, server, q1) + s.datagram(2, INGRESS, server, a1))
    later = UDP_IDLE_NS + 20 * SECOND
    t.handle_all(s.datagram(later, EGRESS, ("10.0.0.2", 53), q2))  # another peer: the first is idle
    t.report_conn_stats(later + 1)
    got = last_rows(rows(t))
    assert got[(*server, ROLE_CLIENT)] == (DNS, 1, 1, 0, len(q1), len(a1))
    t.handle_all(s.datagram(later + 2, EGRESS, server, q2) + s.datagram(later + 3, INGRESS, server, a2))
    t.report_conn_stats(later + 2 * SECOND)
    got = last_rows(rows(t))
    assert got[(*server, ROLE_CLIENT)] == (DNS, 2, 1, 1, len(q1) + len(q2), len(a1) + len(a2))
    t.close_all()  # the capture window ends, the socket goes on
    t.report_conn_stats(later + 3 * SECOND)
    assert last_rows(rows(t))[(*server, ROLE_CLIENT)] == (DNS, 2, 1, 1, len(q1) + len(q2), len(a1) + len(a2))

    t, _ = udp_tracker()
    t.handle_all(s.datagram(1, EGRESS, server, q1) + [event(EV_PROC_EXIT, -1, 0, 2)])
    t.report_conn_stats(SECOND)
    assert last_rows(rows(t))[(*server, ROLE_CLIENT)] == (DNS, 1, 1, 0, len(q1), 0)


def test_without_conn_stats_udp_flows_are_tracked_as_before():
    """The per-datagram counting is conn_stats': a tracker without it keeps no byte counts and
    opens no flow before the datagram is whole."""
    t = ConnTracker()
    s = Udp(5, 1)
    query, _ = dns_pair("www.test", 1, "192.0.2.10")
    t.handle_all(s.datagram(1, EGRESS, ("10.0.0.1", 53), query, copied=12))
    (sock,) = t.udp.values()
    assert sock.flows == {} and t.conn_stats is None
