"""The terminal's view of a live window: the progress line the agent's Progress records become."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pxq.agent.loop import Progress


def progress_printer(duration_s: float, stream=sys.stderr) -> Callable[[Progress], None]:
    """A live progress line (redrawn in place on a terminal, every 5 s otherwise).

    The first call (probes attached, collection running) always prints a line of its own, so a
    log or a script driving traffic knows from when on events are seen.
    """
    interactive = stream.isatty()
    last = [0.0]
    started = [False]

    def show(p: Progress) -> None:
        if not started[0]:
            started[0] = True
            stream.write(f"pxq: probes attached, collecting for {duration_s:g}s\n")
            stream.flush()
        rows = "  ".join(f"{name} {count:,}" for name, count in p.rows.items()) or "no rows yet"
        counts = f"events {p.events:,}  {rows}  drops {p.drops:,}"
        if p.incomplete:  # kept, so not among the drops
            counts += f"  incomplete {p.incomplete:,}"
        if p.final:  # after the window: the queued events were still taken (see close_window)
            line = f"pxq: captured {p.window_s:.1f}s (done at {p.elapsed_s:.1f}s)  {counts}"
        else:
            line = f"pxq: capturing {p.elapsed_s:5.1f}s/{duration_s:g}s  {counts}  (Ctrl-C ends early)"
        if interactive:
            stream.write("\r\033[K" + line)
            stream.flush()
        elif p.elapsed_s - last[0] >= 5 or p.final:
            last[0] = p.elapsed_s
            stream.write(line + "\n")
            stream.flush()

    return show
