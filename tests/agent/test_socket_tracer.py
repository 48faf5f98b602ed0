"""The socket tracer on the running kernel: real servers and real clients on loopback, in child
processes (the tracer never traces its own process), and the exact HTTP transactions it saw.

Needs root and bcc. Fails (never skips silently) when eBPF is unavailable, unless
PXQ_ALLOW_NO_BPF=1.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import http.client
import json
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from pxq.agent.bpf_program import BpfError, build_program, layout_asserts, load
from pxq.agent.procinfo import upid_of
from pxq.agent.socket_tracer import (
    EventHeader,
    SocketTracer,
    SocketTracerOptions,
    build_socket_tracer,
    socket_tracer_program,
)
from pxq.tables import CATALOG
from pxq.testing.kernel import require_bpf

pytestmark = pytest.mark.kernel

APPS = Path(__file__).parent / "data" / "sock_apps.py"
SCHEMA = CATALOG["http_events"].arrow_schema()
LINE_TIMEOUT = 15.0


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


# -- child processes ------------------------------------------------------------------------------
def _readline(proc: subprocess.Popen, timeout: float = LINE_TIMEOUT) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"child {proc.args} said nothing for {timeout}s")
    return proc.stdout.readline()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@contextlib.contextmanager
def sock_app_listening(*args: str):
    """A sock_apps process that listens on a free port (``server``, ``proxy``): (process, port)."""
    proc = subprocess.Popen([sys.executable, str(APPS), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        line = _readline(proc)
        assert line.startswith("PORT "), line
        yield proc, int(line.split()[1])
    finally:
        _stop(proc)


def http_server(host: str = "127.0.0.1"):
    """sock_apps' server on a free port: (process, port)."""
    return sock_app_listening("server", "--host", host)


class Client:
    """sock_apps' client: started now, runs its scenario on :meth:`go`."""

    def __init__(self, port: int, scenario: str, host: str = "127.0.0.1", *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(APPS), "client", "--host", host, "--port", str(port), "--scenario", scenario, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert _readline(self.proc).strip() == "READY"
        self.results: list[dict] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, tracer: SocketTracer, timeout: float = 60.0) -> list[dict]:
        """Poll the tracer until the client exits; its report lines."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            tracer.poll(50)
        assert self.proc.poll() == 0, f"client {self.proc.args} failed (exit {self.proc.returncode})"
        self.results = [json.loads(line) for line in self.proc.stdout.read().splitlines()]
        _stop(self.proc)
        return self.results

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        _stop(self.proc)


def settle(tracer: SocketTracer, seconds: float = 0.5) -> None:
    """Poll a little longer, for the last events of processes that just finished."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        tracer.poll(50)


def finish_capture(tracer: SocketTracer) -> pa.Table:
    settle(tracer)
    tracer.stop()
    table = tracer.drain()
    assert table.schema.equals(SCHEMA)
    return table


def rows_of(table: pa.Table, pid: int, role: int) -> list[dict]:
    upid_prefix = f"0:{pid}:"
    return [r for r in table.to_pylist() if r["upid"].startswith(upid_prefix) and r["trace_role"] == role]


def assert_no_drops(tracer: SocketTracer) -> None:
    drops = tracer.drops()
    assert all(n == 0 for n in drops.values()), (drops, tracer.http_errors())


@dataclass
class Capture:
    """What the tracer saw of one scenario: a sock_apps server and client, both traced."""

    tracer: SocketTracer
    table: pa.Table
    port: int
    server_pid: int
    client_pid: int
    upids: dict[int, str]
    results: list[dict]

    @property
    def server_rows(self) -> list[dict]:
        return rows_of(self.table, self.server_pid, 2)

    @property
    def client_rows(self) -> list[dict]:
        return rows_of(self.table, self.client_pid, 1)


def capture_scenario(scenario: str, *extra: str, host: str = "127.0.0.1", body_limit: int = 1024,
                     timeout: float = 60.0) -> Capture:  # fmt: skip
    with http_server(host) as (server, port):
        client = Client(port, scenario, host, *extra)
        upids = {server.pid: upid_of(server.pid), client.pid: upid_of(client.pid)}
        tracer = SocketTracer(pids={server.pid, client.pid}, body_limit=body_limit)
        results, table = run_client_traced(client, tracer, timeout)
    return Capture(tracer, table, port, server.pid, client.pid, upids, results)


def run_client_traced(client: Client, tracer: SocketTracer, timeout: float = 60.0) -> tuple[list[dict], pa.Table]:
    """Start ``tracer``, run ``client``'s scenario under it, stop: (the client's report, the rows)."""
    tracer.start()
    try:
        client.go()
        results = client.finish(tracer, timeout)
        table = finish_capture(tracer)
    finally:
        tracer.stop()
        client.kill()
    return results, table


# -- tests ----------------------------------------------------------------------------------------
def test_server_and_client_transactions_both_roles():
    cap = capture_scenario("basic")
    tracer, table, port = cap.tracer, cap.table, cap.port
    assert [r["status"] for r in cap.results] == [200, 404, 200, 200]
    assert_no_drops(tracer)
    expected = [
        ("GET", "/hello", 200, "OK", "hello world\n", 12, "", 0),
        ("GET", "/missing", 404, "Not Found", "no such thing\n", 14, "", 0),
        ("GET", "/slow?ms=200", 200, "OK", "slow\n", 5, "", 0),
        ("POST", "/upload", 200, "OK", "got 27 bytes\n", 13, '{"name": "pxq", "ok": true}', 27),
    ]
    server_rows, client_rows = cap.server_rows, cap.client_rows
    assert len(table) == 8
    for rows, pid in ((server_rows, cap.server_pid), (client_rows, cap.client_pid)):
        got = [
            (r["req_method"], r["req_path"], r["resp_status"], r["resp_message"], r["resp_body"],
             r["resp_body_size"], r["req_body"], r["req_body_size"])
            for r in rows
        ]  # fmt: skip
        assert got == expected
        for r in rows:
            assert r["upid"] == cap.upids[pid]
            assert (r["major_version"], r["minor_version"]) == (1, 1)
            assert r["encrypted"] is False
            assert 0 < r["latency"] < 5e9
            assert abs(r["time_"].timestamp() - time.time()) < 120
        assert json.loads(rows[0]["req_headers"])["Host"] == f"127.0.0.1:{port}"
        assert json.loads(rows[3]["req_headers"])["Content-Type"] == "application/json"
        assert json.loads(rows[0]["resp_headers"])["Content-Length"] == "12"
        slow = rows[2]
        assert 0.2e9 <= slow["latency"] < 2e9
    # One connection seen from both ends: the addresses mirror each other.
    s, c = server_rows[0], client_rows[0]
    assert (s["local_addr"], s["local_port"]) == ("127.0.0.1", port) == (c["remote_addr"], c["remote_port"])
    assert (s["remote_addr"], s["remote_port"]) == (c["local_addr"], c["local_port"])
    assert c["local_port"] not in (0, port)
    # The server answers within the client's wait.
    assert server_rows[2]["latency"] <= client_rows[2]["latency"] + 5_000_000
    stats = tracer.stats()
    assert stats["transactions"] == 8 and stats["events"] > 0 and stats["open_connections"] == 0


def test_pipelined_requests_over_one_socket():
    cap = capture_scenario("pipelined")
    assert_no_drops(cap.tracer)
    for rows in (cap.server_rows, cap.client_rows):
        assert [(r["req_path"], r["resp_status"], r["resp_body_size"]) for r in rows] == [
            ("/hello", 200, 12),
            ("/bytes?n=100", 200, 100),
            ("/missing", 404, 14),
        ]
        assert rows[1]["resp_body"] == "abcdefghij" * 10
        # Three requests in one write: they share their first byte's timestamp.
        assert len({r["latency"] > 0 for r in rows}) == 1


def test_chunked_response():
    cap = capture_scenario("chunked")
    assert_no_drops(cap.tracer)
    for rows in (cap.server_rows, cap.client_rows):
        assert [r["req_path"] for r in rows] == ["/chunked", "/hello"]
        chunked = rows[0]
        assert json.loads(chunked["resp_headers"])["Transfer-Encoding"] == "chunked"
        assert chunked["resp_body"] == "one,two,three"
        assert chunked["resp_body_size"] == len("one,two,three")
        assert chunked["latency"] >= 20_000_000  # the server paused between chunks


def test_one_mib_upload_is_counted_and_cut_at_the_body_limit():
    size = 1 << 20
    cap = capture_scenario("upload", body_limit=1024)
    assert cap.results[0]["status"] == 200
    assert_no_drops(cap.tracer)
    for rows in (cap.server_rows, cap.client_rows):
        assert [r["req_path"] for r in rows] == ["/upload", "/hello"]
        upload = rows[0]
        assert upload["req_body_size"] == size
        assert upload["req_body"] == ("abcdefghij" * 103)[:1024]
        assert upload["resp_body"] == f"got {size} bytes\n"
    stats = cap.tracer.stats()
    assert stats["bytes"] + stats["filler_bytes"] >= 2 * size  # copied up to the copy limit, counted after


def test_many_concurrent_connections_every_transaction_captured():
    threads, per_thread = 50, 20
    cap = capture_scenario("concurrent", "--threads", str(threads), "--requests", str(per_thread), timeout=120)
    results = cap.results
    assert len(results) == threads * per_thread and all(r["status"] == 200 for r in results)
    assert_no_drops(cap.tracer)
    want = sorted((r["path"], r["size"]) for r in results)
    for rows in (cap.server_rows, cap.client_rows):
        assert sorted((r["req_path"], r["resp_body_size"]) for r in rows) == want
        # Each thread's connection carries its own requests only, in order.
        by_conn: dict[tuple, list[str]] = {}
        for r in rows:
            by_conn.setdefault((r["local_port"], r["remote_port"]), []).append(r["req_path"])
        assert len(by_conn) == threads
        for paths in by_conn.values():
            thread = {p.split("&t=")[1].split("&")[0] for p in paths}
            assert len(thread) == 1
            assert [int(p.rsplit("&r=", 1)[1]) for p in paths] == list(range(per_thread))


def test_client_killed_mid_response():
    with http_server() as (server, port):
        client = Client(port, "drip")
        tracer = SocketTracer(pids={server.pid, client.pid}).start()
        try:
            client.go()
            assert json.loads(_readline(client.proc))["status"] == 200  # the download is under way
            settle(tracer, 0.3)
            assert tracer.open_connections(client.pid) == 1
            assert tracer.stats()["bytes"] > 8192  # body bytes are flowing
            client.kill()
            settle(tracer, 0.5)
            assert tracer.open_connections(client.pid) == 0  # its exit ended them
            # The server goes on serving; a later request is captured as usual.
            after = Client(port, "chunked")
            tracer.add_pids([after.pid])
            after.go()
            after.finish(tracer)
            table = finish_capture(tracer)
        finally:
            tracer.stop()
            client.kill()
    assert [r["req_path"] for r in rows_of(table, after.pid, 1)] == ["/chunked", "/hello"]
    assert not rows_of(table, client.pid, 1)  # its response never completed
    assert [r["req_path"] for r in rows_of(table, server.pid, 2)] == ["/chunked", "/hello"]
    drops = tracer.drops()
    assert drops["unmatched"] >= 1  # the cut response
    assert drops["ringbuf_full"] == 0 and drops["parse_error"] == 0


def test_pid_filter_captures_nothing_else():
    with http_server() as (traced, port), http_server() as (other, other_port):
        client = Client(port, "basic")
        other_client = Client(other_port, "pipelined")
        tracer = SocketTracer(pids={traced.pid, client.pid}).start()
        try:
            client.go()
            other_client.go()
            client.finish(tracer)
            other_client.finish(tracer)
            table = finish_capture(tracer)
        finally:
            tracer.stop()
            client.kill()
            other_client.kill()
    pids = {int(u.split(":")[1]) for u in table.column("upid").to_pylist()}
    assert pids == {traced.pid, client.pid}
    assert len(table) == 8
    assert other_port not in table.column("local_port").to_pylist() + table.column("remote_port").to_pylist()
    assert tracer.stats()["connections"] == 2


def test_nothing_after_the_window_closes():
    """close_window(): the calls made after it are not traced; the window's are all there."""
    with http_server() as (server, port):
        first, second = Client(port, "basic"), Client(port, "basic")
        tracer = SocketTracer(pids={server.pid, first.pid, second.pid}).start()
        try:
            first.go()
            first.finish(tracer)
            settle(tracer)
            tracer.close_window()
            second.go()
            second.finish(tracer)
            table = finish_capture(tracer)
        finally:
            tracer.stop()
            first.kill()
            second.kill()
    pids = {int(u.split(":")[1]) for u in table.column("upid").to_pylist()}
    assert pids == {server.pid, first.pid}
    assert len(rows_of(table, first.pid, 1)) == 4 and len(rows_of(table, server.pid, 2)) == 4
    assert_no_drops(tracer)


def test_vectored_io_writev_readv_sendmsg_recvmsg():
    cap = capture_scenario("vectored")
    assert_no_drops(cap.tracer)
    rows = cap.client_rows
    assert [(r["req_method"], r["req_path"], r["resp_status"]) for r in rows] == [
        ("GET", "/bytes?n=40000", 200),
        ("POST", "/upload", 200),
    ]
    get, post = rows
    assert json.loads(get["req_headers"])["X-Via"] == "writev"  # the third iovec
    assert get["resp_body_size"] == 40000  # read through three iovecs, over several events
    assert get["resp_body"] == ("abcdefghij" * 103)[:1024]
    assert post["req_body_size"] == 3000 and post["req_body"] == ("abcdefghij" * 300)[:1024]
    assert post["resp_body"] == "got 3000 bytes\n"  # received through two iovecs
    assert [r["req_body_size"] for r in cap.server_rows] == [0, 3000]


def test_sendmmsg_and_recvmmsg_messages_are_walked():
    cap = capture_scenario("mmsg")
    assert_no_drops(cap.tracer)
    for rows in (cap.server_rows, cap.client_rows):
        assert [(r["req_path"], r["resp_body_size"]) for r in rows] == [("/hello", 12), ("/bytes?n=300", 300)]
    assert cap.client_rows[1]["resp_body"] == "abcdefghij" * 30


def test_an_fd_that_gets_another_socket_starts_a_new_connection():
    cap = capture_scenario("dup2")
    first, second, *_ = cap.results
    assert first["fd"] == second["fd"] and first["local_port"] != second["local_port"]
    rows = cap.client_rows
    assert [(r["req_path"], r["resp_status"], r["local_port"]) for r in rows] == [
        ("/hello", 200, first["local_port"]),
        *[("/missing", 404, second["local_port"])] * 3,
    ]
    # Client: A, B (connected on its own fd) and B again on A's fd; server: A and B.
    assert cap.tracer.stats()["connections"] == 5
    assert cap.tracer.drops()["parse_error"] == 0


def test_sendfile_body_is_counted_without_its_bytes():
    cap = capture_scenario("sendfile")
    assert_no_drops(cap.tracer)
    server_rows, client_rows = cap.server_rows, cap.client_rows
    for rows in (server_rows, client_rows):
        assert [(r["req_path"], r["resp_body_size"]) for r in rows] == [("/file?n=5000", 5000), ("/hello", 12)]
        assert rows[1]["resp_body"] == "hello world\n"  # parsing stayed in step after the file
    assert client_rows[0]["resp_body"] == ("abcdefghij" * 103)[:1024]  # the client read real bytes
    # The server's kernel moved them from the file unseen: unknown, never NUL bytes.
    assert server_rows[0]["resp_body"] == "<not captured: 5000 bytes>"


def echo_body(target: str, n: int, limit: int = 1024) -> str:
    """The first ``limit`` bytes of sock_apps' /echo body for ``target`` (n bytes in all)."""
    line = target + "\n"
    return (line * (limit // len(line) + 1))[: min(n, limit)]


def test_sendfile_of_any_size_keeps_its_row_and_the_next_one():
    """sendfile over 1 MiB: a counted body of its true size, and the request after it intact."""
    big = 3 << 20
    cap = capture_scenario("sendfile_big")
    assert_no_drops(cap.tracer)
    expected = [("/file?n=5000", 200, 5000), (f"/file?n={big}", 200, big), ("/echo?n=30&after=file", 200, 30)]
    for rows in (cap.server_rows, cap.client_rows):
        assert [(r["req_path"], r["resp_status"], r["resp_body_size"]) for r in rows] == expected
        assert rows[2]["resp_body"] == echo_body("/echo?n=30&after=file", 30)
    assert [r["resp_body"] for r in cap.client_rows[:2]] == [("abcdefghij" * 103)[:1024]] * 2
    assert [r["resp_body"] for r in cap.server_rows[:2]] == [
        "<not captured: 5000 bytes>",
        f"<not captured: {big} bytes>",
    ]
    assert cap.tracer.stats()["filler_bytes"] >= 5000 + big  # and the client's reads beyond the copy limit


def test_one_write_beyond_the_copy_limit_is_copied_up_to_it_and_counted_after():
    """A single send() of 3 MiB: the kernel copies the first COPY_LIMIT bytes (the body prefix a
    row shows is real) and counts the rest; the next request on the connection is intact."""
    big = 3 << 20
    cap = capture_scenario("big_write")
    assert_no_drops(cap.tracer)
    first, second = f"/echo?n={big}&big=1", "/echo?n=40&after=big"
    for rows in (cap.server_rows, cap.client_rows):
        assert [(r["req_path"], r["resp_body_size"], r["resp_body"]) for r in rows] == [
            (first, big, echo_body(first, big)),
            (second, 40, echo_body(second, 40)),
        ]
    copy_limit = cap.tracer.options.copy_limit
    assert copy_limit == 65536 + 1024  # the parser's head allowance and the body limit
    # The server's one call: copied up to the limit, the rest counted.
    assert cap.tracer.stats()["filler_bytes"] >= big - copy_limit


def splice_proxy(backend_port: int):
    """sock_apps' splicing proxy in front of ``backend_port``: (process, port)."""
    return sock_app_listening("proxy", "--port", str(backend_port))


def test_splice_to_and_from_sockets_is_counted():
    """A proxy moving each response body socket -> pipe -> socket with splice(2): its rows on
    both of its connections have every request with the true body size (the bytes never passed
    through it), and the client and server around it see the same transactions."""
    with http_server() as (server, port), splice_proxy(port) as (proxy, proxy_port):
        client = Client(proxy_port, "proxied")
        tracer = SocketTracer(pids={server.pid, proxy.pid, client.pid})
        results, table = run_client_traced(client, tracer)
    assert_no_drops(tracer)
    want = [(r["path"], r["status"], r["size"]) for r in results]
    assert [size for _, _, size in want] == [5000, 300000, 12, 3 << 20, 20]
    for pid, role in ((client.pid, 1), (proxy.pid, 2), (proxy.pid, 1), (server.pid, 2)):
        rows = rows_of(table, pid, role)
        assert [(r["req_path"], r["resp_status"], r["resp_body_size"]) for r in rows] == want, (pid, role)
        if pid == proxy.pid:  # both of its sides: the body went by splice
            assert [r["resp_body"] for r in rows] == [f"<not captured: {size} bytes>" for _, _, size in want]
        else:
            assert [r["resp_body"] for r in rows[:2]] == [echo_body(p, n) for p, _, n in want[:2]]
    assert tracer.stats()["filler_bytes"] >= 2 * sum(size for _, _, size in want)


def test_big_downloads_cost_a_busy_keepalive_connection_nothing():
    """Three 5 MB downloads in a row beside a keep-alive connection making 200 requests/s: every request of the
    busy connection is a row on both sides, the download's row has its true size, and the ring
    buffer never overflows (the kernel copies what the parser uses of each call)."""
    size = 5_000_000
    with http_server() as (server, port):
        steady = Client(port, "steady", "127.0.0.1", "--rate", "200", "--seconds", "3")
        download = Client(port, "download")
        tracer = SocketTracer(pids={server.pid, steady.pid, download.pid}).start()
        try:
            steady.go()
            deadline = time.monotonic() + 30  # the keep-alive connection is under way: its rows come
            while tracer.stats()["transactions"] < 10 and time.monotonic() < deadline:
                tracer.poll(50)
            assert tracer.stats()["transactions"] >= 10, tracer.stats()
            download.go()
            got = download.finish(tracer)
            results = steady.finish(tracer)
            table = finish_capture(tracer)
        finally:
            tracer.stop()
            steady.kill()
            download.kill()
    assert got == [{"path": f"/echo?n=5000000&download={i}", "status": 200, "size": size} for i in (1, 2, 3)]
    assert len(results) >= 400 and all(r["status"] == 200 for r in results)
    drops = tracer.drops()
    assert drops["ringbuf_full"] == 0, drops
    assert_no_drops(tracer)
    want = [r["path"] for r in results]
    assert [r["req_path"] for r in rows_of(table, steady.pid, 1)] == want
    served = [r for r in rows_of(table, server.pid, 2) if "steady=" in r["req_path"]]
    assert [r["req_path"] for r in served] == want
    assert all(r["resp_body"] == echo_body(r["req_path"], 64) for r in served)
    for pid, role in ((download.pid, 1), (server.pid, 2)):
        rows = [r for r in rows_of(table, pid, role) if "download=" in r["req_path"]]
        assert [(r["req_path"], r["resp_status"], r["resp_body_size"]) for r in rows] == [
            (g["path"], 200, size) for g in got
        ]
        assert [r["resp_body"] for r in rows] == [echo_body(g["path"], size) for g in got]


def test_ipv6_loopback_addresses():
    cap = capture_scenario("chunked", host="::1")
    assert_no_drops(cap.tracer)
    port, server_rows, client_rows = cap.port, cap.server_rows, cap.client_rows
    assert len(server_rows) == len(client_rows) == 2
    for r in server_rows + client_rows:
        assert r["local_addr"] == "::1" and r["remote_addr"] == "::1"
    assert server_rows[0]["local_port"] == port == client_rows[0]["remote_port"]
    assert server_rows[0]["remote_port"] == client_rows[0]["local_port"]


def nginx_workers(nginx) -> list[int]:
    """nginx's two worker pids: the master starts them after it listens, so wait for them."""
    deadline = time.monotonic() + 10
    while len(nginx.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = nginx.worker_pids()
    assert len(workers) == 2, nginx.error_log()
    return workers


def test_nginx_keepalive_both_roles(nginx_workload):
    from pxq.testing.workload import MIX, run_client_mix

    nginx = nginx_workload.nginx
    workers = nginx_workers(nginx)
    tracer = SocketTracer(pids={nginx.master_pid, *workers}).start()
    try:
        n = 2 * len(MIX)
        results = run_client_mix(nginx.base_url, n, max_seconds=60)
        settle(tracer, 1.0)
        table = finish_capture(tracer)
    finally:
        tracer.stop()
    assert len(results) == n and all(r.status == r.expect_status for r in results)
    rows = table.to_pylist()
    served = [(r["req_method"], r["req_path"], r["resp_status"]) for r in rows if r["trace_role"] == 2]
    assert sorted(served) == sorted((r.method, r.path, r.status) for r in results)
    for r in rows:
        if r["trace_role"] == 2:
            assert r["local_port"] == nginx.port and r["local_addr"] == "127.0.0.1"
    # nginx is also the backend's client, over its keep-alive upstream connections.
    proxied = sorted((r.method, r.path, r.status) for r in results if not r.path.startswith("/static/"))
    upstream = [r for r in rows if r["trace_role"] == 1]
    assert sorted((r["req_method"], r["req_path"], r["resp_status"]) for r in upstream) == proxied
    assert {r["remote_port"] for r in upstream} == {nginx.backend_port}
    assert tracer.drops()["ringbuf_full"] == 0 and tracer.drops()["parse_error"] == 0


def test_nginx_sendfile_static_file_over_a_mib_keeps_both_rows():
    """Debian's nginx default, `sendfile on`: a 3 MiB static file then a small one on the same
    keep-alive connection; the server side has both rows with their true sizes."""
    from pxq.testing.workload import STATIC_FILES, nginx_server, python_backend

    big = 3 << 20
    with python_backend() as backend, nginx_server(backend.port, sendfile=True) as nginx:
        static = nginx.workdir / "www" / "static"
        (static / "big.bin").write_bytes(bytes(range(256)) * (big // 256))
        workers = nginx_workers(nginx)
        tracer = SocketTracer(pids={nginx.master_pid, *workers}).start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
            got = []
            for path in ("/static/big.bin", "/static/hello.txt", "/static/big.bin", "/static/index.html"):
                conn.request("GET", path)
                resp = conn.getresponse()
                got.append((path, resp.status, len(resp.read())))
            conn.close()
            table = finish_capture(tracer)
        finally:
            tracer.stop()
    assert [(status, size) for _, status, size in got] == [
        (200, big),
        (200, len(STATIC_FILES["hello.txt"])),
        (200, big),
        (200, len(STATIC_FILES["index.html"])),
    ]
    served = [r for r in table.to_pylist() if r["trace_role"] == 2]
    assert [(r["req_path"], r["resp_status"], r["resp_body_size"]) for r in served] == got
    # Every static body went by sendfile: counted, never seen.
    assert [r["resp_body"] for r in served] == [f"<not captured: {size} bytes>" for _, _, size in got]
    assert tracer.drops()["ringbuf_full"] == 0 and tracer.drops()["data_gap"] == 0


# -- the program itself ----------------------------------------------------------------------------
def test_program_text_shows_flags_and_layout_checks():
    text = socket_tracer_program(SocketTracerOptions(pids=frozenset({42}), max_data=4096))
    assert "// bcc cflags: -DMAX_DATA=4096 " in text
    assert "-DFILTER_PIDS=1" in text
    assert "// allowed_pids map, written at start: 42\n" in text
    assert socket_tracer_program(pids={7, 3}).count("written at start: 3, 7") == 1
    assert "struct pxq_sock_event {" in text  # the header is inlined
    assert "_Static_assert(__builtin_offsetof(struct pxq_sock_event, data_len) == 36" in text


def test_a_reader_that_disagrees_with_the_header_does_not_compile():
    class Wrong(ct.Structure):
        _fields_ = [(name, ctype) for name, ctype in EventHeader._fields_ if name != "reserved"]

    good = build_socket_tracer(SocketTracerOptions())
    program = build_program("socket_trace.c", dict(a.split("=", 1) for a in (f[2:] for f in good.cflags)),
                            layout_asserts("pxq_sock_event", Wrong))  # fmt: skip
    with pytest.raises(BpfError) as err:
        load(program)
    assert "offset or size differs from the reader" in str(err.value)


def test_unsupported_protocol_is_a_clear_error():
    with pytest.raises(BpfError, match=r"parses http(, \w+)* only, not smtp"):
        SocketTracer(protocols=("http", "smtp"))


def test_another_architecture_is_a_clear_error_before_anything_loads(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    tracer = SocketTracer()
    with pytest.raises(BpfError, match="as x86-64 lays them out .* this machine is aarch64"):
        tracer.start()
    assert not tracer.running


def test_tracefs_missing_is_a_clear_error(tmp_path):
    """In a private mount namespace without tracefs, start() says what is missing."""
    script = (
        "import subprocess, sys\n"
        "subprocess.run(['umount', '-l', '/sys/kernel/tracing'], check=True)\n"
        "from pxq.agent.socket_tracer import SocketTracer\n"
        "from pxq.agent.bpf_program import BpfError\n"
        "try:\n"
        "    SocketTracer().start()\n"
        "except BpfError as e:\n"
        "    print('ERROR', e)\n"
    )
    out = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert "ERROR tracefs is not mounted at /sys/kernel/tracing" in out.stdout, out.stderr


def test_not_root_is_a_clear_error():
    # Everything is imported and built as root (the interpreter's files may be root's only);
    # then the process drops to nobody and tries to start.
    script = (
        "import os\n"
        "from pxq.agent.socket_tracer import SocketTracer\n"
        "from pxq.agent.bpf_program import BpfError\n"
        "tracer = SocketTracer()\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    tracer.start()\n"
        "except BpfError as e:\n"
        "    print('ERROR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).parents[2])  # fmt: skip
    assert "ERROR tracing with eBPF needs root" in out.stdout, out.stderr
