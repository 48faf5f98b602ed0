"""``pgsql_events`` rows from PostgreSQL request/response pairs (:class:`PgsqlRows`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from pxq.agent.protocols.pgsql.stitcher import Request, Response

if TYPE_CHECKING:
    from pxq.agent.protocols.interface import ConnectionColumns


def pgsql_events_schema() -> pa.Schema:
    """The Arrow schema of ``pgsql_events``, from the table catalog."""
    from pxq.tables import CATALOG

    return CATALOG["pgsql_events"].arrow_schema()


class PgsqlRows:
    """``pgsql_events`` rows being built (:class:`pxq.agent.protocols.interface.RowBuffer`): one
    Python list per column; database traffic is far less dense than HTTP's, so no byte buffers."""

    COLUMNS = ("time_", "upid", "remote_addr", "remote_port", "local_addr", "local_port", "trace_role", "encrypted",
               "req_cmd", "req", "resp", "latency")  # fmt: skip

    def __init__(self) -> None:
        self._columns: dict[str, list[object]] = {name: [] for name in self.COLUMNS}

    def __len__(self) -> int:
        return len(self._columns["time_"])

    def add_pairs(self, conn: ConnectionColumns, pairs: list[tuple[Request, Response]], clock_offset_ns: int) -> None:
        """One row per pair: ``time_`` is the response's end (Pixie: the response's timestamp),
        ``latency`` the time from the request's first byte."""
        c = self._columns
        for req, resp in pairs:
            c["time_"].append(resp.end_ns + clock_offset_ns)
            c["upid"].append(conn.upid)
            c["remote_addr"].append(conn.raddr)
            c["remote_port"].append(conn.rport)
            c["local_addr"].append(conn.laddr)
            c["local_port"].append(conn.lport)
            c["trace_role"].append(conn.role)
            c["encrypted"].append(False)
            c["req_cmd"].append(req.cmd)
            c["req"].append(req.text)
            c["resp"].append(resp.text)
            c["latency"].append(resp.end_ns - req.start_ns)

    def table(self) -> pa.Table:
        """The rows added since the last call, as a ``pgsql_events`` table (and start over)."""
        schema = pgsql_events_schema()
        columns, self._columns = self._columns, {name: [] for name in self.COLUMNS}
        return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)
