"""The agent loop on its own (what an always-on agent would drive): no deadline, no signals, no
progress display; start, step as often as wanted, stop, and the store holds the rows."""

from __future__ import annotations

import gc
import time

import pytest

from pxq.agent.loop import AgentLoop
from pxq.agent.profiler import TABLE
from pxq.plan.manifest import CollectorRequest, ProbeManifest
from pxq.testing.kernel import require_bpf
from tests.agent.programs.build import python_busy, running


@pytest.mark.kernel
def test_loop_collects_a_busy_process_without_a_window():
    require_bpf()
    with running(python_busy(30)) as proc:
        request = CollectorRequest("perf_profiler", (TABLE,), (proc.pid,), options=(("python", "off"),))
        loop = AgentLoop(ProbeManifest(time.time_ns(), (), (request,)))
        before = gc.get_threshold()
        try:
            loop.start()
            assert [c.name for c in loop.running] == ["perf_profiler"] and loop.store.start_time_ns
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                loop.step()
            during = loop.progress(1.5)
            # The start-up's objects are out of the cyclic collector's way for the window only.
            frozen, thresholds = gc.get_freeze_count(), gc.get_threshold()
            store = loop.stop()
            assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
        finally:
            loop.close()
    assert frozen > 10_000 and thresholds[0] > before[0]
    assert loop.running == [] and [c.name for c in loop.stopped] == ["perf_profiler"]
    assert store is loop.store and store.end_time_ns >= store.start_time_ns
    rows = store.table(TABLE).to_pylist()
    samples = sum(r["count"] for r in rows if r["upid"].split(":")[1] == str(proc.pid))
    # A process spinning on one CPU for 1.5 s at 99 Hz: about 150 samples (a shared machine gives it less).
    assert samples >= 30, rows[:5]
    assert {upid.split(":")[1] for upid in store.processes} >= {str(proc.pid)}
    final = loop.progress(2.0)
    assert final.rows == {TABLE: store.rows(TABLE)} and final.events >= during.events > 0
