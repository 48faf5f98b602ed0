"""conn_stats on the running kernel: real servers and clients on loopback, traced by pid, their
counters checked against what the clients themselves counted (the bytes each send/recv moved,
curl's --write-out figures).

Needs root and bcc. Fails (never skips silently) when eBPF is unavailable, unless
PXQ_ALLOW_NO_BPF=1.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pxq.agent.conn_tracker import EV_DATA, OTHER
from pxq.agent.procinfo import upid_of
from pxq.agent.socket_tracer import SocketTracer
from pxq.tables import CATALOG
from pxq.testing.kernel import require_bpf
from tests.agent.test_socket_tracer import _readline, _stop, nginx_workers

pytestmark = [pytest.mark.kernel]

APPS = Path(__file__).parent / "data" / "echo_apps.py"
CLIENT, SERVER = 1, 2
INTERVAL_S = 0.2


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


@contextlib.contextmanager
def echo_pair():
    """The echo server and a client of it, both waiting for commands: (server, client, port)."""
    server = subprocess.Popen([sys.executable, str(APPS), "server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    client = None
    try:
        line = _readline(server)
        assert line.startswith("PORT "), line
        port = int(line.split()[1])
        client = subprocess.Popen([sys.executable, str(APPS), "client", "--port", str(port)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        yield server, client, port
    finally:
        for proc in (client, server):
            if proc is not None:
                _stop(proc)


def command(client: subprocess.Popen, text: str) -> list[int]:
    """Send the client one command; the numbers of its OK answer."""
    client.stdin.write(text + "\n")
    client.stdin.flush()
    answer = _readline(client).split()
    assert answer and answer[0] == "OK", (text, answer)
    return [int(n) for n in answer[1:]]


def poll_until(tracer: SocketTracer, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        tracer.poll(50)


def drain_ring(tracer: SocketTracer) -> None:
    """Poll until a whole batch brings no event: the ring buffer holds nothing of the past."""
    poll_until(tracer, lambda: tracer.poll(50) == 0 and tracer.poll(50) == 0)


class ConnStatsRows:
    """Every conn_stats row the tracer reported, as they come."""

    def __init__(self, tracer: SocketTracer) -> None:
        self.tracer = tracer
        self.rows: list[dict] = []

    def take(self) -> list[dict]:
        table = self.tracer.drain_tables().get("conn_stats", pa.table({}))
        if table.num_rows:
            assert table.schema.equals(CATALOG["conn_stats"].arrow_schema())
        self.rows += table.to_pylist()
        return self.rows

    def of(self, upid: str, role: int) -> list[dict]:
        return [r for r in self.take() if r["upid"] == upid and r["trace_role"] == role]


def counters(row: dict) -> tuple:
    return tuple(row[k] for k in ("conn_open", "conn_close", "conn_active", "bytes_sent", "bytes_recv"))


def test_an_unknown_protocol_stops_its_data_events_and_keeps_exact_counters_over_intervals():
    """A non-HTTP echo: after inference gives up on the first message, the kernel sends no more
    data events for either end, while conn_stats counts every byte, reported each interval with
    cumulative values that never go down; opens, closes and active connections exact."""
    with echo_pair() as (server, client, port):
        upids = {server.pid: upid_of(server.pid), client.pid: upid_of(client.pid)}
        tracer = SocketTracer(pids={server.pid, client.pid}, protocols=("http",), conn_stats=True,
                              conn_stats_interval_s=INTERVAL_S)  # fmt: skip
        data_events: list[tuple[int, int]] = []
        handle = tracer._tracker.handle

        def counting_handle(ev):
            if ev.kind == EV_DATA:
                data_events.append((ev.pid, ev.size))
            handle(ev)

        tracer._tracker.handle = counting_handle
        stats = ConnStatsRows(tracer)
        tracer.start()
        try:
            command(client, "open a")
            command(client, "send a 100")
            poll_until(tracer, lambda: [c.state for c in tracer._tracker.conns.values()] == [OTHER, OTHER])
            assert tracer.stats()["other_connections"] == 2
            drain_ring(tracer)
            before = len(data_events)
            totals = {}
            seen: list[tuple] = []
            for round_ in range(4):  # keep-alive: one connection reported over several intervals
                for _ in range(10):
                    totals["a"] = command(client, f"send a {7000 + round_}")
                n = len(stats.of(upids[client.pid], CLIENT))
                poll_until(tracer, lambda n=n: len(stats.of(upids[client.pid], CLIENT)) > n)
                seen.append(counters(stats.of(upids[client.pid], CLIENT)[-1]))
            assert data_events[before:] == []  # switched off in the kernel: not one more data event
            command(client, "open b")
            command(client, "open c")
            totals["b"] = command(client, "send b 12345")
            totals["c"] = command(client, "send c 1")
            command(client, "close b")
            drain_ring(tracer)
            n = len(stats.of(upids[client.pid], CLIENT))
            poll_until(tracer, lambda: len(stats.of(upids[client.pid], CLIENT)) > n)
            middle = stats.of(upids[client.pid], CLIENT)[-1]
            command(client, "close a")
            command(client, "close c")
            drain_ring(tracer)
        finally:
            tracer.stop()
        rows = stats.of(upids[client.pid], CLIENT)
        server_rows = stats.of(upids[server.pid], SERVER)
    sent = sum(t[0] for t in totals.values())
    received = sum(t[1] for t in totals.values())
    assert sent == received == 100 + 10 * (7000 + 7001 + 7002 + 7003) + 12345 + 1
    # Cumulative and growing while a is the only connection: 1 open, its bytes so far.
    for a, b in zip(seen, seen[1:], strict=False):
        assert a[:3] == b[:3] == (1, 0, 1) and a[3] < b[3] and a[4] < b[4]
    assert counters(middle)[:3] == (3, 1, 2)
    for a, b in zip(rows, rows[1:], strict=False):
        assert all(x <= y for x, y in zip(counters(a)[:2] + counters(a)[3:], counters(b)[:2] + counters(b)[3:]))
    final = rows[-1]
    assert (final["remote_addr"], final["remote_port"], final["protocol"], final["addr_family"]) == (
        "127.0.0.1", port, 0, 2,
    )  # fmt: skip
    assert counters(final) == (3, 3, 0, sent, received)
    # The server saw the same bytes the other way round, its clients under remote port 0.
    assert {(r["remote_addr"], r["remote_port"]) for r in server_rows} == {("127.0.0.1", 0)}
    assert counters(server_rows[-1]) == (3, 3, 0, received, sent)


def curl_traced(tracer_pids: set[int], url_list: list[str], extra: tuple[str, ...] = ()):
    """curl started held (``read``, then exec: the pid stays), so that it is traced from its first call."""
    fmt = "%{size_request} %{size_upload} %{size_header} %{size_download} %{num_connects}\\n"
    return subprocess.Popen(
        [
            "sh",
            "-c",
            'read go; exec curl -sS -w "$0" "$@"',
            fmt,
            *extra,
            *(arg for url in url_list for arg in ("-o", "/dev/null", url)),
        ],  # fmt: skip
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_curl_against_nginx_counts_match_curls_own_figures():
    """curl's keep-alive connection(s) to nginx serving static files with sendfile (fillers: the
    bytes never cross user memory): the client's and the server's conn_stats rows hold exactly
    what curl says it sent and received, and as many connections as it made."""
    from pxq.testing.workload import nginx_server, python_backend

    big = 3 << 20
    with python_backend() as backend, nginx_server(backend.port, sendfile=True) as nginx:
        (nginx.workdir / "www" / "static" / "big.bin").write_bytes(bytes(range(256)) * (big // 256))
        workers = nginx_workers(nginx)
        paths = ["/static/big.bin", "/static/hello.txt", "/static/index.html", "/static/big.bin"]
        urls = [nginx.base_url + p for p in paths]
        curl = curl_traced(set(), urls, ("-H", "Connection: keep-alive"))
        curl2 = curl_traced(set(), urls[1:2], ("--data-binary", "x" * 5000))  # a POST: nginx answers 405
        tracer = SocketTracer(pids={nginx.master_pid, *workers, curl.pid, curl2.pid}, conn_stats=True,
                              conn_stats_interval_s=INTERVAL_S).start()  # fmt: skip
        try:
            upid_curl, upid_curl2 = upid_of(curl.pid), upid_of(curl2.pid)
            outputs = []
            for proc in (curl, curl2):
                proc.stdin.write("go\n")
                proc.stdin.close()
                poll_until(tracer, lambda proc=proc: proc.poll() is not None, timeout=30)
                out, err = proc.stdout.read(), proc.stderr.read()
                assert proc.returncode == 0, err
                outputs.append([[int(x) for x in line.split()] for line in out.splitlines()])
            drain_ring(tracer)
        finally:
            tracer.stop()
        tables = tracer.drain_tables()
        rows = tables["conn_stats"].to_pylist()
    expected = {}
    for upid, lines in ((upid_curl, outputs[0]), (upid_curl2, outputs[1])):
        sent = sum(req for req, _, _, _, _ in lines)  # size_request: the request's bytes, its body included
        received = sum(header + download for _, _, header, download, _ in lines)
        connects = sum(line[4] for line in lines)
        expected[upid] = (connects, connects, 0, sent, received)
    assert outputs[0][0][3] == big and expected[upid_curl][0] == 1  # one keep-alive connection
    assert outputs[1][0][1] == 5000 and outputs[1][0][0] > 5000  # the upload, inside size_request
    for upid in (upid_curl, upid_curl2):
        mine = [r for r in rows if r["upid"] == upid]
        assert {(r["remote_addr"], r["remote_port"], r["trace_role"]) for r in mine} == {
            ("127.0.0.1", nginx.port, CLIENT)
        }
        # First the endpoint's counters just before the connection (all 0), last the totals, of
        # an HTTP connection.
        assert (mine[0]["protocol"], counters(mine[0])) == (0, (0, 0, 0, 0, 0))
        assert (mine[-1]["protocol"], counters(mine[-1])) == (1, expected[upid])
    # nginx's side (its workers, the clients under remote port 0): the last row of each worker,
    # added up, is the two curls' traffic the other way round.
    served = {}
    for r in rows:
        if r["trace_role"] == SERVER:
            served[r["upid"]] = counters(r)
    total = [sum(c[i] for c in served.values()) for i in range(5)]
    conns = expected[upid_curl][0] + expected[upid_curl2][0]
    sent = expected[upid_curl][3] + expected[upid_curl2][3]
    received = expected[upid_curl][4] + expected[upid_curl2][4]
    assert total == [conns, conns, 0, received, sent]


def capture_live(out: Path, tables: list[str], pids: tuple[int, ...], duration_s: float, action) -> None:
    """Run the embedded agent on ``tables`` of ``pids`` (and their children) for ``duration_s``,
    call ``action()`` once it is attached, and write the capture to ``out``, as ``pxq capture`` does."""
    import threading

    from pxq.agent.collector import AgentOptions
    from pxq.agent.embedded import EmbeddedAgent
    from pxq.plan.manifest import manifest_for_tables

    manifest = manifest_for_tables(tables, now_ns=time.time_ns(), pids=pids)
    attached = threading.Event()
    stores: list = []
    agent = EmbeddedAgent(manifest, AgentOptions())
    worker = threading.Thread(target=lambda: stores.append(agent.run(duration_s, lambda _: attached.set())))
    worker.start()
    try:
        assert attached.wait(timeout=60), "the agent never attached"
        action()
    finally:
        worker.join(timeout=duration_s + 60)
    (store,) = stores
    store.write_capture(out, tables)


@pytest.mark.servers
def test_net_flow_graph_over_a_live_capture_gives_curls_own_totals(tmp_path):
    """`pxq capture --tables conn_stats` while two curls fetch from nginx, then net_flow_graph over
    the capture: one flow per curl to localhost:<nginx's port>, with the connections and bytes
    curl itself reports."""
    import pxq
    from pxq.testing.workload import nginx_server, python_backend

    with python_backend() as backend, nginx_server(backend.port, sendfile=True) as nginx:
        (nginx.workdir / "www" / "static" / "big.bin").write_bytes(bytes(range(256)) * 4096)
        urls = [nginx.base_url + p for p in ("/static/big.bin", "/static/hello.txt", "/api/items")]
        curls = [curl_traced(set(), urls), curl_traced(set(), urls[1:2], ("--data-binary", "y" * 3000))]
        outputs: list = []

        def fetch() -> None:
            for proc in curls:
                proc.stdin.write("go\n")
                proc.stdin.close()
                out, err = proc.stdout.read(), proc.stderr.read()
                assert proc.wait(timeout=30) == 0, err
                outputs.append([[int(x) for x in line.split()] for line in out.splitlines()])

        capture = tmp_path / "cap"
        pids = (nginx.master_pid, *(proc.pid for proc in curls))
        capture_live(capture, ["conn_stats"], pids, 4.0, fetch)
    flows = pxq.run("net_flow_graph", source=str(capture))["net_flow_graph"]
    got = {
        (r["from_entity"], r["to_entity"]): (r["connections"], r["bytes_sent"], r["bytes_recv"], r["bytes_total"])
        for r in flows.to_dict("records")
    }
    expected = {}
    for proc, lines in zip(curls, outputs, strict=True):
        sent = sum(line[0] for line in lines)  # size_request: the request's bytes, its body included
        received = sum(line[2] + line[3] for line in lines)  # size_header + size_download
        connects = sum(line[4] for line in lines)
        expected[(f"curl[{proc.pid}]", f"localhost:{nginx.port}")] = (connects, sent, received, sent + received)
    # nginx proxied the one /api/items request to the backend over one upstream connection: a
    # flow too (its bytes are nobody's own count here).
    upstream = {key: value for key, value in got.items() if key[1] == f"localhost:{backend.port}"}
    assert [(key[0].startswith("nginx["), value[0], value[1] > 0) for key, value in upstream.items()] == [
        (True, 1, True)
    ]
    assert {key: value for key, value in got.items() if key not in upstream} == expected
    assert outputs[0][0][3] == 256 * 4096 and expected[(f"curl[{curls[0].pid}]", f"localhost:{nginx.port}")][0] == 1
