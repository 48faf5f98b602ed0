"""DNS on the running kernel: dnsmasq on a loopback port, queried with dig (UDP, and TCP with
+tcp) and with dnspython (dns.query.udp/tcp, a Resolver, one unconnected socket asking two
servers), every process traced; the rows must say what dig and dnspython themselves report:
names, types, addresses, rcode, transaction id, with the client's rows under the client's pid
(trace_role 1) and the server's under dnsmasq's (trace_role 2).

Needs root and bcc (see tests/agent/test_socket_tracer.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import dns.rcode
import pytest

from pxq.agent import socket_tracer
from pxq.agent.socket_tracer import SocketTracer
from pxq.tables import CATALOG
from pxq.testing.kernel import require_bpf
from pxq.testing.servers.dnsmasq import UNANSWERED_NAME, DnsmasqServer

pytestmark = [pytest.mark.kernel, pytest.mark.servers]

CLIENTS = Path(__file__).parent / "data" / "dns_clients.py"
SCHEMA = CATALOG["dns_events"].arrow_schema()
TIMEOUT = 30.0
CLIENT, SERVER = 1, 2
# Runs a program once it is told to: the tracer knows its pid before it makes any call.
EXEC_ON_GO = "import os, sys; print('READY', flush=True); sys.stdin.readline(); os.execvp(sys.argv[1], sys.argv[1:])"


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


class Child:
    """A client process that waits for "go" (see EXEC_ON_GO and data/dns_clients.py)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "READY"
        self.output = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def run(self, tracer: SocketTracer) -> str:
        """Go, and poll the tracer until the process is done; its output."""
        self.go()
        deadline = time.monotonic() + TIMEOUT
        while self.proc.poll() is None and time.monotonic() < deadline:
            tracer.poll(50)
        assert self.proc.poll() is not None, f"{self.proc.args} did not finish"
        assert self.proc.stdout is not None
        self.output = self.proc.stdout.read()
        return self.output

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def dig(server: DnsmasqServer, *args: str) -> Child:
    return Child([sys.executable, "-c", EXEC_ON_GO, "dig", f"@{server.host}", "-p", str(server.port), *args,
                  "+noall", "+comments", "+answer", "+tries=1", "+time=2"])  # fmt: skip


def wait_rows(tracer: SocketTracer, n: int) -> None:
    """Poll until ``n`` rows are complete (or the timeout)."""
    deadline = time.monotonic() + TIMEOUT
    while tracer.pending() < n and time.monotonic() < deadline:
        tracer.poll(50)


def finish(tracer: SocketTracer) -> list[dict]:
    tracer.stop()
    table = tracer.drain()
    assert table.schema.equals(SCHEMA)
    return table.to_pylist()


def rows_of(rows: list[dict], pid: int, role: int) -> list[dict]:
    return sorted((r for r in rows if r["upid"].split(":")[1] == str(pid) and r["trace_role"] == role),
                  key=lambda r: r["time_"])  # fmt: skip


def parse_dig(output: str) -> dict:
    """What dig printed: id, rcode, the ANSWER count and the answer records, in its order."""
    header = re.search(r"->>HEADER<<- opcode: QUERY, status: (\w+), id: (\d+)", output)
    counts = re.search(r"QUERY: (\d+), ANSWER: (\d+), AUTHORITY: (\d+), ADDITIONAL: (\d+)", output)
    assert header and counts, output
    answers = []
    for line in output.splitlines():
        if line.startswith(";") or not line.strip():
            continue
        name, _ttl, _class, rdtype, data = line.split(None, 4)
        entry = {"name": name.rstrip("."), "type": rdtype}
        entry["cname" if rdtype == "CNAME" else "addr"] = data.rstrip(".")
        answers.append(entry)
    return {"rcode": dns.rcode.from_text(header[1]), "id": int(header[2]), "num_answers": int(counts[2]),
            "answers": answers}  # fmt: skip


def assert_row_says(row: dict, name: str, rdtype: str, txid: int, rcode: int, answers: list[dict]) -> None:
    req_header, resp_header = json.loads(row["req_header"]), json.loads(row["resp_header"])
    assert json.loads(row["req_body"]) == {"queries": [{"name": name, "type": rdtype}]}
    assert (req_header["txid"], req_header["qr"], req_header["opcode"], req_header["num_queries"]) == (txid, 0, 0, 1)
    assert (resp_header["txid"], resp_header["qr"], resp_header["rcode"]) == (txid, 1, rcode)
    assert resp_header["num_answers"] == len(answers)
    assert json.loads(row["resp_body"]) == {"answers": answers}
    assert row["latency"] > 0


def test_dig_over_udp_and_tcp_both_roles():
    queries = [("www.test", "A"), ("www.test", "AAAA"), ("alias.test", "A"), ("missing.test", "A"),
               ("alias.test", "A", "+tcp"), ("missing.test", "AAAA", "+tcp")]  # fmt: skip
    with DnsmasqServer() as server:
        digs = [dig(server, name, rdtype, *extra) for name, rdtype, *extra in queries]
        tracer = SocketTracer(pids={server.pid, *(d.pid for d in digs)}, protocols=("dns",))
        tracer.start()
        try:
            for d in digs:
                d.run(tracer)
            wait_rows(tracer, 2 * len(queries))
            rows = finish(tracer)
        finally:
            tracer.stop()
            for d in digs:
                d.kill()
        # dnsmasq answers UDP itself and each TCP connection in a child it forks (traced as its
        # child): the server rows of TCP queries are under that child's pid.
        server_rows = [r for r in rows if r["trace_role"] == SERVER]
        assert len(server_rows) == len(queries)
        assert len(rows_of(rows, server.pid, SERVER)) == sum(1 for q in queries if "+tcp" not in q)
        for d, (name, rdtype, *extra) in zip(digs, queries, strict=True):
            seen = parse_dig(d.output)
            assert seen["num_answers"] == len(seen["answers"])
            (client_row,) = rows_of(rows, d.pid, CLIENT)
            assert_row_says(client_row, name, rdtype, seen["id"], seen["rcode"], seen["answers"])
            assert (client_row["remote_addr"], client_row["remote_port"]) == ("127.0.0.1", server.port)
            (server_row,) = [r for r in server_rows if json.loads(r["req_header"])["txid"] == seen["id"]]
            assert_row_says(server_row, name, rdtype, seen["id"], seen["rcode"], seen["answers"])
            assert (server_row["local_addr"], server_row["local_port"]) == ("127.0.0.1", server.port)
            assert server_row["remote_addr"] == "127.0.0.1"
            if extra:  # TCP: the server's peer is the client's own port, from the socket's 4-tuple
                assert server_row["remote_port"] == client_row["local_port"] != 0
        assert tracer.drops()["parse_error"] == tracer.drops()["unmatched"] == 0


def test_dnspython_udp_tcp_and_resolver():
    with DnsmasqServer() as server:
        server_pid = server.pid
        client = Child([sys.executable, str(CLIENTS), "dnspython", str(server.port)])
        tracer = SocketTracer(pids={server_pid, client.pid}, protocols=("dns",))
        tracer.start()
        try:
            reports = [json.loads(line) for line in client.run(tracer).splitlines()]
            wait_rows(tracer, 2 * len(reports))
            rows = finish(tracer)
        finally:
            tracer.stop()
            client.kill()
    assert [r["how"] for r in reports] == ["udp", "udp", "tcp", "udp", "tcp", "resolver"]
    client_rows = rows_of(rows, client.pid, CLIENT)
    # dnsmasq's own (UDP) and its TCP children's (see the dig test), in time order.
    server_rows = sorted((r for r in rows if r["trace_role"] == SERVER), key=lambda r: r["time_"])
    assert len(client_rows) == len(server_rows) == len(reports)
    assert len(rows_of(rows, server_pid, SERVER)) == sum(1 for r in reports if r["how"] != "tcp")
    for report, client_row, server_row in zip(reports, client_rows, server_rows, strict=True):
        (question,) = report["question"]
        for row in (client_row, server_row):
            assert_row_says(row, question["name"], question["type"], report["id"], report["rcode"], report["answers"])
        assert client_row["remote_port"] == server_row["local_port"] == server.port
    assert [r["rcode"] for r in reports] == [0, 0, 0, dns.rcode.NXDOMAIN, dns.rcode.NXDOMAIN, 0]


def test_one_unconnected_socket_asking_two_servers_pairs_each_answer_with_its_peer():
    # The same query with the same id to both servers, which answer with different addresses: a
    # tracker that paired by socket and id alone could give either query either answer.
    with DnsmasqServer(a_records=("198.51.100.1",)) as first, DnsmasqServer(a_records=("198.51.100.2",)) as second:
        client = Child([sys.executable, str(CLIENTS), "two-servers", str(first.port), str(second.port)])
        tracer = SocketTracer(pids={client.pid}, protocols=("dns",))
        tracer.start()
        try:
            reports = [json.loads(line) for line in client.run(tracer).splitlines()]
            wait_rows(tracer, 2)
            rows = finish(tracer)
        finally:
            tracer.stop()
            client.kill()
    answers_by_port = {r["port"]: r["answers"] for r in reports}
    assert sorted(answers_by_port) == sorted([first.port, second.port])
    assert answers_by_port[first.port] != answers_by_port[second.port]
    client_rows = rows_of(rows, client.pid, CLIENT)
    assert sorted(r["remote_port"] for r in client_rows) == sorted(answers_by_port)
    for row in client_rows:
        assert_row_says(row, "www.test", "A", 4242, 0, answers_by_port[row["remote_port"]])


@pytest.mark.parametrize("mode", ["connected", "mmsg"])
def test_connected_socket_and_mmsg_calls(mode):
    # connected: send/recv and write/read name no address, the peer is the socket's connect()'s.
    # mmsg: one sendmmsg carries two datagrams (each its own event and peer), recvmmsg likewise.
    with DnsmasqServer() as server:
        client = Child([sys.executable, str(CLIENTS), mode, str(server.port)])
        tracer = SocketTracer(pids={client.pid}, protocols=("dns",))
        tracer.start()
        try:
            reports = [json.loads(line) for line in client.run(tracer).splitlines()]
            wait_rows(tracer, len(reports))
            rows = finish(tracer)
        finally:
            tracer.stop()
            client.kill()
    assert len(reports) == 2
    client_rows = rows_of(rows, client.pid, CLIENT)
    assert len(client_rows) == 2
    by_id = {json.loads(r["req_header"])["txid"]: r for r in client_rows}
    for report in reports:
        (question,) = report["question"]
        row = by_id[report["id"]]
        assert_row_says(row, question["name"], question["type"], report["id"], report["rcode"], report["answers"])
        assert (row["remote_addr"], row["remote_port"]) == ("127.0.0.1", server.port)
    assert tracer.drops()["truncated"] == tracer.drops()["data_gap"] == 0


def test_a_query_nobody_answers_is_a_row_without_response():
    with DnsmasqServer() as server:
        server_pid = server.pid
        client = dig(server, UNANSWERED_NAME, "A")
        tracer = SocketTracer(pids={server_pid, client.pid}, protocols=("dns",))
        tracer.start()
        try:
            output = client.run(tracer)
            rows = finish(tracer)  # the window's end: what is still unanswered becomes a row
        finally:
            tracer.stop()
            client.kill()
    assert "timed out" in output or "no servers could be reached" in output, output
    (client_row,) = rows_of(rows, client.pid, CLIENT)
    assert json.loads(client_row["req_body"]) == {"queries": [{"name": UNANSWERED_NAME, "type": "A"}]}
    assert (client_row["resp_header"], client_row["resp_body"], client_row["latency"]) == ("", "", 0)
    # dnsmasq forwarded it to its dead upstream: a client row of dnsmasq's, unanswered too.
    forwarded = [r for r in rows_of(rows, server_pid, CLIENT) if r["remote_port"] == server.dead_upstream_port]
    assert forwarded and all(r["resp_header"] == "" and r["latency"] == 0 for r in forwarded)
    assert all(json.loads(r["req_body"])["queries"][0]["name"] == UNANSWERED_NAME for r in forwarded)


def test_udp_that_is_not_dns_is_switched_off_in_the_kernel():
    first, then = 8, 50
    client = Child([sys.executable, str(CLIENTS), "noise", "9", str(first), str(then)])  # port 9: discard
    tracer = SocketTracer(pids={client.pid}, protocols=("dns",))
    tracer.start()
    try:
        client.go()
        assert client.proc.stdout is not None
        sent, datagram_bytes = client.proc.stdout.readline().split()
        assert sent == "SENT"
        deadline = time.monotonic() + TIMEOUT
        while tracer.stats()["other_connections"] < 1 and time.monotonic() < deadline:
            tracer.poll(50)
        assert tracer.stats()["other_connections"] == 1
        client.run(tracer)
        rows = finish(tracer)
    finally:
        tracer.stop()
        client.kill()
    assert rows == []
    # The first datagrams were looked at; none of the later ones crossed the ring buffer.
    assert tracer.stats()["bytes"] == first * int(datagram_bytes)


def dig_many(server: DnsmasqServer, tmp_path: Path, queries: int) -> Child:
    """dig asking www.test A ``queries`` times in a row (-f), as fast as the answers come;
    +short: two address lines per answer (a pipe holds all of it; the full output would not)."""
    (tmp_path / "names").write_text("www.test A\n" * queries)
    return Child([sys.executable, "-c", EXEC_ON_GO, "dig", f"@{server.host}", "-p", str(server.port), "-f",
                  str(tmp_path / "names"), "+short", "+tries=1", "+time=2"])  # fmt: skip


def test_a_quiet_ring_buffer_gathers_and_a_filling_one_is_taken_at_once(tmp_path, monkeypatch):
    # The agent's collector lets a quiet ring buffer gather for quiet_batch_interval_ms (fewer,
    # larger batches); one filling up past its quiet share must be taken at the next look, not
    # left to fill until that interval ends. The interval here is far longer than the test.
    monkeypatch.setattr(socket_tracer, "QUIET_RING_SHARE", 32)  # 256 KiB: a burst dig's output pipe holds
    burst = 1000  # dig -f: ~600 KB of events both ends traced, past the quiet share (256 KiB)
    with DnsmasqServer() as server:
        one = dig(server, "www.test", "A")
        many = dig_many(server, tmp_path, burst)
        tracer = SocketTracer(pids={server.pid, one.pid, many.pid}, protocols=("dns",))
        tracer.quiet_batch_interval_ms = 600_000
        tracer.start()
        try:
            assert tracer.poll(0) == 0 and tracer.polls == 1  # poll(0) takes what is there: nothing yet
            output = one.run(tracer)
            assert output.count("status: NOERROR") == 1, output
            assert [tracer.poll(50) for _ in range(3)] == [0, 0, 0]  # quiet: still gathering
            assert tracer.stats()["events"] == 0 and tracer.polls == 1
            output = many.run(tracer)
            assert output.split().count("192.0.2.10") == burst, output[-2000:]
            for _ in range(3):
                tracer.poll(50)
            # Taken while the quiet interval still runs: the ~4,000 events of the burst fill the
            # quiet share (256 KiB) at about 1,700.
            assert tracer.stats()["events"] > burst
            rows = finish(tracer)
        finally:
            tracer.stop()
            one.kill()
            many.kill()
    # Nothing lost by gathering: a client and a server row per query dig got an answer to.
    assert len([r for r in rows if r["trace_role"] == CLIENT]) == burst + 1
    assert len([r for r in rows if r["trace_role"] == SERVER]) == burst + 1
    assert tracer.drops()["ringbuf_full"] == 0


def test_a_backlog_is_taken_in_bounded_batches_one_after_the_other(tmp_path, monkeypatch):
    # An agent behind takes the ring buffer's backlog MAX_BATCH_EVENTS at a time (so each batch's
    # rows leave Python's heap before the next are made), and without waiting between batches.
    monkeypatch.setattr(socket_tracer, "MAX_BATCH_EVENTS", 500)
    queries = 1000  # ~4,000 events, both ends traced
    sleeps: list[float] = []
    real_sleep = time.sleep
    with DnsmasqServer() as server:
        many = dig_many(server, tmp_path, queries)
        tracer = SocketTracer(pids={server.pid, many.pid}, protocols=("dns",))
        tracer.start()
        try:
            many.go()
            assert many.proc.wait(TIMEOUT) == 0  # the tracer not polled meanwhile: it is all waiting
            assert many.proc.stdout is not None
            assert many.proc.stdout.read().split().count("192.0.2.10") == queries
            tracer.poll(0)
            monkeypatch.setattr(time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
            batches = [tracer.poll(50)]
            while batches[-1] == 500:
                batches.append(tracer.poll(50))
            assert sleeps == []  # one batch after the other
            rows = finish(tracer)
        finally:
            tracer.stop()
            many.kill()
    assert len(batches) >= 6 and batches[-1] < 500, batches
    assert len([r for r in rows if r["trace_role"] == CLIENT]) == queries
    assert len([r for r in rows if r["trace_role"] == SERVER]) == queries
    assert tracer.drops()["ringbuf_full"] == 0
