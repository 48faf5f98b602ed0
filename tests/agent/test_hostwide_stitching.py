"""Host-wide tracing attached while traffic flows over a keep-alive connection opened before the
tracer: every row pairs a request with its own response.

nginx proxies to the Python backend over an upstream keep-alive connection that exists before
the tracer attaches. Attaching takes about a second (bcc verifies and attaches one exit program
after the other, the read and recv exits long before the send and write ones), and requests keep
flowing meanwhile. If anything were traced before every probe is attached, the backend would be
seen reading requests whose responses it wrote unseen, and each later response would be paired
with a request a few places earlier (wrong status and body, latency of a whole round of the
client mix). The kernel program traces nothing until the tracer says every probe is attached.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from pxq.agent.conn_tracker import socket_endpoints
from pxq.testing.kernel import require_bpf
from pxq.testing.workload import MIX, nginx_workload, run_client_mix

pytestmark = pytest.mark.kernel

ROLE_CLIENT, ROLE_SERVER = 1, 2
# (method, path) -> (status, start of the response body as http_events keeps it). The backend
# answers everything but /static/, which nginx serves itself.
EXPECTED = {
    ("GET", "/"): (200, "<!doctype html>"),
    ("GET", "/api/items"): (200, '{"items": '),
    ("GET", "/static/hello.txt"): (200, "hello from nginx"),
    ("POST", "/api/echo"): (200, '{"echo": "{\\"order\\": 42'),
    ("GET", "/missing"): (404, '{"error": "not found", "path": "/missing"'),
    ("GET", "/api/error"): (500, '{"error": "the backend failed on purpose"'),
    ("HEAD", "/static/big.json"): (200, ""),  # no body
    ("GET", "/static/big.json"): (200, '{"rows": '),
    ("GET", "/api/slow"): (200, '{"slow": true'),
    ("GET", "/api/stream"): (200, '{"part": 1}'),
    ("POST", "/api/echo?chunked=1"): (200, '{"echo": "chunk-one;chunk-two;"'),
}
SLOW_PATH = "/api/slow"
# Requests of one round of the mix that reach the backend.
BACKEND_STEPS = sum(1 for step in MIX if not step.path.startswith("/static/"))
# A round of the client mix takes at least this long (the slow endpoint sleeps 150 ms, then the
# loop pauses): a request paired with a response a round later shows at least this latency.
ROUND_PAUSE_S = 0.3
FAST_LATENCY_NS = 100 * 10**6  # every other endpoint answers in about a millisecond
SLOW_LATENCY_NS = (150, 400)  # ms, the slow endpoint's
TRAFFIC_BEFORE_ATTACH_S = 0.5
TRACE_AFTER_ATTACH_S = 2.0
MAX_ROUNDS = 200  # bounds the traffic whatever happens


def peer_ports(pid: int) -> set[int]:
    """Remote ports of the connected TCP sockets of a process (from /proc)."""
    ports = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        found = socket_endpoints(pid, int(fd))
        if found is not None and found[3] != 0:
            ports.add(found[3])
    return ports


def pid_of(upid: str) -> int:
    return int(upid.split(":")[1])


def mismatches(rows: list[dict]) -> list[dict]:
    """Rows whose response is not the one their request gets."""
    bad = []
    for r in rows:
        want = EXPECTED.get((r["req_method"], r["req_path"]))
        body = r["resp_body"] or ""
        if want is None or r["resp_status"] != want[0] or not (body.startswith(want[1]) if want[1] else body == ""):
            bad.append(r)
    return bad


def latency_outliers(rows: list[dict]) -> list[dict]:
    """Rows whose latency is not their endpoint's (a response of another round paired)."""
    low, high = (ms * 10**6 for ms in SLOW_LATENCY_NS)
    return [
        r
        for r in rows
        if not (low <= r["latency"] < high if r["req_path"] == SLOW_PATH else 0 <= r["latency"] < FAST_LATENCY_NS)
    ]


def show(rows: list[dict]) -> str:
    return "\n".join(
        f"  pid {pid_of(r['upid'])} role {r['trace_role']} :{r['remote_port']} {r['req_method']} {r['req_path']}"
        f" -> {r['resp_status']} {(r['resp_body'] or '')[:30]!r} {r['latency'] / 1e6:.1f} ms"
        for r in rows
    )


def test_hostwide_attach_during_keepalive_traffic_stitches_every_row():
    require_bpf()
    from pxq.agent.socket_tracer import SocketTracer

    with nginx_workload() as workload:
        # One round first: nginx opens its upstream keep-alive connection to the backend now.
        warmup = run_client_mix(workload.base_url, len(MIX), max_seconds=30)
        assert [r.status for r in warmup] == [r.expect_status for r in warmup]
        backend_pid, workers = workload.backend.pid, set(workload.nginx.worker_pids())
        upstream_before = peer_ports(backend_pid)
        assert upstream_before, "nginx kept no upstream connection to the backend open"

        stop = threading.Event()
        sent: list = []
        failures: list[BaseException] = []

        def client_loop() -> None:
            try:
                for _ in range(MAX_ROUNDS):
                    if stop.is_set():
                        return
                    sent.extend(run_client_mix(workload.base_url, len(MIX), max_seconds=30))
                    time.sleep(ROUND_PAUSE_S)
            except BaseException as exc:  # reported by the test thread
                failures.append(exc)

        client = threading.Thread(target=client_loop, name="client-mix", daemon=True)
        client.start()
        tracer = SocketTracer(pids=None)  # host-wide: nothing is filtered in the kernel
        try:
            time.sleep(TRAFFIC_BEFORE_ATTACH_S)
            tracer.start()  # attaches while requests flow over the pre-existing connection
            deadline = time.monotonic() + TRACE_AFTER_ATTACH_S
            while time.monotonic() < deadline:
                tracer.poll(100)
            stop.set()
            client.join(timeout=60)
            for _ in range(5):
                tracer.poll(100)
            table = tracer.drain()
            errors = tracer.http_errors()
            drops = tracer.drops()
        finally:
            stop.set()
            tracer.stop()
        assert not client.is_alive() and not failures, failures
        assert all(r.status == r.expect_status for r in sent)

    rows = table.select(["upid", "trace_role", "remote_port", "req_method", "req_path", "resp_status",
                         "resp_body", "latency"]).to_pylist()  # fmt: skip
    backend = [r for r in rows if pid_of(r["upid"]) == backend_pid]
    nginx = [r for r in rows if pid_of(r["upid"]) in workers]
    context = f"drops {drops}, http errors {errors}"

    # The scenario happened: the backend's rows come from the connection opened before attach,
    # at least a whole round of the mix of them.
    assert {r["trace_role"] for r in backend} == {ROLE_SERVER}, show(backend)
    before = [r for r in backend if r["remote_port"] in upstream_before]
    assert len(before) >= BACKEND_STEPS, f"{context}\n{show(backend)}"

    # Every backend row pairs its request with its own response, of the same round.
    assert not mismatches(backend), f"{context}\n{show(mismatches(backend))}"
    assert not latency_outliers(backend), f"{context}\n{show(latency_outliers(backend))}"

    # nginx's rows too: server side (the client's requests) and client side (upstream).
    served = [r for r in nginx if r["trace_role"] == ROLE_SERVER]
    upstream = [r for r in nginx if r["trace_role"] == ROLE_CLIENT and r["remote_port"] == workload.backend.port]
    assert len(served) >= len(MIX) and len(upstream) >= BACKEND_STEPS, f"{context}\n{show(nginx)}"
    assert not mismatches(nginx), f"{context}\n{show(mismatches(nginx))}"
    assert not latency_outliers(upstream), f"{context}\n{show(latency_outliers(upstream))}"
