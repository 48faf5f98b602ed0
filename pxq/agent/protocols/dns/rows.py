"""``dns_events`` rows from query/response pairs (:class:`DnsRows`), and a pair as one record
(:class:`DnsRecord`, Pixie's ``dns::Record``)."""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa

from pxq.agent.protocols.dns.parse import DnsMessage
from pxq.agent.protocols.pair_rows import PairRows


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
    time_ns, latency_ns, texts = pair_values(req, resp)
    return DnsRecord(*texts, time_ns, latency_ns)


def pair_values(req: DnsMessage, resp: DnsMessage | None) -> tuple[int, int, tuple[str, str, str, str]]:
    """A pair's time, latency and its texts (req_header, req_body, resp_header, resp_body)."""
    if resp is None:
        return req.ts_ns, 0, (req.header, req.body, "", "")
    return resp.ts_ns, resp.ts_ns - req.ts_ns, (req.header, req.body, resp.header, resp.body)


def dns_events_schema() -> pa.Schema:
    from pxq.tables import CATALOG

    return CATALOG["dns_events"].arrow_schema()


class DnsRows(PairRows):
    """``dns_events`` rows being built (an unanswered query: see :class:`DnsRecord`)."""

    TABLE = "dns_events"
    PROTOCOL_COLUMNS = ("req_header", "req_body", "resp_header", "resp_body")

    def row(self, req: DnsMessage, resp: DnsMessage | None) -> tuple[int, int, tuple[object, ...]]:
        # pair_values' body in place: a call less per row
        if resp is None:
            return req.ts_ns, 0, (req.header, req.body, "", "")
        return resp.ts_ns, resp.ts_ns - req.ts_ns, (req.header, req.body, resp.header, resp.body)
