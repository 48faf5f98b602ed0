"""Redis: both directions of one connection parsed (:mod:`.resp`) and paired.

Pairing is by order, the way Redis answers: each command gets its replies in the order the
commands were sent, however many are in flight (pipelining). The exceptions are the ones Redis
makes, and are handled here:

* Pub/sub. A SUBSCRIBE (PSUBSCRIBE, SSUBSCRIBE, and the UNSUBSCRIBE commands) is answered with one
  confirmation per channel; its row shows them (one per line). A message pushed to a subscriber
  (``message``/``pmessage``/``smessage`` arrays in RESP2, ``>`` pushes in RESP3) answers no
  command: it is a row of its own whose ``req_cmd`` is ``PUSH PUB`` and whose ``req_args`` is
  empty, as Pixie writes it (``StitchFrames`` in
  src/stirling/source_connectors/socket_tracer/protocols/redis/stitcher.h). Other RESP3 pushes
  (client-side caching's ``invalidate``) are rows of ``req_cmd`` ``PUSH``.
* MULTI/EXEC needs nothing special: each queued command is answered ``QUEUED`` in order, and
  EXEC's row shows the array of the transaction's replies.
* ``CLIENT REPLY OFF``/``SKIP`` make the server answer nothing (from then on, or for the next
  command): those commands are rows with an empty ``resp`` and no latency, so that the replies
  to later commands stay with their own commands.
* Inline commands (a line of words, as typed in telnet) are parsed like Redis does
  (``sdssplitargs``: spaces, double quotes with escapes, single quotes).

Pixie pairs by timestamps (``StitchMessagesWithTimestampOrder``) and formats every array it
parses, replies included, as if it might be a command: a reply that happens to start with a
command's name (``SUBSCRIBE``'s confirmation) becomes a row of its own with the request left
waiting. Here replies are never read as commands; SUBSCRIBE's row is the command with its
confirmations.

Nothing here raises. A side that stops being RESP (``request_parse_error``,
``response_parse_error``) or a message larger than :data:`MAX_MESSAGE_BYTES` (``message_too_large``)
loses the count of messages in flight, so the stitcher starts over: the requests waiting are
counted (``request_unanswered_after_error``), both sides' buffers dropped, and pairing resumes at
the next request; a reply that began before that request was sent answers an older one and is
dropped (``response_before_request``), as is every reply while no request waits after such an
error. A lost reply cannot be told apart from a slow one, so after bytes were lost the connection
tracker starts over too (:meth:`RedisStitcher.response_gap` declines).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from pxq.agent.protocols.interface import ParseOptions
from pxq.agent.protocols.redis import resp
from pxq.agent.protocols.redis.commands import COMMAND_PREFIXES, COMMAND_WORDS, format_args, json_array, lookup, redact

# What one side may hold of a message not complete yet; a larger one is given up
# (``message_too_large``): the kernel copies 64 KiB + the body limit of a call anyway, so a
# message this large has lost bytes on its way long before.
MAX_MESSAGE_BYTES = 16 << 20
# An inline command's longest line (Redis' PROTO_INLINE_MAX_SIZE).
MAX_INLINE = 64 * 1024
# What a row shows for the part of a value beyond the body limit.
TRUNCATED_MARKER = "<truncated: {size} bytes>"

PUSH_PUB = "PUSH PUB"
PUSH_OTHER = "PUSH"
# Pub/sub confirmations, by the command that asks for them.
_SUBSCRIBE_KINDS = {
    "SUBSCRIBE": "subscribe", "PSUBSCRIBE": "psubscribe", "SSUBSCRIBE": "ssubscribe",
    "UNSUBSCRIBE": "unsubscribe", "PUNSUBSCRIBE": "punsubscribe", "SUNSUBSCRIBE": "sunsubscribe",
}  # fmt: skip
_CONFIRMATIONS = frozenset(_SUBSCRIBE_KINDS.values())
_PUBLISHED = frozenset(("message", "pmessage", "smessage"))


@dataclass(eq=False, slots=True)
class RedisMessage:
    """A command (``cmd``, ``payload`` its ``req_args``) or a reply (``payload`` its ``resp``)."""

    cmd: str
    payload: str
    start_ns: int
    end_ns: int
    # A command's pub/sub confirmations: the kind it expects, how many are still due (-1: as
    # many as the server has channels, when an UNSUBSCRIBE names none) and those seen.
    confirm_kind: str = ""
    confirm_due: int = 0
    confirmations: list[str] | None = None


@dataclass(eq=False, slots=True)
class RedisTransaction:
    """One row of ``redis_events``: a command and its reply (Pixie's ``redis::Record``)."""

    req_cmd: str
    req_args: str
    resp: str
    req_start_ns: int
    resp_end_ns: int

    @property
    def latency_ns(self) -> int:
        return self.resp_end_ns - self.req_start_ns


def make_record(req: RedisMessage, resp_msg: RedisMessage) -> RedisTransaction:
    return RedisTransaction(req.cmd, req.payload, resp_msg.payload, req.start_ns, resp_msg.end_ns)


# -- inference ----------------------------------------------------------------------------------
def looks_like_redis_request(first_bytes: bytes) -> bool:
    """Could a client's stream start with these bytes? An array of bulk strings whose first is a
    command Redis knows (Pixie's ``is_redis_message`` takes any RESP type byte; a command name is
    far more telling), or a start of one cut short where it could still become one (a first read
    of a few bytes: ``*3\r\n``). Inline commands (a line of words) are parsed on a connection
    known to be Redis but never make one: too many text protocols start with a line whose first
    word is also a Redis command (``HELLO``, ``QUIT``, ``GET``)."""
    data = bytes(first_bytes)
    if data[:1] != b"*":
        return False
    try:
        n, pos = resp._size(data, 1)
        if n < 1:
            return False
        if pos == len(data):
            return True  # "*3\r\n" and no more yet
        if data[pos : pos + 1] != b"$":
            return False
        size, pos = resp._size(data, pos + 1)
    except resp.NeedMore:
        return data[1:].split(b"\r", 1)[0].replace(b"$", b"").replace(b"\n", b"").isdigit()
    except resp.Invalid:
        return False
    word = data[pos : pos + size].upper().decode("latin-1")
    if not 0 < size <= 32:
        return False
    if len(word) < size:
        return word in COMMAND_PREFIXES  # the name cut short: could it still be a command's?
    return word in COMMAND_WORDS


resp_type_bytes = frozenset(bytes([b]) for b in resp.TYPE_BYTES)


def looks_like_redis_response(first_bytes: bytes) -> bool:
    """Could a server's stream start with these bytes? A RESP value, or the start of one whose
    first line is complete."""
    data = bytes(first_bytes)
    if data[:1] not in resp_type_bytes or b"\r\n" not in data[:64]:
        return False
    try:
        resp.parse(data)
    except resp.NeedMore:
        return True
    except resp.Invalid:
        return False
    return True


# -- inline commands ------------------------------------------------------------------------------
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}


def split_inline(line: str) -> list[str] | None:
    """Redis' ``sdssplitargs``: words split at spaces, double quotes with backslash escapes
    (``\\xHH`` too), single quotes with ``\\'``; None for unbalanced quotes (Redis answers a
    protocol error and closes)."""
    # Redis splits a C string: a NUL ends the line (and a NUL left in it would stop no loop here).
    line = line.split("\0", 1)[0]
    words: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            return words
        word: list[str] = []
        in_dq = in_sq = False
        while True:
            if in_dq:
                if i >= n:
                    return None
                c = line[i]
                if c == "\\" and i + 3 < n and line[i + 1] == "x" and _is_hex(line[i + 2 : i + 4]):
                    word.append(chr(int(line[i + 2 : i + 4], 16)))
                    i += 3
                elif c == "\\" and i + 1 < n:
                    word.append(_ESCAPES.get(line[i + 1], line[i + 1]))
                    i += 1
                elif c == '"':
                    if i + 1 < n and not line[i + 1].isspace():
                        return None  # the closing quote must be followed by a space
                    in_dq = False
                    i += 1
                    break
                else:
                    word.append(c)
            elif in_sq:
                if i >= n:
                    return None
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] == "'":
                    word.append("'")
                    i += 1
                elif c == "'":
                    if i + 1 < n and not line[i + 1].isspace():
                        return None
                    in_sq = False
                    i += 1
                    break
                else:
                    word.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in " \n\r\t":
                    break
                if c == '"':
                    in_dq = True
                elif c == "'":
                    in_sq = True
                else:
                    word.append(c)
            i += 1
        words.append("".join(word))


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)


# -- the stitcher ---------------------------------------------------------------------------------
class _Side:
    """One direction's bytes not parsed yet."""

    __slots__ = ("buf", "head_ns", "need")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.head_ns = 0  # timestamp of the chunk holding the first byte of buf
        self.need = 0  # parse again once buf holds this many bytes (NeedMore's lower bound)

    def clear(self) -> None:
        self.buf = bytearray()
        self.need = 0


class RedisStitcher:
    """Both directions of one Redis connection: bytes in, (command, reply) pairs out."""

    def __init__(self, options: ParseOptions) -> None:
        self.body_limit = options.body_limit
        self.keep_secrets = options.keep_secrets
        self.errors: Counter[str] = Counter()
        self.upgraded = False  # Redis never leaves the protocol
        self.out_of_step = False  # two commands waiting at once, or a reply with none waiting
        self.exchanges = 0  # commands answered
        self._req = _Side()
        self._resp = _Side()
        self._waiting: deque[RedisMessage] = deque()  # commands sent, not answered yet
        self._done: list[tuple[RedisMessage, RedisMessage]] = []
        self._subscribed = False  # a SUBSCRIBE was seen: RESP2 "message" arrays are pushes
        self._reply_off = False  # CLIENT REPLY OFF in force
        self._skip_next = False  # CLIENT REPLY SKIP: the next command gets no reply
        self._lost_sync = False  # after a parse error: replies wait for a new command
        self._closed = False

    # -- the interface ------------------------------------------------------------------------
    def feed_messages(self, request: bool, data: bytes, ts_ns: int) -> list[tuple[RedisMessage, RedisMessage]]:
        if self._closed or not data:
            return []
        side = self._req if request else self._resp
        if not side.buf:
            if request and self._lost_sync and not looks_like_redis_request(data[:256]):
                return []  # after an error, commands are taken again from one that starts a read
            side.head_ns = ts_ns
        side.buf += data
        if len(side.buf) >= side.need:
            if request:
                self._parse_requests(ts_ns)
            else:
                self._parse_responses(ts_ns)
        if len(side.buf) > MAX_MESSAGE_BYTES:
            self.errors["message_too_large"] += 1
            self._lose_sync()
        return self._take()

    def skip_messages(self, request: bool, n: int, ts_ns: int) -> tuple[list[tuple[RedisMessage, RedisMessage]], int]:
        # Bytes not captured: RESP framing needs every byte (a bulk string's CRLF is checked), so
        # none can be skipped; the tracker counts them lost and starts over.
        return [], n

    def close_messages(self, ts_ns: int) -> list[tuple[RedisMessage, RedisMessage]]:
        if self._closed:
            return []
        self._closed = True
        unanswered = 0
        for req in self._waiting:
            if req.confirmations:  # an UNSUBSCRIBE of every channel: its confirmations are in
                self._done.append((req, self._confirmed(req)))
            else:
                unanswered += 1
        if unanswered:
            self.errors["request_unanswered_at_close"] += unanswered
        if self._req.buf.strip():
            self.errors["request_incomplete_at_close"] += 1
        if self._resp.buf:
            self.errors["response_incomplete_at_close"] += 1
        self._waiting.clear()
        self._req.clear()
        self._resp.clear()
        return self._take()

    def response_gap(self, ts_ns: int) -> bool:
        # How many replies the lost bytes held is unknown (pipelining, pub/sub pushes): pairing
        # on could shift every later pair. The tracker starts over at the next command.
        return False

    # -- requests ----------------------------------------------------------------------------
    def _parse_requests(self, ts_ns: int) -> None:
        side = self._req
        buf, pos, n = side.buf, 0, len(side.buf)
        while pos < n:
            start_ns = side.head_ns if pos == 0 else ts_ns
            if buf[pos] == 0x2A:  # '*': an array of bulk strings
                try:
                    command, end = resp.parse_command(buf, pos)
                    value: object = command
                    if command is None:  # not only bulk strings: the general parser reads it
                        value, end = resp.parse(buf, pos)
                except resp.NeedMore as more:
                    side.need = more.total - pos
                    break
                except resp.Invalid:
                    self._request_error()
                    return
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    self._request_error()  # Redis: "Protocol error: expected '$'", then it closes
                    return
                words: list[str] = value
            else:  # an inline command, up to LF
                end = buf.find(b"\n", pos, pos + MAX_INLINE)
                if end < 0:
                    if n - pos > MAX_INLINE:
                        self._request_error()
                        return
                    side.need = n - pos + 1
                    break
                line = bytes(buf[pos:end]).rstrip(b"\r")
                end += 1
                split = split_inline(line.decode("utf-8", errors="replace"))
                if split is None:
                    self._request_error()
                    return
                words = split
            pos = end
            if words:  # an empty array or line is no command: Redis answers nothing
                self._command(words, start_ns, ts_ns)
        else:
            side.need = 0
        del buf[:pos]
        if pos and buf:
            side.head_ns = ts_ns

    def _command(self, words: list[str], start_ns: int, end_ns: int) -> None:
        cmd, n = lookup(words)
        if cmd is None:
            name, args = "", words  # Pixie: no command, every word in the JSON array
        else:
            name, args = cmd.name, words[n:]
            if not self.keep_secrets:
                args = redact(name, args)
        limit = self.body_limit
        if any(len(a) > limit for a in args):
            args = [_cut(a, limit) for a in args]
        payload = format_args(cmd, args) if cmd is not None else json_array(args)
        req = RedisMessage(name, payload, start_ns, end_ns)
        self._lost_sync = False
        kind = _SUBSCRIBE_KINDS.get(name)
        if kind is not None:
            req.confirm_kind = kind
            req.confirm_due = len(args) if args else (-1 if kind.startswith(("un", "pun", "sun")) else 1)
            req.confirmations = []
            # From any of these on, replies shaped like confirmations or messages are read as
            # such (an UNSUBSCRIBE too: the stitcher may have started after the SUBSCRIBE).
            self._subscribed = True
        elif name == "RESET":
            self._subscribed = self._reply_off = self._skip_next = False
        if name == "CLIENT REPLY" and args:
            mode = args[0].upper()
            if mode in ("OFF", "SKIP"):
                # Neither is answered; OFF silences every command until CLIENT REPLY ON.
                self._reply_off = self._reply_off or mode == "OFF"
                self._skip_next = mode == "SKIP" and not self._reply_off
                self._done.append((req, RedisMessage("", "", start_ns, start_ns)))
                return
            if mode == "ON":
                self._reply_off = self._skip_next = False
        if self._reply_off or self._skip_next:
            self._skip_next = False
            self._done.append((req, RedisMessage("", "", start_ns, start_ns)))
            return
        if self._waiting:
            self.out_of_step = True  # pipelined: sent before the one before it was answered
        self._waiting.append(req)

    def _request_error(self) -> None:
        self.errors["request_parse_error"] += 1
        self._lose_sync()

    # -- responses ---------------------------------------------------------------------------
    def _parse_responses(self, ts_ns: int) -> None:
        side = self._resp
        buf, pos, n = side.buf, 0, len(side.buf)
        while pos < n:
            start_ns = side.head_ns if pos == 0 else ts_ns
            try:
                value, end = resp.parse(buf, pos)
            except resp.NeedMore as more:
                side.need = more.total - pos
                break
            except resp.Invalid:
                self.errors["response_parse_error"] += 1
                self._lose_sync()
                return
            pos = end
            self._reply(value, start_ns, ts_ns)
        else:
            side.need = 0
        del buf[:pos]
        if pos and buf:
            side.head_ns = ts_ns

    def _reply(self, value: object, start_ns: int, end_ns: int) -> None:
        push = isinstance(value, resp.Push)
        kind = ""
        if (push or self._subscribed) and isinstance(value, list) and value and isinstance(value[0], str):
            kind = value[0].lower()
        if kind in _PUBLISHED and (push or len(value) >= 3):  # type: ignore[arg-type]
            self._push(PUSH_PUB, value, start_ns, end_ns)
            return
        head = self._waiting[0] if self._waiting else None
        if kind in _CONFIRMATIONS and len(value) == 3:  # type: ignore[arg-type]
            if head is not None and head.confirm_kind == kind and head.start_ns <= start_ns:
                assert head.confirmations is not None
                head.confirmations.append(self._text(value))
                head.end_ns = end_ns
                if head.confirm_due > 0:
                    head.confirm_due -= 1
                if head.confirm_due == 0 or (head.confirm_due < 0 and value[2] == "0"):  # type: ignore[index]
                    self._waiting.popleft()
                    self.exchanges += 1
                    self._done.append((head, self._confirmed(head)))
            elif not self._lost_sync:
                self.errors["response_without_request"] += 1  # a confirmation of no command seen
                self.out_of_step = True
            return
        elif push:
            self._push(PUSH_OTHER, value, start_ns, end_ns)
            return
        # A command still collecting confirmations (an UNSUBSCRIBE of every channel) is answered.
        while head is not None and head.confirmations:
            self._waiting.popleft()
            self.exchanges += 1
            self._done.append((head, self._confirmed(head)))
            head = self._waiting[0] if self._waiting else None
        if head is None:
            if not self._lost_sync:
                self.errors["response_without_request"] += 1
                self.out_of_step = True
            return
        if start_ns < head.start_ns:
            # It began before the command was sent: it answers an earlier one (lost, or dropped
            # after an error). Pairing it here would shift every later pair by one.
            self.errors["response_before_request"] += 1
            self.out_of_step = True
            return
        self._waiting.popleft()
        self.exchanges += 1
        self._done.append((head, RedisMessage("", self._text(value), start_ns, end_ns)))

    def _push(self, name: str, value: object, start_ns: int, end_ns: int) -> None:
        self._done.append(
            (RedisMessage(name, "", end_ns, end_ns), RedisMessage("", self._text(value), start_ns, end_ns))
        )

    def _confirmed(self, req: RedisMessage) -> RedisMessage:
        return RedisMessage("", "\n".join(req.confirmations or ()), req.end_ns, req.end_ns)

    def _text(self, value: object) -> str:
        out = resp.format_value(value)
        return _cut(out, self.body_limit) if len(out) > self.body_limit else out

    # -- losing track -------------------------------------------------------------------------
    def _lose_sync(self) -> None:
        if self._waiting:
            self.errors["request_unanswered_after_error"] += len(self._waiting)
            self._waiting.clear()
        self._req.clear()
        self._resp.clear()
        self._lost_sync = True

    def _take(self) -> list[tuple[RedisMessage, RedisMessage]]:
        if not self._done:
            return []
        done, self._done = self._done, []
        return done


def _cut(text: str, limit: int) -> str:
    """``text`` kept up to ``limit`` characters, the rest counted in TRUNCATED_MARKER."""
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATED_MARKER.format(size=len(text.encode("utf-8")))
