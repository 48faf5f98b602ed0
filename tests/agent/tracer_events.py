"""What a live socket-tracer test reads back: the events exactly as the ring walk decoded them,
kept as the tracker is handed each batch (the tracker still takes every one)."""

from __future__ import annotations

from pxq.agent.conn_tracker import SockEvent
from pxq.agent.socket_tracer import SocketTracer


def keep_events(tracer: SocketTracer) -> list[SockEvent]:
    """A list that grows with every event ``tracer`` takes from its ring buffer from now on (call
    before :meth:`SocketTracer.start`)."""
    seen: list[SockEvent] = []
    tracer.fused_walk = False  # every record made a SockEvent and handed over in a list
    handle_batch = tracer._tracker.handle_batch

    def keeping(batch):
        seen.extend(batch)
        return handle_batch(batch)

    tracer._tracker.handle_batch = keeping  # type: ignore[method-assign]
    return seen
