"""The REPL's live source: the embedded agent's loop (:class:`pxq.agent.loop.AgentLoop`) runs in a
background thread for as long as the session uses it, moving rows into its TableStore, which
keeps a rolling window (``retention_s``): repeated queries see fresh rows without restarting
probes. Probes are attached for the tables the session's queries read; a query that reads a
table not collected yet re-plans: the loop restarts with the union of the tables, the rows
collected so far carried over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from pxq.agent.collector import AgentOptions
from pxq.agent.loop import AgentLoop, check_environment
from pxq.agent.table_store import TableStore
from pxq.plan.manifest import manifest_for_tables

DEFAULT_RETENTION_S = 300.0


class LiveSource:
    """A rolling window of live capture, readable by the executor (``data``) while it grows."""

    live = True

    def __init__(self, options: AgentOptions | None = None, *, retention_s: float = DEFAULT_RETENTION_S):
        check_environment()  # say at once when eBPF cannot work here, with the fix
        self.options = options or AgentOptions()
        self.retention_s = retention_s
        self.tables: set[str] = set()
        self.collecting_since: dict[str, int] = {}  # table -> when its probes started (ns)
        self._loop: AgentLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self.generation = 0  # how many times the probes were (re)planned and attached
        self.store = TableStore(self.options.budget_bytes)

    # the executor's DataSource
    @property
    def data(self) -> Any:
        return self

    @property
    def host(self) -> str:
        return self.store.host

    @property
    def processes(self) -> dict[str, dict[str, Any]]:
        return dict(self.store.processes)  # the collector thread adds entries meanwhile

    @property
    def end_time_ns(self) -> int:
        return time.time_ns()

    def scan(
        self,
        table: str,
        columns: Sequence[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        *,
        filter: Any = None,
        filter_columns: Sequence[str] = (),
    ) -> Any:
        return self.store.scan(table, columns, start_ns, end_ns, filter=filter, filter_columns=filter_columns)

    # the session's source
    def now_ns(self) -> int:
        return time.time_ns()

    def prepare(self, tables: set[str]) -> list[str]:
        """Attach the probes of the ``tables`` not collected yet (restarting the loop with all of them)."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._stop_loop()
            self.tables = set()
            raise failure
        new = set(tables) - self.tables
        if not new:
            return []
        self._restart(self.tables | new)
        return [
            f"live: started collecting {', '.join(sorted(new))}: rows appear from now on "
            f"(a rolling window of {self.retention_s:g}s); ask again in a moment for more"
        ]

    def describe(self) -> str:
        if not self.tables:
            return f"live capture (a rolling window of {self.retention_s:g}s): nothing collected yet"
        rows = ", ".join(f"{t} ({self.store.rows(t):,} rows)" for t in sorted(self.tables))
        return f"live capture (a rolling window of {self.retention_s:g}s): {rows}"

    def rows(self, table: str) -> int | None:
        return self.store.rows(table) if table in self.tables else None

    def close(self) -> None:
        self._stop_loop()

    # the collector thread
    def _restart(self, tables: set[str]) -> None:
        now = time.time_ns()
        # Built first: a table no collector here fills is an AgentError before anything stops.
        loop = AgentLoop(manifest_for_tables(sorted(tables), now_ns=now), self.options)
        self._stop_loop()
        try:
            loop.start()  # raises, having stopped what it started, when a probe cannot attach
        except BaseException:
            if self.tables:  # collect what was collected before, as before
                self._attach(AgentLoop(manifest_for_tables(sorted(self.tables), now_ns=now), self.options))
            raise
        for table in tables - self.tables:
            self.collecting_since[table] = now
        self.tables = set(tables)
        self._attach(loop, started=True)

    def _attach(self, loop: AgentLoop, *, started: bool = False) -> None:
        """Run ``loop`` in the collector thread, its store holding what was collected so far."""
        if not started:
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
        self._stop.clear()
        self._thread = threading.Thread(target=self._collect, name="pxq-repl-live", daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            while not self._stop.is_set():
                loop.step()
                loop.store.drop_before(time.time_ns() - int(self.retention_s * 1e9))
        except BaseException as exc:  # noqa: BLE001 - said by the next prepare(), in the session
            self._failure = exc

    def _stop_loop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._loop is not None:
            loop, self._loop = self._loop, None
            try:
                loop.stop()
            finally:
                loop.close()
