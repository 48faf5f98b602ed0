"""Framing on the running kernel: holes closed in the same batch, CONNECT refused with a body,
Content-Encoding bodies. Real sock_apps servers and clients on loopback (see
test_socket_tracer.py), exact rows on both sides; every body names its request.

Needs root and bcc. Fails (never skips silently) when eBPF is unavailable, unless
PXQ_ALLOW_NO_BPF=1.
"""

from __future__ import annotations

import json
import time

import pytest

from pxq.agent.procinfo import upid_of
from pxq.agent.socket_tracer import SocketTracer, SocketTracerOptions
from pxq.testing.kernel import require_bpf
from tests.agent.test_socket_tracer import (
    Capture,
    Client,
    capture_scenario,
    finish_capture,
    http_server,
    run_client_traced,
)

pytestmark = pytest.mark.kernel
PATTERN = b"abcdefghij"


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


def echo_body(target: str, n: int) -> str:
    """What sock_apps' /mark answers (the target, a newline, n pattern bytes), as the test
    writes it independently."""
    return target + "\n" + (PATTERN * (n // 10 + 1))[:n].decode()


def test_close_right_after_a_hole_keeps_the_transactions_after_it():
    """small, big, small, medium on one keep-alive connection, then close and exit, all in one
    poll batch. The big response is moved by calls larger than the kernel copies (MAX_STEPS
    lowered to 4 events = 64 KiB a call): a hole, which the close in the same batch used to
    turn into the loss of every transaction after it."""
    with http_server() as (server, port):
        client = Client(port, "hole_then_close")
        upids = {server.pid: upid_of(server.pid), client.pid: upid_of(client.pid)}
        tracer = SocketTracer(pids={server.pid, client.pid}, options=SocketTracerOptions(max_steps=4)).start()
        try:
            client.go()
            client.proc.wait(timeout=60)  # nothing is polled meanwhile: one batch holds it all
            results = client.finish(tracer)
            table = finish_capture(tracer)
        finally:
            tracer.stop()
            client.kill()
    cap = Capture(tracer, table, port, server.pid, client.pid, upids, results)
    assert [(r["path"], r["status"]) for r in results] == [
        ("/mark?n=10&i=1", 200), ("/mark?n=3000000&i=2", 200), ("/mark?n=10&i=3", 200), ("/mark?n=20000&i=4", 200),
    ]  # fmt: skip
    drops = tracer.drops()
    want = [(r["path"], 200, r["size"], echo_body(r["path"], int(r["path"].split("n=")[1].split("&")[0]))[:1024])
            for r in results]  # fmt: skip
    for rows in (cap.server_rows, cap.client_rows):
        got = [(r["req_path"], r["resp_status"], r["resp_body_size"], r["resp_body"]) for r in rows]
        if drops["truncated"]:
            # The kernel copied part of the big calls only: that transaction is lost with the
            # bytes in its hole (a data_gap), never the ones after it.
            assert got == want[:1] + want[2:]
            assert drops["data_gap"] >= 1
        else:  # a kernel side that counts the bytes it does not copy leaves no hole: every row
            assert [g[:3] for g in got] == [w[:3] for w in want]
            assert got[:1] + got[2:] == want[:1] + want[2:]
    assert drops["parse_error"] == 0


def test_connect_refused_with_a_body_does_not_shift_later_pairs():
    """A proxy refusing CONNECT with a body (407, then 403), a GET after each, on one keep-alive
    connection: four rows on each side, each with its own answer, no negative latency."""
    cap = capture_scenario("connect_refused")
    assert [(r["method"], r["path"], r["status"]) for r in cap.results] == [
        ("CONNECT", "proxy-auth.example:443", 407), ("GET", "/mark?i=2", 200),
        ("CONNECT", "forbidden.example:443", 403), ("GET", "/mark?i=4", 200),
    ]  # fmt: skip
    bodies = {407: "proxy auth required for {}\n", 403: "forbidden: {}\n", 200: "{}\n"}
    want = [
        (r["method"], r["path"], r["status"], bodies[r["status"]].format(r["path"]), r["size"]) for r in cap.results
    ]
    for rows in (cap.server_rows, cap.client_rows):
        got = [(r["req_method"], r["req_path"], r["resp_status"], r["resp_body"], r["resp_body_size"]) for r in rows]
        assert got == want
        assert all(r["latency"] > 0 for r in rows)
        assert json.loads(rows[0]["resp_headers"])["Proxy-Authenticate"] == "Basic"
    drops = cap.tracer.drops()
    assert (drops["parse_error"], drops["unmatched"]) == (0, 0), cap.tracer.http_errors()


def test_encoded_bodies_are_shown_decoded_with_their_wire_sizes():
    """gzip and deflate responses (one inflating past the body limit) and a gzip upload: both
    sides show the bodies decoded, the sizes as the client counted them on the wire."""
    cap = capture_scenario("encoded")
    results = cap.results
    assert [(r["path"], r["status"]) for r in results] == [
        ("/encoded?enc=gzip&n=100", 200), ("/encoded?enc=deflate&n=200", 200), ("/encoded?enc=gzip&n=60000", 200),
        ("/upload", 200), ("/hello", 200),
    ]  # fmt: skip
    upload = echo_body("/upload", 3000)
    want = [
        (r["path"], echo_body(r["path"], int(r["path"].split("n=")[1]))[:1024], r["size"], "", 0)
        for r in results[:3]
    ] + [
        ("/upload", f"got {results[3]['sent']} bytes\n", results[3]["size"], upload[:1024], results[3]["sent"]),
        ("/hello", "hello world\n", 12, "", 0),
    ]  # fmt: skip
    for rows in (cap.server_rows, cap.client_rows):
        got = [(r["req_path"], r["resp_body"], r["resp_body_size"], r["req_body"], r["req_body_size"]) for r in rows]
        assert got == want
    drops = cap.tracer.drops()
    assert (drops["parse_error"], drops["unmatched"], drops["data_gap"]) == (0, 0, 0)


# -- --pid of a parent: its descendants ---------------------------------------------------------
def test_a_child_forked_by_a_traced_process_is_traced():
    """Only the client's pid is given; on "go" it forks, and the child makes the requests: the
    kernel adds the child at its fork (sched_process_fork), so its rows are there."""
    with http_server() as (server, port):
        client = Client(port, "basic", "127.0.0.1", "--fork")
        results, table = run_client_traced(client, SocketTracer(pids={server.pid, client.pid}))
    child = results[0]["pid"]
    assert child != client.pid and {r["pid"] for r in results} == {child}
    rows = table.to_pylist()
    by_pid = {}
    for r in rows:
        by_pid.setdefault((int(r["upid"].split(":")[1]), r["trace_role"]), []).append((r["req_path"], r["resp_status"]))
    want = [(r["path"], r["status"]) for r in results]
    assert by_pid == {(child, 1): want, (server.pid, 2): want}


def test_pid_of_nginx_master_alone_captures_what_its_workers_serve(nginx_workload):
    """The master pid only (its workers do the work): the agent adds the running workers, and
    every request the client made is there on nginx's side, and nginx's own upstream requests."""
    import threading

    from pxq.agent.embedded import AgentOptions, EmbeddedAgent
    from pxq.plan.manifest import manifest_for_tables
    from pxq.testing.workload import MIX, run_client_mix

    nginx = nginx_workload.nginx
    assert nginx.worker_pids(), nginx.error_log()
    manifest = manifest_for_tables(["http_events"], now_ns=time.time_ns(), pids=(nginx.master_pid,))
    attached, done, results, warnings = threading.Event(), threading.Event(), [], []

    def drive() -> None:
        if attached.wait(60):
            results.extend(run_client_mix(nginx.base_url, 2 * len(MIX), max_seconds=30))
        done.set()

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        store = EmbeddedAgent(manifest, AgentOptions(on_warning=warnings.append)).run(8.0, lambda p: attached.set())
    finally:
        attached.set()
        driver.join()
    assert done.is_set() and len(results) == 2 * len(MIX) and all(r.status == r.expect_status for r in results)
    rows = store.table("http_events").to_pylist()
    served = sorted((r["req_method"], r["req_path"], r["resp_status"]) for r in rows if r["trace_role"] == 2)
    assert served == sorted((r.method, r.path, r.status) for r in results)
    proxied = sorted((r.method, r.path, r.status) for r in results if not r.path.startswith("/static/"))
    assert sorted((r["req_method"], r["req_path"], r["resp_status"]) for r in rows if r["trace_role"] == 1) == proxied
    pids = {int(r["upid"].split(":")[1]) for r in rows}
    assert pids and pids <= set(nginx.worker_pids())
    assert warnings == []
