"""``mysql_events`` rows from MySQL command/response pairs (:class:`MysqlRows`)."""

from __future__ import annotations

import pyarrow as pa

from pxq.agent.protocols.mysql.stitcher import MysqlRequest, MysqlResponse
from pxq.agent.protocols.pair_rows import PairRows


def mysql_events_schema() -> pa.Schema:
    """The Arrow schema of ``mysql_events``, from the table catalog."""
    from pxq.tables import CATALOG

    return CATALOG["mysql_events"].arrow_schema()


class MysqlRows(PairRows):
    """``mysql_events`` rows being built (the registry's ``make_rows``). The stitcher already cut
    the bodies to the body limit and left credentials out, so a pair's values are taken as they are:
    ``time_`` is the response's end, ``latency`` the time from the command's start."""

    TABLE = "mysql_events"
    PROTOCOL_COLUMNS = ("req_cmd", "req_body", "resp_status", "resp_body")

    def row(self, req: MysqlRequest, resp: MysqlResponse) -> tuple[int, int, tuple[object, ...]]:
        return resp.end_ns, resp.end_ns - req.start_ns, (req.cmd, req.body, resp.status, resp.body)
