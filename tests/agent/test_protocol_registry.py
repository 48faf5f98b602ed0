"""The protocol registry and the stitcher interface: the registry agrees with the table catalog,
and a protocol the tracker has never heard of works from one ProtocolSpec, with many requests
in flight on one connection and answered out of order (as HTTP/2 streams or pipelined Redis
commands are), next to HTTP on the same tracker. No kernel needed."""

from __future__ import annotations

import re
import socket
from collections import Counter

import pyarrow as pa

from pxq.agent.conn_tracker import (
    EGRESS,
    EV_CLOSE,
    EV_DATA,
    EV_OPEN,
    INGRESS,
    ROLE_CLIENT,
    ROLE_SERVER,
    ConnTracker,
    SockEvent,
)
from pxq.agent.protocols import registry
from pxq.agent.protocols.interface import ParseOptions
from pxq.agent.protocols.registry import PROTOCOLS, SUPPORTED_PROTOCOLS, ProtocolSpec
from pxq.agent.socket_tracer import SUPPORTED_PROTOCOLS as TRACER_PROTOCOLS
from pxq.tables import CATALOG

PID = 4343


def test_every_registered_protocol_fills_the_catalog_table_that_names_it():
    for name, spec in PROTOCOLS.items():
        assert spec.name == name
        assert CATALOG[spec.table].protocol == name
        assert CATALOG[spec.table].collector == "socket_tracer"
    assert TRACER_PROTOCOLS == SUPPORTED_PROTOCOLS == tuple(PROTOCOLS)


# -- a protocol defined here: "REQ <id> <text>\n" answered by "RES <id> <text>\n", in any order ------
_REQ = re.compile(rb"REQ [0-9]+ ")
_RES = re.compile(rb"RES [0-9]+ ")


class TaggedLineStitcher:
    """Pairs requests and responses by their id, whatever the order they come in."""

    def __init__(self, options: ParseOptions) -> None:
        self.errors: Counter[str] = Counter()
        self.upgraded = False
        self._partial = {True: b"", False: b""}
        self._waiting: dict[bytes, tuple[bytes, int]] = {}  # id -> (text, ts of the request)

    def feed_messages(self, request: bool, data: bytes, ts_ns: int) -> list:
        *lines, self._partial[request] = (self._partial[request] + data).split(b"\n")
        done = []
        for line in lines:
            _kind, tag, text = line.split(b" ", 2)
            if request:
                self._waiting[tag] = (text, ts_ns)
            elif tag in self._waiting:
                req_text, req_ts = self._waiting.pop(tag)
                done.append(((tag, req_text, req_ts), (text, ts_ns)))
            else:
                self.errors["response_without_request"] += 1
        return done

    def skip_messages(self, request: bool, n: int, ts_ns: int) -> tuple[list, int]:
        return [], n

    def close_messages(self, ts_ns: int) -> list:
        self.errors["request_unanswered_at_close"] += len(self._waiting)
        return []

    def response_gap(self, ts_ns: int) -> bool:
        return False


class TaggedLineRows:
    def __init__(self, options: ParseOptions) -> None:
        self._rows: list[dict] = []

    def add_pairs(self, conn, pairs, clock_offset_ns: int) -> None:
        for (tag, req_text, req_ts), (resp_text, resp_ts) in pairs:
            self._rows.append({"upid": conn.upid, "trace_role": conn.role, "id": int(tag), "req": req_text.decode(),
                               "resp": resp_text.decode(), "latency": resp_ts - req_ts})  # fmt: skip

    def table(self) -> pa.Table:
        rows, self._rows = self._rows, []
        return pa.Table.from_pylist(rows)

    def __len__(self) -> int:
        return len(self._rows)


TAGGED = ProtocolSpec(
    name="tagged",
    table="tagged_events",
    looks_like_request=lambda first: _REQ.match(first) is not None,
    looks_like_response=lambda first: _RES.match(first) is not None,
    head_bytes=64,
    make_stitcher=TaggedLineStitcher,
    make_rows=TaggedLineRows,
    make_record=lambda req, resp: (req, resp),
    unmatched_at_close=("request_unanswered_at_close", "response_without_request"),
    unmatched_after_gap=(),
    pairs_in_order=False,  # by id
)


def _data(fd: int, direction: int, pos: int, data: bytes, ts_ns: int) -> SockEvent:
    return SockEvent(ts_ns=ts_ns, pos=pos, size=len(data), pid=PID, fd=fd, gen=1, data_len=len(data), kind=EV_DATA,
                     flags=0, direction=direction, role=0, family=socket.AF_INET, lport=0, rport=0, syscall=0,
                     reserved=0, laddr=bytes(16), raddr=bytes(16), data=data)  # fmt: skip


def test_a_protocol_from_one_registry_entry_with_requests_in_flight_answered_out_of_order():
    disabled = []
    tracker = ConnTracker(protocols=[registry.HTTP, TAGGED], disable=lambda *a: disabled.append(a))
    requests = b"REQ 1 alpha\nREQ 2 beta\nREQ 3 gamma\n"
    # A server seen mid-life (no OPEN): three requests in one read, answered 3, 1, 2 in two writes,
    # then a fourth request that is never answered.
    tracker.handle_all([
        _data(5, INGRESS, 0, requests, 1000),
        _data(5, EGRESS, 0, b"RES 3 GAMMA\nRES 1 AL", 1500),
        _data(5, EGRESS, 20, b"PHA\nRES 2 BETA\n", 1700),
        _data(5, INGRESS, len(requests), b"REQ 4 delta\n", 1800),
        # an HTTP client connection on the same tracker, seen from its connect()
        _data(6, EGRESS, 0, b"", 1900)._replace(kind=EV_OPEN, role=ROLE_CLIENT),
        _data(6, EGRESS, 0, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", 2000),
        _data(6, INGRESS, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 2600),
        _data(5, 0, 0, b"", 3000)._replace(kind=EV_CLOSE),
    ])  # fmt: skip
    assert not disabled
    assert tracker.counts["tagged_connections"] == 1 and tracker.counts["http_connections"] == 1
    tables = tracker.take_tables()
    assert set(tables) == {"tagged_events", "http_events"}
    rows = tables["tagged_events"].to_pylist()
    assert [(r["id"], r["req"], r["resp"], r["latency"], r["trace_role"]) for r in rows] == [
        (3, "gamma", "GAMMA", 500, ROLE_SERVER),
        (1, "alpha", "ALPHA", 700, ROLE_SERVER),
        (2, "beta", "BETA", 700, ROLE_SERVER),
    ]
    (http,) = tables["http_events"].to_pylist()
    assert (http["req_path"], http["resp_body"], http["latency"], http["trace_role"]) == ("/x", "ok", 600, ROLE_CLIENT)
    drops = tracker.drop_counts()
    assert (drops["unmatched"], drops["parse_error"]) == (1, 0)  # request 4, counted by the entry's loss names
    assert tracker.error_counts("tagged") == Counter({"request_unanswered_at_close": 1})
