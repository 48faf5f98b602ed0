"""The agent's table store: per-table Arrow batches under a byte budget, the oldest dropped first
(and counted), readable as a DataSource by the executor and writable as a replay capture."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pxq.errors import DataError
from pxq.tables import CATALOG

DEFAULT_BUDGET_BYTES = 512 * 1024 * 1024
# Counters (in ``drops``) of rows kept whose content is incomplete, not of events lost: the
# profiler's samples whose stack was cut short (marked [truncated]) or whose user or kernel stack
# the kernel failed to record or was gone when read (marked [lost ... stack]). Reports and the
# progress line count them apart from losses.
INCOMPLETE_REASONS = frozenset({"truncated_user_stack", "user_stack_lost", "kernel_stack_lost", "stack_missing"}) | {
    # the profiler's reasons for a cut-short user stack (pxq/agent/profiler.py)
    "user_regs_lost", "user_copy_failed", "unwind_copy_short", "unwind_no_cfi", "unwind_bad_cfa",
    "unwind_cfa_expression", "unwind_unmapped", "unwind_max_depth", "unwind_frame_pointers",
    "unwind_process_gone",
}  # fmt: skip


def split_losses(counters: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """``counters`` as (events lost, rows kept but incomplete), zero counts left out."""
    lost = {k: v for k, v in counters.items() if v and k not in INCOMPLETE_REASONS}
    incomplete = {k: v for k, v in counters.items() if v and k in INCOMPLETE_REASONS}
    return lost, incomplete


def _newest(batch: pa.Table) -> int | None:
    return pc.max(batch.column("time_").cast(pa.int64())).as_py()


def _compact(data: pa.Table) -> pa.Table:
    """``data`` with each string column that repeats itself (the connection columns: one process,
    one address for thousands of rows) held dictionary-encoded, which is smaller: the store holds
    the whole window, most of the agent's memory under load. :meth:`TableStore.table` gives the
    catalog's types back."""
    for i, field_ in enumerate(data.schema):
        if not pa.types.is_string(field_.type) or data.num_rows < 64:
            continue
        column = data.column(i)
        encoded = pc.dictionary_encode(column)
        values = max((len(chunk.dictionary) for chunk in encoded.chunks), default=0)
        if values < 1 << 7:  # indices as small as the dictionary allows
            encoded = encoded.cast(pa.dictionary(pa.int8(), field_.type))
        elif values < 1 << 15:
            encoded = encoded.cast(pa.dictionary(pa.int16(), field_.type))
        if encoded.nbytes < column.nbytes // 2:
            data = data.set_column(i, field_.with_type(encoded.type), encoded)
    return data


@dataclass
class _TableBatches:
    batches: deque = field(default_factory=deque)
    sizes: deque = field(default_factory=deque)  # each batch's bytes in the catalog's types
    bytes: int = 0
    rows: int = 0


class TableStore:
    """Holds what collectors produced; thread-safe for one writer and concurrent readers."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES, host: str = "", table_budget_bytes: int | None = None):
        self.budget_bytes = budget_bytes
        self.table_budget_bytes = table_budget_bytes  # each table's own cap too (the node agent's)
        self.host = host
        self.processes: dict[str, dict] = {}
        self.drops: dict[str, dict[str, int]] = {}
        self.start_time_ns: int | None = None
        self.end_time_ns: int | None = None
        self._tables: dict[str, _TableBatches] = {}
        self._lock = threading.Lock()

    # -- writing

    def append(self, table: str, data: pa.Table) -> None:
        if table not in CATALOG:
            raise DataError(f"no table named {table!r} in the catalog")
        if data.num_rows == 0:
            return
        expected = CATALOG[table].arrow_schema()
        if data.schema != expected:
            data = data.select(expected.names).cast(expected)
        size = data.nbytes  # the budget counts what readers get (the catalog's types)
        data = _compact(data)
        with self._lock:
            entry = self._tables.setdefault(table, _TableBatches())
            entry.batches.append(data)
            entry.sizes.append(size)
            entry.bytes += size
            entry.rows += data.num_rows
            self._evict()

    def _evict(self) -> None:
        """Drop the oldest batches of the largest tables until the budget holds (and each table's)."""
        for name, entry in self._tables.items():
            while self.table_budget_bytes is not None and entry.bytes > self.table_budget_bytes:
                if len(entry.batches) <= 1:
                    break
                oldest = entry.batches.popleft()
                entry.bytes -= entry.sizes.popleft()
                entry.rows -= oldest.num_rows
                self.count_drop(name, "table_store_budget", oldest.num_rows)
        while sum(t.bytes for t in self._tables.values()) > self.budget_bytes:
            name, entry = max(self._tables.items(), key=lambda kv: kv[1].bytes)
            if len(entry.batches) <= 1:
                break  # never drop the newest batch: it is what the user is looking at
            oldest = entry.batches.popleft()
            entry.bytes -= entry.sizes.popleft()
            entry.rows -= oldest.num_rows
            self.count_drop(name, "table_store_budget", oldest.num_rows)

    def drop_before(self, cutoff_ns: int) -> dict[str, int]:
        """A rolling window (:mod:`pxq.agent.live_window`): drop the batches whose rows are all
        older than ``cutoff_ns``; not counted as losses, the user asked for a window. Returns the
        rows dropped per table (the node agent reports them as evicted by retention)."""
        dropped: dict[str, int] = {}
        with self._lock:
            for name, entry in self._tables.items():
                while entry.batches and (_newest(entry.batches[0]) or 0) < cutoff_ns:
                    oldest = entry.batches.popleft()
                    entry.bytes -= entry.sizes.popleft()
                    entry.rows -= oldest.num_rows
                    dropped[name] = dropped.get(name, 0) + oldest.num_rows
        return dropped

    def count_drop(self, table: str, reason: str, count: int) -> None:
        if count:
            per_table = self.drops.setdefault(table, {})
            per_table[reason] = per_table.get(reason, 0) + count

    def set_drops(self, table: str, counters: dict[str, int]) -> None:
        """Replace a collector's cumulative counters for ``table`` (store-side ones are kept)."""
        kept = {k: v for k, v in self.drops.get(table, {}).items() if k == "table_store_budget"}
        self.drops[table] = {**{k: v for k, v in counters.items() if v}, **kept}

    # -- reading (the executor's DataSource protocol)

    def table_names(self) -> list[str]:
        return [name for name in CATALOG if name in self._tables]

    def rows(self, table: str) -> int:
        entry = self._tables.get(table)
        return entry.rows if entry else 0

    def size_bytes(self, table: str) -> int:
        """The bytes ``table`` holds, as counted against the budgets (the catalog's types)."""
        entry = self._tables.get(table)
        return entry.bytes if entry else 0

    def batches(self, table: str) -> list[pa.Table]:
        """The batches ``table`` holds now, oldest first, as stored (strings may be dictionary-encoded):
        for readers that want only the first rows (the node agent's heads)."""
        with self._lock:
            return list(self._tables[table].batches) if table in self._tables else []

    def table(self, table: str) -> pa.Table:
        schema = CATALOG[table].arrow_schema()
        with self._lock:
            batches = list(self._tables[table].batches) if table in self._tables else []
        if not batches:
            return schema.empty_table()
        return pa.concat_tables([b if b.schema == schema else b.cast(schema) for b in batches])

    def scan(
        self,
        table: str,
        columns=None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        *,
        filter=None,
        filter_columns=(),
    ) -> pa.Table:
        if table not in CATALOG:
            raise DataError(f"no table named {table!r} in the catalog")
        data = self.table(table)
        if start_ns is not None or end_ns is not None:
            times = data.column("time_").cast(pa.int64())
            keep = None
            if start_ns is not None:
                keep = pc.greater_equal(times, start_ns)
            if end_ns is not None:
                upper = pc.less(times, end_ns)
                keep = upper if keep is None else pc.and_(keep, upper)
            data = data.filter(keep)
        if filter is not None:
            data = data.filter(filter)
        return data if columns is None else data.select(list(columns))

    def write_capture(self, directory, tables: list[str] | None = None) -> None:
        from pxq.replay import write_capture

        names = [t for t in (tables or self.table_names()) if t in self._tables]
        write_capture(
            directory,
            {name: self.table(name) for name in names},
            host=self.host,
            start_time_ns=self.start_time_ns or 0,
            end_time_ns=self.end_time_ns or 0,
            processes=self.processes,
            drops={t: d for t, d in self.drops.items() if t in names},
        )
