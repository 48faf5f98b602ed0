"""Real HTTP clients (curl, requests, http.client) against a real server, traced host-wide:
every request appears once from the client's side and once from the server's, stitched right."""

from __future__ import annotations

import subprocess
import time

import pyarrow.compute as pc
import pytest

from pxq.testing.kernel import require_bpf
from pxq.testing.workload import python_backend

pytestmark = pytest.mark.kernel


def traced(action):
    """Run ``action(port)`` with the socket tracer attached host-wide; return (rows, drops)."""
    require_bpf()
    from pxq.agent.socket_tracer import SocketTracer

    with python_backend() as backend:
        tracer = SocketTracer(pids=None)
        tracer.start()
        try:
            action(backend.port)
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                tracer.poll(100)
            rows = tracer.drain()
            drops = tracer.drops()
        finally:
            tracer.stop()
        return rows, drops, backend.pid


def rows_for(rows, tag: str) -> list[dict]:
    mine = rows.filter(pc.match_substring(rows["req_path"], tag))
    return mine.select(
        ["upid", "trace_role", "req_method", "req_path", "resp_status", "resp_body", "req_body_size", "latency"]
    ).to_pylist()


def test_curl_client_and_server_sides():
    def action(port):
        for i in range(3):
            subprocess.run(
                ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/api/items?curl={i}"], check=True, timeout=30
            )
        subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-X",
                "POST",
                "--data-binary",
                "x" * 300,
                f"http://127.0.0.1:{port}/api/echo?curl=post",
            ],
            check=True,
            timeout=30,
        )

    rows, drops, server_pid = traced(action)
    seen = rows_for(rows, "curl=")
    assert len(seen) == 8, seen  # 4 requests x (client side + server side)
    clients = [r for r in seen if r["trace_role"] == 1]
    servers = [r for r in seen if r["trace_role"] == 2]
    assert len(clients) == len(servers) == 4
    assert all(f":{server_pid}:" in r["upid"] for r in servers)
    assert all(f":{server_pid}:" not in r["upid"] for r in clients)
    for r in seen:
        if "post" in r["req_path"]:
            assert r["req_method"] == "POST" and r["req_body_size"] == 300 and '"echo"' in r["resp_body"]
        else:
            assert r["req_method"] == "GET" and r["resp_status"] == 200 and '"items"' in r["resp_body"]
        assert 0 < r["latency"] < 5 * 10**9
    assert drops.get("ringbuf_full", 0) == 0


CLIENTS = """
import http.client, sys
import requests
port = int(sys.argv[1])
with requests.Session() as session:
    for i in range(4):
        assert session.get(f"http://127.0.0.1:{port}/missing?lib=requests{i}").status_code == 404
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
for i in range(4):
    conn.request("GET", f"/api/error?lib=httpclient{i}")
    conn.getresponse().read()
conn.close()
"""


def test_requests_and_http_client_keepalive():
    import sys

    def action(port):
        # In a process of its own: the tracer never traces the process it runs in.
        subprocess.run([sys.executable, "-c", CLIENTS, str(port)], check=True, timeout=60)

    rows, drops, server_pid = traced(action)
    via_requests = rows_for(rows, "lib=requests")
    via_http_client = rows_for(rows, "lib=httpclient")
    assert len(via_requests) == 8 and {r["resp_status"] for r in via_requests} == {404}
    assert len(via_http_client) == 8 and {r["resp_status"] for r in via_http_client} == {500}
    for r in via_requests + via_http_client:
        assert (r["trace_role"] == 2) == (f":{server_pid}:" in r["upid"])
        # The backend names the path it answered in its 404 body: the right response was paired.
        assert r["req_path"].split("?")[0] in r["resp_body"] or r["resp_status"] == 500
