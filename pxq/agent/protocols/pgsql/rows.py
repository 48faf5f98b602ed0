"""``pgsql_events`` rows from PostgreSQL request/response pairs (:class:`PgsqlRows`)."""

from __future__ import annotations

import pyarrow as pa

from pxq.agent.protocols.pair_rows import PairRows
from pxq.agent.protocols.pgsql.stitcher import Request, Response


def pgsql_events_schema() -> pa.Schema:
    """The Arrow schema of ``pgsql_events``, from the table catalog."""
    from pxq.tables import CATALOG

    return CATALOG["pgsql_events"].arrow_schema()


class PgsqlRows(PairRows):
    """``pgsql_events`` rows being built: ``time_`` is the response's end (Pixie: the response's
    timestamp), ``latency`` the time from the request's first byte."""

    TABLE = "pgsql_events"
    PROTOCOL_COLUMNS = ("req_cmd", "req", "resp")

    def row(self, req: Request, resp: Response) -> tuple[int, int, tuple[object, ...]]:
        return resp.end_ns, resp.end_ns - req.start_ns, (req.cmd, req.text, resp.text)
