"""``dns_events`` rows from query/response pairs (:class:`DnsRows`), and a pair as one record
(:class:`DnsRecord`, Pixie's ``dns::Record``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import pyarrow as pa

from pxq.agent.protocols.dns.parse import DnsMessage

if TYPE_CHECKING:
    from pxq.agent.protocols.dns.stitcher import DnsPair
    from pxq.agent.protocols.interface import ConnectionColumns


class DnsRecord(NamedTuple):
    """One row's protocol columns. An unanswered query has empty response texts and latency 0;
    its time is the query's (Pixie stamps a row with its response's time)."""

    req_header: str
    req_body: str
    resp_header: str
    resp_body: str
    time_ns: int
    latency_ns: int


def dns_record(req: DnsMessage, resp: DnsMessage | None) -> DnsRecord:
    if resp is None:
        return DnsRecord(req.header, req.body, "", "", req.ts_ns, 0)
    return DnsRecord(req.header, req.body, resp.header, resp.body, resp.ts_ns, resp.ts_ns - req.ts_ns)


def dns_events_schema() -> pa.Schema:
    from pxq.tables import CATALOG

    return CATALOG["dns_events"].arrow_schema()


class DnsRows:
    """``dns_events`` rows being built (DNS rows are few: plain Python lists per column)."""

    CONNECTION = ("upid", "remote_addr", "remote_port", "local_addr", "local_port", "trace_role")
    PROTOCOL = ("req_header", "req_body", "resp_header", "resp_body")

    def __init__(self, encrypted: bool = False) -> None:
        self.encrypted = encrypted
        self._columns: dict[str, list[object]] = {}
        self._reset()

    def _reset(self) -> None:
        names = ("time_", *self.CONNECTION, *self.PROTOCOL, "latency")
        self._columns = {name: [] for name in names}

    def __len__(self) -> int:
        return len(self._columns["time_"])

    def add_pairs(self, conn: ConnectionColumns, pairs: list[DnsPair], clock_offset_ns: int) -> None:
        c = self._columns
        connection = (conn.upid, conn.raddr, conn.rport, conn.laddr, conn.lport, conn.role)
        for req, resp in pairs:
            record = dns_record(req, resp)
            c["time_"].append(record.time_ns + clock_offset_ns)
            for name, value in zip(self.CONNECTION, connection, strict=True):
                c[name].append(value)
            c["req_header"].append(record.req_header)
            c["req_body"].append(record.req_body)
            c["resp_header"].append(record.resp_header)
            c["resp_body"].append(record.resp_body)
            c["latency"].append(record.latency_ns)

    def table(self) -> pa.Table:
        """The rows added since the last call, as a ``dns_events`` table (and start over)."""
        schema = dns_events_schema()
        n = len(self)
        columns = dict(self._columns)
        columns["encrypted"] = [self.encrypted] * n
        self._reset()
        return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)
