"""Code object address (+ instruction) → (qualname, filename, line), read from a live process's memory.

The line comes from the code object's own table, decoded as CPython does: ``co_lnotab`` (3.8/3.9,
Objects/lnotab_notes.txt), the 3.10 ``co_linetable`` (same pairs, -128 meaning "no line"), and the 3.11+
location table (Objects/locations.md: one entry per run of code units, a varint-coded line delta). OTel's
profiler does the same in user space (interpreter/python/python.go, ``getCodeObject``/``Symbolize``).

Results are cached by address in an LRU. A code object can be freed and its address reused by another. A
caller holding a stamp taken at sample time (``code_stamp``, computed identically by bpf/python_stack.h) is
served from the cache when the stamps agree, with no read; otherwise the object's small header (type, name
and filename pointers, first line, line table pointer) is re-read and the entry rebuilt when it changed, and
a stamp that still disagrees gives ``code_object_stale`` instead of a wrong name. Without a stamp (the
user-space walk) every lookup re-reads the header.
"""

from __future__ import annotations

import struct
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from pxq.agent.python.versions import (
    LINE_TABLE_310,
    LINE_TABLE_LNOTAB,
    LINE_TABLE_LOCATIONS,
    NO_FIELD,
    PythonLayout,
)

MAX_STRING_CHARS = 4096
MAX_LINE_TABLE_BYTES = 1 << 20
MAX_LINES_PER_CODE = 512  # memoized instruction -> line answers per cached code object
_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")

Reader = Callable[[int, int], bytes]  # (address, size) -> exactly size bytes, or raises OSError


@dataclass(frozen=True)
class PyFrame:
    """One symbolized Python frame."""

    qualname: str
    filename: str
    line: int | None


def code_stamp(name_pointer: int, firstlineno: int) -> int:
    """32 bits that change when a code object address is reused by another code object (the name string and
    first line differ), OTel's codeobject_id idea; the BPF walker stores the same value per frame."""
    return ((name_pointer >> 4) ^ firstlineno) & 0xFFFFFFFF


def line_from_lnotab(table: bytes, firstlineno: int, byte_offset: int) -> int:
    """3.8/3.9 ``co_lnotab``: (bytecode delta, signed line delta) pairs; the line of the instruction at
    byte_offset (PyCode_Addr2Line in Objects/codeobject.c of 3.9)."""
    line, address = firstlineno, 0
    for index in range(0, len(table) - 1, 2):
        address += table[index]
        if address > byte_offset:
            break
        delta = table[index + 1]
        line += delta - 256 if delta >= 128 else delta
    return line


def line_from_linetable_310(table: bytes, firstlineno: int, byte_offset: int) -> int | None:
    """3.10 ``co_linetable``: (unsigned bytecode delta, signed line delta) pairs where a line delta of -128
    means the range has no line (Objects/lnotab_notes.txt of 3.10, ``_PyCode_CheckLineNumber``)."""
    line, address = firstlineno, 0
    for index in range(0, len(table) - 1, 2):
        start_delta, line_delta = table[index], table[index + 1]
        line_delta = line_delta - 256 if line_delta >= 128 else line_delta
        end = address + start_delta
        if line_delta != -128:
            line += line_delta
        if address <= byte_offset < end:
            return None if line_delta == -128 else line
        address = end
    return None


def _varint(table: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = table[position]
        position += 1
        value |= (byte & 63) << shift
        shift += 6
        if not byte & 64:
            return value, position


def _signed_varint(table: bytes, position: int) -> tuple[int, int]:
    value, position = _varint(table, position)
    return (-(value >> 1) if value & 1 else value >> 1), position


def line_from_locations(table: bytes, firstlineno: int, byte_offset: int) -> int | None:
    """3.11+ location table (Objects/locations.md): entries of a header byte 1CCCCLLL (code C, L+1 code
    units) and a code-dependent payload; codes 0-9 keep the line, 10-12 add C-10, 13 and 14 carry a signed
    varint delta, 15 has no location."""
    target = byte_offset // 2
    line, address, position = firstlineno, 0, 0
    try:
        while position < len(table):
            header = table[position]
            position += 1
            if not header & 0x80:
                return None  # not at an entry start: a corrupt table
            code, length = (header >> 3) & 15, (header & 7) + 1
            has_line = True
            if code == 15:
                has_line = False
            elif code == 14:
                delta, position = _signed_varint(table, position)
                line += delta
                for _ in range(3):  # end line, column, end column
                    _, position = _varint(table, position)
            elif code == 13:
                delta, position = _signed_varint(table, position)
                line += delta
            elif code >= 10:
                line += code - 10
                position += 2
            else:
                position += 1
            if address <= target < address + length:
                return line if has_line else None
            address += length
    except IndexError:
        return None
    return None


def line_for(layout: PythonLayout, table: bytes, firstlineno: int, byte_offset: int) -> int | None:
    """The source line of the instruction at byte_offset of a code object's bytecode."""
    if byte_offset < 0:
        return firstlineno  # not started yet (f_lasti -1): CPython reports the first line too
    if layout.line_table == LINE_TABLE_LNOTAB:
        return line_from_lnotab(table, firstlineno, byte_offset)
    if layout.line_table == LINE_TABLE_310:
        return line_from_linetable_310(table, firstlineno, byte_offset)
    assert layout.line_table == LINE_TABLE_LOCATIONS
    return line_from_locations(table, firstlineno, byte_offset)


@dataclass(frozen=True)
class _CodeEntry:
    header: bytes
    qualname: str
    filename: str
    firstlineno: int
    linetable: bytes
    stamp: int
    lines: dict[int, int | None] = field(default_factory=dict, compare=False)  # byte offset -> line, memoized


class CodeSymbolizer:
    """Symbolizes (code address, instruction) pairs of one process; failures are counted in ``reasons``."""

    def __init__(
        self, layout: PythonLayout, read: Reader, code_type_address: int | None = None, capacity: int = 4096
    ) -> None:
        self.layout = layout
        self.read = read
        self.code_type_address = code_type_address
        self.capacity = capacity
        self.reasons: Counter[str] = Counter()
        self.cache: OrderedDict[int, _CodeEntry] = OrderedDict()
        name_field = layout.code_qualname if layout.code_qualname != NO_FIELD else layout.code_name
        self._name_field = name_field
        self._header_size = max(layout.code_filename, name_field, layout.code_firstlineno, layout.code_linetable) + 8

    def symbolize(self, code_address: int, instr: int, stamp: int | None = None) -> PyFrame | None:
        """The frame for a code object address and the raw instruction value the walker recorded (f_lasti
        before 3.11, the instruction pointer from 3.11), or None with a counted reason."""
        entry = self.cache.get(code_address)
        if entry is not None and stamp is not None and stamp == entry.stamp:
            self.cache.move_to_end(code_address)  # the sampled object is the cached one: no read at all
        else:
            try:
                header = self.read(code_address, self._header_size)
            except OSError:
                self.reasons["code_object_unreadable"] += 1
                return None
            if entry is None or entry.header != header:
                entry = self._load(code_address, header)
                if entry is None:
                    return None
                self.cache[code_address] = entry
                if len(self.cache) > self.capacity:
                    self.cache.popitem(last=False)
            else:
                self.cache.move_to_end(code_address)
        if stamp is not None and stamp != entry.stamp:
            self.reasons["code_object_stale"] += 1
            return None
        layout = self.layout
        if layout.instr_is_pointer:
            byte_offset = instr - (code_address + layout.code_adaptive)
            if not -2 <= byte_offset < MAX_LINE_TABLE_BYTES * 8:
                self.reasons["instruction_out_of_code"] += 1
                return PyFrame(entry.qualname, entry.filename, None)
        else:
            lasti = instr - (1 << 64) if instr >= 1 << 63 else instr
            lasti = lasti - (1 << 32) if lasti >= 1 << 31 else lasti  # a sign-extended or raw 32-bit int
            byte_offset = lasti * layout.lasti_unit
        if byte_offset in entry.lines:
            line = entry.lines[byte_offset]
        else:
            line = line_for(layout, entry.linetable, entry.firstlineno, byte_offset)
            if len(entry.lines) < MAX_LINES_PER_CODE:
                entry.lines[byte_offset] = line
        return PyFrame(entry.qualname, entry.filename, line)

    def _load(self, address: int, header: bytes) -> _CodeEntry | None:
        layout = self.layout
        if self.code_type_address is not None:
            (object_type,) = _U64.unpack_from(header, layout.object_type)
            if object_type != self.code_type_address:
                self.reasons["not_a_code_object"] += 1
                return None
        (name_pointer,) = _U64.unpack_from(header, self._name_field)
        (filename_pointer,) = _U64.unpack_from(header, layout.code_filename)
        (linetable_pointer,) = _U64.unpack_from(header, layout.code_linetable)
        (firstlineno,) = _I32.unpack_from(header, layout.code_firstlineno)
        try:
            qualname = self._string(name_pointer)
            filename = self._string(filename_pointer)
            linetable = self._bytes(linetable_pointer)
        except OSError:
            self.reasons["code_object_unreadable"] += 1
            return None
        if qualname is None or filename is None or linetable is None:
            self.reasons["code_object_corrupt"] += 1
            return None
        return _CodeEntry(header, qualname, filename, firstlineno, linetable, code_stamp(name_pointer, firstlineno))

    def _string(self, address: int) -> str | None:
        """A compact str object's text (Include/cpython/unicodeobject.h: length at 16, state bits at 32:
        kind in bits 2-4, compact bit 5, ascii bit 6, for 3.8-3.13)."""
        if address == 0:
            return None
        header = self.read(address, 40)
        (length,) = _U64.unpack_from(header, 16)
        (state,) = _U32.unpack_from(header, 32)
        kind, compact, ascii_only = (state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1
        if not compact or length > MAX_STRING_CHARS or kind not in (1, 2, 4):
            return None
        if ascii_only:
            return self.read(address + self.layout.ascii_data, length).decode("ascii", "replace")
        raw = self.read(address + self.layout.compact_data, length * kind)
        return raw.decode({1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind], "replace")

    def _bytes(self, address: int) -> bytes | None:
        if address == 0:
            return None
        (size,) = _U64.unpack_from(self.read(address + self.layout.bytes_size, 8), 0)
        if size > MAX_LINE_TABLE_BYTES:
            return None
        return self.read(address + self.layout.bytes_data, size) if size else b""
