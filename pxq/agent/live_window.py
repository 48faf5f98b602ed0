"""A rolling window of live data: the embedded agent collecting in the background, so that the
REPL (``pxq repl`` without ``--from``) and a notebook session (``%pxq_session``,
:class:`pxq.api.Session`) can query the last minutes at once, again and again, without starting
probes for every query.

    window = LiveWindow(["http_events"], window_s=300).start()
    source = window.snapshot()          # a DataSource: the rows of the last 300 s, frozen now
    pxq.run("http_data", source=source)
    window.prepare({"stack_traces.beta"})  # one more table: the probes re-planned, the rows kept
    window.stop()                       # the collectors stop; the last snapshot stays usable

The table set is fixed (what :meth:`LiveWindow.start` was given: a Session refuses a script that
reads another table) or grows (:meth:`LiveWindow.prepare`, the REPL's way: its queries name the
tables). Growing re-plans: the new agent loop is built first, so that a table no collector here
fills is an AgentError before anything stops; then the old loop stops and the new one starts,
holding the rows collected so far; when it cannot start, the tables collected before are
collected again, and the error is raised.

The agent loop (:class:`pxq.agent.loop.AgentLoop`) runs in a daemon thread; rows older than the
window are dropped from its store as it goes (:meth:`pxq.agent.table_store.TableStore.drop_before`;
within the oldest batch they are left out of each snapshot), so memory stays bounded by the
window as well as by the store's byte budget. A snapshot is a separate in-memory table store:
queries over it never race the collector thread, and its ``end_time_ns`` (``px.now()`` for
scripts) is the moment it was taken. When the collector thread fails, the next use says so: every
:meth:`LiveWindow.snapshot` until the window is stopped, or the next :meth:`LiveWindow.prepare`,
after which the following one collects again.

A LiveWindow is also the REPL's live source (:class:`pxq.repl.session.SessionSource`: ``data`` is
a snapshot per query).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pxq.agent.collector import AgentError, AgentOptions
from pxq.agent.loop import AgentLoop
from pxq.agent.table_store import TableStore
from pxq.errors import UsageError
from pxq.plan.manifest import manifest_for_tables
from pxq.tables import CATALOG

DEFAULT_WINDOW_S = 300.0
# How long stopping waits for the collector thread's current poll (a poll blocks at most the
# loop's POLL_INTERVAL_MS, 100 ms; more only when a collector is slow to read).
_JOIN_TIMEOUT_S = 30.0

__all__ = ["DEFAULT_WINDOW_S", "LiveWindow", "start"]


def _table_names(tables: Iterable[str]) -> tuple[str, ...]:
    names = [t.strip() for t in tables if t.strip()]
    unknown = [t for t in names if t not in CATALOG]
    if unknown:
        raise UsageError(f"unknown table {unknown[0]!r}; tables: {', '.join(sorted(CATALOG))}")
    return tuple(dict.fromkeys(names))


class LiveWindow:
    """Collects ``tables`` live (optionally only from ``pids`` and their descendants) keeping the
    last ``window_s`` seconds; see the module docstring."""

    live = True  # as the REPL's source: relative times are recompiled against the clock

    def __init__(
        self,
        tables: Sequence[str] = (),
        *,
        window_s: float = DEFAULT_WINDOW_S,
        pids: Sequence[int] | None = None,
        options: AgentOptions | None = None,
        collector_options: dict[str, tuple[tuple[str, str], ...]] | None = None,
    ):
        if not window_s > 0:
            raise UsageError(f"the live window must be longer than 0 s, not {window_s:g}")
        self.tables = _table_names(tables)  # collected (or, before start(), to be collected)
        self.window_s = float(window_s)
        self.pids = tuple(pids) if pids else None
        self.options = options or AgentOptions()
        # Settings per collector, as a script's '#px:set <collector>.<key>' would give them
        # (the node agent's profiler rate).
        self.collector_options = dict(collector_options or {})
        self.evicted: dict[str, int] = {}  # rows dropped for being older than the window, per table
        self.started_ns: int | None = None
        self.collecting_since: dict[str, int] = {}  # table -> when its probes started (ns)
        self.generation = 0  # how many times the probes were (re)planned and attached
        # What was collected: the running loop's store, kept (and carried into the next loop's).
        self.store = TableStore(self.options.budget_bytes)
        self._loop: AgentLoop | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()  # one of: a poll of the collectors, a snapshot, stopping
        self._failure: BaseException | None = None
        self._stopped = False

    @property
    def running(self) -> bool:
        """Started and not stopped (a failed collector thread is said at the next use)."""
        return self.started_ns is not None and not self._stopped

    # ---------------------------------------------------------------- collecting

    def start(self) -> LiveWindow:
        """Start the collectors of the tables given (raising AgentError/BpfError, as ``pxq run``
        would, when they cannot start) and the thread that keeps moving their rows into the window."""
        if self.generation or self._stopped:
            raise UsageError("this live window was started already")
        if not self.tables:
            raise UsageError("a live window needs at least one table to collect")
        self._replan(self.tables)
        return self

    def prepare(self, tables: Iterable[str]) -> list[str]:
        """Collect ``tables`` too (re-planning the probes with all of them when one is new, or
        collection stopped on a failure said before); returns notes for the user."""
        if self._stopped:
            raise UsageError("the live window was stopped")
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._stop_loop()
            raise AgentError(f"live collection stopped: {failure}") from failure
        new = sorted(set(_table_names(tables)) - set(self.tables))
        if not new and self._loop is not None:
            return []
        again = list(self.tables) if self.generation and self._loop is None else []
        self._replan((*self.tables, *new))
        notes = []
        if again:
            notes.append(f"live: collecting {', '.join(again)} again")
        if new:
            notes.append(
                f"live: started collecting {', '.join(new)}: rows appear from now on "
                f"(a rolling window of {self.window_s:g}s); ask again in a moment for more"
            )
        return notes

    def stop(self) -> None:
        """Stop collecting (the rows the collectors still hold are taken); idempotent."""
        self._stopped = True
        self._stop_loop()

    def __enter__(self) -> LiveWindow:
        return self if self.generation else self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _replan(self, tables: tuple[str, ...]) -> None:
        now = time.time_ns()
        # Built first: a table no collector here fills is an AgentError before anything stops.
        loop = self._new_loop(tables, now)
        was_collecting = self._loop is not None
        self._stop_loop()
        try:
            loop.start()  # raises, having stopped what it started, when a collector cannot start
        except BaseException:
            if was_collecting:  # collect what was collected before, as before
                self._attach(self._new_loop(self.tables, now), start=True)
            raise
        for table in tables:
            self.collecting_since.setdefault(table, now)
        self.tables = tables
        if self.started_ns is None:
            self.started_ns = loop.store.start_time_ns
        self._attach(loop)

    def _new_loop(self, tables: tuple[str, ...], now_ns: int) -> AgentLoop:
        manifest = manifest_for_tables(list(tables), now_ns=now_ns, pids=self.pids)
        if self.collector_options:
            requests = tuple(
                replace(c, options=(*c.options, *self.collector_options.get(c.name, ()))) for c in manifest.collectors
            )
            manifest = replace(manifest, collectors=requests)
        return AgentLoop(manifest, self.options)

    def _attach(self, loop: AgentLoop, *, start: bool = False) -> None:
        """Run ``loop`` in the collector thread, its store holding what was collected so far."""
        if start:
            loop.start()
        old = self.store
        for name in old.table_names():  # keep what was collected before the re-plan
            loop.store.append(name, old.table(name))
        loop.store.processes.update(old.processes)
        for table, counters in old.drops.items():
            loop.store.drops.setdefault(table, dict(counters))
        self.store = loop.store
        self._loop = loop
        self.generation += 1
        self._halt.clear()
        self._thread = threading.Thread(target=self._collect, args=(loop,), name="pxq-live-window", daemon=True)
        self._thread.start()

    def _collect(self, loop: AgentLoop) -> None:
        try:
            while not self._halt.is_set():
                with self._lock:
                    if self._halt.is_set():
                        break
                    loop.step()
                    dropped = loop.store.drop_before(time.time_ns() - int(self.window_s * 1e9))
                    for table, rows in dropped.items():
                        self.evicted[table] = self.evicted.get(table, 0) + rows
        except BaseException as exc:  # said at the next use: a thread has nobody else to tell
            self._failure = exc

    def _stop_loop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT_S)
            self._thread = None
        if self._loop is not None:
            loop, self._loop = self._loop, None
            with self._lock:
                try:
                    loop.stop()
                finally:
                    loop.close()

    # ---------------------------------------------------------------- reading

    def snapshot(self) -> TableStore:
        """The rows of the last ``window_s`` seconds as a DataSource, frozen at this moment (the
        collectors go on). After :meth:`stop`: the window as it was when it stopped."""
        if self.started_ns is None:
            raise UsageError("the live window has not been started")
        if self._failure is not None:
            raise AgentError(f"live collection stopped: {self._failure}") from self._failure
        with self._lock:
            live = self.store
            end_ns = live.end_time_ns if live.end_time_ns is not None else time.time_ns()
            begin_ns = max(self.started_ns, end_ns - int(self.window_s * 1e9))
            frozen = TableStore(live.budget_bytes, host=live.host)
            frozen.start_time_ns, frozen.end_time_ns = begin_ns, end_ns
            frozen.processes = dict(live.processes)
            frozen.drops = {table: dict(counters) for table, counters in live.drops.items()}
            for name in self.tables:
                data = live.table(name)
                # No upper bound: a row stamped a little after end_ns (clocks converted from the
                # kernel's) is still part of what was collected.
                frozen.append(name, data.filter(pc.greater_equal(data.column("time_").cast(pa.int64()), begin_ns)))
        return frozen

    # ---------------------------------------------------------------- the REPL's SessionSource

    @property
    def data(self) -> Any:
        """The executor's DataSource for one query: a snapshot."""
        return self.snapshot()

    def now_ns(self) -> int:
        return time.time_ns()

    def describe(self) -> str:
        if not self.tables or self.started_ns is None:
            return f"live capture (a rolling window of {self.window_s:g}s): nothing collected yet"
        rows = ", ".join(f"{t} ({self.store.rows(t):,} rows)" for t in self.tables)
        return f"live capture (a rolling window of {self.window_s:g}s): {rows}"

    def rows(self, table: str) -> int | None:
        return self.store.rows(table) if table in self.tables and self.started_ns is not None else None

    def close(self) -> None:
        self.stop()


def start(
    tables: Sequence[str],
    *,
    window_s: float = DEFAULT_WINDOW_S,
    pids: Sequence[int] | None = None,
    options: AgentOptions | None = None,
) -> LiveWindow:
    """A started :class:`LiveWindow` (the public entry point for notebooks)."""
    return LiveWindow(tables, window_s=window_s, pids=pids, options=options).start()
