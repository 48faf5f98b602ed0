"""The REPL's live source against the real kernel: repeated queries over the rolling window see
the traffic this test makes between them, without restarting the probes; a query of a table not
collected yet re-plans them and keeps the rows collected before."""

from __future__ import annotations

import errno
import http.client
import os
import subprocess
import sys
import time

import pytest

from pxq.agent.live_window import LiveWindow
from pxq.agent.loop import AgentLoop
from pxq.repl.session import ReplSession
from pxq.testing.kernel import require_bpf
from pxq.testing.workload import python_backend

pytestmark = [pytest.mark.kernel, pytest.mark.servers]


def get(port: int, path: str, times: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(times):
            conn.request("GET", path)
            conn.getresponse().read()
    finally:
        conn.close()


def wait_for(session: ReplSession, query: str, condition, what: str, timeout: float = 60):
    """Run ``query`` until its one result table satisfies ``condition`` (the rows arrive as the
    collector thread moves them: a condition, not a guessed time)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = session.submit(query)
        assert reply.error is None, reply.error
        (table,) = reply.tables.values()
        if condition(table):
            return reply
        assert time.monotonic() < deadline, f"never saw {what}; last result: {table.to_pylist()}"
        time.sleep(0.2)


def counts(table) -> dict[str, int]:
    return {row["req_path"]: row["n"] for row in table.to_pylist()}


def test_two_queries_a_moment_apart_see_new_traffic_over_one_attachment(tmp_path):
    require_bpf()
    with python_backend() as backend:
        source = LiveWindow(window_s=120)
        session = ReplSession(source, output_dir=tmp_path)
        try:
            pid = backend.pid
            ok = session.submit(
                f"df = px.DataFrame(table='http_events', start_time='-2m')\n"
                f"mine = df[px.upid_to_pid(df.upid) == {pid}]\n"
                "mine = mine[px.contains(mine.req_path, '/pxq-repl-')]"
            )
            assert ok.error is None, ok.error
            query = "mine.groupby('req_path').agg(n=('latency', px.count))"
            first = session.submit(query)
            assert first.error is None and any("started collecting http_events" in line for line in first.lines)
            get(backend.port, "/pxq-repl-first", 3)
            wait_for(session, query, lambda t: counts(t) == {"/pxq-repl-first": 3}, "the first 3 requests")
            get(backend.port, "/pxq-repl-second", 2)
            wait_for(
                session,
                query,
                lambda t: counts(t) == {"/pxq-repl-first": 3, "/pxq-repl-second": 2},
                "the 2 requests made after the first query",
            )
            assert source.generation == 1  # the same probes all along

            # A table nothing collects live here: said, and the probes that run keep running.
            reply = session.submit("px.DataFrame(table='process_stats')")
            assert "cannot collect process_stats live" in reply.error
            get(backend.port, "/pxq-repl-third", 1)
            wait_for(
                session,
                query,
                lambda t: counts(t) == {"/pxq-repl-first": 3, "/pxq-repl-second": 2, "/pxq-repl-third": 1},
                "the request made after the refused table",
            )
            assert source.generation == 1

            # A table not collected yet: the probes are re-planned with both; the rows stay.
            # (The profiler leaves pxq's own process out: a child of this test burns the CPU.)
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                profile = (
                    "st = px.DataFrame(table='stack_traces.beta', start_time='-2m')\n"
                    f"st[px.upid_to_pid(st.upid) == {spinner.pid}].groupby('stack_trace').agg(count=('count', px.sum))"
                )
                reply = session.submit(profile)
                assert reply.error is None, reply.error
                assert source.generation == 2
                (after,) = session.submit(query).tables.values()
                assert counts(after) == {"/pxq-repl-first": 3, "/pxq-repl-second": 2, "/pxq-repl-third": 1}
                deadline = time.monotonic() + 60
                while not (reply := session.submit(profile)).flamegraphs:
                    assert reply.error is None, reply.error
                    assert time.monotonic() < deadline, "no samples of the spinning process"
                    time.sleep(0.2)
            finally:
                spinner.kill()
                spinner.wait()
            (flame,) = reply.flamegraphs.values()
            assert os.path.exists(flame.path) and flame.summary
        finally:
            session.close()


def test_a_failed_collector_thread_is_said_at_the_next_query_and_the_one_after_collects_again(tmp_path, monkeypatch):
    # The failure is injected where a collector's read of its ring buffer would fail (an OSError
    # out of AgentLoop.step, in the collector thread); everything else is the real agent.
    require_bpf()
    with python_backend() as backend:
        window = LiveWindow(window_s=120, pids=[backend.pid])
        session = ReplSession(window, output_dir=tmp_path)
        try:
            query = "px.DataFrame(table='http_events', start_time='-2m')[['req_path']]"
            assert session.submit(query).error is None
            real_step = AgentLoop.step

            def failing_step(loop: AgentLoop, timeout_ms: int = 100) -> None:
                raise OSError(errno.EIO, "the ring buffer could not be read")

            monkeypatch.setattr(AgentLoop, "step", failing_step)
            deadline = time.monotonic() + 60
            while (reply := session.submit(query)).error is None:
                assert time.monotonic() < deadline, "the failure was never said"
                time.sleep(0.1)
            assert reply.error == "pxq: live collection stopped: [Errno 5] the ring buffer could not be read"
            monkeypatch.setattr(AgentLoop, "step", real_step)
            again = session.submit(query)
            assert again.error is None, again.error
            assert "live: collecting http_events again" in again.lines
            assert window.generation == 2
            get(backend.port, "/pxq-repl-after-failure", 1)
            wait_for(
                session,
                query,
                lambda t: "/pxq-repl-after-failure" in t.column("req_path").to_pylist(),
                "a request made after collection started again",
            )
        finally:
            session.close()
