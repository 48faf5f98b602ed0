"""The node agent on the running kernel: ``pxq agent serve`` collecting all along, real HTTP traffic
sent before the query, and ``pxq run --agent`` answering from the agent's history at once. Rows are
checked against what the client sent and got (never against pxq's own output). Other helpers trace
this host concurrently: every check is restricted to this test's unique request paths / pids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pxq.agent.flight import AgentClient
from pxq.testing.agent_process import running_agent
from pxq.testing.kernel import require_bpf
from pxq.testing.workload import python_backend
from tests.agent.test_live_run import send_requests
from tests.cli_support import run_pxq

pytestmark = pytest.mark.kernel

QUERY_TIMEOUT_S = 60.0


def _rows_for(address: str, tag: str) -> list[dict]:
    proc = run_pxq(
        "run", "http_data", "--agent", address, "-o", "json", "--", "--num_head=100000", "--start_time=-5m", check=True
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return [r for r in rows if f"?{tag}=" in r["req_path"]]


def test_agent_answers_from_history_with_the_clients_transactions(tmp_path):
    require_bpf()
    tag = f"agentd{time.time_ns()}"
    with running_agent("--no-perf-profiler", state_dir=tmp_path, timeout_s=180) as agent:
        with python_backend() as backend:
            sent = send_requests(backend.port, tag, 12)  # before any query: the agent keeps them
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        while True:  # the agent moves rows every poll: wait for the condition, not a guessed time
            rows = _rows_for(agent.address, tag)
            if len(rows) >= 2 * len(sent) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        by_path: dict[str, list[dict]] = {}
        for row in rows:
            by_path.setdefault(row["req_path"], []).append(row)
        assert set(by_path) == {path for path, _ in sent}
        for path, status in sent:
            seen = by_path[path]
            # Both ends are on this host and traced: the backend (server) and this test (client).
            assert len(seen) == 2, (path, seen)
            assert {r["resp_status"] for r in seen} == {status}
            assert all(r["req_method"] == "GET" and r["latency"] > 0 for r in seen)
        with AgentClient(agent.address) as client:
            status = client.status()
        assert status["mode"] == "live" and status["state"] == "running"
        assert status["collectors"]["socket_tracer"] == "on" and status["collectors"]["perf_profiler"] == "off"
        assert status["tables"]["http_events"]["rows"] >= 2 * len(sent)
        assert status["tables"]["http_events"]["bytes"] > 0
        assert {
            "socket_tracer: tracepoint sock:sock_send_length",
            "socket_tracer: tracepoint sock:sock_recv_length",
        } <= set(status["probes"]), status["probes"]
    assert agent.proc.returncode == 0, agent.stderr


def test_profiler_runs_at_the_low_default_rate(tmp_path):
    """The default agent profiles continuously at 19 Hz: a process spinning for 2 s of CPU gets
    about its CPU time (its own rusage) x 19 samples (perf sampling is approximate: within a
    factor of 2). CPU time, not wall time: on a loaded machine a 2 s wall-clock spin got too
    little CPU for 19 samples."""
    require_bpf()
    with running_agent("--no-socket-tracer", state_dir=tmp_path, timeout_s=180) as agent:
        spin = subprocess.Popen(
            [sys.executable, "-c", "import time\nend = time.process_time() + 2\nwhile time.process_time() < end: pass"]
        )
        _, status_code, usage = os.wait4(spin.pid, 0)
        assert os.waitstatus_to_exitcode(status_code) == 0
        spin.returncode = 0
        expected = (usage.ru_utime + usage.ru_stime) * 19
        script = tmp_path / "samples.pxl"
        script.write_text(
            "import px\n"
            "df = px.DataFrame('stack_traces.beta', start_time='-5m')\n"
            f"df = df[px.upid_to_pid(df.upid) == {spin.pid}]\n"
            "df = df.agg(samples=('count', px.sum))\n"
            "px.display(df, 'samples')\n"
        )
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        samples = 0
        while samples < expected / 2 and time.monotonic() < deadline:
            proc = run_pxq("run", str(script), "--agent", agent.address, "-o", "json", check=True)
            lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
            samples = (lines[0]["samples"] or 0) if lines else 0
            time.sleep(0.5)
        flame = run_pxq("run", "cpu_flamegraph", "--agent", agent.address, "-o", "folded", check=True)
        with AgentClient(agent.address) as client:
            status = client.status()
    # The bundled flamegraph asks for 99 Hz: the agent's 19 Hz history is shown, and said.
    assert "perf_profiler.sample_hz=99, but agent" in flame.stderr and flame.stdout.strip()
    assert "perf_profiler: perf event software cpu-clock on" in " ".join(status["probes"])
    assert status["profiler_sample_hz"] == 19 and status["collectors"]["perf_profiler"] == "on"
    assert expected / 2 <= samples <= 2 * expected + 5, (samples, expected)


def test_rows_older_than_the_retention_are_evicted_and_counted(tmp_path):
    require_bpf()
    tag = f"agentdret{time.time_ns()}"
    with running_agent("--no-perf-profiler", "--retention", "10s", state_dir=tmp_path, timeout_s=180) as agent:
        with python_backend() as backend:
            sent = send_requests(backend.port, tag, 8)
            deadline = time.monotonic() + 8  # within the retention (a query takes about a second)
            while len(rows := _rows_for(agent.address, tag)) < 2 * len(sent) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(rows) == 2 * len(sent)
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        # Then, past the retention, they are gone from the answers and counted as evicted.
        while time.monotonic() < deadline:
            with AgentClient(agent.address) as client:
                evicted = client.status()["tables"]["http_events"]["evicted_retention"]
            rows = _rows_for(agent.address, tag)
            if not rows and evicted >= 2 * len(sent):
                break
            time.sleep(0.5)
        assert rows == [] and evicted >= 2 * len(sent), (len(rows), evicted)
