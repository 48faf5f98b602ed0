"""The row buffer every request/response protocol table but HTTP's shares (HTTP keeps its bodies in
byte buffers, :class:`pxq.agent.protocols.http1.HttpRows`): a Python list per column, the
connection columns filled once per batch of pairs, the protocol's own columns from
:meth:`PairRows.row`. Database and DNS traffic is far less dense than HTTP's: lists suffice.
"""

from __future__ import annotations

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
        names = ("time_", *CONNECTION_COLUMNS, *self.PROTOCOL_COLUMNS, "latency")
        self._columns: dict[str, list[object]] = {name: [] for name in names}

    def __len__(self) -> int:
        return len(self._columns["time_"])

    def row(self, req: Any, resp: Any) -> tuple[int, int, tuple[object, ...]]:
        """A pair's time (monotonic ns), its latency (ns) and its values of ``PROTOCOL_COLUMNS``."""
        raise NotImplementedError

    def add_pairs(self, conn: ConnectionColumns, pairs: list[tuple[Any, Any]], clock_offset_ns: int = 0) -> None:
        """One row per pair of one connection; ``clock_offset_ns`` turns times into epoch time."""
        c = self._columns
        n = len(pairs)
        for name, value in zip(
            CONNECTION_COLUMNS, (conn.upid, conn.raddr, conn.rport, conn.laddr, conn.lport, conn.role), strict=True
        ):
            c[name] += [value] * n
        times, latencies = c["time_"], c["latency"]
        protocol = [c[name] for name in self.PROTOCOL_COLUMNS]
        for req, resp in pairs:
            time_ns, latency_ns, values = self.row(req, resp)
            times.append(time_ns + clock_offset_ns)
            latencies.append(latency_ns)
            for column, value in zip(protocol, values, strict=True):
                column.append(value)

    def table(self) -> pa.Table:
        """The rows added since the last call, as a table of the catalog's schema (and start over)."""
        from pxq.tables import CATALOG

        schema = CATALOG[self.TABLE].arrow_schema()
        columns = self._columns
        columns["encrypted"] = [self.encrypted] * len(self)
        self._reset()
        return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)
