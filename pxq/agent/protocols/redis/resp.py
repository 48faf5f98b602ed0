"""RESP framing (https://redis.io/docs/latest/develop/reference/protocol-spec/): one message at a
time out of a side's buffered bytes, RESP2 and RESP3 alike.

:func:`parse` returns a message's value and where it ends, raises :class:`NeedMore` (with a lower
bound on the bytes the message needs, so that a large message arriving in many reads is not parsed
again for every read) or :class:`Invalid`. Values are plain Python: an aggregate is a ``list``
(array, set, push) or a :class:`RespMap`, a scalar is the text Pixie shows for it
(src/stirling/source_connectors/socket_tracer/protocols/redis/parse.cc): a simple string or a bulk
string as its text, an error with its ``-`` kept, an integer as its digits, a null bulk string
``<NULL>`` and a null array ``[NULL]``. RESP3 types Pixie does not parse are shown in the same
spirit: null ``<NULL>``, a boolean ``true``/``false``, a double or big number as sent, a bulk error
like an error (``-`` and its text), a verbatim string without its ``txt:`` format, a map as a
JSON object. An attribute (``|``) is metadata in front of a reply: skipped, the reply that
follows is the message.

Limits that keep garbage cheap (a misread stream must not make the agent allocate or recurse):
a length line is at most 16 digits (Pixie's kSizeStrMaxLen), a bulk string at most 512 MiB
(Redis' proto-max-bulk-len default and Pixie's limit), aggregates nest at most
:data:`MAX_DEPTH` deep, and a simple line (status, error, integer) is at most
:data:`MAX_LINE` bytes.
"""

from __future__ import annotations

import json

NULL = "<NULL>"
NULL_ARRAY = "[NULL]"
MAX_DEPTH = 32
MAX_LINE = 64 * 1024
MAX_BULK = 512 * 1024 * 1024
_MAX_SIZE_DIGITS = 16

# Type bytes (ord values).
_SIMPLE, _ERROR, _INTEGER, _BULK, _ARRAY = 43, 45, 58, 36, 42  # + - : $ *
_NULL, _BOOL, _DOUBLE, _BIGNUM, _BULK_ERROR, _VERBATIM = 95, 35, 44, 40, 33, 61  # _ # , ( ! =
_MAP, _SET, _PUSH, _ATTRIBUTE = 37, 126, 62, 124  # % ~ > |
TYPE_BYTES = frozenset(b"+-:$*_#,(!=%~>|")


class NeedMore(Exception):
    """The message is not complete: it needs at least ``total`` bytes from where it starts."""

    def __init__(self, total: int) -> None:
        self.total = total


class Invalid(Exception):
    """Not RESP."""


class RespMap(list):  # type: ignore[type-arg]
    """A RESP3 map: its (key, value) pairs in order."""


class Push(list):  # type: ignore[type-arg]
    """A RESP3 push (``>``): out-of-band data, not a reply to a request."""


def _line(buf: bytes | bytearray, pos: int, limit: int = MAX_LINE) -> tuple[bytes | bytearray, int]:
    """The bytes from ``pos`` up to the next CRLF, and the position after it."""
    end = buf.find(b"\r\n", pos, pos + limit + 2)
    if end < 0:
        if len(buf) - pos > limit + 1:
            raise Invalid
        raise NeedMore(len(buf) + 1)
    return buf[pos:end], end + 2


def _size(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    text, pos = _line(buf, pos, _MAX_SIZE_DIGITS)
    # int() accepts what Redis does not ("+5", " 5", "5_0"); the check keeps to [-]digits.
    if not text or not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
        raise Invalid
    n = int(text)
    if n < -1:
        raise Invalid
    return n, pos


def text(data: bytes | bytearray) -> str:
    return data.decode("utf-8", errors="replace")


def parse(buf: bytes | bytearray, pos: int = 0, depth: int = 0) -> tuple[object, int]:
    """The RESP value starting at ``buf[pos]`` and the position after it."""
    if pos >= len(buf):
        raise NeedMore(pos + 1)
    marker = buf[pos]
    pos += 1
    if marker in (_BULK, _VERBATIM, _BULK_ERROR):
        n, pos = _size(buf, pos)
        if n == -1:
            if marker != _BULK:
                raise Invalid
            return NULL, pos
        if n > MAX_BULK:
            raise Invalid
        end = pos + n
        if len(buf) < end + 2:
            raise NeedMore(end + 2)
        if buf[end : end + 2] != b"\r\n":
            raise Invalid
        data = buf[pos:end]
        if marker == _VERBATIM:
            if n < 4 or data[3:4] != b":":
                raise Invalid
            data = data[4:]
        elif marker == _BULK_ERROR:
            return "-" + text(data), end + 2
        return text(data), end + 2
    if marker in (_SIMPLE, _INTEGER, _DOUBLE, _BIGNUM):
        line, pos = _line(buf, pos)
        if marker == _INTEGER and not (line.isdigit() or (line[:1] in (b"-", b"+") and line[1:].isdigit())):
            raise Invalid
        return text(line), pos
    if marker == _ERROR:
        line, pos = _line(buf, pos)
        return "-" + text(line), pos
    if marker in (_ARRAY, _SET, _PUSH, _MAP, _ATTRIBUTE):
        if depth >= MAX_DEPTH:
            raise Invalid
        n, pos = _size(buf, pos)
        if n == -1:
            if marker != _ARRAY:
                raise Invalid
            return NULL_ARRAY, pos
        count = 2 * n if marker in (_MAP, _ATTRIBUTE) else n
        items: list[object] = []
        for i in range(count):
            try:
                item, pos = parse(buf, pos, depth + 1)
            except NeedMore as more:
                # Every element left takes 3 bytes at least ("_\r\n").
                raise NeedMore(more.total + 3 * (count - i - 1)) from None
            items.append(item)
        if marker == _ATTRIBUTE:  # metadata about the reply that follows: the reply is the message
            return parse(buf, pos, depth)
        if marker == _MAP:
            return RespMap(zip(items[::2], items[1::2])), pos
        if marker == _PUSH:
            return Push(items), pos
        return items, pos
    if marker == _NULL:
        line, pos = _line(buf, pos, 0)
        return NULL, pos
    if marker == _BOOL:
        line, pos = _line(buf, pos, 1)
        if line == b"t":
            return "true", pos
        if line == b"f":
            return "false", pos
        raise Invalid
    raise Invalid


def parse_command(buf: bytes | bytearray, pos: int) -> tuple[list[str] | None, int]:
    """A client's command at ``buf[pos]`` (a ``*``): an array of bulk strings, the form every
    client sends, parsed without the general path's per-element calls. (None, pos) when the array
    holds anything else (then :func:`parse` reads it); NeedMore and Invalid as :func:`parse`."""
    n, p = _size(buf, pos + 1)
    if n < 0:
        return None, pos
    size = len(buf)
    words: list[str] = []
    append = words.append
    find = buf.find
    for i in range(n):
        if p >= size:
            raise NeedMore(p + 1 + 3 * (n - i - 1))
        if buf[p] != _BULK:
            return None, pos
        end = find(b"\r\n", p + 1, p + 3 + _MAX_SIZE_DIGITS)
        if end < 0:
            if size - p > _MAX_SIZE_DIGITS + 2:
                raise Invalid
            raise NeedMore(size + 1 + 3 * (n - i - 1))
        digits = buf[p + 1 : end]
        if not digits.isdigit():
            return None, pos  # a null or a malformed length: the general path decides
        length = int(digits)
        if length > MAX_BULK:
            raise Invalid
        start = end + 2
        stop = start + length
        if size < stop + 2:
            raise NeedMore(stop + 2 + 3 * (n - i - 1))
        if buf[stop] != 13 or buf[stop + 1] != 10:
            raise Invalid
        append(buf[start:stop].decode("utf-8", "replace"))
        p = stop + 2
    return words, p


def element_text(value: object) -> str:
    """An element inside an aggregate as Pixie writes it: a scalar as its text, an aggregate as
    its own JSON text (a string inside the outer JSON array)."""
    return value if isinstance(value, str) else format_value(value)


def format_value(value: object) -> str:
    """A reply as ``redis_events.resp`` shows it: a scalar's text, an array (set, push) as a JSON
    array of its elements' texts (Pixie's FormatAsJSONArray), a map as a JSON object."""
    if isinstance(value, str):
        return value
    if isinstance(value, RespMap):
        return "{" + ",".join(_json(element_text(k)) + ":" + _json(element_text(v)) for k, v in value) + "}"
    assert isinstance(value, list)
    return "[" + ",".join(_json(element_text(v)) for v in value) + "]"


def _json(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)
