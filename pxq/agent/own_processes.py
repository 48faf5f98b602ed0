"""The helper processes pxq starts for its own work (py-spy), which its tracers must not trace.

pxq's own process is never traced (``SELF_PID`` in the BPF programs), but its children are not
known to be its helpers by ancestry alone: a test or a library user of the tracers starts the
very processes it wants traced as its own children. So a helper says what it is: whoever starts
one calls :func:`add` with its pid, and the socket tracer, subscribed while it runs, writes it
into its ``ignored_pids`` map (whatever the helper forks is then ignored too, from the kernel).
A helper's calls before it is added (between fork and :func:`add`) can still be traced.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

_lock = threading.Lock()
_pids: set[int] = set()
_listeners: list[Callable[[int], None]] = []


def add(pid: int) -> None:
    """``pid`` is a helper process of pxq's: never trace it."""
    with _lock:
        _pids.add(pid)
        listeners = list(_listeners)
    for listener in listeners:
        listener(pid)


def _parent(pid: int) -> int | None:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def pids() -> set[int]:
    """The helpers added that are still this process's children: a pid not reaped yet cannot
    have been reused, so these are the helpers themselves (the others are forgotten)."""
    me = os.getpid()
    with _lock:
        _pids.intersection_update({pid for pid in _pids if _parent(pid) == me})
        return set(_pids)


def subscribe(listener: Callable[[int], None]) -> Callable[[], None]:
    """Call ``listener(pid)`` for every helper added from now on; returns the unsubscribe call."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe
