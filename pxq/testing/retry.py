"""Trying again until a deadline: a removal that a process still busy with the thing removed makes
fail for a moment, and a condition a test waits for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def remove_until_deadline(
    remove: Callable[[], object],
    *,
    timeout: float,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """Call ``remove`` until it succeeds; what is gone already (FileNotFoundError) counts as removed.

    Any other OSError is retried every ``interval`` seconds; once ``timeout`` seconds have passed
    (by ``clock``) the last error is raised. ``clock`` and ``sleep`` are parameters so tests can
    drive the deadline without waiting.
    """
    deadline = clock() + timeout
    while True:
        try:
            remove()
            return
        except FileNotFoundError:
            return
        except OSError:
            if clock() > deadline:
                raise
            sleep(interval)


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """``condition()``'s first true value, asked every ``interval`` seconds; AssertionError naming
    ``what`` when none came within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:g} s: {what}")
