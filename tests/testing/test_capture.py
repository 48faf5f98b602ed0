"""Captures of real loopback traffic: the recording proxy in front of nginx, and the capture
directory that make_capture writes (the shared ``http_capture_dir``)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pyarrow.compute as pc
import pytest

from pxq.agent.procinfo import process_info
from pxq.agent.protocols.http1 import Http1Stitcher
from pxq.replay import open_capture
from pxq.tables import CATALOG
from pxq.testing.make_capture import DEFAULT_REQUESTS
from pxq.testing.recording_proxy import RecordingProxy
from pxq.testing.streams import replay
from pxq.testing.workload import ECHO_BODY, MIX, run_client_mix


def rows(capture_dir):
    capture = open_capture(capture_dir)
    return capture, capture.scan("http_events").to_pylist()


def test_capture_holds_every_request_of_the_mix(http_capture, http_capture_dir):
    capture, events = rows(http_capture_dir)
    assert capture.table_names() == ["http_events"]
    assert len(events) == len(http_capture.client_results) == http_capture.rows
    assert sorted((e["req_method"], e["req_path"], e["resp_status"]) for e in events) == sorted(
        (r.method, r.path, r.status) for r in http_capture.client_results
    )
    assert {e["resp_status"] for e in events} == {200, 404, 500}
    assert not http_capture.errors and capture.drops == {}
    # Rows are in time order and inside the capture's window.
    times = [e["time_"] for e in events]
    assert times == sorted(times)
    table = capture.scan("http_events", ["time_"])
    ns = pc.cast(table.column("time_"), "int64").to_pylist()
    assert capture.start_time_ns <= min(ns) and max(ns) <= capture.end_time_ns


def test_capture_statuses_bodies_and_latencies(http_capture_dir):
    _, events = rows(http_capture_dir)
    by_path: dict[str, list[dict]] = {}
    for e in events:
        by_path.setdefault(e["req_path"], []).append(e)
    assert all(e["resp_status"] == 404 and e["resp_message"] == "Not Found" for e in by_path["/missing"])
    assert all(e["resp_status"] == 500 for e in by_path["/api/error"])
    slow = by_path["/api/slow"]
    assert slow and all(e["latency"] >= 150_000_000 for e in slow)
    fast = [e for e in events if e["req_path"] != "/api/slow"]
    assert sorted(e["latency"] for e in fast)[len(fast) // 2] < 150_000_000
    posts = by_path["/api/echo"]
    assert posts and all(e["req_method"] == "POST" for e in posts)
    assert all(e["req_body"] == ECHO_BODY.decode() and e["req_body_size"] == len(ECHO_BODY) for e in posts)
    assert all(json.loads(e["resp_body"])["size"] == len(ECHO_BODY) for e in posts)
    assert all(e["content_type"] == 1 for e in posts)
    chunked = by_path["/api/echo?chunked=1"]
    assert all(json.loads(e["req_headers"])["Transfer-Encoding"] == "chunked" for e in chunked)
    assert all(e["req_body"] == "chunk-one;chunk-two;" for e in chunked)
    heads = [e for e in events if e["req_method"] == "HEAD"]
    assert heads and all(e["resp_body_size"] == 0 and e["resp_body"] == "" for e in heads)
    big = [e for e in events if e["req_method"] == "GET" and e["req_path"] == "/static/big.json"]
    assert big and all(e["resp_body_size"] > 1024 and len(e["resp_body"]) == 1024 for e in big)
    streamed = by_path["/api/stream"]
    assert all(json.loads(e["resp_headers"]).get("Transfer-Encoding") == "chunked" for e in streamed)


def test_capture_rows_are_nginx_workers_serving_on_loopback(http_capture, http_capture_dir):
    capture, events = rows(http_capture_dir)
    assert {e["trace_role"] for e in events} == {2}
    assert {e["encrypted"] for e in events} == {False}
    assert {(e["local_addr"], e["local_port"]) for e in events} == {("127.0.0.1", http_capture.nginx_port)}
    assert {e["remote_addr"] for e in events} == {"127.0.0.1"}
    assert all(e["remote_port"] > 0 and e["remote_port"] != http_capture.nginx_port for e in events)
    # Every upid is an nginx worker (a child of the master) described in capture.json.
    assert set(http_capture.upids) == {e["upid"] for e in events} == set(capture.processes)
    for upid, proc in capture.processes.items():
        asid, pid, start_ticks = (int(x) for x in upid.split(":"))
        assert (asid, pid, start_ticks) == (0, proc["pid"], proc["start_ticks"])
        assert proc["comm"] == "nginx" and "worker process" in proc["cmdline"]
        assert proc["exe"].endswith("/nginx") and pid != http_capture.nginx_master_pid
    assert all(json.loads(e["resp_headers"])["Server"].startswith("nginx/") for e in events)


def test_capture_schema_is_the_catalogs(http_capture_dir):
    capture = open_capture(http_capture_dir)
    assert capture.scan("http_events").schema == CATALOG["http_events"].arrow_schema()


def test_proxy_forwards_bytes_unchanged_and_raw_chunks_replay_to_the_same_rows(nginx_workload):
    nginx = nginx_workload.nginx
    direct = urllib.request.urlopen(nginx.base_url + "/static/big.json", timeout=10).read()
    with RecordingProxy(nginx.port, server_pid=nginx.master_pid, record_raw=True) as proxy:
        via = urllib.request.urlopen(proxy.base_url + "/static/big.json", timeout=10).read()
        results = run_client_mix(proxy.base_url, len(MIX))
    assert via == direct
    assert all(r.status == r.expect_status for r in results)
    live = proxy.http_events()
    assert live.num_rows == 1 + len(MIX)
    # The chunks as read from the sockets, parsed again offline, give the same transactions.
    offline = []
    for conn in proxy.connections:
        txs, st = replay(conn.chunks, Http1Stitcher())
        assert not st.errors
        assert txs == conn.transactions
        offline += txs
    assert sorted(t.resp_end_ns for t in offline) == pc.cast(live.column("time_"), "int64").to_pylist()
    # Each connection's rows name the worker that held its socket.
    workers = {w for w in nginx.worker_pids()}
    for conn in proxy.connections:
        assert int(conn.upid.split(":")[1]) in workers
    assert not proxy.errors


def test_proxy_with_no_traffic_gives_an_empty_table(nginx_workload):
    with RecordingProxy(nginx_workload.nginx.port, server_pid=nginx_workload.nginx.master_pid) as proxy:
        pass
    assert proxy.http_events().num_rows == 0
    assert proxy.http_events().schema == CATALOG["http_events"].arrow_schema()


@pytest.mark.servers
def test_make_capture_command_line(tmp_path):
    out = tmp_path / "cap"
    proc = subprocess.run(
        [sys.executable, "-m", "pxq.testing.make_capture", str(out), "--requests", "12", "--seconds", "30"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "wrote 12 http_events rows from 12 requests" in proc.stderr
    capture = open_capture(out)
    assert capture.scan("http_events").num_rows == 12
    assert all(process_info(p["pid"]) is None for p in capture.processes.values())  # all stopped
    assert DEFAULT_REQUESTS > 12
