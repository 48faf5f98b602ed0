"""The row buffer every request/response protocol table but HTTP's shares (HTTP keeps its bodies in
byte buffers, :class:`pxq.agent.protocols.http1.HttpRows`): each pair kept as the tuple
:meth:`PairRows.row` makes of it, the connection columns once per batch of pairs, and the Arrow
columns built from them in bulk when the table is taken. The arrays are built from buffers, never
with ``pa.array`` over Python objects: its first call imports pandas (about 55 MB of the agent's
RSS) for nothing the agent uses.
"""

from __future__ import annotations

from itertools import starmap
from typing import Any

import numpy as np
import pyarrow as pa

from pxq.agent.protocols.interface import ConnectionColumns

# Columns every protocol table has of the connection a pair was seen on, in catalog order.
CONNECTION_COLUMNS = ("upid", "remote_addr", "remote_port", "local_addr", "local_port", "trace_role")
# Rows held as Python tuples at most: beyond, they are turned into Arrow (a third of the memory)
# while the tracker goes on. An agent behind under load handles a whole ring buffer's events
# (pipelined Redis: hundreds of thousands of pairs) before the table is taken.
ARROW_EVERY_ROWS = 8192


class PairRows:
    """Rows of one protocol table being built (:class:`pxq.agent.protocols.interface.RowBuffer`).

    A subclass names its catalog table (``TABLE``), its own columns (``PROTOCOL_COLUMNS``) and
    turns a pair into them (:meth:`row`)."""

    TABLE: str
    PROTOCOL_COLUMNS: tuple[str, ...]
    arrow_every_rows = ARROW_EVERY_ROWS

    def __init__(self, encrypted: bool = False) -> None:
        self.encrypted = encrypted
        self._done: list[pa.Table] = []  # rows already turned into Arrow, in order
        self._done_rows = 0
        self._reset()

    def _reset(self) -> None:
        self._rows: list[tuple[int, int, tuple[object, ...]]] = []  # row() of each pair
        # Each connection's columns, numbered in order of first sight.
        self._connections: dict[tuple[object, ...], int] = {}
        # Per add_pairs call: the connection's number, the clock offset and how many rows.
        self._batches: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return self._done_rows + len(self._rows)

    def row(self, req: Any, resp: Any) -> tuple[int, int, tuple[object, ...]]:
        """A pair's time (monotonic ns), its latency (ns) and its values of ``PROTOCOL_COLUMNS``."""
        raise NotImplementedError

    def add_pairs(self, conn: ConnectionColumns, pairs: list[tuple[Any, Any]], clock_offset_ns: int = 0) -> None:
        """One row per pair of one connection; ``clock_offset_ns`` turns times into epoch time."""
        if not pairs:
            return
        connection = (conn.upid, conn.raddr, conn.rport, conn.laddr, conn.lport, conn.role)
        number = self._connections.setdefault(connection, len(self._connections))
        self._batches.append((number, clock_offset_ns, len(pairs)))
        self._rows += starmap(self.row, pairs)
        if len(self._rows) >= self.arrow_every_rows:
            self._done.append(self._arrow())
            self._done_rows += self._done[-1].num_rows

    def table(self) -> pa.Table:
        """The rows added since the last call, as a table of the catalog's schema (and start over)."""
        if not self._done:
            return self._arrow()
        done, self._done, self._done_rows = self._done, [], 0
        return pa.concat_tables([*done, self._arrow()])

    def _arrow(self) -> pa.Table:
        """The rows held as tuples, as a table of the catalog's schema (and start over)."""
        from pxq.tables import CATALOG

        schema = CATALOG[self.TABLE].arrow_schema()
        rows, batches, connections = self._rows, self._batches, list(self._connections)
        self._reset()
        n = len(rows)
        times, latencies, values = zip(*rows, strict=True) if rows else ((), (), ())
        protocol = list(zip(*values, strict=True)) if rows else [()] * len(self.PROTOCOL_COLUMNS)
        counts = np.fromiter((count for _, _, count in batches), dtype=np.int64, count=len(batches))
        offsets = np.fromiter((offset for _, offset, _ in batches), dtype=np.int64, count=len(batches))
        numbers = np.fromiter((number for number, _, _ in batches), dtype=np.int64, count=len(batches))
        epoch_times = np.fromiter(times, dtype=np.int64, count=n) + np.repeat(offsets, counts)
        columns: dict[str, pa.Array] = {
            "time_": _int64_array(epoch_times, schema.field("time_").type),
            "encrypted": _bool_array(np.full(n, self.encrypted)),
            "latency": _int64_array(np.fromiter(latencies, dtype=np.int64, count=n), schema.field("latency").type),
        }
        connection_of = _int64_array(np.repeat(numbers, counts), pa.int64())  # each row's connection
        for k, name in enumerate(CONNECTION_COLUMNS):
            per_connection = [connection[k] for connection in connections]
            columns[name] = arrow_array(per_connection, schema.field(name).type).take(connection_of)
        for name, column in zip(self.PROTOCOL_COLUMNS, protocol, strict=True):
            columns[name] = arrow_array(column, schema.field(name).type)
        return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _int64_array(values: np.ndarray, type_: pa.DataType, validity: pa.Buffer | None = None) -> pa.Array:
    return pa.Array.from_buffers(type_, len(values), [validity, pa.py_buffer(np.ascontiguousarray(values))])


def _bool_array(values: np.ndarray, validity: pa.Buffer | None = None) -> pa.Array:
    bits = np.packbits(values.astype(bool, copy=False), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [validity, pa.py_buffer(bits)])


def arrow_array(values: list[object] | tuple[object, ...], type_: pa.DataType) -> pa.Array:
    """``values`` (None for a null) as an Arrow array of ``type_``: a string, a 64-bit integer or
    timestamp, or a boolean type (what the protocol tables hold), built from buffers."""
    n = len(values)
    nulls = values.count(None)
    validity = None
    if nulls:
        present = np.fromiter((v is not None for v in values), dtype=bool, count=n)
        validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    if pa.types.is_string(type_):
        texts = [v if v is not None else "" for v in values] if nulls else values
        encoded = list(map(str.encode, texts))  # type: ignore[arg-type]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=n), out=offsets[1:])
        if offsets[-1] > np.iinfo(np.int32).max:  # over a string array's 2 GiB offsets
            return pa.array(values, type=type_)
        buffers = [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))]
        return pa.Array.from_buffers(type_, n, buffers, null_count=nulls)
    if nulls:
        values = [v if v is not None else 0 for v in values]
    if pa.types.is_boolean(type_):
        return _bool_array(np.fromiter(values, dtype=bool, count=n), validity)
    if type_.bit_width == 64 and (pa.types.is_integer(type_) or pa.types.is_timestamp(type_)):
        return _int64_array(np.fromiter(values, dtype=np.int64, count=n), type_, validity)
    return pa.array(values, type=type_)  # (no protocol table has another type)
