"""The row buffer every request/response protocol table but HTTP's shares (HTTP keeps its bodies in
byte buffers, :class:`pxq.agent.protocols.http1.HttpRows`): a tuple per row (the connection's
columns, the protocol's own from :meth:`PairRows.row`), turned into columns once per table.
Database and DNS traffic is far less dense than HTTP's: Python objects suffice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pxq.agent.protocols.interface import ConnectionColumns

# Columns every protocol table has of the connection a pair was seen on, in catalog order.
CONNECTION_COLUMNS = ("upid", "remote_addr", "remote_port", "local_addr", "local_port", "trace_role")


class PairRows:
    """Rows of one protocol table being built (:class:`pxq.agent.protocols.interface.RowBuffer`).

    A subclass names its catalog table (``TABLE``), its own columns (``PROTOCOL_COLUMNS``) and
    turns a pair into them (:meth:`row`)."""

    TABLE: str
    PROTOCOL_COLUMNS: tuple[str, ...]

    def __init__(self, encrypted: bool = False) -> None:
        self.encrypted = encrypted
        self._reset()

    def _reset(self) -> None:
        # One tuple per row, in _names() order: a pair costs one append, the columns are made
        # once per table() (zip, then pyarrow arrays).
        self._rows: list[tuple[object, ...]] = []

    def _names(self) -> tuple[str, ...]:
        return ("time_", *CONNECTION_COLUMNS, *self.PROTOCOL_COLUMNS, "latency")

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, req: Any, resp: Any) -> tuple[int, int, tuple[object, ...]]:
        """A pair's time (monotonic ns), its latency (ns) and its values of ``PROTOCOL_COLUMNS``."""
        raise NotImplementedError

    def add_pairs(self, conn: ConnectionColumns, pairs: list[tuple[Any, Any]], clock_offset_ns: int = 0) -> None:
        """One row per pair of one connection; ``clock_offset_ns`` turns times into epoch time."""
        connection = (conn.upid, conn.raddr, conn.rport, conn.laddr, conn.lport, conn.role)
        append, row = self._rows.append, self.row
        for req, resp in pairs:
            time_ns, latency_ns, values = row(req, resp)
            append((time_ns + clock_offset_ns, *connection, *values, latency_ns))

    def table(self) -> pa.Table:
        """The rows added since the last call, as a table of the catalog's schema (and start over)."""
        from pxq.tables import CATALOG

        schema = CATALOG[self.TABLE].arrow_schema()
        rows = self._rows
        self._reset()
        names = self._names()
        columns: dict[str, Sequence[object]] = dict(zip(names, zip(*rows))) if rows else dict.fromkeys(names, ())
        columns["encrypted"] = [self.encrypted] * len(rows)
        return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)
