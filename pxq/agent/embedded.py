"""The embedded agent: the CLI runs the collectors in-process for a script's capture window.

It receives only a ProbeManifest and runs the agent loop (:mod:`pxq.agent.loop`: start exactly
the collectors it names, move their rows into a TableStore, stop them) for a window of seconds,
which Ctrl-C or SIGTERM ends early (the rows collected so far are kept); it says which of the
processes asked for by pid do not exist, exited during the window or made no traffic.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from pxq.agent.collector import AgentOptions
from pxq.agent.collectors import check_collectable
from pxq.agent.loop import AgentLoop, Progress, descendant_pids
from pxq.agent.procinfo import PROC, parse_stat
from pxq.agent.table_store import TableStore
from pxq.plan.manifest import ProbeManifest

# How long one step of the window's loop may wait for its collectors (ms): after each step come
# the progress report and the pid check, and each step is a wake-up. 250 ms: the progress line
# moves 4 times a second; Ctrl-C and SIGTERM end a step at once (see WindowSignals), the window's
# end is not overrun (the last step waits only for what is left of it).
WINDOW_STEP_MS = 250

# What callers of the windowed run use from the agent's other modules.
__all__ = ["AgentOptions", "EmbeddedAgent", "Interrupted", "PidWatch", "Progress", "WindowSignals"]


class Interrupted(KeyboardInterrupt):
    """A signal that ends a live window early as Ctrl-C does: SIGINT, or SIGTERM (from ``timeout``,
    a service manager). The window keeps what was collected (see EmbeddedAgent.run)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class WindowSignals:
    """While open (in the main thread), SIGINT and SIGTERM raise :class:`Interrupted`, so SIGTERM
    ends a window like Ctrl-C instead of killing the process with the rows; ``received`` is the
    first such signal, for an exit status that says the run was cut short (128 + it).

    Once the window has closed (see :meth:`watch`) the rows are all collected: SIGTERM then only
    is noted, so that they are still shown; Ctrl-C still stops at once, as it always did."""

    HANDLED = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.window_closed = False
        self.ended_window = False  # the signal came while collecting, and ended the window early
        self._previous: dict[int, object] = {}

    def watch(self, on_progress: Callable[[Progress], None]) -> Callable[[Progress], None]:
        """``on_progress`` for the agent, noting when the window has closed."""

        def show(progress: Progress) -> None:
            if progress.final:
                self.window_closed = True
            on_progress(progress)

        return show

    def _interrupt(self, signum: int, _frame) -> None:
        if self.received is None:
            self.received = signum
            self.ended_window = not self.window_closed
        if signum == signal.SIGTERM and self.window_closed:
            return
        raise Interrupted(signum)

    def __enter__(self) -> WindowSignals:
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            for signum in self.HANDLED:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. SIGINT of a background job
                    self._previous[signum] = signal.signal(signum, self._interrupt)
        return self

    def __exit__(self, *_exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def _pidfd(pid: int) -> int | None:
    """A pidfd of process ``pid`` (Linux 5.3+), None when there is none (no such process, an older kernel)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _running_identity(pid: int) -> str | None:
    """The start time of a running process (its identity across pid reuse), None when there is no
    such process or it has exited (a zombie has exited: it only waits for its parent)."""
    try:
        stat = parse_stat((PROC / str(pid) / "stat").read_text(errors="replace"))
    except (OSError, ValueError):
        return None
    if stat is None or stat["state"] in ("Z", "X", "x"):
        return None
    return str(stat["start_ticks"])


class PidWatch:
    """The processes a manifest restricts collection to: says at once which do not exist (a typo
    would otherwise show as an empty result), and which exit before the window ends.

    A pid stands for its descendants too (a server's master whose workers do the work): those
    running at start are added to the collectors (:meth:`descendants`; the socket tracer's kernel
    side adds the ones forked later itself), and a pid whose whole tree made no traffic the
    collectors saw is said after the window (:meth:`report_quiet`)."""

    CHECK_INTERVAL_S = 0.5

    def __init__(self, manifest: ProbeManifest, warn: Callable[[str], None]):
        self.warn = warn
        self.pids = sorted({pid for c in manifest.collectors if c.pids is not None for pid in c.pids})
        self.alive: dict[int, str] = {}
        self.exited: dict[int, float] = {}  # pid -> seconds into the window when first seen gone
        self.trees: dict[int, set[int]] = {pid: set() for pid in self.pids}  # descendants ever seen
        self._last_check = float("-inf")
        # A pidfd per watched process: it refers to that very process (never to a later one with
        # its pid) and polls readable once it has exited, zombie or reaped. A check during the
        # window is then one poll() for all of them instead of reading each one's /proc stat (a
        # few hundred microseconds twice a second, a share of the agent's CPU at a low rate).
        self._pidfds: dict[int, int] = {}
        self._poller = select.poll()
        missing = []
        for pid in self.pids:
            pidfd = _pidfd(pid)  # before the identity: a pid reused in between shows as exited
            identity = _running_identity(pid)
            if identity is None:
                missing.append(pid)
                if pidfd is not None:
                    os.close(pidfd)
            else:
                self.alive[pid] = identity
                if pidfd is not None:
                    self._pidfds[pid] = pidfd
                    self._poller.register(pidfd, select.POLLIN)
        if missing:
            listed = ", ".join(map(str, missing))
            self.warn(
                f"no running process with pid {listed}: nothing is collected from "
                f"{'it' if len(missing) == 1 else 'them'} (is the pid right?)"
            )

    def descendants(self, roots: Iterable[int] | None = None) -> set[int]:
        """The running descendants of ``roots`` (default: every watched pid), now; remembered
        for :meth:`report_quiet`."""
        alive = [pid for pid in (self.alive if roots is None else roots) if pid in self.alive]
        if not alive:
            return set()
        found: set[int] = set()
        for root, below in descendant_pids(alive).items():
            self.trees[root] |= below
            found |= below
        return found

    def report_quiet(self, seen_pids: set[int], window_s: float, what: str) -> None:
        """After the window: each watched pid none of whose tree is among ``seen_pids`` (the
        processes a collector saw ``what`` from). A process seen that belongs to no known tree
        (forked and gone within the window) is attributed when only one pid is watched; with
        several, nobody is blamed for silence."""
        self.descendants()  # the children forked during the window and still there
        known = set(self.trees).union(*self.trees.values())
        if seen_pids - known and len(self.trees) > 1:
            return
        for root in self.pids:
            if root not in self.alive and root not in self.exited:
                continue  # never ran: said at start
            tree = {root} | self.trees[root]
            if tree & seen_pids or (seen_pids - known and len(self.trees) == 1):
                continue
            n = len(self.trees[root])
            who = f"pid {root} and its {n} descendant process{'es' if n != 1 else ''}" if n else f"pid {root}"
            self.warn(
                f"{who} made no {what} during the {window_s:.1f}s window: nothing was collected "
                f"from {'them' if n else 'it'}"
            )

    def check(self, elapsed_s: float, force: bool = False) -> None:
        """Note the watched processes gone by now (every CHECK_INTERVAL_S at most, unless
        ``force``): by their pidfds, and from /proc for those without one, or all when ``force``."""
        if not self.alive or (not force and elapsed_s - self._last_check < self.CHECK_INTERVAL_S):
            return
        self._last_check = elapsed_s
        by_fd = {fd: pid for pid, fd in self._pidfds.items()}
        gone = {by_fd[fd] for fd, _ in self._poller.poll(0)} if by_fd else set()
        for pid, identity in list(self.alive.items()):
            if pid in gone or ((force or pid not in self._pidfds) and _running_identity(pid) != identity):
                del self.alive[pid]
                self.exited[pid] = elapsed_s
                self._forget(pid)

    def _forget(self, pid: int) -> None:
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            self._poller.unregister(pidfd)
            os.close(pidfd)

    def close(self) -> None:
        """Let the pidfds go (the window is over)."""
        for pid in list(self._pidfds):
            self._forget(pid)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def report(self, window_s: float) -> None:
        """After the window: each watched process that exited during it."""
        self.check(window_s, force=True)
        self.close()
        for pid, at in sorted(self.exited.items()):
            self.warn(
                f"pid {pid} exited before the window ended (gone about {at:.1f}s into "
                f"{window_s:.1f}s); what it did until then is shown"
            )


@dataclass
class EmbeddedAgent:
    manifest: ProbeManifest
    options: AgentOptions = field(default_factory=AgentOptions)

    def __post_init__(self) -> None:
        check_collectable(self.manifest)

    def run(self, duration_s: float, on_progress: Callable[[Progress], None] | None = None) -> TableStore:
        """Collect for ``duration_s`` seconds (Ctrl-C ends early) and return the table store."""
        pid_watch = PidWatch(self.manifest, self.options.on_warning)  # before anything slow: a typo is said at once
        loop = AgentLoop(self.manifest, self.options, descendants=pid_watch.descendants)
        try:
            loop.start()
            begin = time.monotonic()
            deadline = begin + duration_s
            try:
                while (now := time.monotonic()) < deadline:
                    loop.step(max(1, min(WINDOW_STEP_MS, int((deadline - now) * 1000))))
                    pid_watch.check(time.monotonic() - begin)
                    if on_progress:
                        on_progress(loop.progress(time.monotonic() - begin))
            except KeyboardInterrupt:
                pass  # Ctrl-C (or SIGTERM, see WindowSignals) ended the window early; keep what was collected
            window_s = time.monotonic() - begin
            pid_watch.report(window_s)
            loop.stop()
            for collector in loop.stopped:
                if pid_watch.pids and hasattr(collector, "pids_seen"):
                    pid_watch.report_quiet(collector.pids_seen(), window_s, collector.seen_what)
            if on_progress:
                on_progress(replace(loop.progress(time.monotonic() - begin), final=True, window_s=window_s))
        finally:
            loop.close()
            pid_watch.close()
        return loop.store
