"""When the socket tracer's quiet batches look at the ring buffer (SocketTracer._wait_quietly), on
a simulated clock: a ring buffer filling at a steady rate is taken well before it is full, and a
slowly filling one in few wake-ups. Regression: after a quiet batch the first look came a fixed
QUIET_LOOK_INTERVAL_MS (125 ms) later, and at 96,000 events/s (nginx traced at both ends, ~64 MB/s)
the 8 MiB ring buffer filled before it: drops began there while the agent used 0.3 of a CPU."""

from __future__ import annotations

import types

import pytest

from pxq.agent import socket_tracer as socket_tracer_module
from pxq.agent.socket_tracer import BATCH_INTERVAL_MS, QUIET_BATCH_INTERVAL_MS, SocketTracer

RING_BYTES = 8 << 20


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += max(0.0, seconds)


class FillingRing:
    """A ring buffer's pending byte count growing at ``rate`` bytes/s since it was last emptied."""

    size = RING_BYTES

    def __init__(self, clock: SimulatedClock, rate: float) -> None:
        self.clock, self.rate, self.emptied_at = clock, rate, clock.now

    def pending(self) -> int:
        return int((self.clock.now - self.emptied_at) * self.rate)

    def wait(self, timeout_ms: int) -> bool:  # never empty at a rate > 0: not reached
        raise AssertionError("a filling ring buffer is not waited on")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimulatedClock:
    clock = SimulatedClock()
    monkeypatch.setattr(
        socket_tracer_module, "time", types.SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep)
    )
    return clock


def batches(clock: SimulatedClock, rate: float, count: int) -> list[tuple[int, int]]:
    """(bytes pending, sleeps) at each of ``count`` batches, each taken at once (the ring emptied)."""
    tracer = SocketTracer(pids={1})
    tracer.quiet_batch_interval_ms = QUIET_BATCH_INTERVAL_MS
    tracer.last_poll_events = 1  # not idle: something came before
    ring = FillingRing(clock, rate)
    seen = []
    for _ in range(count):
        tracer._last_poll = clock.now
        ring.emptied_at = clock.now
        clock.sleeps = 0
        now = tracer._wait_quietly(ring, clock.now, clock.now + 10.0)  # type: ignore[arg-type]
        assert now == clock.now
        seen.append((ring.pending(), clock.sleeps))
    return seen


@pytest.mark.parametrize("rate", [16e6, 32e6, 64e6, 100e6])
def test_a_fast_filling_ring_buffer_is_taken_long_before_it_is_full(clock: SimulatedClock, rate: float) -> None:
    seen = batches(clock, rate, 6)
    # The first batch (nothing known of the rate yet): at the batch interval, or once the quiet
    # share is there; then at the rate seen, so the quiet share at each batch.
    assert seen[0][0] <= max(rate * BATCH_INTERVAL_MS / 1000, RING_BYTES / 8 * 1.1)
    assert seen[0][0] < RING_BYTES * 0.75
    assert all(pending < RING_BYTES // 4 for pending, _ in seen[1:]), seen


def test_a_slowly_filling_ring_buffer_is_taken_at_the_quiet_interval_in_few_wake_ups(clock: SimulatedClock) -> None:
    rate = 1e6  # ~2,000 req/s of nginx: the quiet share (1 MiB) takes over a second to fill
    seen = batches(clock, rate, 4)
    for pending, sleeps in seen:
        assert pending == pytest.approx(rate * QUIET_BATCH_INTERVAL_MS / 1000, rel=0.01)
        assert sleeps <= 4  # the batch interval, then looks at most QUIET_LOOK_INTERVAL_MS apart
