"""The agent's fast paths against the plain ones they replace: header blocks to JSON, rows built in
column buffers (HttpRows, as the ConnTracker fills them), and the memory-mapped ring buffer reader
(on a memfd laid out as the kernel lays out a BPF ring buffer). No kernel needed."""

from __future__ import annotations

import json
import mmap
import os
import struct

import numpy as np
import pyarrow as pa
from hypothesis import given, settings, strategies as st

from pxq.agent import socket_tracer
from pxq.agent.conn_tracker import EV_CLOSE, EV_DATA, EV_OPEN, INGRESS, ROLE_SERVER, ConnTracker, SockEvent
from pxq.agent.protocols import http1
from pxq.agent.protocols.http1 import (
    RECORDED_STREAMS,
    HttpRows,
    headers_dict,
    headers_json,
    rows as http1_rows,
    transactions_to_arrow,
)
from pxq.agent.protocols.http1.stitcher import _Message
from pxq.tables import CATALOG
from pxq.testing.streams import load_stream, replay

STREAMS = sorted(RECORDED_STREAMS.glob("*.json"))
SCHEMA = CATALOG["http_events"].arrow_schema()

# Header names in a few spellings of the same few words (repeats in any case), values with every
# byte that matters to JSON: quotes, backslashes, control bytes (NUL and SOH among them), DEL,
# UTF-8 and bytes that are not UTF-8.
NAMES = st.sampled_from(
    [
        b"Host",
        b"host",
        b"HOST",
        b"Set-Cookie",
        b"set-cookie",
        b"X-A",
        b"Content-Type",
        b"ETag",
        b"Authorization",
        b"PROXY-AUTHORIZATION",
        b"cookie",
        b"Cookie2",
    ]
)
# The credential headers of issue 12, whose values a row never holds unless secrets are kept.
CREDENTIALS = {"authorization", "proxy-authorization", "cookie", "set-cookie"}
VALUES = st.one_of(
    st.binary(max_size=12),
    st.sampled_from(
        [
            b"",
            b'"q"',
            b"a\\b",
            b"\x00",
            b"\x01",
            b"a\x01b",
            b"\t",
            b"\x7f",
            b"caf\xc3\xa9",
            b"\xff",
            b"application/json",
        ]
    ),
    st.text(max_size=8).map(str.encode),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(NAMES, VALUES), max_size=8))
def test_headers_json_is_json_dumps_of_the_header_dict(pairs):
    text = json.dumps(headers_dict(pairs))
    assert headers_json(pairs) == text
    content_type = next((v for k, v in headers_dict(pairs).items() if k.lower() == "content-type"), "")
    rows = HttpRows(keep_secrets=True)
    for attempt in range(2):  # the second time from the cache of header blocks
        assert rows._header_block(pairs) == (text.encode(), "json" in content_type.lower()), attempt
    # By default every credential's value is the marker, each repeat too; nothing else changes.
    redacted = [(n, b"<redacted>" if n.decode().lower() in CREDENTIALS else v) for n, v in pairs]
    text = json.dumps(headers_dict(redacted))
    rows = HttpRows()
    for attempt in range(2):
        assert rows._header_block(pairs) == (text.encode(), "json" in content_type.lower()), attempt


def _recorded_transactions():
    out = []
    for path in STREAMS:
        txs, _ = replay(load_stream(path).chunks)
        out += txs
    return out


def test_rows_hold_what_the_transactions_say():
    txs = _recorded_transactions()
    assert txs
    table = transactions_to_arrow(txs, upid="0:7:99", remote_addr="10.0.0.1", remote_port=4242, local_addr="::1",
                                  local_port=80, trace_role=2)  # fmt: skip
    assert table.schema == SCHEMA
    for row, tx in zip(table.to_pylist(), txs, strict=True):
        assert row["req_headers"] == json.dumps(tx.req_headers) and row["resp_headers"] == json.dumps(tx.resp_headers)
        for column, field in (("req_method", "req_method"), ("req_path", "req_path"), ("req_body", "req_body"),
                              ("req_body_size", "req_body_size"), ("resp_status", "resp_status"),
                              ("resp_message", "resp_message"), ("resp_body", "resp_body"),
                              ("resp_body_size", "resp_body_size"), ("content_type", "content_type"),
                              ("major_version", "major_version"), ("minor_version", "minor_version"),
                              ("latency", "latency_ns")):  # fmt: skip
            assert row[column] == getattr(tx, field), column
        assert row["time_"] == pa.scalar(tx.resp_end_ns, pa.timestamp("ns")).as_py()
        assert (row["upid"], row["remote_addr"], row["remote_port"], row["local_addr"], row["local_port"]) == (
            "0:7:99", "10.0.0.1", 4242, "::1", 80)  # fmt: skip
        assert (row["trace_role"], row["encrypted"]) == (2, False)


def test_bytes_that_are_not_utf8_become_replacement_characters_in_rows():
    st_ = http1.Http1Stitcher()
    st_.feed_request(b"POST /x HTTP/1.1\r\nX-B: \xff\xfe\r\nContent-Length: 3\r\n\r\n\xe2\x82\xff", 1)
    (tx,) = st_.feed_response(b"HTTP/1.1 200 \xc3\xa9t\xe9\r\nContent-Length: 2\r\n\r\n\xc3\xa9", 2)
    (row,) = transactions_to_arrow([tx], upid="u", remote_addr="", remote_port=0, local_addr="", local_port=0,
                                   trace_role=2).to_pylist()  # fmt: skip
    assert (row["req_body"], row["resp_message"], row["resp_body"]) == (tx.req_body, tx.resp_message, tx.resp_body)
    assert "\ufffd" in row["req_body"] and row["resp_body"] == "é"
    assert json.loads(row["req_headers"]) == {"X-B": "\ufffd\ufffd", "Content-Length": "3"}


def test_a_string_column_over_the_array_limit_comes_in_chunks(monkeypatch):
    monkeypatch.setattr(http1_rows, "MAX_STRING_ARRAY_BYTES", 5)
    values = [b"ab", b"cde", b"", b"fghij", b"k", b"lmnopqr"]
    column = http1_rows._string_column(bytearray(b"".join(values)), np.array([len(v) for v in values]))
    assert column.to_pylist() == [v.decode() for v in values]
    assert [len(chunk) for chunk in column.chunks] == [3, 1, 1, 1]


# Connections' text columns: one value for all (one process, loopback), values of one length,
# values of several lengths and non-ASCII ones (each builds the column its own way).
CONN_TEXT = st.one_of(st.sampled_from(["0:4242:99", "127.0.0.1", "10.0.0.12", "::1", ""]),
                      st.text(alphabet="0:.abé€", max_size=6))  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            CONN_TEXT, CONN_TEXT, CONN_TEXT, st.integers(0, 65535), st.integers(0, 65535), st.sampled_from([1, 2])
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(0, 5), min_size=1, max_size=40),
    st.lists(st.text(max_size=8), min_size=1, max_size=40),
)
def test_rows_of_several_connections_hold_each_its_connection_columns(conns, row_conns, paths):
    """Each row holds the columns of the connection it was added for, and its own strings, as
    pyarrow builds them from the Python values (the rows' columns are built from buffers)."""
    rows = HttpRows()
    numbers = [rows.connection(*c) for c in conns]
    expected: dict[str, list] = {name: [] for name in (*HttpRows.CONNECTION, "req_path", "time_")}
    for i, conn in enumerate(row_conns):
        conn %= len(conns)
        path = paths[i % len(paths)]
        req = _Message(1024, 1_000 + i)
        req.method, req.url = b"GET", path.encode()
        resp = _Message(1024, 2_000 + i)
        resp.status, resp.reason = 200, b"OK"
        rows.add(numbers[conn], req, resp, 1_000 + i, 2_000 + i)
        for name, value in zip(HttpRows.CONNECTION, conns[conn], strict=True):
            expected[name].append(value)
        expected["req_path"].append(path)
        expected["time_"].append(2_000 + i)
    table = rows.table()
    assert table.schema == SCHEMA
    want = pa.table({name: pa.array(values, SCHEMA.field(name).type) for name, values in expected.items()})
    assert table.select(list(expected)).equals(want)


def _events(fd: int, gen: int, chunks: list[tuple[str, int, bytes]]) -> list[SockEvent]:
    """A server connection of process 4242 carrying a recorded stream (requests in, responses out)."""
    blank = dict(pos=0, size=0, pid=4242, fd=fd, gen=gen, data_len=0, flags=0, direction=0, role=ROLE_SERVER,
                 family=0, lport=0, rport=0, syscall=0, reserved=0, laddr=bytes(16), raddr=bytes(16),
                 data=b"")  # fmt: skip
    events = [SockEvent(ts_ns=1, kind=EV_OPEN, **blank)]
    pos = [0, 0]
    for direction, ts, data in chunks:
        d = INGRESS if direction == "req" else 1 - INGRESS
        fields = {**blank, "pos": pos[d], "size": len(data), "data_len": len(data), "direction": d, "data": data}
        events.append(SockEvent(ts_ns=ts + 2, kind=EV_DATA, **fields))
        pos[d] += len(data)
    events.append(SockEvent(ts_ns=chunks[-1][1] + 3, kind=EV_CLOSE, **blank))
    return events


def test_the_tracker_gives_the_rows_of_the_transaction_list():
    """The tracker's rows (built in column buffers as pairs complete) are those of each recorded
    stream's transactions replayed through a stitcher of its own, with the events' timestamps."""
    streams = [load_stream(path).chunks for path in STREAMS]
    events = [ev for i, chunks in enumerate(streams) for ev in _events(10 + i, 1, chunks)]
    tracker = ConnTracker()
    tracker.handle_all(events)
    tracker.close_all()
    assert tracker.pending() > 0
    upid = tracker._upid(4242)
    expected = pa.concat_tables(
        transactions_to_arrow(replay([(d, ts + 2, data) for d, ts, data in chunks], close_ts=chunks[-1][1] + 3)[0],
                              upid=upid, remote_addr="", remote_port=0, local_addr="", local_port=0, trace_role=2)
        for chunks in streams
    )  # fmt: skip
    assert tracker.take_tables()["http_events"].equals(expected)
    assert tracker.pending() == 0 and tracker.take_tables()["http_events"].num_rows == 0


# -- the ring buffer reader -------------------------------------------------------------------
PAGE = mmap.PAGESIZE
SIZE = 2 * PAGE  # the data area


class FakeRing:
    """A memfd laid out as a BPF ring buffer map mmaps: consumer page, producer page, data area
    twice (the kernel maps the same pages twice; here both copies are written)."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("ring")
        os.ftruncate(self.fd, 2 * PAGE + 2 * SIZE)
        self.data = bytearray(SIZE)
        self.prod = 0

    def _write(self, pos: int, blob: bytes) -> None:
        for i, b in enumerate(blob):
            self.data[(pos + i) % SIZE] = b
        os.pwrite(self.fd, bytes(self.data) * 2, 2 * PAGE)

    def add(self, data: bytes, *, busy: bool = False, discard: bool = False, **fields) -> int:
        """Append a record (an event header and ``data``); returns its position."""
        header = dict(ts_ns=5, pos=0, size=len(data), pid=1, fd=3, gen=1, data_len=len(data), kind=EV_DATA, flags=0,
                      direction=0, role=0, family=0, lport=0, rport=0, syscall=0, reserved=0,
                      laddr=bytes(16), raddr=bytes(16))  # fmt: skip
        header.update(fields)
        sample = socket_tracer._HEADER.pack(*header.values()) + data
        length = len(sample) | (1 << 31 if busy else 0) | (1 << 30 if discard else 0)
        pos = self.prod
        self._write(pos, struct.pack("<II", length, 0) + sample)
        self.prod += (len(sample) + 8 + 7) // 8 * 8
        os.pwrite(self.fd, struct.pack("<Q", self.prod), PAGE)
        return pos

    def commit(self, pos: int) -> None:
        length = int.from_bytes(self.data[pos % SIZE : pos % SIZE + 4], "little") & ~(1 << 31)
        self._write(pos, length.to_bytes(4, "little"))

    def set_consumer(self, pos: int) -> None:
        os.pwrite(self.fd, struct.pack("<Q", pos), 0)

    @property
    def consumer(self) -> int:
        return struct.unpack("<Q", os.pread(self.fd, 8, 0))[0]


def test_ring_reader_takes_committed_records_and_stops_at_one_being_written():
    ring = FakeRing()
    reader = socket_tracer.RingReader(ring.fd, SIZE)
    try:
        ring.add(b"GET / HTTP/1.1\r\n\r\n", pid=7, fd=9, ts_ns=11)
        ring.add(b"x" * 3, discard=True)
        busy = ring.add(b"later", busy=True)
        ring.add(b"after")
        out: list = []
        assert reader.read(out, socket_tracer._HEADER) == 1
        assert (out[0].pid, out[0].fd, out[0].ts_ns, out[0].data) == (7, 9, 11, b"GET / HTTP/1.1\r\n\r\n")
        assert ring.consumer == busy  # up to the record still being written, the discarded one passed
        ring.commit(busy)
        assert reader.read(out, socket_tracer._HEADER) == 2
        assert [ev.data for ev in out[1:]] == [b"later", b"after"]
        assert ring.consumer == ring.prod
        assert reader.read(out, socket_tracer._HEADER) == 0
    finally:
        reader.close()
        os.close(ring.fd)


def test_ring_reader_reads_a_record_that_wraps_around_the_end():
    ring = FakeRing()
    start = SIZE - 40  # the record starts 40 bytes before the end of the data area
    ring.prod = start
    ring.set_consumer(start)
    reader = socket_tracer.RingReader(ring.fd, SIZE)
    try:
        payload = bytes(range(200))
        ring.add(payload, data_len=len(payload))
        out: list = []
        assert reader.read(out, socket_tracer._HEADER) == 1
        assert out[0].data == payload and ring.consumer == ring.prod > SIZE
    finally:
        reader.close()
        os.close(ring.fd)
