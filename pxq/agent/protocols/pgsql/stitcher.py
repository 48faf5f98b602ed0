"""PostgreSQL frontend/backend protocol v3: framing, request/response stitching and inference.

The model is Pixie's ``src/stirling/source_connectors/socket_tracer/protocols/pgsql/``:
``types.h`` (message tags, how each request and response is rendered as text), ``parse.cc``
(message layouts) and ``stitcher.cc`` (which responses answer which request), and
``bcc_bpf/protocol_inference.h`` (``infer_pgsql_message``). Message layouts:
https://www.postgresql.org/docs/15/protocol-message-formats.html. pxq's own code, with these
choices (each one where Pixie's stitcher is silent or loses information):

* Requests are answered in order (PostgreSQL never reorders), so pairing is a queue: each client
  message that expects an answer waits at its place, each backend message goes to the oldest
  waiting request, and only a message that can answer that request's kind completes it (a
  ``ParseComplete`` never completes a ``Bind``). After an ``ErrorResponse`` in the extended
  protocol the server skips everything up to the ``Sync``: those requests get no row.
* A simple ``Query`` is answered by everything up to ``ReadyForQuery``: a multi-statement query
  is one row whose ``resp`` holds each statement's result on its own lines (Pixie stops at the
  first ``CommandComplete``). COPY inside it (``CopyInResponse``/``CopyOutResponse``, the
  ``CopyData`` either side sends) is recognised: the rows the server copies out are kept like
  ``DataRow`` text, up to the body limit, the client's are counted, not kept. A ``CommandComplete``
  "COPY n" answers a query only if its COPY began or the query names COPY (a file on the server):
  otherwise the "query" was bytes inside a client's COPY data that, after a hole, looked like one.
  A simple Query whose answer held a message that cannot be one makes no row
  (``request_answer_unexpected``).
* ``Execute`` shows the statement bound to its portal and the bound values, Pixie's
  ``query=[...] params=[...]`` (which ``px.normalize_pgsql`` reads back); its result carries the
  column names the portal's ``Describe`` reported. A value sent in binary format is shown as
  ``\\x`` and its hex digits (PostgreSQL's bytea text form), not as raw bytes.
* The startup message, ``SSLRequest``/``GSSENCRequest`` (and a refusing ``N``), ``Sync``,
  ``Close``, ``Flush``, ``Terminate`` make no row, as in Pixie. A ``PasswordMessage`` (password,
  SASL initial response or response) makes a row ("Password Message") whose request is
  :data:`~pxq.agent.protocols.interface.SECRET_MARKER` and whose response is the authentication
  message answering it, with SASL data also replaced, unless the user chose ``keep_secrets``.
  Their bytes are dropped as soon as they are framed, never copied into a message.
* Data rows of one response are kept up to the body limit (bytes of text); the rest are counted
  in the text (``<N more rows not kept>``).
* Bytes the kernel counted without copying are skipped only inside a message whose payload is read
  as text (a query, a data row, an error) or not at all; inside any other (a RowDescription, a
  Bind, ...) they are a lost stretch: the tracker counts a gap and starts over at the next request.
"""

from __future__ import annotations

import struct
from collections import Counter, deque
from dataclasses import dataclass
from typing import NamedTuple

from pxq.agent.protocols.interface import SECRET_MARKER

# Untagged first messages of a client (their int32 "version" field).
PROTOCOL_V3 = 196608  # 3.0
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
# The protocol's own bound on a message (PostgreSQL refuses more than 1 GB).
MAX_MESSAGE_LENGTH = 1 << 30

# Pixie's req_cmd names (types.h ToString(Tag, is_req=true)).
REQUEST_NAMES = {
    b"d": "Copy Data", b"c": "Copy Done", b"Q": "Query", b"f": "Copy Fail", b"C": "Close", b"B": "Bind",
    b"p": "Password Message", b"P": "Parse", b"D": "Describe", b"S": "Sync", b"E": "Execute", b"X": "Terminate",
    b"H": "Flush", b"F": "Function Call",
}  # fmt: skip
BACKEND_TAGS = frozenset(bytes([c]) for c in b"RKSZTDCEINn123tsGHdcVAW")

# ErrorResponse field codes, by Pixie's names (types.h ErrFieldCode, as magic_enum prints them).
ERROR_FIELDS = {
    "S": "Severity", "V": "InternalSeverity", "C": "Code", "M": "Message", "D": "Detail", "H": "Hint",
    "P": "Position", "p": "InternalPosition", "q": "InternalQuery", "W": "Where", "s": "SchemaName",
    "t": "TableName", "c": "ColumnName", "d": "DataTypeName", "n": "ConstraitName", "F": "File", "L": "Line",
    "R": "Routine",
}  # fmt: skip
FORMAT_NAMES = {0: "kText", 1: "kBinary"}
AUTH_NAMES = {
    0: "Ok", 2: "KerberosV5", 3: "CleartextPassword", 5: "MD5Password", 7: "GSS", 8: "GSSContinue", 9: "SSPI",
    10: "SASL", 11: "SASLContinue", 12: "SASLFinal",
}  # fmt: skip

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_TAG_LENGTH = struct.Struct(">ci")  # a tagged message's header
_LENGTH = struct.Struct(">i")


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class _Malformed(Exception):
    """A message's payload does not have its type's layout."""


class _Reader:
    """Reads a message payload's fields; running off its end is :class:`_Malformed`."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def i16(self) -> int:
        if self.pos + 2 > len(self.data):
            raise _Malformed("int16 past the end")
        (v,) = _I16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(v)

    def i32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise _Malformed("int32 past the end")
        (v,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def cstring(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise _Malformed("string without its NUL")
        v = self.data[self.pos : end]
        self.pos = end + 1
        return v

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Malformed("value past the end")
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v

    def byte(self) -> bytes:
        return self.take(1)


class Message(NamedTuple):
    """One framed message: ``tag`` (b"" for an untagged startup-phase message), the payload bytes
    kept (``missing`` more were counted, not kept) and the times of its first and last bytes."""

    tag: bytes
    payload: bytes
    missing: int
    start_ns: int
    end_ns: int


class _Framer:
    """One direction's bytes in, whole messages out (a message's payload kept up to ``keep``)."""

    def __init__(self, keep: int, untagged_first: bool, skippable: frozenset[bytes]) -> None:
        self.keep = keep
        # Tags of the messages whose payload may go partly uncaptured (see :meth:`skip`).
        self.skippable = skippable
        # A client's first messages have no tag (startup, SSLRequest, ...): their first byte, the
        # high byte of a length, is 0, which no tag is.
        self.untagged_allowed = untagged_first
        self.buf = bytearray()
        self.buf_ts = 0
        # The message being read: tag, payload kept, payload bytes still to come, bytes not kept.
        self.tag: bytes | None = None
        self.payload = bytearray()
        self.need = 0
        self.missing = 0
        self.start_ns = 0
        self.broken = False  # a length no message can have: framing is lost for good

    @property
    def mid_message(self) -> bool:
        return self.tag is not None or bool(self.buf)

    def feed(self, data: bytes, ts_ns: int) -> list[Message]:
        if self.broken:
            return []
        out: list[Message] = []
        if self.tag is None and not self.buf and not self.untagged_allowed:
            # The usual case: whole messages at the start of the read, framed without copying
            # them into the buffer; what is left over (a message cut by the read) goes the long way.
            pos = self._whole_messages(data, ts_ns, out)
            if pos == len(data):
                return out
            data = data[pos:]
        if not self.buf:
            self.buf_ts = ts_ns
        self.buf += data
        while True:
            if self.tag is None and not self._start(ts_ns):
                break
            take = min(self.need, len(self.buf))
            if take:
                room = self.keep - len(self.payload)
                kept = min(take, max(room, 0))
                self.payload += self.buf[:kept]
                self.missing += take - kept
                del self.buf[:take]
                self.need -= take
            if self.need:
                break
            out.append(self._finish(ts_ns))
        if not self.buf:
            self.buf_ts = ts_ns
        return out

    def _whole_messages(self, data: bytes, ts_ns: int, out: list[Message]) -> int:
        """Append the messages that lie whole in ``data`` from its start; the offset after them."""
        pos, n, keep = 0, len(data), self.keep
        header, new = _TAG_LENGTH.unpack_from, tuple.__new__  # (a Message per message: no Python __new__)
        while pos + 5 <= n:
            tag, length = header(data, pos)
            end = pos + 1 + length
            if end > n or length < 4 or length - 4 > keep:
                break  # cut by the read, invalid or too long to keep whole: the long way decides
            out.append(new(Message, (tag, data[pos + 5 : end], 0, ts_ns, ts_ns)))
            pos = end
        return pos

    def _start(self, ts_ns: int) -> bool:
        """Read a message header from ``buf``: False when there are too few bytes (or framing broke)."""
        buf = self.buf
        untagged = self.untagged_allowed and len(buf) >= 1 and buf[0] == 0
        header = 4 if untagged else 5
        if len(buf) < header:
            return False
        if untagged:
            tag, (length,) = b"", _I32.unpack_from(buf, 0)
        else:
            tag, (length,) = bytes(buf[:1]), _I32.unpack_from(buf, 1)
            self.untagged_allowed = False
        if length < 4 or length > MAX_MESSAGE_LENGTH:
            self.broken = True
            self.buf.clear()
            return False
        self.tag = tag
        self.need = length - 4
        self.payload = bytearray()
        self.missing = 0
        self.start_ns = self.buf_ts
        del buf[:header]
        self.buf_ts = ts_ns
        return True

    def _finish(self, ts_ns: int) -> Message:
        assert self.tag is not None
        msg = Message(self.tag, bytes(self.payload), self.missing, self.start_ns, ts_ns)
        self.tag = None
        self.payload = bytearray()
        return msg

    def skip(self, n: int, ts_ns: int) -> tuple[list[Message], int]:
        """``n`` uncopied bytes: skipped inside the current message's payload when its tag is
        :attr:`skippable`; the rest (which would hold a header), or all of them inside any other
        message, is returned as not skippable."""
        if self.broken or self.tag is None or self.buf or self.tag not in self.skippable:
            return [], n
        take = min(n, self.need)
        self.need -= take
        self.missing += take
        out = [self._finish(ts_ns)] if not self.need else []
        return out, n - take


@dataclass
class Request:
    """A client request waiting for (or paired with) its answer. ``cmd`` is Pixie's req_cmd, or
    "" for a request that makes no row (startup, Sync, Close, ...)."""

    cmd: str
    kind: str
    text: str
    start_ns: int
    # Describe/Execute: the portal or statement named; Bind: the portal it fills.
    name: bytes = b""
    describe_type: bytes = b""


@dataclass
class Response:
    """The answer of one request, rendered, and the time of its last byte."""

    text: str
    end_ns: int


@dataclass
class PgsqlRecord:
    """One pgsql_events row's protocol columns (Pixie's ``pgsql::Record`` rendered)."""

    req_cmd: str
    req: str
    resp: str
    req_start_ns: int
    resp_end_ns: int

    @property
    def latency(self) -> int:
        return self.resp_end_ns - self.req_start_ns


def make_record(req: Request, resp: Response) -> PgsqlRecord:
    return PgsqlRecord(req.cmd, req.text, resp.text, req.start_ns, resp.end_ns)


class _Result:
    """One statement's result being gathered (RowDescription, DataRows or COPY data, tag). (A
    plain class with slots: one or two are made per query, a dataclass's factories cost more.)"""

    __slots__ = ("names", "rows", "kept_bytes", "rows_not_kept", "copying")

    def __init__(self, names: list[str] | None = None) -> None:
        self.names: list[str] = [] if names is None else names
        self.rows: list[str] = []
        self.kept_bytes = 0
        self.rows_not_kept = 0
        self.copying = False  # the server began a COPY (CopyIn/Out/BothResponse)

    def add_row(self, text: str, limit: int) -> None:
        if self.kept_bytes + len(text) > limit and self.rows:
            self.rows_not_kept += 1
            return
        if self.kept_bytes + len(text) > limit:  # even the first row is too big: keep its start
            text = text[: max(limit, 0)] + "..."
        self.rows.append(text)
        self.kept_bytes += len(text) + 1

    def render(self, tag: str) -> str:
        # Pixie's QueryReqResp::QueryResp::ToString: names, rows, then the CommandComplete tag.
        parts = []
        if self.rows or self.rows_not_kept:
            if self.names:
                parts.append(",".join(self.names))
            parts.extend(self.rows)
            if self.rows_not_kept:
                parts.append(f"<{self.rows_not_kept} more rows not kept>")
        parts.append(tag)
        return "\n".join(parts)


def error_text(payload: bytes) -> str:
    """Pixie's ErrResp::ToString: ``ERROR RESPONSE [Severity=ERROR Code=42P01 Message=...]``."""
    fields = []
    r = _Reader(payload)
    try:
        while r.pos < len(payload):
            code = r.byte()
            if code == b"\x00":
                break
            value = _text(r.cstring())
            name = ERROR_FIELDS.get(_text(code))
            fields.append(f"{name}={value}" if name else f"Field:{_text(code)}={value}")
    except _Malformed:
        pass  # the fields read so far
    return f"ERROR RESPONSE [{' '.join(fields)}]"


def _row_description(payload: bytes, whole: bool = True) -> list[tuple[str, int, int, int, int, int, int]]:
    """A RowDescription's fields; of one whose end was not kept (not ``whole``), those that were."""
    r = _Reader(payload)
    out = []
    try:
        count = r.i16()
        for _ in range(count):
            name = _text(r.cstring())
            out.append((name, r.i32(), r.i16(), r.i32(), r.i16(), r.i32(), r.i16()))
    except _Malformed:
        if whole:
            raise
    return out


def row_description_text(payload: bytes, missing: int = 0) -> str:
    """Pixie's RowDesc::ToString; of one whose last ``missing`` bytes were not kept, the fields
    that were, then ``<not captured: N bytes>``."""
    fields = []
    for name, table_oid, attr, type_oid, size, modifier, fmt in _row_description(payload, whole=not missing):
        fields.append(
            f"name={name} table_oid={table_oid} attr_num={attr} type_oid={type_oid} type_size={size} "
            f"type_modifier={modifier} fmt_code={FORMAT_NAMES.get(fmt, '')}"
        )
    text = "ROW DESCRIPTION [" + "] [".join(fields) + "]"
    return text + f"<not captured: {missing} bytes>" if missing else text


_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01


def _binary_value(oid: int, data: bytes) -> str | None:
    """A value in binary format as PostgreSQL's text output shows it, for the common types (the
    layouts of PostgreSQL's ``*send`` functions); None for others."""
    n = len(data)
    if oid in (21, 23, 20) and n in (2, 4, 8):  # int2, int4, int8
        return str(int.from_bytes(data, "big", signed=True))
    if oid == 700 and n == 4:
        return repr(struct.unpack(">f", data)[0])
    if oid == 701 and n == 8:
        return repr(struct.unpack(">d", data)[0])
    if oid == 16 and n == 1:
        return "t" if data[0] else "f"
    if oid in (25, 1043, 1042, 19, 114, 3802):  # text, varchar, bpchar, name, json, jsonb (its version byte)
        return _text(data[1:] if oid == 3802 else data)
    if oid == 2950 and n == 16:
        h = data.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    if oid in (1114, 1184) and n == 8:  # timestamp, timestamptz: microseconds since 2000-01-01 (UTC)
        import datetime

        us = int.from_bytes(data, "big", signed=True) + _PG_EPOCH_US
        try:
            when = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=us)
        except OverflowError:
            return None
        text = when.isoformat(sep=" ")
        return text + "+00" if oid == 1184 else text
    if oid == 1082 and n == 4:  # date: days since 2000-01-01
        import datetime

        try:
            return (
                datetime.date(2000, 1, 1) + datetime.timedelta(days=int.from_bytes(data, "big", signed=True))
            ).isoformat()
        except OverflowError:
            return None
    return None


def _value(data: bytes | None, fmt: int, oid: int = 0) -> str:
    if data is None:
        return "[NULL]"
    if fmt == 1:
        decoded = _binary_value(oid, data)
        return decoded if decoded is not None else "\\x" + data.hex()
    return _text(data)


def data_row_text(payload: bytes, formats: list[int], missing: int = 0) -> str:
    """Pixie's DataRow::ToString: the values joined by commas, NULL as [NULL]. A row whose end
    was not copied (``missing`` bytes) shows what was, then ``<not captured: N bytes>``."""
    if not missing and not any(formats):  # every value text (the usual result)
        text = _text_row(payload)
        if text is not None:
            return text
    r = _Reader(payload)
    values = []
    try:
        count = r.i16()
        for i in range(count):
            n = r.i32()
            fmt = formats[i] if i < len(formats) else (formats[0] if len(formats) == 1 else 0)
            values.append(_value(None if n == -1 else r.take(n), fmt))
    except _Malformed:
        if not missing:
            raise
        values.append(_text(payload[r.pos + 4 :]) if r.pos + 4 <= len(payload) else "")
    text = ",".join(values)
    return text + f"<not captured: {missing} bytes>" if missing else text


def _text_row(payload: bytes) -> str | None:
    """A DataRow whose values are all text, as data_row_text shows it; None when its layout is
    not a DataRow's (data_row_text decides)."""
    n = len(payload)
    if n < 2:
        return None
    (count,) = _I16.unpack_from(payload)
    pos, values, unpack = 2, [], _LENGTH.unpack_from
    for _ in range(count):
        if pos + 4 > n:
            return None
        (length,) = unpack(payload, pos)
        pos += 4
        if length == -1:
            values.append("[NULL]")
            continue
        end = pos + length
        if length < 0 or end > n:
            return None
        values.append(payload[pos:end].decode("utf-8", errors="replace"))
        pos = end
    return ",".join(values)


@dataclass
class _Bind:
    portal: bytes
    statement: bytes
    params: list[tuple[int, bytes | None]]
    result_formats: list[int]


def _parse_bind(payload: bytes) -> _Bind:
    r = _Reader(payload)
    portal, statement = r.cstring(), r.cstring()
    formats = [r.i16() for _ in range(r.i16())]
    count = r.i16()
    if len(formats) > 1 and len(formats) != count:
        raise _Malformed("parameter format count does not match the parameter count")
    params: list[tuple[int, bytes | None]] = []
    for i in range(count):
        n = r.i32()
        fmt = formats[i] if len(formats) > 1 else (formats[0] if formats else 0)
        params.append((fmt, None if n == -1 else r.take(n)))
    result_formats = [r.i16() for _ in range(r.i16())]
    return _Bind(portal, statement, params, result_formats)


def bind_text(bind: _Bind, values: list[str]) -> str:
    """Pixie's BindRequest::ToString (``values``: the parameters as text)."""
    params = ", ".join(
        f"[format={FORMAT_NAMES.get(f, '')} value={v}]" for (f, _), v in zip(bind.params, values, strict=True)
    )
    results = ", ".join(FORMAT_NAMES.get(f, "") for f in bind.result_formats)
    return (
        f"portal={_text(bind.portal)} statement={_text(bind.statement)} parameters=[{params}] "
        f"result_format_codes=[{results}]"
    )


# Messages whose payload may end uncopied (a filler event): those whose payload is read only as
# text that then says what was not captured (a query, a data row, an error's fields), or not read
# at all. The others hold what later pairing and rendering need (a RowDescription's column formats,
# a Bind's portal, an authentication code, the startup message): a hole in one of those is a lost
# stretch (the tracker counts a data_gap and starts over at the next request), never a message
# read as malformed and taken for an answer.
CLIENT_SKIPPABLE = frozenset(bytes([c]) for c in b"QPdfcFpHSX")
SERVER_SKIPPABLE = frozenset(bytes([c]) for c in b"DdCENSAKZGHWcV123nIs")

# Messages of a simple Query's result, as _result_message reads them, and its end (ReadyForQuery).
_QUERY_RESULT_TAGS = frozenset((b"T", b"D", b"C", b"Z"))
# Request kinds that the server's ErrorResponse skips to the Sync after, in the extended protocol.
_EXTENDED = frozenset(("parse", "bind", "describe", "execute", "close", "function"))
# Exchanges (the unit answered in turn): a client message that is one (a simple Query, a function
# call, the startup, a password message; b"" untagged), messages a batch of the extended protocol
# is made of, and the request kinds that end an exchange (answered up to ReadyForQuery or an
# authentication message).
_EXCHANGE_STARTS = frozenset((b"Q", b"F", b"p", b""))
_BATCH_MESSAGES = frozenset((b"P", b"B", b"D", b"E", b"C", b"S"))
_EXCHANGE_ENDS = frozenset(("query", "sync", "startup", "auth", "function"))


class PgsqlStitcher:
    """Both directions of one PostgreSQL connection: bytes in, (Request, Response) pairs out
    (:class:`pxq.agent.protocols.interface.Stitcher`)."""

    # Head bytes a message may need before it is whole enough to render: the kernel copies this
    # much of a call (plus the body limit), and messages keep this much of their payload.
    HEAD_BYTES = 64 * 1024

    def __init__(self, body_limit: int, keep_secrets: bool = False) -> None:
        self.errors: Counter[str] = Counter()
        self.upgraded = False
        self.body_limit = body_limit
        self.keep_secrets = keep_secrets
        keep = self.HEAD_BYTES + body_limit
        self._client = _Framer(keep, untagged_first=True, skippable=CLIENT_SKIPPABLE)
        self._server = _Framer(keep, untagged_first=False, skippable=SERVER_SKIPPABLE)
        self._pending: deque[Request] = deque()
        self._done: list[tuple[Request, Response]] = []
        self._ssl_reply = False  # an SSLRequest/GSSENCRequest waits for its one-byte answer
        self._orphan = False  # backend messages answering no request seen since the last ReadyForQuery
        # Session state: prepared statements by name (b"" the unnamed one), portals by name (their
        # statement's text and bound values), the column names and formats a Describe reported.
        self._statements: dict[bytes, tuple[str, list[int]]] = {}  # name -> (query, parameter type OIDs)
        self._portals: dict[bytes, tuple[str, list[str], list[int]]] = {}  # name -> (query, values, formats)
        self._portal_columns: dict[bytes, list[str]] = {}
        # The response being gathered for the oldest request.
        self._results: list[str] = []
        self._result = _Result()
        self._result_formats: list[int] = []
        self._param_desc = False
        self._spoiled = False  # the oldest request, a simple Query, got a message that cannot answer it
        self._closed = False
        self._descriptions: dict[bytes, tuple[tuple[str, ...], tuple[int, ...]]] = {}
        # A new exchange (a Query, an extended batch up to its Sync) sent while another waited, or
        # an answer to nothing waiting (the interface's flag); and exchanges answered.
        self.out_of_step = False
        self.exchanges = 0

    # -- the Stitcher interface -------------------------------------------------------------
    def feed_messages(self, request: bool, data: bytes, ts_ns: int) -> list[tuple[Request, Response]]:
        if self.upgraded or not data:
            return []
        if request:
            for msg in self._client.feed(bytes(data), ts_ns):
                self._on_client(msg)
            if self._client.broken:
                self._lost_framing()
        else:
            if self._ssl_reply and not self._server.mid_message:
                self._ssl_reply = False
                if data[:1] == b"N":  # SSL (or GSS encryption) refused: plaintext follows
                    data = data[1:]
                elif data[:1] in (b"S", b"G"):  # accepted: the rest is encrypted
                    self.upgraded = True
                    return self._take()
            for msg in self._server.feed(bytes(data), ts_ns):
                self._on_server(msg)
            if self._server.broken:
                self._lost_framing()
        return self._take()

    def skip_messages(self, request: bool, n: int, ts_ns: int) -> tuple[list[tuple[Request, Response]], int]:
        framer = self._client if request else self._server
        msgs, left = framer.skip(n, ts_ns)
        for msg in msgs:
            (self._on_client if request else self._on_server)(msg)
        return self._take(), left

    def close_messages(self, ts_ns: int) -> list[tuple[Request, Response]]:
        if self._closed:
            return []
        self._closed = True
        if not self.upgraded:
            if self._client.tag is not None:
                self.errors["request_incomplete_at_close"] += 1
            if self._server.tag is not None:
                self.errors["response_incomplete_at_close"] += 1
            unanswered = sum(1 for r in self._pending if r.cmd)
            if unanswered:
                self.errors["request_unanswered_at_close"] += unanswered
        self._pending.clear()
        return self._take()

    def response_gap(self, ts_ns: int) -> bool:
        # Responses carry no request id: after lost response bytes, which request the next one
        # answers is unknown. Start over at the next request.
        return False

    # -- internals --------------------------------------------------------------------------
    def _take(self) -> list[tuple[Request, Response]]:
        done, self._done = self._done, []
        return done

    def _lost_framing(self) -> None:
        """A length no message has: the bytes are not (or no longer) PostgreSQL. Stop parsing."""
        self.errors["invalid_message_length"] += 1
        self._pending.clear()
        self.upgraded = True

    def _on_client(self, msg: Message) -> None:
        tag = msg.tag
        pending = self._pending
        if pending and (tag in _EXCHANGE_STARTS or (tag in _BATCH_MESSAGES and pending[-1].kind in _EXCHANGE_ENDS)):
            self.out_of_step = True  # pipelined: the exchange before this one is not answered yet
        if tag == b"":
            self._on_untagged(msg)
            return
        add = self._pending.append
        try:
            if tag == b"Q":
                text = _text(msg.payload.rstrip(b"\x00"))
                add(Request("Query", "query", self._with_missing(text, msg), msg.start_ns))
            elif tag == b"P":
                r = _Reader(msg.payload)
                name = r.cstring()
                # A query whose end was not copied: what was is its text (the rest is counted).
                query = _text(r.cstring() if not msg.missing else msg.payload[r.pos :].split(b"\x00")[0])
                oids = [r.i32() for _ in range(r.i16())] if msg.missing == 0 else []
                text = self._with_missing(query, msg)
                add(Request("Parse", "parse", text, msg.start_ns, name=name))
                # Known from here on: a Bind sent in the same write names it before the server has
                # answered (if the Parse fails, the server skips that Bind anyway).
                self._statements[name] = (text, oids)
            elif tag == b"B":
                bind = _parse_bind(msg.payload)
                known = self._statements.get(bind.statement)
                if known is None:
                    unseen = "" if bind.statement == b"" else f"<statement {_text(bind.statement)} not seen>"
                    known = (unseen, [])
                query, oids = known
                values = [_value(v, f, oids[i] if i < len(oids) else 0) for i, (f, v) in enumerate(bind.params)]
                add(Request("Bind", "bind", bind_text(bind, values), msg.start_ns, name=bind.portal))
                self._portals[bind.portal] = (query, values, bind.result_formats)
            elif tag == b"D":
                r = _Reader(msg.payload)
                kind, name = r.byte(), r.cstring()
                type_name = {b"S": "kStatement", b"P": "kPortal"}.get(kind)
                if type_name is None:
                    raise _Malformed("Describe of neither a statement nor a portal")
                text = f"type={type_name} name={_text(name)}"
                add(Request("Describe", "describe", text, msg.start_ns, name=name, describe_type=kind))
            elif tag == b"E":
                r = _Reader(msg.payload)
                portal = r.cstring()
                statement, values, _formats = self._portals.get(portal, ("", [], []))
                text = f"query=[{statement}] params=[{', '.join(values)}]"
                add(Request("Execute", "execute", text, msg.start_ns, name=portal))
            elif tag == b"S":
                add(Request("", "sync", "", msg.start_ns))
            elif tag == b"C":
                add(Request("", "close", "", msg.start_ns))
            elif tag == b"F":
                add(Request("", "function", "", msg.start_ns))
            elif tag == b"p":
                text = _text(msg.payload) if self.keep_secrets else SECRET_MARKER
                add(Request("Password Message", "auth", text, msg.start_ns))
            elif tag in (b"d", b"c", b"f", b"H", b"X"):
                pass  # COPY data from the client (counted by the server's tag), Flush, Terminate
            else:
                self.errors["unknown_message"] += 1
        except _Malformed:
            self.errors["malformed_message"] += 1

    def _with_missing(self, text: str, msg: Message) -> str:
        return text + f"<not captured: {msg.missing} bytes>" if msg.missing else text

    def _on_untagged(self, msg: Message) -> None:
        if len(msg.payload) < 4:
            self.errors["malformed_message"] += 1
            return
        (code,) = _I32.unpack_from(msg.payload, 0)
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            self._ssl_reply = True
        elif code == PROTOCOL_V3:
            self._pending.append(Request("", "startup", "", msg.start_ns))
        elif code != CANCEL_REQUEST:
            self.errors["unknown_message"] += 1

    def _on_server(self, msg: Message) -> None:
        tag = msg.tag
        pending = self._pending
        if pending and tag in _QUERY_RESULT_TAGS and pending[0].kind == "query":
            # A simple Query's result (most of a database's traffic): what _answer does for it.
            query = pending[0]
            try:
                if tag == b"Z":
                    self._query_ready(query, msg)
                elif not self._result_message(msg):
                    self._unexpected(query, msg)
            except _Malformed:
                self.errors["malformed_message"] += 1
                self._complete(query, msg, "<malformed response>")
            return
        if tag in (b"S", b"N", b"A", b"K"):
            return  # ParameterStatus, NoticeResponse, NotificationResponse, BackendKeyData: no answer
        if tag not in BACKEND_TAGS:
            self.errors["unknown_message"] += 1
            return
        head = self._pending[0] if self._pending else None
        if head is None:
            if tag == b"Z":
                self._orphan = False
            elif tag == b"E" and msg.payload[:7] in (b"SFATAL\x00", b"SPANIC\x00"):
                pass  # the server ends the session (after a startup it refused, a shutdown): no answer lost
            elif tag != b"R" and not self._orphan:
                self._orphan = True
                self.errors["response_without_request"] += 1
                self.out_of_step = True
            return
        try:
            self._answer(head, msg)
        except _Malformed:
            self.errors["malformed_message"] += 1
            self._complete(head, msg, "<malformed response>")

    def _complete(self, head: Request, msg: Message, text: str) -> None:
        self._pending.popleft()
        self._spoiled = False
        if head.kind in _EXCHANGE_ENDS:
            self.exchanges += 1
        self._results = []
        self._result = _Result()
        self._result_formats = []
        self._param_desc = False
        if head.cmd:
            self._done.append((head, Response(text, msg.end_ns)))

    def _error(self, head: Request, msg: Message) -> None:
        text = error_text(msg.payload)
        if head.kind == "query":  # the rest of the query string is skipped; ReadyForQuery ends it
            self._results.append(text)
            self._result = _Result()
            return
        self._complete(head, msg, text)
        if head.kind in _EXTENDED:
            # The server discards every message up to the Sync: they get no answer.
            while self._pending and self._pending[0].kind in _EXTENDED:
                self._pending.popleft()

    def _answer(self, head: Request, msg: Message) -> None:
        tag, kind = msg.tag, head.kind
        if tag == b"E":
            self._error(head, msg)
            return
        if kind in ("startup", "auth"):
            if tag == b"R":
                self._complete(head, msg, self._auth_text(msg.payload))
            else:
                self._unexpected(head, msg)
        elif kind == "query":
            if tag == b"Z":
                self._query_ready(head, msg)
            elif not self._result_message(msg):
                self._unexpected(head, msg)
        elif kind == "execute":
            self._result_formats = self._portals.get(head.name, ("", [], []))[2]
            if tag in (b"C", b"s"):
                self._result.names = self._portal_columns.get(head.name, [])
                tag_text = _text(msg.payload.rstrip(b"\x00")) if tag == b"C" else "PORTAL SUSPENDED"
                self._complete(head, msg, self._result.render(tag_text))
            elif tag == b"I":
                self._complete(head, msg, "")
            elif not self._result_message(msg):
                self._unexpected(head, msg)
        elif kind == "parse":
            if tag == b"1":
                self._complete(head, msg, "PARSE COMPLETE")
            else:
                self._unexpected(head, msg)
        elif kind == "bind":
            if tag == b"2":
                self._complete(head, msg, "BIND COMPLETE")
            else:
                self._unexpected(head, msg)
        elif kind == "describe":
            if tag == b"t" and head.describe_type == b"S" and not self._param_desc:
                self._param_desc = True
                # The server's parameter types: they name what a Parse left unspecified (OID 0).
                r = _Reader(msg.payload)
                count = r.i16()
                described: list[int] = []
                # (Of a description not kept whole, the types that were.)
                while len(described) < count and (not msg.missing or r.pos + 4 <= len(msg.payload)):
                    described.append(r.i32())
                if head.name in self._statements:
                    query, declared = self._statements[head.name]
                    merged = [
                        d if i >= len(declared) or not declared[i] else declared[i] for i, d in enumerate(described)
                    ]
                    self._statements[head.name] = (query, merged)
            elif tag in (b"T", b"n") and (head.describe_type == b"P" or self._param_desc):
                payload = msg.payload if tag == b"T" else b"\x00\x00"
                if head.describe_type == b"P":
                    self._portal_columns[head.name] = [f[0] for f in _row_description(payload, not msg.missing)]
                self._complete(head, msg, row_description_text(payload, msg.missing))
            else:
                self._unexpected(head, msg)
        elif kind == "close":
            self._complete(head, msg, "") if tag == b"3" else self._unexpected(head, msg)
        elif kind == "sync":
            self._complete(head, msg, "") if tag == b"Z" else self._unexpected(head, msg)
        elif kind == "function":
            self._complete(head, msg, "") if tag == b"V" else self._unexpected(head, msg)

    def _result_message(self, msg: Message) -> bool:
        """A message of a statement's result (simple Query or Execute): False if it is not one."""
        tag = msg.tag
        if tag == b"T":
            names, formats = self._columns_of(msg.payload, msg.missing)
            self._result = _Result(names=list(names))
            self._result_formats = list(formats)
        elif tag == b"D":
            self._result.add_row(data_row_text(msg.payload, self._result_formats, msg.missing), self.body_limit)
        elif tag == b"d":  # COPY OUT data: rows of text, kept like data rows
            self._result.add_row(_text(msg.payload).rstrip("\n"), self.body_limit)
        elif tag in (b"G", b"H", b"c", b"W"):
            # CopyInResponse, CopyOutResponse, CopyDone, CopyBothResponse: the tag says how many
            self._result.copying = True
        elif tag in (b"C", b"I"):  # a statement of a simple query ends
            if tag == b"C" and msg.payload.startswith(b"COPY ") and not self._copy_possible():
                return False
            self._results.append(self._result.render(_text(msg.payload.rstrip(b"\x00"))) if tag == b"C" else "")
            self._result = _Result()
            self._result_formats = []
        else:
            return False
        return True

    def _copy_possible(self) -> bool:
        """Whether a CommandComplete "COPY n" can end the current statement of the oldest query:
        its COPY began (the server's CopyIn/OutResponse), or the query names COPY (one of a file
        on the server sends none). Otherwise the query was never sent: after a hole in the
        client's bytes, a Query message inside its COPY data (a bytea holding PostgreSQL traffic)
        looked like the next request, and the COPY's end would answer it."""
        return self._result.copying or (bool(self._pending) and "COPY" in self._pending[0].text.upper())

    def _columns_of(self, payload: bytes, missing: int = 0) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """A RowDescription's column names and formats; a client repeating its queries gets the
        same descriptions again and again, so they are parsed once. Of one whose last
        ``missing`` bytes were not kept, the columns that were, then what was not."""
        if missing:
            fields = _row_description(payload, whole=False)
            return (*(f[0] for f in fields), f"<not captured: {missing} bytes>"), tuple(f[6] for f in fields)
        found = self._descriptions.get(payload)
        if found is None:
            fields = _row_description(payload)
            if len(self._descriptions) >= 256:
                self._descriptions.clear()
            found = self._descriptions[payload] = (tuple(f[0] for f in fields), tuple(f[6] for f in fields))
        return found

    def _query_ready(self, query: Request, msg: Message) -> None:
        """ReadyForQuery ends a simple Query: its row, unless a message of its answer could not
        be one (then it was not what it seemed: no row, counted)."""
        if not self._spoiled:
            self._complete(query, msg, "\n".join(self._results))
            return
        self._pending.popleft()
        self._spoiled = False
        self._results = []
        self._result = _Result()
        self._result_formats = []
        self.errors["request_answer_unexpected"] += 1

    def _unexpected(self, head: Request, msg: Message) -> None:
        """A backend message that cannot answer the oldest request: requests were missed or the
        stream is not what it seems. Never pair it; a ReadyForQuery ends the cycle (a simple
        Query's then makes no row)."""
        self.errors["unexpected_message"] += 1
        self.out_of_step = True
        if msg.tag != b"Z" and head.kind == "query":
            self._spoiled = True
        if msg.tag == b"Z":
            while self._pending and self._pending[0].kind not in ("sync", "query"):
                self._pending.popleft()
            if self._pending:
                self._pending.popleft()
            self._results = []
            self._result = _Result()
            self._spoiled = False

    def _auth_text(self, payload: bytes) -> str:
        r = _Reader(payload)
        code = r.i32()
        name = AUTH_NAMES.get(code, str(code))
        rest = payload[4:]
        if code == 10:  # SASL: the mechanisms the server offers (no secret)
            mechanisms = ", ".join(_text(m) for m in rest.split(b"\x00") if m)
            return f"AUTHENTICATION {name} [{mechanisms}]"
        if code in (5, 8, 11, 12):  # a salt or SASL/GSS data: part of the credential exchange
            return f"AUTHENTICATION {name} {_text(rest) if self.keep_secrets else SECRET_MARKER}"
        return f"AUTHENTICATION {name}"


# -- protocol inference (Pixie's infer_pgsql_message, protocol_inference.h) ----------------------
def _startup_like(first: bytes, after_ssl: bool = False) -> bool:
    if len(first) < 8 or first[0] != 0:
        return False
    length, code = int(_I32.unpack_from(first, 0)[0]), int(_I32.unpack_from(first, 4)[0])
    if code in (SSL_REQUEST, GSSENC_REQUEST):  # then the answer; then, in the same probe, a startup
        return length == 8 and (len(first) == 8 or _startup_like(first[8:], after_ssl=True))
    if code == CANCEL_REQUEST:
        return length == 16
    if code != PROTOCOL_V3 or not 12 <= length <= 10240:
        return False
    # Then a parameter name ("user", "database", ...): Pixie checks its first letters. After an
    # SSLRequest (a magic number of its own), a startup read so far only up to its version will do.
    name = first[8:11]
    if not name:
        return after_ssl
    return all(c >= ord("A") for c in name)


def _plausible_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\n\r" for c in text)


def looks_like_pgsql_request(first: bytes) -> bool:
    """A client's first bytes: a startup message or SSLRequest/GSSENCRequest at a connection's
    start; mid-stream a simple Query, a Parse or a Bind with a plausible length and layout."""
    if _startup_like(first):
        return True
    if len(first) < 5:
        return False
    tag, (length,) = first[:1], _I32.unpack_from(first, 1)
    if tag not in (b"Q", b"P", b"B") or not 8 <= length <= (1 << 24):
        return False
    payload = first[5 : 1 + length]
    whole = len(first) >= 1 + length
    if tag == b"Q":
        body = payload[:-1] if whole else payload
        if whole and payload[-1:] != b"\x00":
            return False
        return b"\x00" not in body and _plausible_text(body[:64]) if body else False
    if not whole:
        if tag == b"B":
            return False  # binary values: only the whole message tells
        name_end = payload.find(b"\x00")
        query = payload[name_end + 1 :] if name_end >= 0 else b""
        return name_end >= 0 and _plausible_text(payload[:name_end]) and _plausible_text(query[:64].split(b"\x00")[0])
    r = _Reader(payload)
    try:
        if tag == b"P":
            name, query = r.cstring(), r.cstring()
            r.take(4 * r.i16())
            ok = _plausible_text(name) and bool(query) and _plausible_text(query[:64])
        else:
            _parse_bind(payload)
            r.pos = len(payload)
            ok = True
    except _Malformed:
        return False
    return ok and r.pos == len(payload)


def looks_like_pgsql_response(first: bytes) -> bool:
    """A server's first bytes: a well-formed backend message of a kind a server starts an answer
    with (authentication, RowDescription, CommandComplete, ParseComplete, ...)."""
    if first[:2] == b"NR":
        # SSL refused (one byte, not a message), then the answer to the startup: a NoticeResponse's
        # length never begins with "R".
        return looks_like_pgsql_response(first[1:])
    if len(first) < 5:
        return False
    tag, (length,) = first[:1], _I32.unpack_from(first, 1)
    if tag == b"R" and 8 <= length <= 2048 and 9 <= len(first) < 1 + length:
        # An authentication request cut by the read (SASL's mechanism list, a GSS token): its
        # code tells, as the server's first message on a connection whose startup went unseen.
        return int(_I32.unpack_from(first, 5)[0]) in AUTH_NAMES
    if not 4 <= length <= (1 << 24) or len(first) < 1 + length:
        return False
    payload = first[5 : 1 + length]
    r = _Reader(payload)
    try:
        if tag == b"R":
            ok = r.i32() in AUTH_NAMES
        elif tag in (b"1", b"2", b"3", b"n", b"I"):
            ok = length == 4
        elif tag == b"Z":
            ok = length == 5 and payload in (b"I", b"T", b"E")
        elif tag == b"C":
            ok = payload.endswith(b"\x00") and payload[:-1].replace(b" ", b"").isalnum() and payload[:1].isupper()
        elif tag == b"T":
            _row_description(payload)
            ok = True
        elif tag == b"E":
            ok = payload[:1] == b"S" and payload.endswith(b"\x00\x00")
        else:
            ok = False
    except _Malformed:
        return False
    if not ok:
        return False
    rest = first[1 + length :]
    return not rest or rest[:1] in (b"S", b"K", b"Z", b"T", b"D", b"C", b"R", b"N", b"E", b"2", b"t", b"n", b"1")
