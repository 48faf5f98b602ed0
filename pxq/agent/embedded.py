"""The embedded agent: the CLI runs the collectors in-process for a script's capture window.

It receives only a ProbeManifest, starts exactly the collectors it names, polls them, moves their
rows into a TableStore with each table's drop counters and the identity of every process seen,
and stops them again, also on Ctrl-C (the rows collected so far are kept).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from pxq.agent.bpf_program import bpf_unavailable_reason, release_compiler_pages
from pxq.agent.procinfo import PROC, ProcessIdentities, parse_stat, process_info
from pxq.agent.protocols.registry import protocol_tables
from pxq.agent.table_store import DEFAULT_BUDGET_BYTES, TableStore, split_losses
from pxq.errors import PxqError
from pxq.plan.manifest import CollectorRequest, ProbeManifest

POLL_INTERVAL_MS = 100
# The socket tracer's transactions become Arrow rows (and its drop counters are read) about this
# often, or once this many are waiting: building a table has a fixed cost, and reading the
# kernel's counters is a few map lookups each.
DRAIN_INTERVAL_S = 1.0
DRAIN_ROWS = 20_000


class AgentError(PxqError):
    """The agent cannot collect here (privileges, kernel set-up, a collector that does not exist)."""

    exit_code = 3


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

    def __enter__(self) -> "WindowSignals":
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            for signum in self.HANDLED:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. SIGINT of a background job
                    self._previous[signum] = signal.signal(signum, self._interrupt)
        return self

    def __exit__(self, *_exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class Collector(Protocol):
    name: str

    def start(self) -> None: ...
    def poll(self, timeout_ms: int) -> int: ...
    def close_window(self) -> None: ...
    def drain(self) -> dict[str, pa.Table]: ...
    def drops(self) -> dict[str, dict[str, int]]: ...
    def stop(self) -> None: ...
    # Optional: ``use_identities(identities)``, to name processes in a ProcessIdentities shared
    # by all collectors of a run (what the kernel said about a process already gone included).


def warn_on_stderr(message: str, stream=sys.stderr) -> None:
    """A warning line (clearing a progress line being redrawn in place on a terminal first)."""
    stream.write(("\r\033[K" if stream.isatty() else "") + f"pxq: warning: {message}\n")
    stream.flush()


@dataclass(frozen=True)
class AgentOptions:
    body_limit: int = 1024
    budget_bytes: int = DEFAULT_BUDGET_BYTES
    # Where the agent says what the user should know but that does not stop collection
    # (a --pid that does not exist or exits during the window).
    on_warning: Callable[[str], None] = warn_on_stderr


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
        missing = []
        for pid in self.pids:
            identity = _running_identity(pid)
            if identity is None:
                missing.append(pid)
            else:
                self.alive[pid] = identity
        if missing:
            listed = ", ".join(map(str, missing))
            self.warn(f"no running process with pid {listed}: nothing is collected from "
                      f"{'it' if len(missing) == 1 else 'them'} (is the pid right?)")

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
            self.warn(f"{who} made no {what} during the {window_s:.1f}s window: nothing was collected "
                      f"from {'them' if n else 'it'}")

    def check(self, elapsed_s: float, force: bool = False) -> None:
        if not self.alive or (not force and elapsed_s - self._last_check < self.CHECK_INTERVAL_S):
            return
        self._last_check = elapsed_s
        for pid, identity in list(self.alive.items()):
            if _running_identity(pid) != identity:
                del self.alive[pid]
                self.exited[pid] = elapsed_s

    def report(self, window_s: float) -> None:
        """After the window: each watched process that exited during it."""
        self.check(window_s, force=True)
        for pid, at in sorted(self.exited.items()):
            self.warn(f"pid {pid} exited before the window ended (gone about {at:.1f}s into "
                      f"{window_s:.1f}s); what it did until then is shown")


class SocketTracerCollector:
    """http_events from the eBPF socket tracer (bpf/socket_trace.c)."""

    name = "socket_tracer"
    protocols = protocol_tables()  # protocol -> its table, from the protocol registry

    def __init__(self, request: CollectorRequest, options: AgentOptions):
        unsupported = [p for p in request.protocols if p not in self.protocols]
        if unsupported:
            raise AgentError(f"the socket tracer does not parse {', '.join(unsupported)} yet "
                             f"(it parses: {', '.join(self.protocols)}); replay a capture with --from")
        from pxq.agent.socket_tracer import SocketTracer

        self.tables = tuple(self.protocols[p] for p in request.protocols)
        body_limit = int(request.option("body_limit", options.body_limit))
        self.tracer = SocketTracer(pids=set(request.pids) if request.pids is not None else None,
                                   protocols=tuple(request.protocols), body_limit=body_limit)
        self._last_drain = 0.0
        self._drops: dict[str, dict[str, int]] | None = None  # as of the last drain

    def start(self) -> None:
        self.tracer.start()

    def add_pids(self, pids: set[int]) -> None:
        """Trace these processes too (the running descendants of the pids asked for)."""
        self.tracer.add_pids(pids)

    def pids_seen(self) -> set[int]:
        """The processes whose TCP traffic the tracer saw."""
        return self.tracer.pids_seen()

    # What pids_seen() says a process made, for PidWatch's warning.
    seen_what = "TCP traffic"

    def poll(self, timeout_ms: int) -> int:
        return self.tracer.poll(timeout_ms)

    def close_window(self) -> None:
        self.tracer.close_window()

    def drain(self) -> dict[str, pa.Table]:
        now = time.monotonic()
        if self.tracer.running and now - self._last_drain < DRAIN_INTERVAL_S and self.tracer.pending() < DRAIN_ROWS:
            return {}
        self._last_drain = now
        self._drops = None
        return self.tracer.drain_tables()

    def drops(self) -> dict[str, dict[str, int]]:
        if self._drops is None or not self.tracer.running:
            counters = self.tracer.drops()
            self._drops = {table: dict(counters) for table in self.tables}
        return self._drops

    def stop(self) -> None:
        self.tracer.stop()

    def use_identities(self, identities: ProcessIdentities) -> None:
        self.tracer.use_identities(identities)


def _perf_profiler(request: CollectorRequest, options: AgentOptions) -> Collector:
    from pxq.agent.profiler import PerfProfilerCollector

    return PerfProfilerCollector(request, options)


COLLECTORS: dict[str, Callable[[CollectorRequest, AgentOptions], Collector]] = {
    "socket_tracer": SocketTracerCollector,
    "perf_profiler": _perf_profiler,
}
# The tables each collector fills live today. The catalog names a collector for tables it will
# fill later too (conn_stats, the other protocols' tables): asking for one of those live must not
# run a capture that silently writes zero rows.
LIVE_TABLES: dict[str, tuple[str, ...]] = {
    "socket_tracer": tuple(SocketTracerCollector.protocols.values()),
    "perf_profiler": ("stack_traces.beta",),
}


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


@dataclass
class EmbeddedAgent:
    manifest: ProbeManifest
    options: AgentOptions = field(default_factory=AgentOptions)

    def __post_init__(self) -> None:
        missing = [c for c in self.manifest.collectors if c.name not in COLLECTORS]
        if missing:
            tables = ", ".join(t for c in missing for t in c.tables)
            raise AgentError(f"this pxq cannot collect {tables} live yet (collector "
                             f"{', '.join(c.name for c in missing)} is not implemented); "
                             "replay a capture that holds it with --from DIR")
        uncollected = [(t, c.name) for c in self.manifest.collectors for t in c.tables
                       if t not in LIVE_TABLES.get(c.name, ())]
        if uncollected:
            tables = ", ".join(t for t, _ in uncollected)
            names = ", ".join(dict.fromkeys(name for _, name in uncollected))
            raise AgentError(f"this pxq cannot collect {tables} live yet (collector {names} does not "
                             f"produce {'it' if len(uncollected) == 1 else 'them'}); replay a capture that holds "
                             f"{'it' if len(uncollected) == 1 else 'them'} with --from DIR")

    def run(self, duration_s: float, on_progress: Callable[[Progress], None] | None = None) -> TableStore:
        """Collect for ``duration_s`` seconds (Ctrl-C ends early) and return the table store."""
        pid_watch = PidWatch(self.manifest, self.options.on_warning)  # before anything slow: a typo is said at once
        check_environment()
        store = TableStore(self.options.budget_bytes, host=socket.gethostname())
        # A pid stands for its descendants too: those running now are collected from the start.
        requests = [replace(c, pids=tuple(sorted({*c.pids, *pid_watch.descendants(c.pids)}))) if c.pids else c
                    for c in self.manifest.collectors]  # fmt: skip
        collectors = [COLLECTORS[c.name](c, self.options) for c in requests]
        identities = ProcessIdentities()  # one upid per process across the collectors
        for collector in collectors:
            if hasattr(collector, "use_identities"):
                collector.use_identities(identities)
        started: list[Collector] = []
        stopped: list[Collector] = []
        events = 0
        try:
            for collector in collectors:
                collector.start()
                started.append(collector)
            for collector, request in zip(started, requests):
                if request.pids and hasattr(collector, "add_pids"):
                    # Children forked while the collectors started (the socket tracer's kernel
                    # side follows forks from now on; the profiler keeps the set it started with).
                    late = pid_watch.descendants(request.pids) - set(request.pids)
                    if late:
                        collector.add_pids(late)
            release_compiler_pages()
            store.start_time_ns = time.time_ns()
            begin = time.monotonic()
            deadline = begin + duration_s
            try:
                while time.monotonic() < deadline:
                    for collector in started:
                        events += collector.poll(POLL_INTERVAL_MS // max(1, len(started)))
                    self._move(started, store, identities)
                    pid_watch.check(time.monotonic() - begin)
                    if on_progress:
                        on_progress(self._progress(time.monotonic() - begin, events, store))
            except KeyboardInterrupt:
                pass  # Ctrl-C (or SIGTERM, see WindowSignals) ended the window early; keep what was collected
            window_s = time.monotonic() - begin
            pid_watch.report(window_s)
            # Nothing new from here on; what the collectors hold (an agent behind under load
            # holds up to a ring buffer's worth) is still taken.
            for collector in started:
                collector.close_window()
            for collector in started:
                events += collector.poll(0)
            # Stop before the last move: some rows exist only once a collector has stopped (what
            # the profiler's kernel maps still hold, py-spy's last segment).
            while started:
                stopping = started.pop()
                stopping.stop()
                stopped.append(stopping)
            self._move(stopped, store, identities)
            store.end_time_ns = time.time_ns()
            for collector in stopped:
                if pid_watch.pids and hasattr(collector, "pids_seen"):
                    pid_watch.report_quiet(collector.pids_seen(), window_s, collector.seen_what)
            if on_progress:
                on_progress(replace(self._progress(time.monotonic() - begin, events, store), final=True,
                                    window_s=window_s))
        finally:
            for collector in reversed(started):
                collector.stop()
        return store

    @staticmethod
    def _progress(elapsed: float, events: int, store: TableStore) -> Progress:
        rows = {name: store.rows(name) for name in store.table_names()}
        split = [split_losses(d) for d in store.drops.values()]
        drops = sum(sum(lost.values()) for lost, _ in split)
        incomplete = sum(sum(kept.values()) for _, kept in split)
        return Progress(elapsed, events, rows, drops, {table: dict(d) for table, d in store.drops.items()},
                        incomplete=incomplete)

    @staticmethod
    def _move(collectors: list[Collector], store: TableStore, identities: ProcessIdentities) -> None:
        for collector in collectors:
            for table, data in collector.drain().items():
                if data.num_rows:
                    _remember_processes(data, store, identities)
                    store.append(table, data)
            for table, counters in collector.drops().items():
                store.set_drops(table, counters)


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
            store.processes[upid] = {"pid": int(pid), "comm": "", "cmdline": "", "exe": "",
                                     "container_id": "", "pod": "", "namespace": ""}


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
