"""``redis_events`` rows from (command, reply) pairs (:class:`RedisRows`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from pxq.agent.protocols.pair_rows import PairRows

if TYPE_CHECKING:
    from pxq.agent.protocols.redis.stitcher import RedisMessage


def redis_events_schema() -> pa.Schema:
    """The Arrow schema of ``redis_events``, from the table catalog."""
    from pxq.tables import CATALOG

    return CATALOG["redis_events"].arrow_schema()


class RedisRows(PairRows):
    """``redis_events`` rows being built.

    ``time_`` is the reply's end (Pixie stamps a record with its response), ``latency`` the time
    from the command's first byte to the reply's last (0 for a pushed message and a command the
    server does not answer).
    """

    TABLE = "redis_events"
    PROTOCOL_COLUMNS = ("req_cmd", "req_args", "resp")

    def row(self, req: RedisMessage, reply: RedisMessage) -> tuple[int, int, tuple[object, ...]]:
        return reply.end_ns, reply.end_ns - req.start_ns, (req.cmd, req.payload, reply.payload)
