"""conn_stats of DNS over UDP on the running kernel: dnsmasq on a loopback port, queried by a
dnspython client (one unconnected socket, sendto/recvfrom) and by dig; the conn_stats rows of the
clients' flows and of dnsmasq's are checked against what the clients themselves sent and
received (the bytes sendto accepted and recvfrom returned, dig's QUERY SIZE and MSG SIZE rcvd),
live and through net_flow_graph over a capture.

Needs root, bcc and dnsmasq. Fails (never skips silently) when eBPF is unavailable, unless
PXQ_ALLOW_NO_BPF=1.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pxq.agent.socket_tracer import SocketTracer
from pxq.testing.kernel import require_bpf
from pxq.testing.servers.dnsmasq import DnsmasqServer
from tests.agent.test_conn_stats_live import ConnStatsRows, capture_live, counters, drain_ring, poll_until

pytestmark = [pytest.mark.kernel, pytest.mark.servers]

CLIENT, SERVER = 1, 2
DNS = 6  # Pixie's kProtocolDNS (src/stirling/source_connectors/socket_tracer/bcc_bpf_intf/common.h)
INTERVAL_S = 0.2
QUESTIONS = (("www.test", "A"), ("www.test", "AAAA"), ("alias.test", "A"), ("missing.test", "A"))

# Waits for a line on stdin (the tracer knows its pid before its first call), then asks dnsmasq
# QUESTIONS over one unconnected UDP socket and prints what it sent and received by its own count.
DNSPYTHON_CLIENT = """
import json, socket, sys
import dns.message, dns.rcode
port = int(sys.argv[1])
print('READY', flush=True)
sys.stdin.readline()
sent = received = 0
rcodes = []
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(5)
    for name, rdtype in %r:
        query = dns.message.make_query(name, rdtype)
        sent += s.sendto(query.to_wire(), ('127.0.0.1', port))
        data, _ = s.recvfrom(65535)
        received += len(data)
        answer = dns.message.from_wire(data)
        assert answer.id == query.id
        rcodes.append(dns.rcode.to_text(answer.rcode()))
print(json.dumps({'sent': sent, 'received': received, 'rcodes': rcodes}), flush=True)
""" % (QUESTIONS,)

# dig, exec'd once told to (the same pid from the start).
DIG = "import os, sys; print('READY', flush=True); sys.stdin.readline(); os.execvp(sys.argv[1], sys.argv[1:])"


class Client:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "READY"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.close()

    def output(self) -> str:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        assert self.proc.wait(timeout=30) == 0, out
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def clients(server: DnsmasqServer) -> tuple[Client, Client]:
    python = Client([sys.executable, "-c", DNSPYTHON_CLIENT, str(server.port)])
    dig = Client([sys.executable, "-c", DIG, "dig", f"@{server.host}", "-p", str(server.port), "www.test", "A",
                  "+noall", "+qr", "+stats", "+tries=1", "+time=5"])  # fmt: skip
    return python, dig


def own_counts(python_out: str, dig_out: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(sent, received) of each client, as it counted them itself."""
    report = json.loads(python_out)
    assert report["rcodes"] == ["NOERROR", "NOERROR", "NOERROR", "NXDOMAIN"]
    query = re.search(r";; QUERY SIZE: (\d+)", dig_out)
    answer = re.search(r";; MSG SIZE\s+rcvd: (\d+)", dig_out)
    assert query and answer, dig_out
    return (report["sent"], report["received"]), (int(query[1]), int(answer[1]))


def of_pid(stats: ConnStatsRows, pid: int, role: int) -> list[dict]:
    """The rows of process ``pid`` in ``role`` (by pid: a process that exits before the tracer
    reads /proc may be known without its start time)."""
    return [r for r in stats.take() if r["upid"].split(":")[1] == str(pid) and r["trace_role"] == role]


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


def test_dns_clients_and_dnsmasq_rows_hold_the_clients_own_byte_counts():
    """Each client's flow to dnsmasq is a DNS (6) client row, opened and closed once (its socket
    closed), with exactly the bytes the client counted; dnsmasq's flows from both (one address,
    so one row with remote port 0, Pixie's BuildAggKey) hold the same bytes the other way round,
    two connections still open (dnsmasq's socket lives on)."""
    with DnsmasqServer() as server:
        python, dig = clients(server)
        tracer = SocketTracer(pids={server.pid, python.pid, dig.pid}, protocols=("dns",), conn_stats=True,
                              conn_stats_interval_s=INTERVAL_S)  # fmt: skip
        stats = ConnStatsRows(tracer)
        tracer.start()
        try:
            python.go()
            dig.go()
            poll_until(tracer, lambda: python.proc.poll() is not None and dig.proc.poll() is not None, timeout=30)
            outputs = [python.output(), dig.output()]
            drain_ring(tracer)

            def closed(client: Client) -> bool:
                mine = of_pid(stats, client.pid, CLIENT)
                return bool(mine) and mine[-1]["conn_close"] >= 1

            poll_until(tracer, lambda: closed(python) and closed(dig))
            n = len(of_pid(stats, server.pid, SERVER))
            poll_until(tracer, lambda: len(of_pid(stats, server.pid, SERVER)) > n)
        finally:
            tracer.stop()
            python.kill()
            dig.kill()
        (py_sent, py_recv), (dig_sent, dig_recv) = own_counts(*outputs)
        server_rows = of_pid(stats, server.pid, SERVER)
        python_rows, dig_rows = of_pid(stats, python.pid, CLIENT), of_pid(stats, dig.pid, CLIENT)
        endpoint = ("127.0.0.1", server.port)
    for mine, (sent, recv) in ((python_rows, (py_sent, py_recv)), (dig_rows, (dig_sent, dig_recv))):
        assert {(r["remote_addr"], r["remote_port"]) for r in mine} == {endpoint}
        assert (mine[-1]["protocol"], mine[-1]["addr_family"], counters(mine[-1])) == (DNS, 2, (1, 1, 0, sent, recv))
    assert {(r["remote_addr"], r["remote_port"]) for r in server_rows} == {("127.0.0.1", 0)}
    last = server_rows[-1]
    assert (last["protocol"], counters(last)) == (DNS, (2, 0, 2, py_recv + dig_recv, py_sent + dig_sent))


def test_net_flow_graph_over_a_live_capture_shows_the_dns_edges(tmp_path: Path):
    """`pxq capture --tables conn_stats` while the clients ask dnsmasq, then net_flow_graph: an
    edge from each client to localhost:<dnsmasq's port> with one connection and the client's
    own byte counts, and nothing else (dnsmasq answered from its own records: no upstream)."""
    import pxq

    with DnsmasqServer() as server:
        python, dig = clients(server)
        python_comm = Path(f"/proc/{python.pid}/comm").read_text().strip()
        outputs: list[str] = []

        def ask() -> None:
            python.go()
            dig.go()
            outputs.extend([python.output(), dig.output()])

        try:
            capture = tmp_path / "cap"
            capture_live(capture, ["conn_stats"], (server.pid, python.pid, dig.pid), 4.0, ask)
        finally:
            python.kill()
            dig.kill()
    (py_sent, py_recv), (dig_sent, dig_recv) = own_counts(*outputs)
    flows = pxq.run("net_flow_graph", source=str(capture))["net_flow_graph"]
    got = {
        (r["from_entity"], r["to_entity"]): (r["connections"], r["bytes_sent"], r["bytes_recv"], r["bytes_total"])
        for r in flows.to_dict("records")
    }
    to = f"localhost:{server.port}"
    assert got == {
        (f"{python_comm}[{python.pid}]", to): (1, py_sent, py_recv, py_sent + py_recv),
        (f"dig[{dig.pid}]", to): (1, dig_sent, dig_recv, dig_sent + dig_recv),
    }


# Waits for a line, sends one datagram to port A and FIRST - 1 to port B (none of them DNS: the
# socket is switched off after UDP_PROBE_DATAGRAMS), says SENT, waits for a line, sends THEN more
# to A, and prints the bytes sendto accepted for each port.
NOISE_CLIENT = """
import json, socket, sys
port_a, port_b, first, then = map(int, sys.argv[1:])
print('READY', flush=True)
sys.stdin.readline()
sent = {port_a: 0, port_b: 0}
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    sent[port_a] += s.sendto(b'\\x00\\x01not dns\\xff' * 4, ('127.0.0.1', port_a))
    for i in range(first - 1):
        sent[port_b] += s.sendto(b'\\x02' * (50 + i), ('127.0.0.1', port_b))
    print('SENT', flush=True)
    sys.stdin.readline()
    for i in range(then):
        sent[port_a] += s.sendto(b'\\x03' * (1000 + i), ('127.0.0.1', port_a))
print(json.dumps(sent), flush=True)
"""


def test_a_udp_socket_switched_off_keeps_exact_counts_per_peer_when_later_bytes_go_to_its_first_peer():
    """Not DNS: after UDP_PROBE_DATAGRAMS datagrams the kernel stops sending the socket's data and
    counts it per socket only. The second peer's row has what its datagrams showed; the first
    peer's row takes the rest of the socket's bytes (Pixie's first peer), which here, every later
    datagram having gone to it, is exactly what the client sent it."""
    from pxq.agent.conn_tracker import UDP_PROBE_DATAGRAMS
    from pxq.testing.ports import free_port

    port_a, port_b = free_port(), free_port()
    client = subprocess.Popen([sys.executable, "-c", NOISE_CLIENT, str(port_a), str(port_b), str(UDP_PROBE_DATAGRAMS),
                               "40"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == "READY"
        tracer = SocketTracer(pids={client.pid}, protocols=("dns",), conn_stats=True, conn_stats_interval_s=INTERVAL_S)
        stats = ConnStatsRows(tracer)
        tracer.start()
        try:
            client.stdin.write("go\n")
            client.stdin.flush()
            assert client.stdout.readline().strip() == "SENT"
            poll_until(tracer, lambda: tracer.stats()["other_connections"] >= 1)
            drain_ring(tracer)
            copied = tracer.stats()["bytes"]
            client.stdin.write("go\n")
            client.stdin.close()
            poll_until(tracer, lambda: client.poll() is not None)
            sent = {int(port): n for port, n in json.loads(client.stdout.read()).items()}
            drain_ring(tracer)
            poll_until(tracer, lambda: any(r["conn_close"] for r in of_pid(stats, client.pid, CLIENT)))
            assert tracer.stats()["bytes"] == copied  # no datagram event after the switch-off
        finally:
            tracer.stop()
    finally:
        if client.poll() is None:
            client.kill()
        client.wait(5)
    last = {r["remote_port"]: r for r in of_pid(stats, client.pid, CLIENT)}
    assert sorted(last) == sorted(sent)
    for port, n in sent.items():
        assert (last[port]["protocol"], counters(last[port])) == (0, (1, 1, 0, n, 0)), port
