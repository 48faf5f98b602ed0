"""The agent loop gives the memory Arrow's allocator keeps after a drain back to the system at
most every RELEASE_INTERVAL_S and when it stops, not after every drain (the next drain, a second
later under load, faulted the same pages in again). Measured by the process's resident set
(/proc/self/statm), which the allocator's kept memory is part of until it is released."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from pxq.agent import loop as agent_loop
from pxq.agent.loop import AgentLoop
from pxq.plan.manifest import CollectorRequest, ProbeManifest, TableRequest
from pxq.tables import CATALOG

MB = 1 << 20
HELD = 64 * MB  # what each "drain" leaves in Arrow's allocator


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def leave_freed_arrow_memory() -> None:
    """Allocate HELD bytes through Arrow's default pool, touch every page, free them again."""
    buffers = [pa.allocate_buffer(MB) for _ in range(HELD // MB)]
    for buffer in buffers:
        np.frombuffer(buffer, dtype=np.uint8)[::4096] = 1  # (a mutable buffer: the pages get resident)
    del buffers


class OneRowCollector:
    """Hands over one http_events row per drain, as a collector of the loop does."""

    def drain(self) -> dict[str, pa.Table]:
        schema = CATALOG["http_events"].arrow_schema()
        return {"http_events": pa.table([pa.nulls(1, f.type) for f in schema], schema=schema)}

    def drops(self) -> dict[str, dict[str, int]]:
        return {"http_events": {}}


def test_freed_arrow_memory_is_released_at_most_every_interval_and_at_stop(monkeypatch):
    request = CollectorRequest("socket_tracer", ("http_events",), (), ("http",))
    table = TableRequest("http_events", "socket_tracer", (), None, None, ())
    loop = AgentLoop(ProbeManifest(time.time_ns(), (table,), (request,)))
    collector = OneRowCollector()
    # The interval's passing is set, not waited for: a long one, then none left.
    monkeypatch.setattr(agent_loop, "RELEASE_INTERVAL_S", 3600.0)

    def kept_after_move(**kwargs) -> int:
        """Bytes still resident after a move that follows freeing HELD bytes of Arrow memory."""
        pa.default_memory_pool().release_unused()
        base = resident_bytes()
        leave_freed_arrow_memory()
        loop._move([collector], **kwargs)  # noqa: SLF001 (the loop's own step, without a kernel)
        return resident_bytes() - base

    assert kept_after_move() < HELD // 4  # the first drain: released
    assert kept_after_move() > HELD * 3 // 4  # within the interval: kept, to be used again
    monkeypatch.setattr(agent_loop, "RELEASE_INTERVAL_S", 0.0)
    assert kept_after_move() < HELD // 4  # the interval has passed
    monkeypatch.setattr(agent_loop, "RELEASE_INTERVAL_S", 3600.0)
    assert kept_after_move() > HELD * 3 // 4
    assert kept_after_move(release=True) < HELD // 4  # the loop stops: released at once
    assert loop.store.rows("http_events") == 5
