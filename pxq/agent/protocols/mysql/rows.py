"""``mysql_events`` rows from MySQL command/response pairs (:class:`MysqlRows`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from pxq.agent.protocols.mysql.stitcher import MysqlRequest, MysqlResponse

if TYPE_CHECKING:
    from pxq.agent.protocols.interface import ConnectionColumns


def mysql_events_schema() -> pa.Schema:
    """The Arrow schema of ``mysql_events``, from the table catalog."""
    from pxq.tables import CATALOG

    return CATALOG["mysql_events"].arrow_schema()


class MysqlRows:
    """``mysql_events`` rows being built, a list per column (the registry's ``make_rows``).

    The stitcher already cut the bodies to the body limit and left credentials out, so a pair's
    values are taken as they are."""

    COLUMNS = ("time_", "upid", "remote_addr", "remote_port", "local_addr", "local_port", "trace_role",
               "encrypted", "req_cmd", "req_body", "resp_status", "resp_body", "latency")  # fmt: skip

    def __init__(self, encrypted: bool = False) -> None:
        self.encrypted = encrypted
        self._reset()

    def _reset(self) -> None:
        self._columns: dict[str, list[object]] = {name: [] for name in self.COLUMNS}
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def add_pairs(
        self, conn: ConnectionColumns, pairs: list[tuple[MysqlRequest, MysqlResponse]], clock_offset_ns: int = 0
    ) -> None:
        """One row per pair of one connection: ``time_`` is the response's end (moved by
        ``clock_offset_ns`` into epoch time), ``latency`` the time from the command's start."""
        c = self._columns
        for req, resp in pairs:
            c["time_"].append(resp.end_ns + clock_offset_ns)
            c["upid"].append(conn.upid)
            c["remote_addr"].append(conn.raddr)
            c["remote_port"].append(conn.rport)
            c["local_addr"].append(conn.laddr)
            c["local_port"].append(conn.lport)
            c["trace_role"].append(conn.role)
            c["encrypted"].append(self.encrypted)
            c["req_cmd"].append(req.cmd)
            c["req_body"].append(req.body)
            c["resp_status"].append(resp.status)
            c["resp_body"].append(resp.body)
            c["latency"].append(resp.end_ns - req.start_ns)
        self.rows += len(pairs)

    def table(self) -> pa.Table:
        """The rows added since the last call, as a ``mysql_events`` table (and start over)."""
        schema = mysql_events_schema()
        if not self.rows:
            return schema.empty_table()
        arrays = [pa.array(self._columns[f.name], type=f.type) for f in schema]
        self._reset()
        return pa.Table.from_arrays(arrays, schema=schema)
