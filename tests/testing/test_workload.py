"""The real workload: nginx in front of the Python backend, driven by the bounded client mix."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest

from pxq.agent.procinfo import process_info
from pxq.testing import ports
from pxq.testing.workload import MIX, STATIC_FILES, nginx_server, python_backend, run_client_mix


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_free_port_is_bindable():
    import socket

    port = ports.free_port()
    with socket.socket() as s:
        s.bind((ports.LOOPBACK, port))
    assert not ports.wait_for_port(port, timeout=0.2)


def test_nginx_serves_static_and_proxies_the_backend(nginx_workload):
    base = nginx_workload.base_url
    assert base.startswith("http://127.0.0.1:")
    status, headers, body = get(base + "/static/hello.txt")
    assert (status, body) == (200, STATIC_FILES["hello.txt"])
    assert headers["Server"].startswith("nginx/")
    status, headers, body = get(base + "/api/items")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert len(json.loads(body)["items"]) == 5
    assert get(base + "/missing")[0] == 404
    assert get(base + "/api/error")[0] == 500
    t0 = time.monotonic()
    assert get(base + "/api/slow")[0] == 200
    assert time.monotonic() - t0 >= 0.15


def test_nginx_processes_are_real_and_ours(nginx_workload):
    nginx = nginx_workload.nginx
    master = process_info(nginx.master_pid)
    assert master is not None and master["comm"] == "nginx" and "master process" in master["cmdline"]
    workers = nginx.worker_pids()
    assert len(workers) == 2
    assert all("worker process" in process_info(w)["cmdline"] for w in workers)


def test_client_mix_gets_what_each_step_expects(nginx_workload):
    results = run_client_mix(nginx_workload.base_url, 2 * len(MIX))
    assert len(results) == 2 * len(MIX)
    assert [(r.method, r.path) for r in results[: len(MIX)]] == [(s.method, s.path) for s in MIX]
    assert all(r.status == r.expect_status for r in results), [(r.path, r.status) for r in results]
    assert {r.status for r in results} >= {200, 404, 500}
    slow = [r for r in results if r.path == "/api/slow"]
    assert slow and all(r.seconds >= 0.15 for r in slow)
    head = [r for r in results if r.method == "HEAD"]
    assert head and all(r.body_size == 0 for r in head)


def test_client_mix_is_bounded_in_time(nginx_workload):
    t0 = time.monotonic()
    results = run_client_mix(nginx_workload.base_url, 10_000, max_seconds=0.5)
    assert time.monotonic() - t0 < 5
    assert 0 < len(results) < 10_000


def test_client_mix_refuses_non_loopback_targets():
    with pytest.raises(ValueError):
        run_client_mix("http://192.0.2.1:80", 1)


@pytest.mark.servers
def test_servers_stop_when_their_blocks_end():
    with python_backend() as backend, nginx_server(backend.port) as nginx:
        pids = [backend.pid, nginx.master_pid, *nginx.worker_pids()]
        port = nginx.port
    for pid in pids:
        assert process_info(pid) is None, pid
    assert not ports.wait_for_port(port, timeout=0.3)
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""
