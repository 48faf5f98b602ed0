"""What a live socket-tracer test reads back: the events exactly as the ring walk decoded them,
kept as the tracker is handed each batch (the tracker still takes every one); and a traced child
process whose calls a test drives."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

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


@contextlib.contextmanager
def traced_child(
    child_code: str, first_line: str | None = None
) -> Iterator[tuple[subprocess.Popen, SocketTracer, list[SockEvent]]]:
    """A Python child running ``child_code``, which prints READY and then waits for a "go" line,
    and a SocketTracer of it keeping every event (:func:`keep_events`), started: yields (child,
    tracer, events) once "go" was sent. ``first_line``: written to the child before READY is
    read. At the end the tracer stops and the child is killed if still running."""
    child = subprocess.Popen(
        [sys.executable, "-c", child_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        if first_line is not None:
            child.stdin.write(first_line + "\n")
            child.stdin.flush()
        assert child.stdout.readline().strip() == "READY"
        tracer = SocketTracer(pids=[child.pid])
        seen = keep_events(tracer)
        tracer.start()
        try:
            child.stdin.write("go\n")
            child.stdin.flush()
            yield child, tracer, seen
        finally:
            tracer.stop()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
