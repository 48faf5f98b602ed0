"""The agent's run loop: start the collectors a manifest names, poll them and move their rows into
a TableStore (with each table's drop counters and the identity of every process seen), stop them.

It knows no deadline, signals or display: the windowed run (:class:`pxq.agent.embedded.EmbeddedAgent`)
drives it for ``--for`` seconds, and an always-on agent can drive it for as long as it runs::

    loop = AgentLoop(manifest)          # AgentError: a collector or table not collected here
    loop.start()                        # AgentError/BpfError saying why collection cannot start
    try:
        while running:
            loop.step()                 # poll every collector, move what they drained
            report(loop.progress(seconds_since_start))
        loop.stop()                     # nothing new; what the collectors hold is still taken
    finally:
        loop.close()                    # after an error: stop what still runs
    loop.store                          # the TableStore
"""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.compute as pc

from pxq.agent.bpf_program import bpf_unavailable_reason, release_compiler_pages
from pxq.agent.collector import AgentError, AgentOptions, Collector
from pxq.agent.collectors import build_collector, check_collectable
from pxq.agent.procinfo import PROC, ProcessIdentities, parse_stat, process_info
from pxq.agent.table_store import TableStore, split_losses
from pxq.plan.manifest import ProbeManifest

POLL_INTERVAL_MS = 100
# Arrow's allocator keeps what building and compressing the drained tables freed (the store holds
# all but the newest compressed); it is given back to the system at most this often (s), and when the loop
# stops. Not after every drain: the next drain (every second under load) faulted the same pages
# in again, and the release itself took 0.5 ms; some 1-1.5 ms of the agent's CPU per drain.
RELEASE_INTERVAL_S = 10.0


def descendant_pids(pids: Iterable[int]) -> dict[int, set[int]]:
    """Each pid's running descendants (children, their children, ...), from one pass over
    /proc/*/stat (the ppid field)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = parse_stat((entry / "stat").read_text(errors="replace"))
        except (OSError, ValueError):
            continue  # gone meanwhile
        if stat is not None:
            children.setdefault(stat["ppid"], []).append(int(entry.name))
    out: dict[int, set[int]] = {}
    for root in pids:
        found: set[int] = set()
        todo = [root]
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in found and child != root:
                    found.add(child)
                    todo.append(child)
        out[root] = found
    return out


def running_descendants(roots: Iterable[int]) -> set[int]:
    """The running descendants of all ``roots`` together."""
    return set().union(*descendant_pids(roots).values())


def check_environment() -> None:
    """Fail early, with the fix, where eBPF collection cannot work."""
    reason = bpf_unavailable_reason()
    if reason is not None:
        raise AgentError(f"{reason}; or replay a capture with --from DIR")


@dataclass
class Progress:
    elapsed_s: float
    events: int
    rows: dict[str, int]
    drops: int  # events lost
    # Per table, every counter by reason: losses (what ``drops`` sums) and rows kept incomplete.
    drop_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    incomplete: int = 0  # rows kept but incomplete (stacks cut short): not losses
    final: bool = False  # the collectors have stopped: this is what the window got
    window_s: float = 0.0  # (final) how long the window was open: the duration, or until Ctrl-C

    @classmethod
    def of(cls, elapsed_s: float, events: int, store: TableStore) -> Progress:
        """What ``store`` holds after ``elapsed_s`` seconds and ``events`` events."""
        rows = {name: store.rows(name) for name in store.table_names()}
        split = [split_losses(d) for d in store.drops.values()]
        drops = sum(sum(lost.values()) for lost, _ in split)
        incomplete = sum(sum(kept.values()) for _, kept in split)
        return cls(
            elapsed_s, events, rows, drops, {table: dict(d) for table, d in store.drops.items()}, incomplete=incomplete
        )


class AgentLoop:
    """Collects what ``manifest`` asks for into :attr:`store` (see the module docstring).

    A pid in a request stands for its descendants too: those ``descendants(pids)`` finds running
    at start are collected from the start (the windowed run passes its PidWatch's, which also
    remembers them for its warnings)."""

    def __init__(
        self,
        manifest: ProbeManifest,
        options: AgentOptions | None = None,
        *,
        descendants: Callable[[Iterable[int]], set[int]] = running_descendants,
    ):
        check_collectable(manifest)
        self.manifest = manifest
        self.options = options or AgentOptions()
        self.descendants = descendants
        self.store = TableStore(
            self.options.budget_bytes,
            host=socket.gethostname(),
            table_budget_bytes=self.options.table_budget_bytes,
            raw_bytes=self.options.raw_held_bytes,
        )
        self.identities = ProcessIdentities(asid=self.options.asid)  # one upid per process across the collectors
        self.running: list[Collector] = []  # started and not stopped, in start order
        self.stopped: list[Collector] = []  # in stop order
        self.events = 0  # events the collectors handled so far
        self._gc_before: tuple[int, int, int] | None = None  # the collector's thresholds before the window
        self._released = float("-inf")  # when Arrow's freed memory was last given back (monotonic s)

    def start(self) -> TableStore:
        """Build and start the collectors; raises (having stopped those started) when one cannot start."""
        check_environment()
        requests = [replace(c, pids=tuple(sorted({*c.pids, *self.descendants(c.pids)}))) if c.pids else c
                    for c in self.manifest.collectors]  # fmt: skip
        collectors = [build_collector(c, self.options) for c in requests]
        for collector in collectors:
            if hasattr(collector, "use_identities"):
                collector.use_identities(self.identities)
        try:
            for collector in collectors:
                collector.start()
                self.running.append(collector)
            for collector, request in zip(self.running, requests):
                if request.pids and hasattr(collector, "add_pids"):
                    # Children forked while the collectors started (the socket tracer's kernel
                    # side follows forks from now on; the profiler keeps the set it started with).
                    late = self.descendants(request.pids) - set(request.pids)
                    if late:
                        collector.add_pids(late)
        except BaseException:
            self.close()
            raise
        release_compiler_pages()
        self._gc_before = _start_window_gc()
        self.store.start_time_ns = time.time_ns()
        return self.store

    def step(self, timeout_ms: int = POLL_INTERVAL_MS) -> None:
        """Poll every running collector (``timeout_ms`` shared between them), then move the rows
        they hand over into the store."""
        for collector in self.running:
            self.events += collector.poll(timeout_ms // max(1, len(self.running)))
        self._move(self.running)

    def stop(self) -> TableStore:
        """End collection: nothing new from here on, but what the collectors hold (an agent behind
        under load holds up to a ring buffer's worth) is still taken."""
        for collector in self.running:
            collector.close_window()
        for collector in self.running:
            self.events += collector.poll(0)
        # Stop before the last move: some rows exist only once a collector has stopped (what
        # the profiler's kernel maps still hold, py-spy's last segment).
        while self.running:
            stopping = self.running.pop()
            stopping.stop()
            self.stopped.append(stopping)
        self._move(self.stopped, release=True)
        self.store.end_time_ns = time.time_ns()
        self._end_gc()
        return self.store

    def close(self) -> None:
        """Stop what still runs, without taking its rows (after an error or an interruption)."""
        while self.running:
            self.running.pop().stop()
        self._end_gc()

    def _end_gc(self) -> None:
        if self._gc_before is not None:
            _end_window_gc(self._gc_before)
            self._gc_before = None

    def progress(self, elapsed_s: float) -> Progress:
        return Progress.of(elapsed_s, self.events, self.store)

    def _move(self, collectors: list[Collector], release: bool = False) -> None:
        """Move the rows ``collectors`` hand over into the store, with their drop counters;
        ``release``: give Arrow's freed memory back now (else at most every RELEASE_INTERVAL_S)."""
        moved = False
        for collector in collectors:
            for table, data in collector.drain().items():
                if data.num_rows:
                    _remember_processes(data, self.store, self.identities)
                    self.store.append(table, data)
                    moved = True
            for table, counters in collector.drops().items():
                self.store.set_drops(table, counters)
        now = time.monotonic()
        if moved and (release or now - self._released >= RELEASE_INTERVAL_S):
            # Or the agent's RSS stays at its busiest drain's (see RELEASE_INTERVAL_S).
            pa.default_memory_pool().release_unused()
            self._released = now


# The cyclic garbage collector's thresholds while collecting (restored after): per event, the
# parsers make short-lived objects by the dozen, and a young generation of 700 (the default) had
# its collections by the hundred per second under load, each walking the rows not taken yet.
WINDOW_GC_THRESHOLDS = (50_000, 20, 20)


def _start_window_gc() -> tuple[int, int, int]:
    """Move every object alive after start-up (modules, the loaded program, the parsers' tables:
    some 50,000) out of the cyclic garbage collector's reach for the window: its full collections
    walked them all again and again, a few percent of the agent's CPU at a thousand DNS queries a
    second. Reference counting still frees them; only cycles among them wait for
    :func:`_end_window_gc`. Collected first, so no garbage is frozen. Returns the thresholds to
    restore."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*WINDOW_GC_THRESHOLDS)
    return previous


def _end_window_gc(previous: tuple[int, int, int]) -> None:
    gc.unfreeze()
    gc.set_threshold(*previous)


def _remember_processes(data: pa.Table, store: TableStore, identities: ProcessIdentities | None = None) -> None:
    """Record the identity of every new upid: what the collector decided at first sight (from
    /proc, or from the kernel for a process already gone), else /proc now."""
    known = identities.by_upid if identities is not None else {}
    for upid in pc.unique(data.column("upid")).to_pylist():
        if upid is None:
            continue
        if upid in known:
            store.processes[upid] = known[upid]  # (again: an exec since may have renamed it)
            continue
        if upid in store.processes:
            continue
        try:
            _, pid, start_ticks = upid.split(":")
        except ValueError:
            continue
        info = process_info(int(pid))
        if info is not None and str(info.get("start_ticks")) == start_ticks:
            store.processes[upid] = info
        else:  # the process is gone (or its pid was reused): keep what the upid itself says
            store.processes[upid] = {
                "pid": int(pid),
                "comm": "",
                "cmdline": "",
                "exe": "",
                "container_id": "",
                "pod": "",
                "namespace": "",
            }
