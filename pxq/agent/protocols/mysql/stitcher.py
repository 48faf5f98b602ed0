"""MySQL / MariaDB: packets framed from both directions of a connection and each command paired
with its whole response, as the socket tracer needs it.

One :class:`MysqlStitcher` per connection (the :class:`~pxq.agent.protocols.interface.Stitcher`
interface). The model is Pixie's (src/stirling/source_connectors/socket_tracer/protocols/mysql/:
parse.cc frames packets, stitcher.cc and handler.cc pair a command with its response packets);
here one object frames and pairs incrementally:

* **Packets**: a 3-byte length and a sequence number; a payload of 0xffffff bytes continues in the
  next packet (messages over 16 MB), joined into one message here. A message keeps its first
  ``HEAD_BYTES + body_limit`` payload bytes and counts the rest; bytes the kernel counted without
  copying are skipped inside a packet of known length (:meth:`MysqlStitcher.skip_messages`).
* **Commands** start with sequence number 0; the response's packets follow with 1, 2, ... A
  command's response is framed by what it is: OK / ERR / EOF for the simple commands, a result
  set (column count, column definitions, optional EOF, rows, OK or EOF) for COM_QUERY and
  COM_STMT_EXECUTE, again while the end packet says more results follow (multi-statement
  queries), COM_STMT_PREPARE_OK with its parameter and column definitions, nothing for
  COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA and COM_QUIT (Pixie's ``HandleNoResponse`` and
  ``ProcessQuit``: status "none", latency 0).
* **CLIENT_DEPRECATE_EOF**: without it a result set has an EOF packet after its column definitions
  and ends with EOF; with it, no EOF after the definitions and an OK packet headed 0xfe at the end.
  Result sets are framed either way (a 5-byte 0xfe packet is an EOF packet, an OK packet has at
  least 7 bytes), so the capability matters only at the end of a COM_STMT_PREPARE response: taken
  from the handshake, assumed on a connection seen from mid-stream (as Pixie does), and learnt if
  an EOF packet then follows such a response.
* **Prepared statements**: COM_STMT_PREPARE's text and parameter count are kept per statement id;
  COM_STMT_EXECUTE's row shows ``query=[<text>] params=[<values>]`` as Pixie's
  ``CombinePrepareExecute`` does (values decoded from the binary protocol: integers, floats,
  strings, dates and times, NULL), or ``Execute stmt_id=N.`` for a statement prepared before the
  tracer looked. COM_STMT_CLOSE forgets the statement.
* **The handshake** is a row too (pxq's, Pixie shows none): command 11 (``Connect``), the user,
  database and auth plugin of the client's handshake response, the server's final OK or ERR.
  The auth response (the scrambled password) and every auth-switch answer of the client are never
  kept: the row shows :data:`~pxq.agent.protocols.interface.SECRET_MARKER` unless the user chose
  ``keep_secrets`` (then the bytes in hex). COM_CHANGE_USER's auth response likewise. An SSL
  request ends the parsing: what follows is TLS.
* **Pairing** is in order: MySQL answers one command at a time. A command that arrives while the
  one before still waits for its response means that response was lost (``request_unanswered``;
  Pixie's ``GetRespView`` likewise gives a request no response packet later than the next
  request), except a COM_STMT_EXECUTE of the statement being prepared (id 0xffffffff, MariaDB's
  "execute direct", sent with its COM_STMT_PREPARE), which is queued. A response packet whose
  sequence number is not the next one, or that cannot be what its command is answered with, loses
  the connection's sync (``response_out_of_sequence``, ``response_malformed``): every waiting
  command is dropped and parsing starts again at the next command, so no response is paired with
  another command's request.  A response packet that began before the waiting command was sent answers an earlier
  command (lost, or before the tracer looked): dropped and counted (``response_before_request``,
  as HTTP/1), never paired with the later command.

Rows: ``resp_status`` is Pixie's ``RespStatus`` (0 unknown, 1 none, 2 OK, 3 error); ``resp_body``
is ``Resultset rows = N`` for a result set (joined with ", " for several, as Pixie), the error as
``ERROR <code> (<SQLSTATE>): <message>`` (Pixie keeps only the message), ``Affected rows = N`` for
an OK answer to a query or statement execution (pxq's; Pixie leaves it empty), the text of
COM_STATISTICS. Timestamps: the chunk holding the command's first byte, and those holding the
response's first and last bytes; ``time_`` is the response's end (Pixie's too).
"""

from __future__ import annotations

import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from pxq.agent.defaults import DEFAULT_BODY_LIMIT
from pxq.agent.protocols.interface import SECRET_MARKER, ParseOptions
from pxq.agent.protocols.mysql import wire
from pxq.agent.protocols.mysql.wire import (
    CLIENT_CONNECT_WITH_DB,
    CLIENT_DEPRECATE_EOF,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SSL,
    COMMAND_LENGTHS,
    MAX_PACKET,
)

# Payload bytes of a message kept beyond the body limit: enough for a statement's parameters or a
# long query's text to be decoded before its row is cut to the body limit.
HEAD_BYTES = 64 * 1024

# Pixie's RespStatus (types.h): the values of mysql_events.resp_status.
RESP_UNKNOWN, RESP_NONE, RESP_OK, RESP_ERR = 0, 1, 2, 3
# Appended to a body cut at the body limit (Pixie's DataTable kTruncatedMsg).
TRUNCATED_MARKER = "... [TRUNCATED]"
# Statement id of COM_STMT_EXECUTE meaning "the statement just prepared" (MariaDB execute direct).
LAST_PREPARED_ID = 0xFFFFFFFF

# How each command's response is framed.
_NONE, _SIMPLE, _RESULTSET, _PREPARE, _FIELD_LIST, _STATISTICS, _AUTH, _UNTIL_NEXT = range(8)
_KIND = dict.fromkeys(COMMAND_LENGTHS, _SIMPLE)
_KIND.update({
    wire.COM_QUIT: _NONE, wire.COM_STMT_CLOSE: _NONE, wire.COM_STMT_SEND_LONG_DATA: _NONE,
    wire.COM_QUERY: _RESULTSET, wire.COM_STMT_EXECUTE: _RESULTSET, wire.COM_PROCESS_INFO: _RESULTSET,
    wire.COM_STMT_PREPARE: _PREPARE, wire.COM_FIELD_LIST: _FIELD_LIST, wire.COM_STATISTICS: _STATISTICS,
    wire.COM_CHANGE_USER: _AUTH, wire.COM_BINLOG_DUMP: _UNTIL_NEXT, wire.COM_BINLOG_DUMP_GTID: _UNTIL_NEXT,
    wire.COM_TABLE_DUMP: _UNTIL_NEXT, wire.COM_STMT_FETCH: _UNTIL_NEXT,
})  # fmt: skip
# Commands whose payload after the command byte is text shown as req_body (Pixie's HandleStringRequest).
_STRING_COMMANDS = frozenset(
    {wire.COM_QUERY, wire.COM_INIT_DB, wire.COM_CREATE_DB, wire.COM_DROP_DB, wire.COM_STMT_PREPARE,
     wire.COM_FIELD_LIST}
)  # fmt: skip

# Commands naming a prepared statement by its id (4 bytes after the command byte).
_STATEMENT_COMMANDS = frozenset(
    {wire.COM_STMT_EXECUTE, wire.COM_STMT_CLOSE, wire.COM_STMT_RESET, wire.COM_STMT_SEND_LONG_DATA,
     wire.COM_STMT_FETCH}
)  # fmt: skip

# Handshake states.
_NO_HANDSHAKE, _GREETED, _AUTHENTICATING, _CONNECTED = range(4)
# Result-set reading states.
_FIRST, _COLUMNS, _AFTER_COLUMNS, _ROWS, _INFILE, _PARAM_DEFS, _PARAM_EOF, _COLUMN_DEFS, _COLUMN_EOF = range(9)
# A packet's header as one little-endian word: the payload length, the sequence number on top.
_PACKET_HEADER = struct.Struct("<I").unpack_from
# Result-set states whose packets MysqlStitcher reads where they lie (_scan_result_set).
_SCANNED = frozenset({_FIRST, _COLUMNS, _AFTER_COLUMNS, _ROWS})


@dataclass(slots=True)
class MysqlRequest:
    cmd: int
    body: str
    start_ns: int
    size: int  # payload bytes as sent (several packets joined)


@dataclass(slots=True)
class MysqlResponse:
    status: int
    body: str
    end_ns: int
    size: int = 0  # payload bytes of all the response's packets
    # The chunk holding the response's first byte (its command's start for a command answered by
    # nothing): where the response began, as end_ns says where it ended.
    start_ns: int = 0


@dataclass(frozen=True, slots=True)
class MysqlRecord:
    """A command and its response, with a field per mysql_events column (Pixie's record)."""

    request: MysqlRequest
    response: MysqlResponse

    @property
    def req_cmd(self) -> int:
        return self.request.cmd

    @property
    def req_body(self) -> str:
        return self.request.body

    @property
    def resp_status(self) -> int:
        return self.response.status

    @property
    def resp_body(self) -> str:
        return self.response.body

    @property
    def latency_ns(self) -> int:
        return self.response.end_ns - self.request.start_ns


def truncate(body: str, limit: int) -> str:
    """``body`` cut to ``limit`` UTF-8 bytes with Pixie's marker (untouched when it fits)."""
    if len(body) * 4 <= limit:  # fits whatever its characters
        return body
    raw = body.encode("utf-8")
    if len(raw) <= limit:
        return body
    return raw[:limit].decode("utf-8", errors="ignore") + TRUNCATED_MARKER


class _Message:
    """One message of one direction: a packet, or several joined by 0xffffff continuations."""

    __slots__ = ("seq", "last_seq", "payload", "size", "start_ns", "end_ns")

    def __init__(self, seq: int, ts_ns: int) -> None:
        self.seq = seq
        self.last_seq = seq
        self.payload: bytes | bytearray = bytearray()  # the first `keep` bytes
        self.size = 0
        self.start_ns = ts_ns
        self.end_ns = ts_ns


class _Framer:
    """Splits one direction's bytes into messages."""

    __slots__ = ("keep", "head", "head_ns", "left", "in_payload", "more", "current", "check", "bad_at", "pos")

    def __init__(self, keep: int, check: Callable[[int, int, int], bool] | None = None) -> None:
        self.keep = keep
        # Is a new message's header plausible: (payload length, sequence number, first payload
        # byte or -1 when not in this read)? When not, feed stops there and sets bad_at.
        self.check = check
        self.bad_at: int | None = None  # where in the last fed data an implausible header began
        self.head = b""  # a packet header not yet whole
        self.head_ns = 0
        self.left = 0  # payload bytes left of the packet in progress
        self.in_payload = False
        self.more = False  # the packet in progress is full: its message goes on in the next one
        self.current: _Message | None = None
        self.pos = 0  # where in the last fed data the last call stopped

    @property
    def idle(self) -> bool:
        """At a message boundary, nothing held."""
        return self.current is None and not self.head

    def feed(self, data: bytes, ts_ns: int, start: int = 0, one: bool = False) -> list[_Message]:
        """The messages completed by ``data[start:]``; with ``one``, stops after the first (then
        :attr:`pos` says where)."""
        out: list[_Message] = []
        i, n = start, len(data)
        self.bad_at = None
        keep, check = self.keep, self.check
        while i < n or (self.in_payload and not self.left):
            if not self.in_payload and not self.head and self.current is None and i + 4 <= n:
                # Fast path: a whole packet in this read, starting a message.
                length = data[i] | data[i + 1] << 8 | data[i + 2] << 16
                end = i + 4 + length
                if length < MAX_PACKET and end <= n:
                    seq = data[i + 3]
                    if check is not None and not check(length, seq, data[i + 4] if length else -1):
                        self.bad_at = self.pos = i
                        return out
                    whole = _Message(seq, ts_ns)
                    whole.payload = data[i + 4 : end] if length <= keep else data[i + 4 : i + 4 + keep]
                    whole.size = length
                    out.append(whole)
                    i = end
                    if one:
                        break
                    continue
            if not self.in_payload:
                if not self.head:
                    self.head_ns = ts_ns
                header_at = i - len(self.head)
                take = data[i : i + 4 - len(self.head)]
                self.head += take
                i += len(take)
                if len(self.head) < 4:
                    break
                length = int.from_bytes(self.head[:3], "little")
                seq = self.head[3]
                self.head = b""
                if (
                    self.current is None
                    and self.check is not None
                    and not self.check(length, seq, data[i] if i < n else -1)
                ):
                    self.bad_at = self.pos = max(0, header_at)
                    return out
                if self.current is None:
                    self.current = _Message(seq, self.head_ns)
                self.current.last_seq = seq
                self.left, self.in_payload, self.more = length, True, length == MAX_PACKET
            else:
                k = min(self.left, n - i)
                msg = self.current
                assert msg is not None
                room = keep - len(msg.payload)
                if room > 0:
                    if type(msg.payload) is bytes:
                        msg.payload = bytearray(msg.payload)
                    msg.payload += data[i : i + min(k, room)]
                msg.size += k
                self.left -= k
                i += k
            if self.in_payload and not self.left:
                self._packet_done(ts_ns, out)
                if one and out:
                    break
        self.pos = i
        return out

    def _packet_done(self, ts_ns: int, out: list[_Message]) -> None:
        self.in_payload = False
        msg = self.current
        assert msg is not None
        msg.end_ns = ts_ns
        if not self.more:
            out.append(msg)
            self.current = None

    def skip(self, n: int, ts_ns: int) -> tuple[list[_Message], int]:
        """``n`` bytes not seen: taken inside the packet in progress, and to the end of a message
        over 16 MB (see below); returns the messages done and the bytes beyond (where the next
        header would be: lost)."""
        out: list[_Message] = []
        msg = self.current
        if msg is None or (self.in_payload and not self.left) or (not self.in_payload and not self.more):
            return out, n
        k = min(n, self.left)
        msg.size += k
        self.left -= k
        if not self.left and self.in_payload:
            self._packet_done(ts_ns, out)
        rest = n - k
        if rest and self.current is msg and self.more and not self.head:
            # A message over 16 MB, the rest of it not copied: a peer writes such a message in one
            # call, which the kernel copies up to its limit and counts after, so the stretch is
            # taken to end the message (its packet headers, one per 0xffffff bytes, taken out of
            # its size). Should the bytes after it not start a message, sync is lost as usual.
            headers = -(-rest // (MAX_PACKET + 4))
            msg.size += rest - 4 * headers
            msg.last_seq = (msg.last_seq + headers) & 0xFF
            self.more = False
            self._packet_done(ts_ns, out)
            rest = 0
        return out, rest


class _Statement:
    __slots__ = ("query", "num_params", "types")

    def __init__(self, query: str, num_params: int) -> None:
        self.query = query
        self.num_params = num_params
        self.types: list[tuple[int, bool]] | None = None  # of the last execution that bound them


class _Exchange:
    """A command and the response being read for it."""

    __slots__ = ("cmd", "kind", "msg", "body", "expect_seq", "state", "left", "rows", "parts", "status",
                 "resp_size", "start_ns", "end_ns", "packets", "stmt_id", "num_params", "num_columns", "prepared",
                 "resolved", "stale_counted")  # fmt: skip

    def __init__(self, cmd: int, msg: _Message, body: str) -> None:
        self.cmd = cmd
        self.kind = _KIND.get(cmd, _UNTIL_NEXT)
        self.msg = msg
        self.body = body
        self.expect_seq = (msg.last_seq + 1) & 0xFF
        self.state = _FIRST
        self.left = 0  # definitions still to come
        self.rows = 0
        self.parts: list[str] = []
        self.status = RESP_UNKNOWN
        self.resp_size = 0
        self.start_ns = msg.start_ns  # of the response's first packet, once it comes
        self.end_ns = msg.end_ns
        self.packets = 0
        self.stmt_id = -1
        self.num_params = 0
        self.num_columns = 0
        self.prepared: _Statement | None = None  # for COM_STMT_PREPARE: the statement being prepared
        self.resolved = False  # a statement command's statement looked up (when its turn came)
        self.stale_counted = False  # a response that began before this command was counted


class _Desync(Exception):
    """A response packet that cannot be what its command is answered with."""


class MysqlStitcher:
    """Both directions of one MySQL connection (the registry's ``make_stitcher``)."""

    def __init__(self, options: ParseOptions | None = None) -> None:
        options = options or ParseOptions(body_limit=DEFAULT_BODY_LIMIT)
        self.errors: Counter[str] = Counter()
        self.upgraded = False
        self.body_limit = options.body_limit
        self.keep_secrets = options.keep_secrets
        self._keep = HEAD_BYTES + options.body_limit
        self._req = _Framer(self._keep, self._request_header_ok)
        self._resp = _Framer(self._keep)
        self._handshake = _NO_HANDSHAKE
        self._auth: _Exchange | None = None  # the handshake's row while authenticating
        # CLIENT_DEPRECATE_EOF: None until the handshake tells (assumed meanwhile, like Pixie).
        self.deprecate_eof: bool | None = None
        self._server_caps = 0
        self._pending: deque[_Exchange] = deque()
        self._statements: dict[int, _Statement] = {}
        self._last_prepared: _Statement | None = None
        # After a COM_STMT_PREPARE response ended without its EOF (the capability assumed): the
        # sequence number that EOF would have.
        self._prepare_tail: int | None = None
        self._resyncing = False  # lost sync: bytes dropped until a command starts
        self._closed = False
        self._done: list[tuple[MysqlRequest, MysqlResponse]] = []
        self.out_of_step = False  # a command sent while another waited, or an answer to none seen
        self.exchanges = 0  # commands answered

    # -- the Stitcher interface ---------------------------------------------------------------
    def feed_messages(self, request: bool, data: bytes, ts_ns: int) -> list[tuple[MysqlRequest, MysqlResponse]]:
        if self._closed or self.upgraded or not data:
            return []
        data = bytes(data)
        if request:
            while data and not self.upgraded:
                if self._resyncing:
                    start = _command_start(data)
                    if start < 0:
                        break
                    data = data[start:]
                    self._resyncing = False
                    self._req = _Framer(self._keep, self._request_header_ok)
                    self._resp = _Framer(self._keep)
                framer = self._req
                for msg in framer.feed(data, ts_ns):
                    self._on_request(msg)
                    if self._resyncing or self.upgraded:
                        break
                if framer.bad_at is None or self._resyncing or self.upgraded:
                    break
                self.errors["request_invalid_header"] += 1
                self._lose_sync()
                data = data[framer.bad_at + 1 :]  # look for a command after it
        elif not self._resyncing:
            self._feed_responses(data, ts_ns)
        return self._take()

    def skip_messages(self, request: bool, n: int, ts_ns: int) -> tuple[list[tuple[MysqlRequest, MysqlResponse]], int]:
        if self._closed or self.upgraded or self._resyncing:
            return [], n
        framer = self._req if request else self._resp
        messages, left = framer.skip(n, ts_ns)
        for msg in messages:
            self._on_request(msg) if request else self._on_response(msg)
        return self._take(), left

    def close_messages(self, ts_ns: int) -> list[tuple[MysqlRequest, MysqlResponse]]:
        if self._closed:
            return []
        self._closed = True
        if not self.upgraded and not self._resyncing:
            for ex in self._pending:
                if ex.kind == _UNTIL_NEXT and ex.packets:
                    self._emit(ex, RESP_UNKNOWN)
                elif ex.packets:
                    self.errors["response_incomplete_at_close"] += 1
                else:
                    self.errors["request_unanswered_at_close"] += 1
            if self._auth is not None:
                self.errors["request_unanswered_at_close"] += 1
            if not self._req.idle:
                self.errors["request_incomplete_at_close"] += 1
            if not self._resp.idle and self._pending:
                self.errors["response_incomplete_at_close"] += 1
        self._pending.clear()
        self._auth = None
        return self._take()

    def response_gap(self, ts_ns: int) -> bool:
        """Lost server bytes leave no packet boundary to go on from: start over at the next command."""
        return False

    # -- requests -----------------------------------------------------------------------------
    def _request_header_ok(self, length: int, seq: int, first: int) -> bool:
        """Could a client message start with this header (Pixie's ParseFrame checks a command's
        byte and length before taking its bytes)? A command (sequence 0) of a known command byte
        and a length in its range; another sequence number only where the conversation expects
        one (the handshake, an auth exchange, a LOCAL INFILE upload)."""
        if seq == 0:
            if first < 0:
                return length > 0
            bounds = COMMAND_LENGTHS.get(first)
            return bounds is not None and bounds[0] <= length and (length <= bounds[1] or bounds[1] == MAX_PACKET)
        if seq == 1 and self._handshake in (_NO_HANDSHAKE, _GREETED):
            return length >= 32
        # (the sequence itself is checked when the message is taken: the messages before it in
        # the same read are not yet)
        if self._auth is not None:
            return True
        head = self._pending[0] if self._pending else None
        return head is not None and (head.state == _INFILE or head.kind == _AUTH)

    def _on_request(self, msg: _Message) -> None:
        payload = bytes(msg.payload)
        if msg.seq == 1 and self._handshake in (_NO_HANDSHAKE, _GREETED) and looks_like_handshake_response(payload):
            self._handshake_response(msg, payload)
            return
        if msg.seq != 0:
            if self._auth is not None:  # an auth-switch answer: counted, never kept
                self._auth.expect_seq = (msg.last_seq + 1) & 0xFF
                self._auth.msg.size += msg.size
                return
            head = self._pending[0] if self._pending else None
            if head is not None and (head.state == _INFILE or head.kind == _AUTH) and msg.seq == head.expect_seq:
                head.expect_seq = (msg.last_seq + 1) & 0xFF  # LOAD DATA LOCAL file bytes, auth data
                return
            self.errors["request_out_of_sequence"] += 1
            self._lose_sync()
            return
        cmd = payload[0] if payload else -1
        bounds = COMMAND_LENGTHS.get(cmd)
        if bounds is None or not (bounds[0] <= msg.size and (msg.size <= bounds[1] or bounds[1] == MAX_PACKET)):
            self.errors["request_invalid_command"] += 1
            self._lose_sync()
            return
        if self._auth is not None:  # a command before the handshake's end: its answer was lost
            self.errors["request_unanswered"] += 1
            self._auth = None
            self.out_of_step = True
        ex = _Exchange(cmd, msg, self._request_body(cmd, payload, msg))
        if cmd in _STATEMENT_COMMANDS:
            ex.stmt_id = wire.le_int(payload, 1, 4) or 0
        if self._pending and not self._may_queue(ex):
            head = self._pending[0]
            if head.kind == _UNTIL_NEXT and head.packets and len(self._pending) == 1:
                self._pending.popleft()
                self._emit(head, RESP_UNKNOWN)
            else:
                self.errors["request_unanswered"] += len(self._pending)
                self._pending.clear()
                self.out_of_step = True
                self._resp = _Framer(self._keep)  # what it held belonged to a lost response
        self._prepare_tail = None
        self._pending.append(ex)
        if cmd == wire.COM_STMT_PREPARE:
            ex.prepared = self._last_prepared = _Statement(ex.body, 0)
        self._answer_silent()

    def _may_queue(self, ex: _Exchange) -> bool:
        """May ``ex`` wait behind the commands still waiting for their responses? Only an execution
        of the statement being prepared (MariaDB's execute direct)."""
        if ex.cmd not in (wire.COM_STMT_EXECUTE, wire.COM_STMT_CLOSE) or ex.stmt_id != LAST_PREPARED_ID:
            return False
        return all(p.cmd in (wire.COM_STMT_PREPARE, wire.COM_STMT_EXECUTE) for p in self._pending)

    def _request_body(self, cmd: int, payload: bytes, msg: _Message) -> str:
        if cmd in _STRING_COMMANDS:
            return wire.text(payload[1:])
        if cmd in _STATEMENT_COMMANDS:
            return ""  # filled in when its turn comes (the statement may still be being prepared)
        if cmd == wire.COM_CHANGE_USER:
            # user NUL, the auth response after a 1-byte length (CLIENT_SECURE_CONNECTION, which
            # every 4.1 client sends), the database NUL, ...
            user = wire.nul_string(payload, 1)
            if user is None:
                return f"user= auth_response={self._secret(b'')}"
            pos = user[1]
            n = payload[pos] if pos < len(payload) else 0
            auth, pos = payload[pos + 1 : pos + 1 + n], pos + 1 + n
            db = wire.nul_string(payload, pos)
            database = f" database={wire.text(db[0])}" if db is not None and db[0] else ""
            return f"user={wire.text(user[0])}{database} auth_response={self._secret(auth)}"
        return ""

    def _secret(self, data: bytes) -> str:
        return data.hex() if self.keep_secrets else SECRET_MARKER

    def _answer_silent(self) -> None:
        """Commands at the head that are answered by nothing complete now, and statement ids are
        resolved in order."""
        while self._pending:
            head = self._pending[0]
            if head.cmd in _STATEMENT_COMMANDS and not head.resolved:
                head.resolved = True
                self._resolve_statement(head)
            if head.kind != _NONE:
                return
            self._pending.popleft()
            head.start_ns = head.end_ns = head.msg.start_ns  # Pixie: the response's time is the request's
            self._emit(head, RESP_NONE)

    def _resolve_statement(self, ex: _Exchange) -> None:
        payload = bytes(ex.msg.payload)
        stmt = self._last_prepared if ex.stmt_id == LAST_PREPARED_ID else self._statements.get(ex.stmt_id)
        if ex.cmd == wire.COM_STMT_CLOSE:
            self._statements.pop(ex.stmt_id, None)
        if ex.cmd != wire.COM_STMT_EXECUTE:
            return
        if stmt is None:
            ex.body = f"Execute stmt_id={ex.stmt_id}."  # Pixie's text for an unknown statement
            return
        values, types, complete = wire.execute_params(payload, stmt.num_params, stmt.types)
        if types is not None:
            stmt.types = types
        if not complete:
            values.append("<undecoded>")
        ex.body = f"query=[{stmt.query}] params=[{', '.join(values)}]"

    # -- the handshake ------------------------------------------------------------------------
    def _handshake_response(self, msg: _Message, payload: bytes) -> None:
        caps = int.from_bytes(payload[:4], "little")
        # Negotiated: what both ends have (the client's alone when the greeting was not seen).
        server_caps = self._server_caps if self._handshake == _GREETED and self._server_caps else ~0
        self.deprecate_eof = bool(caps & server_caps & CLIENT_DEPRECATE_EOF)
        if caps & CLIENT_SSL and msg.size == 32:
            self.upgraded = True  # an SSL request: TLS from here on
            return
        self._handshake = _AUTHENTICATING
        self._auth = _Exchange(wire.COM_CONNECT, msg, _handshake_body(payload, caps, self._secret))
        self._auth.kind = _AUTH

    def _on_auth_packet(self, msg: _Message, payload: bytes) -> None:
        ex = self._auth
        assert ex is not None
        if msg.seq != ex.expect_seq:
            self.errors["response_out_of_sequence"] += 1
            self._auth = None
            self._lose_sync()
            return
        ex.expect_seq = (msg.last_seq + 1) & 0xFF
        self._take_packet(ex, msg)
        try:
            done = _auth_step(ex, payload, msg.size)
        except _Desync:
            self.errors["response_malformed"] += 1
            self._auth = None
            self._lose_sync()
            return
        if done:
            self._auth = None
            self._handshake = _CONNECTED
            self.exchanges += 1
            self._emit(ex, ex.status)

    # -- responses ----------------------------------------------------------------------------
    def _feed_responses(self, data: bytes, ts_ns: int) -> None:
        """Server bytes: one message at a time, except a result set's plain packets, read where
        they lie (most of a response's packets are rows: a message object each would cost most of
        the parsing)."""
        framer = self._resp
        pos, n = 0, len(data)
        while pos < n or framer.in_payload:
            if framer.idle and self._pending and self._auth is None:
                ex = self._pending[0]
                if ex.kind == _RESULTSET and ex.state in _SCANNED and ts_ns >= ex.msg.start_ns:
                    pos = _scan_result_set(ex, data, pos, ts_ns)
                    if ex.status != RESP_UNKNOWN:  # its end was there
                        self._complete(ex)
                        continue
                    if pos == n:
                        return
            messages = framer.feed(data, ts_ns, pos, one=True)
            if not messages:
                return  # the rest is part of a message: the framer holds it
            pos = framer.pos
            if not self._on_response(messages[0]):
                return  # sync lost: the rest waits for the next command

    def _on_response(self, msg: _Message) -> bool:
        """One server message; False when it lost the sync."""
        payload = bytes(msg.payload)
        if self._handshake == _NO_HANDSHAKE and not self._pending and msg.seq == 0 and looks_like_greeting(payload):
            self._handshake = _GREETED
            self._server_caps = _greeting_caps(payload)
            return True
        if self._auth is not None:
            self._on_auth_packet(msg, payload)
            return not self._resyncing
        if not self._pending:
            if (
                self._prepare_tail is not None
                and msg.seq == self._prepare_tail
                and wire.is_eof_packet(payload, msg.size)
            ):
                self.deprecate_eof = False  # the EOF an assumed CLIENT_DEPRECATE_EOF left out
                self._prepare_tail = None
                return True
            self.errors["response_without_request"] += 1
            self.out_of_step = True
            return True
        ex = self._pending[0]
        if msg.start_ns < ex.msg.start_ns:
            # It began before the command was sent: it answers an earlier command (lost, or
            # before the tracer looked), never this one. Dropped (counted once per command): the
            # command waits for a response that begins after it.
            if not ex.stale_counted:
                ex.stale_counted = True
                self.errors["response_before_request"] += 1
            self.out_of_step = True
            return True
        if msg.seq != ex.expect_seq:
            self.errors["response_out_of_sequence"] += 1
            self.out_of_step = True
            self._lose_sync()
            return False
        ex.expect_seq = (msg.last_seq + 1) & 0xFF
        self._take_packet(ex, msg)
        try:
            done = self._step(ex, payload, msg.size)
        except _Desync:
            self.errors["response_malformed"] += 1
            self._lose_sync()
            return False
        if done:
            self._complete(ex)
        return True

    def _complete(self, ex: _Exchange) -> None:
        """``ex`` (the first command waiting) has its whole response."""
        self._pending.popleft()
        self.exchanges += 1
        if ex.cmd in (wire.COM_CHANGE_USER, wire.COM_RESET_CONNECTION) and ex.status == RESP_OK:
            self._statements.clear()  # a new session: its statements are gone
        self._emit(ex, ex.status)
        self._answer_silent()

    @staticmethod
    def _take_packet(ex: _Exchange, msg: _Message) -> None:
        if not ex.packets:
            ex.start_ns = msg.start_ns
        ex.packets += 1
        ex.resp_size += msg.size
        ex.end_ns = msg.end_ns

    def _step(self, ex: _Exchange, payload: bytes, size: int) -> bool:
        """One response message for ``ex``: True when its response is complete."""
        kind = ex.kind
        if kind == _UNTIL_NEXT:
            return False
        if kind == _AUTH:
            return _auth_step(ex, payload, size)
        if not payload:
            raise _Desync
        first = payload[0]
        if ex.state in (_FIRST, _INFILE) or kind in (_SIMPLE, _STATISTICS):
            if first == wire.ERR_HEADER and kind != _STATISTICS:
                _error(ex, payload)
                return True
            if kind == _STATISTICS:
                ex.parts.append(wire.text(payload))
                ex.status = RESP_OK
                return True
            if kind == _SIMPLE:
                if first == wire.OK_HEADER or wire.is_eof_packet(payload, size) or wire.is_ok_packet(payload, size):
                    ex.status = RESP_OK
                    return True
                raise _Desync
            if kind == _PREPARE:
                return self._prepare_ok(ex, payload, size)
            if kind == _FIELD_LIST:
                ex.state = _COLUMNS
                return self._field_list(ex, payload, size)
            # a result set, or OK (an INSERT, a LOAD DATA's end), or LOCAL INFILE
            if first == wire.OK_HEADER:
                fields = wire.ok_fields(payload)
                if fields is None:
                    raise _Desync
                ex.parts.append(f"Affected rows = {fields[0]}")
                if fields[2] & wire.SERVER_MORE_RESULTS_EXIST:
                    return False
                ex.status = RESP_OK
                return True
            if first == wire.LOCAL_INFILE_HEADER and ex.state == _FIRST:
                ex.state = _INFILE
                return False
            count = wire.lenenc_int(payload, 0)
            # MariaDB adds a byte with MARIADB_CLIENT_CACHE_METADATA: 0 when the column definitions
            # are not sent again (the client has them from an earlier execution).
            if count is None or count[0] == 0 or ex.state == _INFILE or len(payload) - count[1] not in (0, 1):
                raise _Desync
            resend = len(payload) == count[1] or payload[-1] != 0
            ex.state, ex.left, ex.rows = (_COLUMNS, count[0], 0) if resend else (_AFTER_COLUMNS, 0, 0)
            return False
        if kind == _PREPARE:
            return self._prepare_defs(ex, payload, size)
        if kind == _FIELD_LIST:
            return self._field_list(ex, payload, size)
        if ex.state == _COLUMNS:
            if not _is_column_def(payload):
                raise _Desync
            ex.left -= 1
            if not ex.left:
                ex.state = _AFTER_COLUMNS
            return False
        if ex.state == _AFTER_COLUMNS:
            ex.state = _ROWS
            if wire.is_eof_packet(payload, size):
                return False  # the EOF after the column definitions (no CLIENT_DEPRECATE_EOF)
        # _ROWS: a row, or the end of the result set
        if first == wire.ERR_HEADER:
            _error(ex, payload)
            return True
        if first == wire.EOF_HEADER and size < MAX_PACKET:
            if not (wire.is_eof_packet(payload, size) or wire.is_ok_packet(payload, size)):
                raise _Desync
            ex.parts.append(f"Resultset rows = {ex.rows}")
            if wire.end_status(payload, size) & wire.SERVER_MORE_RESULTS_EXIST:
                ex.state = _FIRST
                return False
            ex.status = RESP_OK
            return True
        ex.rows += 1
        return False

    def _prepare_ok(self, ex: _Exchange, payload: bytes, size: int) -> bool:
        """COM_STMT_PREPARE_OK: 0x00, statement id(4), columns(2), parameters(2), 0x00, warnings(2)."""
        if size != 12 or len(payload) != 12 or payload[0] != 0 or payload[9] != 0:  # IsStmtPrepareOKPacket
            raise _Desync
        stmt_id = int.from_bytes(payload[1:5], "little")
        ex.num_columns = ex.left = int.from_bytes(payload[5:7], "little")
        ex.num_params = ex.rows = int.from_bytes(payload[7:9], "little")
        stmt = ex.prepared or _Statement(ex.body, 0)
        stmt.num_params = ex.num_params
        self._statements[stmt_id] = stmt
        ex.state = _PARAM_DEFS
        return self._prepare_progress(ex)

    def _prepare_defs(self, ex: _Exchange, payload: bytes, size: int) -> bool:
        """A packet after COM_STMT_PREPARE_OK: parameter definitions (``ex.rows`` to come), their EOF
        without CLIENT_DEPRECATE_EOF, column definitions (``ex.left``), their EOF likewise."""
        eof = wire.is_eof_packet(payload, size)
        if ex.state == _PARAM_DEFS and not eof and _is_column_def(payload):
            ex.rows -= 1
        elif ex.state == _PARAM_EOF and eof:
            ex.state = _COLUMN_DEFS
        elif (
            ex.state == _COLUMN_DEFS
            and eof
            and self.deprecate_eof is None
            and ex.num_params
            and (ex.left == ex.num_columns)
        ):
            self.deprecate_eof = False  # the parameters' EOF: the capability was assumed wrongly
        elif ex.state == _COLUMN_DEFS and not eof and _is_column_def(payload) and ex.left > 0:
            ex.left -= 1
        elif ex.state == _COLUMN_EOF and eof:
            ex.status = RESP_OK
            return True
        else:
            raise _Desync
        return self._prepare_progress(ex)

    def _prepare_progress(self, ex: _Exchange) -> bool:
        """Is the COM_STMT_PREPARE response complete? With CLIENT_DEPRECATE_EOF (negotiated or
        assumed) after its last definition; without, after the EOF that follows each block."""
        legacy = self.deprecate_eof is False
        if ex.state == _PARAM_DEFS and ex.rows == 0:
            ex.state = _PARAM_EOF if ex.num_params and legacy else _COLUMN_DEFS
        if ex.state == _COLUMN_DEFS and ex.left == 0:
            if ex.num_columns and legacy:
                ex.state = _COLUMN_EOF
                return False
            ex.status = RESP_OK
            if self.deprecate_eof is None and (ex.num_params or ex.num_columns):
                self._prepare_tail = ex.expect_seq
            return True
        return False

    def _field_list(self, ex: _Exchange, payload: bytes, size: int) -> bool:
        if payload[0] == wire.ERR_HEADER:
            _error(ex, payload)
            return True
        if wire.is_eof_packet(payload, size) or wire.is_ok_packet(payload, size) and payload[0] == wire.EOF_HEADER:
            ex.status = RESP_OK
            return True
        if not _is_column_def(payload):
            raise _Desync
        return False

    # -- pairs --------------------------------------------------------------------------------
    def _emit(self, ex: _Exchange, status: int) -> None:
        limit = self.body_limit
        req = MysqlRequest(ex.cmd, truncate(ex.body, limit), ex.msg.start_ns, ex.msg.size)
        resp = MysqlResponse(status, truncate(", ".join(ex.parts), limit), ex.end_ns, ex.resp_size, ex.start_ns)
        self._done.append((req, resp))

    def _lose_sync(self) -> None:
        """Bytes that do not fit: drop every waiting command and start over at the next one."""
        if self._pending:
            self.errors["request_unanswered_after_desync"] += len(self._pending)
        self._pending.clear()
        self._auth = None
        self._prepare_tail = None
        self._resyncing = True
        self._req = _Framer(self._keep, self._request_header_ok)
        self._resp = _Framer(self._keep)

    def _take(self) -> list[tuple[MysqlRequest, MysqlResponse]]:
        if not self._done:
            return []
        done, self._done = self._done, []
        return done


def _scan_result_set(ex: _Exchange, data: bytes, pos: int, ts_ns: int) -> int:
    """The whole packets at ``data[pos:]`` of ``ex``'s result set that are plainly what they look
    like (the column count, column definitions, the EOF after them, rows, the EOF that ends the
    last result set), taken as :meth:`MysqlStitcher._step` would take them but without a message
    each; where the first other one begins (an OK, an error, LOCAL INFILE, a packet out of
    sequence or not whole, ...: for ``_step``). ``ex.status`` is set when its end was taken."""
    n = len(data)
    start, seq = pos, ex.expect_seq
    state, left = ex.state, ex.left
    header = _PACKET_HEADER
    packets = rows = 0
    while state != _ROWS and pos + 4 < n:
        word = header(data, pos)[0]  # length (3 bytes), sequence number
        length = word & MAX_PACKET
        end = pos + 4 + length
        if word >> 24 != seq or not 0 < length < MAX_PACKET or end > n:
            break
        if state == _FIRST:  # the column count, one byte (and MariaDB's metadata byte)
            count = data[pos + 4]
            if not (0 < count < wire.LOCAL_INFILE_HEADER and length <= 2):
                break
            resend = length == 1 or data[pos + 5] != 0  # (0: the client has the definitions)
            state, left = (_COLUMNS, count) if resend else (_AFTER_COLUMNS, 0)
            ex.rows = 0
        elif state == _COLUMNS:
            if data[pos + 4 : pos + 8] != b"\x03def":  # not a column definition (_is_column_def)
                break
            left -= 1
            if not left:
                state = _AFTER_COLUMNS
        else:  # _AFTER_COLUMNS: the EOF after the definitions (no CLIENT_DEPRECATE_EOF), or a row
            state = _ROWS
            if not (data[pos + 4] == wire.EOF_HEADER and length in (1, 5)):  # wire.is_eof_packet
                break  # a row: for the loop below
        packets += 1
        seq = (seq + 1) & 0xFF
        pos = end
    if state == _ROWS:  # the bulk of a result set: as little work per row as it takes
        while pos + 4 < n:
            word = header(data, pos)[0]
            length = word & MAX_PACKET
            end = pos + 4 + length
            if word >> 24 != seq or not 0 < length < MAX_PACKET or end > n:
                break
            if data[pos + 4] >= wire.EOF_HEADER:  # the end (EOF or OK), or an error
                # An EOF packet (5 bytes) ending the last result set (no more results in the
                # status flags' low byte) is taken; anything else (an OK packet, more results, an
                # error) is _step's.
                last = not data[pos + 7] & wire.SERVER_MORE_RESULTS_EXIST if length == 5 else False
                if last and data[pos + 4] == wire.EOF_HEADER:
                    packets += 1
                    seq = (seq + 1) & 0xFF
                    pos = end
                    ex.parts.append(f"Resultset rows = {ex.rows + rows}")
                    ex.status = RESP_OK
                break
            rows += 1
            seq = (seq + 1) & 0xFF
            pos = end
    ex.state, ex.left = state, left
    if pos != start:
        if not ex.packets:
            ex.start_ns = ts_ns  # the response's first packet
        ex.rows += rows
        ex.packets += packets + rows
        ex.resp_size += pos - start - 4 * (packets + rows)
        ex.expect_seq = seq
        ex.end_ns = ts_ns
    return pos


def _error(ex: _Exchange, payload: bytes) -> None:
    fields = wire.err_fields(payload)
    if fields is None:
        raise _Desync
    code, state, message = fields
    ex.parts.append(f"ERROR {code} ({state}): {message}" if state else f"ERROR {code}: {message}")
    ex.status = RESP_ERR


def _auth_step(ex: _Exchange, payload: bytes, size: int) -> bool:
    """A server packet of an authentication exchange (the handshake, COM_CHANGE_USER): OK or ERR
    ends it; an auth switch request (0xfe) or more auth data (0x01) goes on."""
    first = payload[0] if payload else -1
    if first == wire.OK_HEADER:
        ex.status = RESP_OK
        return True
    if first == wire.ERR_HEADER:
        _error(ex, payload)
        return True
    if first in (wire.EOF_HEADER, 0x01):
        return False
    raise _Desync


def _is_column_def(payload: bytes) -> bool:
    """A column definition starts with the catalog, always "def" (Pixie's ProcessColumnDefPacket)."""
    return payload[:4] == b"\x03def"


def _handshake_body(payload: bytes, caps: int, secret: Callable[[bytes], str]) -> str:
    """req_body of the handshake's row: user, database and auth plugin; the auth response as the
    marker (or, kept by choice, hex). ``secret`` turns the auth response's bytes into text."""
    pos = 32
    user = wire.nul_string(payload, pos)
    if user is None:
        return f"user= auth_response={secret(b'')}"
    name, pos = user
    auth: bytes = b""
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        found = wire.lenenc_bytes(payload, pos)
        if found is not None:
            auth, pos = found
    elif caps & CLIENT_SECURE_CONNECTION:
        n = payload[pos] if pos < len(payload) else 0
        auth, pos = payload[pos + 1 : pos + 1 + n], pos + 1 + n
    else:
        found_nul = wire.nul_string(payload, pos)
        if found_nul is not None:
            auth, pos = found_nul
    parts = [f"user={wire.text(name)}"]
    if caps & CLIENT_CONNECT_WITH_DB:
        db = wire.nul_string(payload, pos)
        if db is not None:
            if db[0]:
                parts.append(f"database={wire.text(db[0])}")
            pos = db[1]
    if caps & CLIENT_PLUGIN_AUTH:
        plugin = wire.nul_string(payload, pos)
        if plugin is not None and plugin[0]:
            parts.append(f"auth_plugin={wire.text(plugin[0])}")
    parts.append(f"auth_response={secret(auth)}")
    return " ".join(parts)


def _greeting_caps(payload: bytes) -> int:
    """The server's capability flags from its greeting (protocol 10)."""
    version = wire.nul_string(payload, 1)
    if version is None:
        return 0
    pos = version[1] + 4 + 8 + 1  # connection id, auth data part 1, filler
    low = wire.le_int(payload, pos, 2)
    high = wire.le_int(payload, pos + 2 + 1 + 2, 2)  # after charset and status flags
    if low is None:
        return 0
    return low | ((high or 0) << 16)


# -- protocol inference -------------------------------------------------------------------------
# Commands that may start what a client sends on a connection seen from mid-stream (Pixie's
# infer_mysql_message accepts Connect, Query, StmtPrepare, StmtExecute, StmtClose; pxq adds the
# ones its tests see first on a reused connection: InitDB, Ping, Quit, StmtReset, ResetConnection).
_INFERRED_COMMANDS = frozenset(
    {wire.COM_QUERY, wire.COM_STMT_PREPARE, wire.COM_STMT_EXECUTE, wire.COM_STMT_CLOSE, wire.COM_INIT_DB,
     wire.COM_PING, wire.COM_QUIT, wire.COM_STMT_RESET, wire.COM_RESET_CONNECTION}
)  # fmt: skip
# The longest command inference accepts (Pixie: 10,000 bytes, as a guard against false positives).
MAX_INFERRED_LENGTH = 10_000


def _plausible_command(data: bytes, pos: int = 0, depth: int = 0) -> bool:
    """Could a command packet start at ``pos`` of ``data``? (No copy of ``data``: a resync scans
    every position of a read.)"""
    if len(data) - pos < 5 or data[pos + 3] != 0:
        return False
    length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
    cmd = data[pos + 4]
    if cmd not in _INFERRED_COMMANDS or not 0 < length <= MAX_INFERRED_LENGTH:
        return False
    low, high = COMMAND_LENGTHS[cmd]
    if not low <= length <= high:
        return False
    if cmd in (wire.COM_QUERY, wire.COM_STMT_PREPARE, wire.COM_INIT_DB):
        text = data[pos + 5 : pos + 5 + min(length - 1, 64)]
        if not text or any(b < 0x20 and b not in (0x09, 0x0A, 0x0D) for b in text):
            return False
    rest = pos + 4 + length  # where the next packet would start
    if rest < len(data) and length < 16:
        # a short fixed-size command is weak evidence: what follows must be a command too
        return depth < 2 and _plausible_command(data, rest, depth + 1) or len(data) - rest < 5
    return True


def _command_start(data: bytes) -> int:
    """Where a command starts in ``data`` (a chunk of client bytes after sync was lost): its
    start if it holds one there, else the first place one plausibly starts (Pixie's
    FindFrameBoundary), else -1."""
    for i in range(max(0, len(data) - 4)):
        if data[i + 3] == 0 and _plausible_command(data, i):
            return i
    return -1


def looks_like_handshake_response(payload: bytes, complete: bool = True) -> bool:
    """The client's handshake response (or SSL request), protocol 4.1: capabilities with
    CLIENT_PROTOCOL_41, max packet size, charset, 23 filler bytes (zero, but for MariaDB's extended
    capabilities in the last 4), then (unless an SSL request) the user name ending in NUL. Of one
    read in pieces (not ``complete``), the user name may not have ended yet."""
    if len(payload) < 32:
        return False
    caps = int.from_bytes(payload[:4], "little")
    if not caps & CLIENT_PROTOCOL_41 or any(payload[9:28]):
        return False
    return len(payload) == 32 and bool(caps & CLIENT_SSL) or b"\x00" in payload[32:] or not complete


def looks_like_greeting(payload: bytes, complete: bool = True) -> bool:
    """The server's greeting, protocol 10: 0x0a, a printable version string ending in NUL, and at
    least the connection id and the first 8 bytes of auth data after it. Of a greeting read in
    pieces (not ``complete``), the part seen: 0x0a and at least 8 printable version bytes so far."""
    if payload[:1] != b"\x0a":
        return False
    end = payload.find(b"\x00", 1)
    version = payload[1:end] if end >= 0 else payload[1:]
    if not all(0x20 <= b < 0x7F for b in version[:64]):
        return False
    if end < 0:
        return 8 <= len(version) <= 64
    return 2 <= end <= 64 and (len(payload) >= end + 1 + 4 + 8 + 1 or not complete)


def looks_like_mysql_request(first_bytes: bytes) -> bool:
    """Protocol inference on a client's first bytes: a command packet (sequence 0, a command a
    client sends, a plausible length, Pixie's infer_mysql_message) or the handshake response (of
    one read in pieces, at least its first 12 bytes: CLIENT_PROTOCOL_41 and zero filler so far)."""
    if _plausible_command(first_bytes):
        return True
    if len(first_bytes) < 16 or first_bytes[3] != 1:
        return False
    length = int.from_bytes(first_bytes[:3], "little")
    payload = first_bytes[4 : 4 + length]
    if not 32 <= length <= MAX_INFERRED_LENGTH:
        return False
    if len(payload) >= 32:
        return looks_like_handshake_response(payload, complete=len(payload) == length)
    caps = int.from_bytes(payload[:4], "little")
    return bool(caps & CLIENT_PROTOCOL_41) and not any(payload[9:28])


def looks_like_mysql_response(first_bytes: bytes) -> bool:
    """Protocol inference on a server's first bytes: its greeting (sequence 0, protocol 10)."""
    if len(first_bytes) < 5 or first_bytes[3] != 0:
        return False
    length = int.from_bytes(first_bytes[:3], "little")
    payload = first_bytes[4 : 4 + length]
    return 20 <= length <= 1024 and looks_like_greeting(payload, complete=len(payload) == length)


def head_incomplete(first_bytes: bytes) -> bool:
    """A connection's first bytes that may begin a greeting or a handshake response read in
    pieces, too little of it to tell yet (the registry's ``head_incomplete``: the tracker waits for
    more). A greeting's first read may hold its header, 0x0a and a few version bytes: 0x0a is a
    newline, so the tracker would not wait for it on its own."""
    if len(first_bytes) < 4:
        return True
    length = int.from_bytes(first_bytes[:3], "little")
    seq = first_bytes[3]
    payload = first_bytes[4 : 4 + length]
    if len(payload) >= length:
        return False  # whole: it is what it looks like
    if seq == 0:  # the greeting: 0x0a, printable version bytes, no NUL yet, fewer than inference needs
        version = payload[1:]
        return (
            20 <= length <= 1024
            and payload[:1] in (b"", b"\x0a")
            and len(version) < 8
            and all(0x20 <= b < 0x7F for b in version)
        )
    # the handshake response: fewer than the 12 payload bytes inference needs
    return seq == 1 and 32 <= length <= MAX_INFERRED_LENGTH and len(payload) < 12
