"""A rolling window of live data: the embedded agent collecting in the background, so that a
notebook session (``%pxq_session``, :class:`pxq.api.Session`) or the REPL can query the last
minutes at once, again and again, without starting probes for every query.

    window = live_window.start(["http_events", "stack_traces.beta"], window_s=300)
    source = window.snapshot()      # a DataSource: the rows of the last 300 s, frozen now
    pxq.run("http_data", source=source)
    window.stop()                   # the collectors stop; the last snapshot stays usable

The agent loop (:class:`pxq.agent.loop.AgentLoop`) runs in a daemon thread; rows older than the
window are dropped from its store as it goes (and, within the oldest batch, left out of each
snapshot), so memory stays bounded by the window as well as by the store's byte budget. A
snapshot is a separate in-memory table store: queries over it never race the collector thread,
and its ``end_time_ns`` (``px.now()`` for scripts) is the moment it was taken.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from pxq.agent.collector import AgentError, AgentOptions
from pxq.agent.loop import AgentLoop
from pxq.agent.table_store import TableStore
from pxq.errors import UsageError
from pxq.plan.manifest import manifest_for_tables
from pxq.tables import CATALOG

DEFAULT_WINDOW_S = 300.0
# How long stop() and snapshot() wait for the collector thread's current poll (a poll blocks at
# most the loop's POLL_INTERVAL_MS, 100 ms; more only when a collector is slow to read).
_JOIN_TIMEOUT_S = 30.0

__all__ = ["DEFAULT_WINDOW_S", "LiveWindow", "start"]


class _RollingStore(TableStore):
    """A TableStore that can forget rows older than a time (whole batches: each holds about a
    poll's worth of rows, so at most one straddling batch per table is kept past the cut)."""

    def drop_before(self, cutoff_ns: int) -> None:
        with self._lock:
            for entry in self._tables.values():
                while len(entry.batches) > 1:  # the newest batch is always kept, as by the budget
                    oldest = entry.batches[0]
                    newest_time = pc.max(oldest.column("time_")).cast(pa.int64()).as_py()
                    if newest_time is None or newest_time >= cutoff_ns:
                        break
                    entry.batches.popleft()
                    entry.bytes -= oldest.nbytes
                    entry.rows -= oldest.num_rows


class LiveWindow:
    """Collects ``tables`` live (optionally only from ``pids`` and their descendants) keeping the
    last ``window_s`` seconds; see the module docstring."""

    def __init__(
        self,
        tables: Sequence[str],
        *,
        window_s: float = DEFAULT_WINDOW_S,
        pids: Sequence[int] | None = None,
        options: AgentOptions | None = None,
    ):
        names = [t.strip() for t in tables if t.strip()]
        unknown = [t for t in names if t not in CATALOG]
        if unknown:
            raise UsageError(f"unknown table {unknown[0]!r}; tables: {', '.join(sorted(CATALOG))}")
        if not names:
            raise UsageError("a live window needs at least one table to collect")
        if not window_s > 0:
            raise UsageError(f"the live window must be longer than 0 s, not {window_s:g}")
        self.tables = tuple(dict.fromkeys(names))
        self.window_s = float(window_s)
        self.pids = tuple(pids) if pids else None
        self.options = options or AgentOptions()
        self.started_ns: int | None = None
        self._loop: AgentLoop | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()  # one of: a poll of the collectors, a snapshot, stopping
        self._failure: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> LiveWindow:
        """Start the collectors (raising AgentError/BpfError, as ``pxq run`` would, when they
        cannot start) and the thread that keeps moving their rows into the window."""
        if self._loop is not None:
            raise UsageError("this live window was started already")
        manifest = manifest_for_tables(list(self.tables), now_ns=time.time_ns(), pids=self.pids)
        loop = AgentLoop(manifest, self.options)
        loop.store = _RollingStore(self.options.budget_bytes, host=loop.store.host)
        loop.start()  # raises, having stopped what had started, when a collector cannot start
        self._loop = loop
        self.started_ns = loop.store.start_time_ns
        self._thread = threading.Thread(target=self._collect, name="pxq-live-window", daemon=True)
        self._thread.start()
        return self

    def _collect(self) -> None:
        assert self._loop is not None
        try:
            while not self._halt.is_set():
                with self._lock:
                    if self._halt.is_set():
                        break
                    self._loop.step()
                    assert isinstance(self._loop.store, _RollingStore)
                    self._loop.store.drop_before(time.time_ns() - int(self.window_s * 1e9))
        except BaseException as exc:  # said by the next snapshot(): a thread has nobody else to tell
            self._failure = exc

    def snapshot(self) -> TableStore:
        """The rows of the last ``window_s`` seconds as a DataSource, frozen at this moment (the
        collectors go on). After :meth:`stop`: the window as it was when it stopped."""
        if self._loop is None:
            raise UsageError("the live window has not been started")
        if self._failure is not None:
            raise AgentError(f"live collection stopped: {self._failure}") from self._failure
        with self._lock:
            live = self._loop.store
            end_ns = live.end_time_ns if live.end_time_ns is not None else time.time_ns()
            begin_ns = max(self.started_ns or end_ns, end_ns - int(self.window_s * 1e9))
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

    def stop(self) -> None:
        """Stop collecting (the rows the collectors still hold are taken); idempotent."""
        if self._loop is None or self._halt.is_set():
            return
        self._halt.set()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT_S)
        with self._lock:
            try:
                self._loop.stop()
            finally:
                self._loop.close()

    def __enter__(self) -> LiveWindow:
        return self.start() if self._loop is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start(
    tables: Sequence[str],
    *,
    window_s: float = DEFAULT_WINDOW_S,
    pids: Sequence[int] | None = None,
    options: AgentOptions | None = None,
) -> LiveWindow:
    """A started :class:`LiveWindow` (the public entry point for notebooks and the REPL)."""
    return LiveWindow(tables, window_s=window_s, pids=pids, options=options).start()
