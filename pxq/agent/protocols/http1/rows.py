"""``http_events`` rows from HTTP/1.x request/response pairs (:class:`HttpRows`), and the JSON
text of header blocks that two of its columns hold."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pxq.agent.protocols.http1.stitcher import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_UNKNOWN,
    HttpTransaction,
    MessagePair,
    _is_json,
    headers_dict,
)
from pxq.agent.protocols.interface import SECRET_MARKER

if TYPE_CHECKING:
    from pxq.agent.protocols.http1.stitcher import _Message
    from pxq.agent.protocols.interface import ConnectionColumns

# Header blocks are kept as the (name, value) byte pairs llhttp reported and turned into text
# once per row. The JSON text of a block is made from its bytes in a few C-level steps when that
# gives exactly what json.dumps gives: no name repeated (repeats are joined under the first
# spelling) and nothing JSON escapes other than '"' (no control byte, backslash or non-ASCII
# byte). Otherwise the block goes through a dict and json.dumps.
# Bytes that stop the fast way, but for NUL and SOH, which it joins with (and counts instead).
_JSON_ESCAPED_BUT_SEPARATORS = re.compile(rb"[\x02-\x1f\\\x7f-\xff]")
_join_pair = b"\x00".join

# Headers whose values are credentials: a row shows SECRET_MARKER in place of the value unless the
# user chose to keep secrets (ParseOptions.keep_secrets).
SECRET_HEADERS = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})
# One of them in a joined header block (names are NUL-terminated, pairs SOH-separated): one scan
# per block, so blocks without one cost nothing more.
_SECRET_HEADER = re.compile(rb"(?:^|\x01)(?:(?:proxy-)?authorization|(?:set-)?cookie)\x00", re.IGNORECASE)
_SECRET_VALUE = SECRET_MARKER.encode()


def _might_hold_secret(joined: bytes) -> bool:
    """A cheap test before _SECRET_HEADER (a case-blind regex search costs more than the rest of
    a row): does a joined header block mention one of SECRET_HEADERS' names at all?"""
    lowered = joined.lower()
    return b"authorization\x00" in lowered or b"cookie\x00" in lowered


def redact_secrets(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``pairs`` with the value of every credential header replaced by SECRET_MARKER."""
    return [(name, _SECRET_VALUE if name.lower() in SECRET_HEADERS else value) for name, value in pairs]


def headers_json(pairs: list[tuple[bytes, bytes]]) -> str:
    """``json.dumps(headers_dict(pairs))``, faster for the usual header block."""
    return _headers_json(pairs).decode("ascii")


def _headers_json(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """:func:`headers_json` as ASCII bytes."""
    return _header_block(pairs, b"\x01".join(map(_join_pair, pairs)))[0]


def _header_block(pairs: list[tuple[bytes, bytes]], joined: bytes) -> tuple[bytes, bool]:
    """(the JSON text of a header block, whether its Content-Type mentions json); ``joined`` is
    ``name NUL value SOH name NUL value ...`` (a NUL or SOH of a header's own fails the counts)."""
    n = len(pairs)
    if not n:
        return b"{}", False
    lowered = {name.lower(): value for name, value in pairs}
    if len(lowered) == n:  # no name repeated
        content_type = lowered.get(b"content-type")
        is_json = content_type is not None and b"json" in content_type.lower()
        if (
            joined.count(b"\x00") == n
            and joined.count(b"\x01") == n - 1
            and _JSON_ESCAPED_BUT_SEPARATORS.search(joined) is None
        ):
            if b'"' in joined:
                joined = joined.replace(b'"', b'\\"')
            return b'{"' + joined.replace(b"\x00", b'": "').replace(b"\x01", b'", "') + b'"}', is_json
    else:
        is_json = _is_json(pairs)
    return json.dumps(headers_dict(pairs)).encode("ascii"), is_json


def http_events_schema() -> pa.Schema:
    """The Arrow schema of ``http_events``, from the table catalog."""
    from pxq.tables import CATALOG

    return CATALOG["http_events"].arrow_schema()


def _utf8(data: bytes) -> bytes:
    """``data`` as valid UTF-8: what ``_text(data)`` is, encoded."""
    return data.decode("utf-8", errors="replace").encode("utf-8")


class HttpRows:
    """``http_events`` rows being built, one buffer per column.

    :meth:`add` writes a request/response pair's values into the column buffers as soon as the
    pair completes, while its bytes are still in the CPU's caches: strings as UTF-8 bytes into one
    ``bytearray`` per column, numbers (and the strings' lengths) into one ``array`` of int64s, row
    after row. The Arrow table is made from those buffers (:meth:`table`) without a Python object
    per value: converting Python values that are no longer in cache costs more than making them.
    The connection's columns are stored once per connection (:meth:`connection`) and repeated
    per row when the table is made. A header block seen before (the same bytes) reuses its JSON text.
    """

    STRINGS = ("req_headers", "req_method", "req_path", "req_body", "resp_headers", "resp_message", "resp_body")
    INTS = ("time_", "major_version", "minor_version", "content_type", "req_body_size", "resp_status",
            "resp_body_size", "latency")  # fmt: skip
    CONNECTION = ("upid", "remote_addr", "local_addr", "remote_port", "local_port", "trace_role")
    BLOCK_CACHE = 4096  # header blocks whose JSON text is kept (then the cache starts over)
    _ROW = struct.Struct(f"{1 + len(INTS) + len(STRINGS)}q")  # the numbers of a row (native int64s)

    def __init__(self, encrypted: bool = False, *, keep_secrets: bool = False) -> None:
        self.encrypted = encrypted
        self.keep_secrets = keep_secrets  # else credential headers' values become SECRET_MARKER
        self._blocks: dict[bytes, tuple[bytes, bool]] = {}  # joined header pairs -> (JSON, is_json)
        self._raw_blocks: dict[bytes, tuple[bytes, bool]] = {}  # header lines as sent -> (JSON, is_json)
        self._reset()

    def _reset(self) -> None:
        # New buffers every time: the last table's Arrow arrays still use the old ones.
        self.rows = 0
        self._strings = tuple(bytearray() for _ in self.STRINGS)
        self._numbers = bytearray()  # per row (_ROW): connection, INTS, the lengths of the STRINGS
        self._connections: dict[tuple[object, ...], int] = {}  # CONNECTION values -> connection number

    def __len__(self) -> int:
        return self.rows

    def connection(self, upid: str, remote_addr: str, local_addr: str, remote_port: int, local_port: int,
                   trace_role: int) -> int:  # fmt: skip
        """The number :meth:`add` takes for a connection with these columns (until the next
        :meth:`table`)."""
        key = (upid, remote_addr, local_addr, remote_port, local_port, trace_role)
        return self._connections.setdefault(key, len(self._connections))

    def add_pairs(self, conn: ConnectionColumns, pairs: list[MessagePair], clock_offset_ns: int = 0) -> None:
        """One row per request/response pair of one connection (what the connection tracker
        calls, :class:`pxq.agent.protocols.interface.RowBuffer`): ``time_`` is the response's
        end, ``latency`` the time from the request's start, both moved by ``clock_offset_ns``."""
        number = self.connection(conn.upid, conn.raddr, conn.laddr, conn.rport, conn.lport, conn.role)
        add = self.add
        for req, resp in pairs:
            add(number, req, resp, req.start_ns + clock_offset_ns, resp.end_ns + clock_offset_ns)

    def add(self, connection: int, req: _Message, resp: _Message, start_ns: int, end_ns: int) -> None:
        """One row: ``connection`` from :meth:`connection`; ``start_ns``/``end_ns`` the request's
        start and the response's end (``time_`` is the end, ``latency`` the difference)."""
        req_headers = self._header_block(req.header_pairs, req.raw_headers)[0]
        resp_headers, is_json = self._header_block(resp.header_pairs, resp.raw_headers)
        method, url, req_body, reason, resp_body = req.method, req.url, req.body, resp.reason, resp.body
        if not (method.isascii() and url.isascii() and req_body.isascii() and reason.isascii() and resp_body.isascii()):
            method, url, req_body, reason, resp_body = map(_utf8, (method, url, req_body, reason, resp_body))
        s_req_headers, s_method, s_url, s_req_body, s_resp_headers, s_reason, s_resp_body = self._strings
        s_req_headers += req_headers
        s_method += method
        s_url += url
        s_req_body += req_body
        s_resp_headers += resp_headers
        s_reason += reason
        s_resp_body += resp_body
        major, minor = resp.version
        self._numbers += self._ROW.pack(
            connection, end_ns, major, minor, CONTENT_TYPE_JSON if is_json else CONTENT_TYPE_UNKNOWN, req.body_size,
            resp.status, resp.body_size, end_ns - start_ns, len(req_headers), len(method), len(url), len(req_body),
            len(resp_headers), len(reason), len(resp_body),
        )  # fmt: skip
        self.rows += 1

    def _header_block(self, pairs: list[tuple[bytes, bytes]], raw: bytes | None = None) -> tuple[bytes, bool]:
        """(JSON text, Content-Type mentions json) of a header block; ``raw``: its header lines
        as sent, when the stitcher kept them (a plain message), a cheaper cache key."""
        if raw is not None:
            block = self._raw_blocks.get(raw)
            if block is not None:
                return block
            lowered = raw.lower()
            if self.keep_secrets or not (b"authorization:" in lowered or b"cookie:" in lowered):
                # (a block with a credential is never kept by its raw bytes: they hold the secret)
                if len(self._raw_blocks) >= self.BLOCK_CACHE:
                    self._raw_blocks.clear()
                block = self._raw_blocks[raw] = self._header_block(pairs)
                return block
        key = b"\x01".join(map(_join_pair, pairs))
        if not self.keep_secrets and _might_hold_secret(key) and _SECRET_HEADER.search(key) is not None:
            pairs = redact_secrets(pairs)  # before the cache: it must not hold the secret either
            key = b"\x01".join(map(_join_pair, pairs))
        block = self._blocks.get(key)
        if block is None:
            if len(self._blocks) >= self.BLOCK_CACHE:
                self._blocks.clear()
            block = self._blocks[key] = _header_block(pairs, key)
        return block

    def table(self) -> pa.Table:
        """The rows added since the last call, as an ``http_events`` table (and start over).

        Every column is made from its buffers (``Array.from_buffers``), never with ``pa.array``:
        pyarrow's first ``pa.array`` call imports pandas (its lazy pandas shim), 0.2-0.3 s of CPU
        and ~40 MB of RSS that an agent tracing HTTP otherwise never needs."""
        schema = http_events_schema()
        n = self.rows
        if not n:
            self._reset()
            return pa.Table.from_batches([], schema=schema)
        numbers = np.frombuffer(self._numbers, dtype=np.int64).reshape(n, 1 + len(self.INTS) + len(self.STRINGS))
        which = numbers[:, 0]
        connections = list(self._connections)
        columns = {"encrypted": _bool_column(n, self.encrypted)}
        for i, name in enumerate(self.CONNECTION):
            values = [c[i] for c in connections]
            kind = schema.field(name).type
            if pa.types.is_string(kind):
                columns[name] = _repeated_strings([str(v) for v in values], which)
            else:
                columns[name] = _int64_column(np.array(values, dtype=np.int64)[which], kind)
        for i, name in enumerate(self.INTS, 1):
            columns[name] = _int64_column(numbers[:, i], schema.field(name).type)
        for i, name in enumerate(self.STRINGS):
            columns[name] = _string_column(self._strings[i], numbers[:, 1 + len(self.INTS) + i])
        self._reset()
        return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _int64_column(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A column of a 64-bit integer (or timestamp) type over ``values`` (made int64)."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(data)])


def _bool_column(n: int, value: bool) -> pa.Array:
    """``n`` times ``value``, as a boolean column."""
    bits = np.packbits(np.full(n, value), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(bits)])


def _repeated_strings(values: list[str], which: np.ndarray) -> pa.Array:
    """The string column whose row i is ``values[which[i]]`` (a connection's column per row).
    Values of one length (one process, one address: the usual case) are gathered as fixed-size
    items by numpy, a third of what Arrow's take costs on strings; others through take."""
    encoded = [v.encode() for v in values]
    size = len(encoded[0])
    if size and all(len(e) == size for e in encoded):
        data = np.frombuffer(b"".join(encoded), dtype=f"V{size}")[which]
        n = len(which)
        if n * size <= MAX_STRING_ARRAY_BYTES:
            offsets = np.arange(0, (n + 1) * size, size, dtype=np.int32)
            return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return _utf8_column(values).take(_int64_column(which, pa.int64()))


def _utf8_column(values: list[str]) -> pa.Array:
    """A string column of a few Python strings (the connections' columns)."""
    encoded = [v.encode() for v in values]
    return _string_column(bytearray(b"".join(encoded)), np.array([len(e) for e in encoded], dtype=np.int64))


# Bytes one Arrow string array can hold (32-bit offsets).
MAX_STRING_ARRAY_BYTES = 2**31 - 1


def _string_column(data: bytearray, lengths: np.ndarray) -> pa.Array | pa.ChunkedArray:
    """A string column over ``data`` (the values one after the other, UTF-8) and their lengths;
    in chunks when there is more than one string array can hold."""
    n = len(lengths)
    buffer = pa.py_buffer(data)
    if len(data) <= MAX_STRING_ARRAY_BYTES:  # offsets that fit int32: summed as such, not cast after
        offsets32 = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets32[1:], dtype=np.int32)
        return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets32), buffer])
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    whole = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), buffer])
    chunks, start = [], 0
    while start < n:  # as many values as fit (at least one)
        end = int(np.searchsorted(offsets, offsets[start] + MAX_STRING_ARRAY_BYTES, side="right")) - 1
        end = max(end, start + 1)
        chunks.append(whole.slice(start, end - start).cast(pa.string()))
        start = end
    return pa.chunked_array(chunks, pa.string())


def transactions_to_arrow(
    txs: Iterable[HttpTransaction],
    *,
    upid: str,
    remote_addr: str,
    remote_port: int,
    local_addr: str,
    local_port: int,
    trace_role: int,
    encrypted: bool = False,
    keep_secrets: bool = False,
) -> pa.Table:
    """``http_events`` rows for the transactions of one connection (its fields given once)."""
    rows = HttpRows(encrypted, keep_secrets=keep_secrets)
    for tx in txs:
        conn = rows.connection(upid, remote_addr, local_addr, remote_port, local_port, trace_role)
        rows.add(conn, tx.request, tx.response, tx.req_start_ns, tx.resp_end_ns)
    return rows.table()
