"""Retrying a removal that a process still busy with the thing removed makes fail for a moment."""

from __future__ import annotations

import time
from collections.abc import Callable


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
