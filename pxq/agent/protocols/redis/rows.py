"""``redis_events`` rows from (command, reply) pairs (:class:`RedisRows`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from pxq.agent.protocols.interface import ConnectionColumns
    from pxq.agent.protocols.redis.stitcher import RedisMessage


def redis_events_schema() -> pa.Schema:
    """The Arrow schema of ``redis_events``, from the table catalog."""
    from pxq.tables import CATALOG

    return CATALOG["redis_events"].arrow_schema()


class RedisRows:
    """``redis_events`` rows being built: one list per column, a table on :meth:`table`.

    ``time_`` is the reply's end (Pixie stamps a record with its response), ``latency`` the time
    from the command's first byte to the reply's last (0 for a pushed message and a command the
    server does not answer).
    """

    COLUMNS = ("time_", "upid", "remote_addr", "remote_port", "local_addr", "local_port", "trace_role",
               "encrypted", "req_cmd", "req_args", "resp", "latency")  # fmt: skip

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._columns: dict[str, list[object]] = {name: [] for name in self.COLUMNS}

    def __len__(self) -> int:
        return len(self._columns["time_"])

    def add_pairs(
        self, conn: ConnectionColumns, pairs: list[tuple[RedisMessage, RedisMessage]], clock_offset_ns: int = 0
    ) -> None:
        c = self._columns
        n = len(pairs)
        c["upid"] += [conn.upid] * n
        c["remote_addr"] += [conn.raddr] * n
        c["remote_port"] += [conn.rport] * n
        c["local_addr"] += [conn.laddr] * n
        c["local_port"] += [conn.lport] * n
        c["trace_role"] += [conn.role] * n
        c["encrypted"] += [False] * n
        for req, reply in pairs:
            c["time_"].append(reply.end_ns + clock_offset_ns)
            c["req_cmd"].append(req.cmd)
            c["req_args"].append(req.payload)
            c["resp"].append(reply.payload)
            c["latency"].append(reply.end_ns - req.start_ns)

    def table(self) -> pa.Table:
        """The rows added since the last call, as a ``redis_events`` table (and start over)."""
        schema = redis_events_schema()
        columns = self._columns
        self._reset()
        return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)
