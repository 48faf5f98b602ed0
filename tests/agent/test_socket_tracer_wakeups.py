"""How often the socket tracer's poll wakes up with the agent's quiet batches on (the running
kernel): each wake-up costs the agent some 50-100 us of CPU, so an idle tracer sleeps on the ring
buffer itself instead of looking at it every QUIET_LOOK_INTERVAL_MS; and the first events after
a quiet spell are still taken within the quiet interval. Wake-ups are counted by the kernel
(the polling thread's voluntary context switches, getrusage)."""

from __future__ import annotations

import resource
import time

import pyarrow as pa
import pytest

from pxq.agent.socket_tracer import QUIET_BATCH_INTERVAL_MS, SocketTracer
from pxq.testing.kernel import require_bpf
from tests.agent.test_socket_tracer import Client, http_server

pytestmark = pytest.mark.kernel

STEP_MS = 250  # the windowed agent's step (pxq.agent.embedded.WINDOW_STEP_MS)


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


def voluntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def quiet_tracer(pids: set[int]) -> SocketTracer:
    tracer = SocketTracer(pids=pids)
    tracer.quiet_batch_interval_ms = QUIET_BATCH_INTERVAL_MS  # as the agent's collector sets it
    return tracer


def test_an_idle_tracer_wakes_up_once_per_poll():
    with http_server() as (server, _port):
        tracer = quiet_tracer({server.pid}).start()
        try:
            tracer.poll(0)  # an empty batch: nothing has come since
            polls = 8
            before, start = voluntary_switches(), time.monotonic()
            taken = [tracer.poll(STEP_MS) for _ in range(polls)]
            switches, took = voluntary_switches() - before, time.monotonic() - start
        finally:
            tracer.stop()
    assert taken == [0] * polls
    assert took >= polls * STEP_MS / 1000 * 0.9  # it slept: each poll waited for its timeout
    # One sleep per poll, on the ring buffer (it was three: two looks and the rest of the
    # timeout); a spare one for anything else the thread waited for.
    assert switches <= polls + 1, switches


def test_the_first_events_after_a_quiet_spell_are_taken_within_the_quiet_interval():
    with http_server() as (server, port):
        client = Client(port, "basic")
        tracer = quiet_tracer({server.pid, client.pid}).start()
        try:
            for _ in range(3):  # quiet: the tracer sleeps on the ring buffer
                assert tracer.poll(STEP_MS) == 0
            went = time.monotonic()
            client.go()
            while tracer.stats()["events"] == 0 and time.monotonic() - went < 5:
                tracer.poll(STEP_MS)
            first_taken = time.monotonic() - went
            results = client.finish(tracer)
        finally:
            tracer.stop()
            client.kill()
    assert [r["status"] for r in results][:2] == [200, 404]
    # The client's first request goes out within milliseconds of "go" (it is running and waiting
    # for it); its events wait at most the quiet interval, plus a poll's own work.
    assert first_taken <= QUIET_BATCH_INTERVAL_MS / 1000 + 0.1, first_taken


def test_an_idle_collector_builds_no_empty_tables_and_its_rows_still_come(monkeypatch):
    # Building a protocol's empty Arrow table costs a fraction of a ms, once a second while idle.
    from pxq.agent import socket_tracer_collector
    from pxq.agent.collector import AgentOptions
    from pxq.plan.manifest import CollectorRequest

    monkeypatch.setattr(socket_tracer_collector, "DRAIN_INTERVAL_S", 0.0)  # every drain is due
    with http_server() as (server, port):
        client = Client(port, "basic")
        request = CollectorRequest("socket_tracer", ("http_events",), (server.pid, client.pid), ("http",))
        collector = socket_tracer_collector.SocketTracerCollector(request, AgentOptions())
        collector.start()
        try:
            collector.poll(0)
            assert collector.drain() == {}
            assert set(collector.drops()) == {"http_events"}
            client.go()
            results = client.finish(collector.tracer)
            rows = []
            deadline = time.monotonic() + 5
            while len(rows) < 2 * len(results) and time.monotonic() < deadline:
                collector.poll(50)
                rows += collector.drain().get("http_events", pa.table({})).to_pylist()
        finally:
            collector.stop()
            client.kill()
    # One row per request the client made, from each end (both are traced).
    assert len(results) == 4
    assert sorted(r["req_path"] for r in rows) == sorted(2 * [r["path"] for r in results])
