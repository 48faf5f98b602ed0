"""The MySQL client/server protocol's building blocks: command bytes, packet classes, length-encoded
integers and strings, and the binary protocol's parameter values (as COM_STMT_EXECUTE sends them).

References: the MySQL internals manual (https://dev.mysql.com/doc/dev/mysql-server/latest/
PAGE_PROTOCOL.html) and Pixie's parser (src/stirling/source_connectors/socket_tracer/protocols/
mysql/: types.h for the command and column-type enums, packet_utils.cc for the packet classes,
parse_utils.cc and handler.cc for length-encoded values and parameters). Every function here
returns None (or False) on bytes that do not fit, never raises.
"""

from __future__ import annotations

import struct

# -- commands (Pixie's types.h ``enum class Command``) ------------------------------------------
COM_SLEEP = 0x00
COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_FIELD_LIST = 0x04
COM_CREATE_DB = 0x05
COM_DROP_DB = 0x06
COM_REFRESH = 0x07
COM_SHUTDOWN = 0x08
COM_STATISTICS = 0x09
COM_PROCESS_INFO = 0x0A
COM_CONNECT = 0x0B  # pxq's row for the connection handshake uses this command (see stitcher.py)
COM_PROCESS_KILL = 0x0C
COM_DEBUG = 0x0D
COM_PING = 0x0E
COM_TIME = 0x0F
COM_DELAYED_INSERT = 0x10
COM_CHANGE_USER = 0x11
COM_BINLOG_DUMP = 0x12
COM_TABLE_DUMP = 0x13
COM_CONNECT_OUT = 0x14
COM_REGISTER_SLAVE = 0x15
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_SET_OPTION = 0x1B
COM_STMT_FETCH = 0x1C
COM_DAEMON = 0x1D
COM_BINLOG_DUMP_GTID = 0x1E
COM_RESET_CONNECTION = 0x1F

COMMAND_NAMES = {
    0x00: "Sleep", 0x01: "Quit", 0x02: "InitDB", 0x03: "Query", 0x04: "FieldList", 0x05: "CreateDB",
    0x06: "DropDB", 0x07: "Refresh", 0x08: "Shutdown", 0x09: "Statistics", 0x0A: "ProcessInfo",
    0x0B: "Connect", 0x0C: "ProcessKill", 0x0D: "Debug", 0x0E: "Ping", 0x0F: "Time", 0x10: "DelayedInsert",
    0x11: "ChangeUser", 0x12: "BinlogDump", 0x13: "TableDump", 0x14: "ConnectOut", 0x15: "RegisterSlave",
    0x16: "StmtPrepare", 0x17: "StmtExecute", 0x18: "StmtSendLongData", 0x19: "StmtClose", 0x1A: "StmtReset",
    0x1B: "SetOption", 0x1C: "StmtFetch", 0x1D: "Daemon", 0x1E: "BinlogDumpGTID", 0x1F: "ResetConnection",
}  # fmt: skip

# Largest payload of one packet; a payload of exactly this size continues in the next packet.
MAX_PACKET = 0xFFFFFF

# Payload lengths a client may send per command (Pixie's ``InitCommandLengths``, types.h): a first
# packet outside its command's range is not a command. Internal commands a client never sends
# (Sleep, Time, DelayedInsert, ConnectOut, Daemon: Pixie's ``IsValidCommand``) are left out.
COMMAND_LENGTHS: dict[int, tuple[int, int]] = {
    COM_QUIT: (1, 1), COM_INIT_DB: (1, MAX_PACKET), COM_QUERY: (1, MAX_PACKET), COM_FIELD_LIST: (2, MAX_PACKET),
    COM_CREATE_DB: (1, MAX_PACKET), COM_DROP_DB: (1, MAX_PACKET), COM_REFRESH: (2, 2), COM_SHUTDOWN: (1, 2),
    COM_STATISTICS: (1, 1), COM_PROCESS_INFO: (1, 1), COM_CONNECT: (1, 1), COM_PROCESS_KILL: (1, 5),
    COM_DEBUG: (1, 1), COM_PING: (1, 1), COM_CHANGE_USER: (4, MAX_PACKET), COM_BINLOG_DUMP: (11, MAX_PACKET),
    COM_TABLE_DUMP: (3, MAX_PACKET), COM_REGISTER_SLAVE: (18, MAX_PACKET), COM_STMT_PREPARE: (1, MAX_PACKET),
    COM_STMT_EXECUTE: (10, MAX_PACKET), COM_STMT_SEND_LONG_DATA: (7, MAX_PACKET), COM_STMT_CLOSE: (5, 5),
    COM_STMT_RESET: (5, 5), COM_SET_OPTION: (3, 3), COM_STMT_FETCH: (9, 9), COM_BINLOG_DUMP_GTID: (19, MAX_PACKET),
    COM_RESET_CONNECTION: (1, 1),
}  # fmt: skip

# -- capability flags (the handshake) -------------------------------------------------------------
CLIENT_CONNECT_WITH_DB = 0x00000008
CLIENT_PROTOCOL_41 = 0x00000200
CLIENT_SSL = 0x00000800
CLIENT_SECURE_CONNECTION = 0x00008000
CLIENT_PLUGIN_AUTH = 0x00080000
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x00200000
CLIENT_DEPRECATE_EOF = 0x01000000

# Status flag of an OK or EOF packet: another result set follows (multi-statement queries, CALL).
SERVER_MORE_RESULTS_EXIST = 0x0008

# First payload byte of the response packets (Pixie's kRespHeader*).
OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB

# -- column types (Pixie's ``enum class ColType``) ----------------------------------------------------
T_DECIMAL, T_TINY, T_SHORT, T_LONG, T_FLOAT, T_DOUBLE, T_NULL, T_TIMESTAMP = range(8)
T_LONGLONG, T_INT24, T_DATE, T_TIME, T_DATETIME, T_YEAR = range(8, 14)
T_VARCHAR, T_BIT = 0x0F, 0x10
T_TIMESTAMP2, T_DATETIME2, T_TIME2 = 0x11, 0x12, 0x13  # server-internal, not sent; listed for completeness
T_JSON, T_NEWDECIMAL, T_ENUM, T_SET = 0xF5, 0xF6, 0xF7, 0xF8
T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_BLOB, T_VAR_STRING, T_STRING, T_GEOMETRY = range(0xF9, 0x100)

_STRING_TYPES = frozenset(
    {T_DECIMAL, T_VARCHAR, T_BIT, T_JSON, T_NEWDECIMAL, T_ENUM, T_SET, T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB,
     T_BLOB, T_VAR_STRING, T_STRING, T_GEOMETRY}
)  # fmt: skip
_INT_SIZES = {T_TINY: 1, T_SHORT: 2, T_YEAR: 2, T_LONG: 4, T_INT24: 4, T_LONGLONG: 8}
_UNSIGNED_FLAG = 0x80  # second byte of a parameter's type in COM_STMT_EXECUTE


def le_int(data: bytes, pos: int, size: int) -> int | None:
    """A little-endian unsigned integer of ``size`` bytes at ``pos``, or None past the end."""
    if pos < 0 or pos + size > len(data):
        return None
    return int.from_bytes(data[pos : pos + size], "little")


def lenenc_int(data: bytes, pos: int) -> tuple[int, int] | None:
    """A length-encoded integer at ``pos``: (value, position after it), or None (truncated, or the
    0xfb/0xff bytes that are not integers)."""
    if pos >= len(data):
        return None
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None:
        return None
    value = le_int(data, pos + 1, size)
    return None if value is None else (value, pos + 1 + size)


def lenenc_bytes(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """A length-encoded string at ``pos``: (its bytes, position after it), or None."""
    head = lenenc_int(data, pos)
    if head is None:
        return None
    size, start = head
    if start + size > len(data):
        return None
    return data[start : start + size], start + size


def nul_string(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """A NUL-terminated string at ``pos``: (its bytes, position after the NUL), or None."""
    end = data.find(b"\x00", pos)
    if end < 0:
        return None
    return data[pos:end], end + 1


def is_eof_packet(payload: bytes, size: int) -> bool:
    """An EOF packet (0xfe, then warnings and status flags in protocol 4.1): Pixie's
    ``IsEOFPacket``, 5 bytes (or 1, before 4.1)."""
    return size in (1, 5) and payload[:1] == b"\xfe"


def is_ok_packet(payload: bytes, size: int) -> bool:
    """An OK packet: 0x00 with affected rows, last insert id, status and warnings (at least 7
    bytes), or, with CLIENT_DEPRECATE_EOF, the same after 0xfe, ending a result set (Pixie's
    ``IsOKPacket``: 0xfe and shorter than 9; here any 0xfe packet that is not an EOF packet and
    shorter than a full packet, as the manual says a result set's end is told from a row)."""
    if not payload:
        return False
    if payload[0] == OK_HEADER:
        return size >= 7 and ok_fields(payload) is not None
    return payload[0] == EOF_HEADER and 7 <= size < MAX_PACKET and ok_fields(payload) is not None


def ok_fields(payload: bytes) -> tuple[int, int, int] | None:
    """(affected rows, last insert id, status flags) of an OK packet, or None."""
    affected = lenenc_int(payload, 1)
    if affected is None:
        return None
    insert_id = lenenc_int(payload, affected[1])
    if insert_id is None:
        return None
    status = le_int(payload, insert_id[1], 2)
    if status is None:
        return None
    return affected[0], insert_id[0], status


def end_status(payload: bytes, size: int) -> int:
    """The status flags of the OK or EOF packet that ends a result set (0 when unreadable)."""
    if is_eof_packet(payload, size):
        return le_int(payload, 3, 2) or 0
    fields = ok_fields(payload)
    return fields[2] if fields is not None else 0


def err_fields(payload: bytes) -> tuple[int, str, str] | None:
    """(error code, SQLSTATE or "", message) of an ERR packet, or None when too short."""
    if len(payload) < 3 or payload[0] != ERR_HEADER:
        return None
    code = le_int(payload, 1, 2)
    assert code is not None
    if payload[3:4] == b"#" and len(payload) >= 9:
        state, message = payload[4:9], payload[9:]
    else:
        state, message = b"", payload[3:]
    return code, text(state), text(message)


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# -- COM_STMT_EXECUTE parameters ----------------------------------------------------------------------
def _format_float(value: float, digits: int) -> str:
    """A float the way MySQL prints it: the shortest text that reads back the same."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return f"{value:.{digits}g}" if digits else repr(value)


def decode_binary_value(type_: int, unsigned: bool, data: bytes, pos: int) -> tuple[str, int] | None:
    """One value of the binary protocol at ``pos`` (a COM_STMT_EXECUTE parameter): (its text,
    position after it), or None when the type is unknown or the bytes end first. Integers are
    signed unless ``unsigned``; dates and times are shown as MySQL prints them."""
    if type_ in _STRING_TYPES:
        found = lenenc_bytes(data, pos)
        return None if found is None else (text(found[0]), found[1])
    size = _INT_SIZES.get(type_)
    if size is not None:
        raw = data[pos : pos + size]
        if len(raw) < size:
            return None
        return str(int.from_bytes(raw, "little", signed=not unsigned)), pos + size
    if type_ == T_FLOAT:
        if pos + 4 > len(data):
            return None
        return _format_float(struct.unpack_from("<f", data, pos)[0], 7), pos + 4
    if type_ == T_DOUBLE:
        if pos + 8 > len(data):
            return None
        return _format_float(struct.unpack_from("<d", data, pos)[0], 0), pos + 8
    if type_ == T_NULL:
        return "NULL", pos
    if type_ in (T_DATE, T_DATETIME, T_TIMESTAMP):
        return _datetime(data, pos)
    if type_ == T_TIME:
        return _time(data, pos)
    return None


def _datetime(data: bytes, pos: int) -> tuple[str, int] | None:
    """A binary DATE/DATETIME/TIMESTAMP: a length (0, 4, 7 or 11), then year(2) month day, hour
    minute second, microseconds(4)."""
    if pos >= len(data):
        return None
    n = data[pos]
    body = data[pos + 1 : pos + 1 + n]
    if len(body) < n or n not in (0, 4, 7, 11):
        return None
    year, month, day = (int.from_bytes(body[0:2], "little"), body[2], body[3]) if n else (0, 0, 0)
    out = f"{year:04d}-{month:02d}-{day:02d}"
    if n >= 7:
        out += f" {body[4]:02d}:{body[5]:02d}:{body[6]:02d}"
    if n == 11:
        out += f".{int.from_bytes(body[7:11], 'little'):06d}"
    return out, pos + 1 + n


def _time(data: bytes, pos: int) -> tuple[str, int] | None:
    """A binary TIME: a length (0, 8 or 12), then sign, days(4), hour, minute, second,
    microseconds(4); shown as [-]HH:MM:SS[.ffffff] with the days in the hours."""
    if pos >= len(data):
        return None
    n = data[pos]
    body = data[pos + 1 : pos + 1 + n]
    if len(body) < n or n not in (0, 8, 12):
        return None
    if not n:
        return "00:00:00", pos + 1
    sign = "-" if body[0] else ""
    hours = int.from_bytes(body[1:5], "little") * 24 + body[5]
    out = f"{sign}{hours:02d}:{body[6]:02d}:{body[7]:02d}"
    if n == 12:
        out += f".{int.from_bytes(body[8:12], 'little'):06d}"
    return out, pos + 1 + n


def execute_params(
    payload: bytes, num_params: int, previous_types: list[tuple[int, bool]] | None
) -> tuple[list[str], list[tuple[int, bool]] | None, bool]:
    """The parameters of a COM_STMT_EXECUTE payload (command byte first) for a statement with
    ``num_params`` parameters: (their texts, the types used, whether all decoded). The types come
    with the packet when its new-params-bound flag is 1, else from the statement's previous
    execution (``previous_types``). NULL parameters (the null bitmap) show as NULL."""
    pos = 1 + 4 + 1 + 4  # command, statement id, flags, iteration count
    if num_params <= 0:
        return [], previous_types, True
    bitmap_len = (num_params + 7) // 8
    bitmap = payload[pos : pos + bitmap_len]
    pos += bitmap_len
    if len(bitmap) < bitmap_len or pos >= len(payload):
        return [], previous_types, False
    bound = payload[pos]
    pos += 1
    types = previous_types
    if bound == 1:
        raw = payload[pos : pos + 2 * num_params]
        if len(raw) < 2 * num_params:
            return [], previous_types, False
        types = [(raw[2 * i], bool(raw[2 * i + 1] & _UNSIGNED_FLAG)) for i in range(num_params)]
        pos += 2 * num_params
    if types is None or len(types) != num_params:
        return [], types, False
    values: list[str] = []
    for i, (type_, unsigned) in enumerate(types):
        if bitmap[i // 8] >> (i % 8) & 1:
            values.append("NULL")
            continue
        found = decode_binary_value(type_, unsigned, payload, pos)
        if found is None:
            return values, types, False
        value, pos = found
        values.append(value)
    return values, types, True
