"""The agent's table store: per-table Arrow batches under a byte budget, the oldest dropped first
(and counted), readable as a DataSource by the executor and writable as a replay capture."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc

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
    # the profiler's reasons for a partial Python part of a merged stack
    "python_truncated", "python_read_failed", "python_thread_unknown", "python_thread_miss",
    "python_frames_unplaced", "eval_frames_unmatched", "python_code_unknown", "python_not_ready",
    "python_unsupported",
}  # fmt: skip


def split_losses(counters: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """``counters`` as (events lost, rows kept but incomplete), zero counts left out."""
    lost = {k: v for k, v in counters.items() if v and k not in INCOMPLETE_REASONS}
    incomplete = {k: v for k, v in counters.items() if v and k in INCOMPLETE_REASONS}
    return lost, incomplete


# Held batches are compressed (an Arrow IPC stream each): the store holds the whole window, most
# of the agent's memory under load, and protocol rows (JSON text, one process and address for
# thousands of rows, names that differ by a digit) shrink 5 to 25 times. LZ4 (frame): a second of
# http_events at 2,000 req/s (2,000 rows, 1.6 MB) compresses in 1.0 ms to 1/13 of its size, where
# zstd level 1 took 3.4 ms for 1/25 (zstd -1: 2.5 ms, 1/15); the agent compresses everything it
# keeps long, so the codec's speed is a share of its CPU per transaction, while the budgets count
# the uncompressed bytes either way. Reading a batch back decompresses it.
HELD_CODEC = pa.Codec("lz4") if pa.Codec.is_available("lz4") else None
# In the calling thread: Arrow's thread pool would cost the agent ~40 MB of RSS (its threads'
# allocator arenas) for batches that compress in milliseconds anyway.
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression=HELD_CODEC, use_threads=False)
_READ_OPTIONS = pa.ipc.IpcReadOptions(use_threads=False)
# The newest batches are held as appended (uncompressed) while they add up to at most this many
# bytes, all tables together; past it the oldest are compressed. A short window (``pxq run`` for
# a few seconds: 32 MiB is ~8 s of http_events at 5,000 req/s, ~850 B a row) is then never
# compressed, nor decompressed to be read, and rows a rolling window or a budget drops while
# still new are never compressed either: appending (compressing each batch as it came) was
# ~1.4 us of the agent's CPU per HTTP transaction at 5,000 req/s, measured live. Offline
# (bench/bench_table_store.py) append went from 0.28 to 0.03 us a row for 6 s at 5,000 rows/s and
# from 0.20 to 0.15 for 30 s (the rows older than the newest 32 MiB are compressed as before).
# What it costs: up to these bytes of RSS more than a store compressed throughout (+32 MB at the
# peak there; the paced agent peaked at ~160-190 MB against its 250 MB target); the budgets count
# uncompressed bytes either way. The node agent, which keeps minutes of history and has the
# tighter RSS margin, compresses at once (raw_bytes=0, :mod:`pxq.agent.daemon`).
RAW_HELD_BYTES = 32 * 1024 * 1024


def compress(data: pa.Table) -> pa.Buffer:
    """``data`` as an LZ4-compressed Arrow IPC stream (:data:`HELD_CODEC` must be there)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema, options=_WRITE_OPTIONS) as out:
        out.write_table(data)
    return sink.getvalue()


@dataclass(eq=False)  # (one batch is itself only: the store finds it in its queues by identity)
class _Held:
    """One appended batch as the store keeps it: as appended while it is among the newest
    (:data:`RAW_HELD_BYTES`), then compressed (replaced in place: readers that took the batch
    before still read the same rows)."""

    data: pa.Buffer | pa.Table  # the compressed IPC stream, or the table itself (raw)
    rows: int
    size: int  # its bytes in the catalog's types: what the budget counts (what readers get)
    newest_ns: int | None  # its latest time_ (for a rolling window)
    seq: int = 0  # its place in the store's appends (the spill's cursor: :mod:`pxq.agent.spill`)
    gone: bool = False  # dropped from the store (evicted or out of a rolling window)

    @classmethod
    def of(cls, data: pa.Table) -> _Held:
        newest = None
        if data.schema.get_field_index("time_") >= 0:  # (column_names makes a list: ~10 us an append)
            newest = pc.max(data.column("time_").cast(pa.int64())).as_py()
        return cls(data, data.num_rows, data.nbytes, newest)

    @property
    def raw(self) -> bool:
        return isinstance(self.data, pa.Table)

    @property
    def held_bytes(self) -> int:
        data = self.data  # (read once: the writer may compress it meanwhile)
        return data.size if isinstance(data, pa.Buffer) else data.nbytes

    def table(self) -> pa.Table:
        data = self.data
        if isinstance(data, pa.Table):
            return data
        return pa.ipc.open_stream(data, options=_READ_OPTIONS).read_all()


@dataclass
class _TableBatches:
    batches: deque[_Held] = field(default_factory=deque)
    bytes: int = 0  # in the catalog's types
    rows: int = 0


class TableStore:
    """Holds what collectors produced; thread-safe for one writer and concurrent readers."""

    def __init__(
        self,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        host: str = "",
        table_budget_bytes: int | None = None,
        raw_bytes: int = RAW_HELD_BYTES,
    ):
        self.budget_bytes = budget_bytes
        self.table_budget_bytes = table_budget_bytes  # each table's own cap too (the node agent's)
        self.host = host
        self.processes: dict[str, dict] = {}
        self.drops: dict[str, dict[str, int]] = {}
        self.start_time_ns: int | None = None
        self.end_time_ns: int | None = None
        self._tables: dict[str, _TableBatches] = {}
        self._lock = threading.Lock()
        self.appended = 0  # batches appended so far (each held batch's seq)
        self.raw_bytes = raw_bytes  # the newest batches held uncompressed up to this (RAW_HELD_BYTES)
        self._raw: deque[_Held] = deque()  # batches not compressed (yet), oldest first, all tables
        self._raw_size = 0  # their sizes (those still held)

    # -- writing

    def append(self, table: str, data: pa.Table) -> None:
        if table not in CATALOG:
            raise DataError(f"no table named {table!r} in the catalog")
        if data.num_rows == 0:
            return
        expected = CATALOG[table].arrow_schema()
        if data.schema != expected:
            data = data.select(expected.names).cast(expected)
        held = _Held.of(data)
        with self._lock:
            self.appended += 1
            held.seq = self.appended
            entry = self._tables.setdefault(table, _TableBatches())
            entry.batches.append(held)
            entry.bytes += held.size
            entry.rows += held.rows
            if HELD_CODEC is not None:
                self._raw.append(held)
                self._raw_size += held.size
            self._evict()
        self._compress_oldest()

    def _compress_oldest(self) -> None:
        """Compress the oldest raw batches until those left fit in ``raw_bytes``; each outside the
        lock (readers go on meanwhile), swapped in under it."""
        while True:
            with self._lock:
                if self._raw_size <= self.raw_bytes or not self._raw:
                    return
                oldest = self._raw[0]
            packed = compress(oldest.table())
            with self._lock:
                if self._raw and self._raw[0] is oldest:
                    self._raw.popleft()
                if not oldest.gone:  # (else dropped while being compressed: its size is off already)
                    oldest.data = packed
                    self._raw_size -= oldest.size

    def _forget(self, held: _Held) -> None:
        """``held`` is no longer in the store (under the lock)."""
        held.gone = True
        if held.raw and HELD_CODEC is not None:
            self._raw_size -= held.size
            # Out of the raw queue now, not when it reaches its front: it would keep the rows in
            # memory meanwhile. (A few hundred raw batches at most: 32 MiB of drained batches.)
            self._raw.remove(held)

    def _evict(self) -> None:
        """Drop the oldest batches of the largest tables until the budget holds (and each table's)."""
        for name, entry in self._tables.items():
            while self.table_budget_bytes is not None and entry.bytes > self.table_budget_bytes:
                if len(entry.batches) <= 1:
                    break
                oldest = entry.batches.popleft()
                self._forget(oldest)
                entry.bytes -= oldest.size
                entry.rows -= oldest.rows
                self.count_drop(name, "table_store_budget", oldest.rows)
        while sum(t.bytes for t in self._tables.values()) > self.budget_bytes:
            name, entry = max(self._tables.items(), key=lambda kv: kv[1].bytes)
            if len(entry.batches) <= 1:
                break  # never drop the newest batch: it is what the user is looking at
            oldest = entry.batches.popleft()
            self._forget(oldest)
            entry.bytes -= oldest.size
            entry.rows -= oldest.rows
            self.count_drop(name, "table_store_budget", oldest.rows)

    def drop_before(self, cutoff_ns: int) -> dict[str, int]:
        """A rolling window (:mod:`pxq.agent.live_window`): drop the batches whose rows are all
        older than ``cutoff_ns``; not counted as losses, the user asked for a window. Returns the
        rows dropped per table (the node agent reports them as evicted by retention)."""
        dropped: dict[str, int] = {}
        with self._lock:
            for name, entry in self._tables.items():
                while entry.batches and (entry.batches[0].newest_ns or 0) < cutoff_ns:
                    oldest = entry.batches.popleft()
                    self._forget(oldest)
                    entry.bytes -= oldest.size
                    entry.rows -= oldest.rows
                    dropped[name] = dropped.get(name, 0) + oldest.rows
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

    def batches(self, table: str) -> Iterator[pa.Table]:
        """The batches ``table`` holds now, oldest first, each read back (decompressed) only when
        the reader asks for it: for readers that want only the first rows (the node agent's heads)."""
        with self._lock:
            held = list(self._tables[table].batches) if table in self._tables else []
        return (batch.table() for batch in held)

    def batches_since(self, table: str, seq: int) -> list[tuple[int, pa.Table]]:
        """(seq, batch) of the batches ``table`` holds that were appended after ``seq``, oldest first."""
        with self._lock:
            held = [b for b in self._tables[table].batches if b.seq > seq] if table in self._tables else []
        return [(batch.seq, batch.table()) for batch in held]

    def held_bytes(self) -> int:
        """Bytes the store's batches take as held (the oldest compressed), all tables."""
        with self._lock:
            return sum(b.held_bytes for entry in self._tables.values() for b in entry.batches)

    def table(self, table: str) -> pa.Table:
        schema = CATALOG[table].arrow_schema()
        with self._lock:
            batches = list(self._tables[table].batches) if table in self._tables else []
        if not batches:
            return pa.Table.from_batches([], schema=schema)  # (empty_table() imports pandas)
        return pa.concat_tables([b.table() for b in batches])

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
