"""Code-object symbolization (pxq/agent/python/code.py): the line-table decoders against each installed
CPython's own answer for every instruction of many real code objects, and the cache's staleness check."""

from __future__ import annotations

import json
import struct
import subprocess

import pytest

from pxq.agent.python.code import CodeSymbolizer, code_stamp, line_for
from pxq.agent.python.versions import LAYOUTS
from tests.agent.python_targets import VERSIONS, interpreter

# Runs under the CPython being tested: for every code object of a few stdlib modules (nested ones too),
# its line table, first line, and the line CPython itself gives each instruction offset: co_lines() from
# 3.10, dis.findlinestarts() before (both are CPython's own decoders, not pxq's).
_DUMP = r"""
import dis, json, sys, types, json.decoder, ast, argparse, textwrap
def codes(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from codes(const)
out = []
for module in (json.decoder, ast, argparse, textwrap):
    with open(module.__file__) as handle:
        top = compile(handle.read(), module.__file__, "exec")
    for code in codes(top):
        table = code.co_linetable if sys.version_info >= (3, 10) else code.co_lnotab
        size = len(code.co_code)
        if sys.version_info >= (3, 10):
            lines = {}
            for start, end, line in code.co_lines():
                for offset in range(start, end, 2):
                    lines[offset] = line
        else:
            starts = dict(dis.findlinestarts(code))
            lines, current = {}, code.co_firstlineno
            for offset in range(0, size, 2):
                current = starts.get(offset, current)
                lines[offset] = current
        out.append([code.co_name, table.hex(), code.co_firstlineno, sorted(lines.items())])
print(json.dumps(out))
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_line_decoders_agree_with_cpython(version: str) -> None:
    layout = LAYOUTS[tuple(int(part) for part in version.split(".")[:2])]  # type: ignore[index]
    dumped = json.loads(subprocess.run([interpreter(version), "-c", _DUMP], capture_output=True, check=True).stdout)
    assert len(dumped) > 200
    mismatches = []
    checked = 0
    for name, table_hex, firstlineno, lines in dumped:
        table = bytes.fromhex(table_hex)
        for offset, expected in lines:
            checked += 1
            got = line_for(layout, table, firstlineno, offset)
            if got != expected:
                mismatches.append((name, offset, expected, got))
    assert checked > 10_000
    assert mismatches == []


# A hand-built 3.11 memory image: code objects and strings at fixed addresses, so that one address can be
# given a different code object, as when CPython frees one and reuses its memory.
_L = LAYOUTS[(3, 11)]
CODE_TYPE = 0x5000
CODE = 0x10000


def _ascii_object(text: str) -> bytes:
    state = (1 << 2) | (1 << 5) | (1 << 6)  # kind 1, compact, ascii
    header = struct.pack("<QQQqI", 1, 0x6000, len(text), -1, state).ljust(_L.ascii_data, b"\0")
    return header + text.encode() + b"\0"


def _bytes_object(data: bytes) -> bytes:
    return struct.pack("<QQQq", 1, 0x7000, len(data), -1) + data + b"\0"


def _code_object(name_at: int, filename_at: int, table_at: int, firstlineno: int) -> bytes:
    image = bytearray(_L.code_adaptive + 16)
    struct.pack_into("<Q", image, _L.object_type, CODE_TYPE)
    struct.pack_into("<Q", image, _L.code_qualname, name_at)
    struct.pack_into("<Q", image, _L.code_name, name_at)
    struct.pack_into("<Q", image, _L.code_filename, filename_at)
    struct.pack_into("<Q", image, _L.code_linetable, table_at)
    struct.pack_into("<i", image, _L.code_firstlineno, firstlineno)
    return bytes(image)


class FakeMemory:
    """A sparse address space of byte strings; reads that leave a region fail as /proc/pid/mem's do."""

    def __init__(self) -> None:
        self.regions: dict[int, bytes] = {}
        self.reads = 0

    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        for start, data in self.regions.items():
            if start <= address and address + size <= start + len(data):
                return data[address - start : address - start + size]
        raise OSError(f"unmapped {address:#x}")


def test_a_reused_code_address_is_renamed_and_a_stale_stamp_refused() -> None:
    memory = FakeMemory()
    # One location entry: code 13 (no columns), line delta +1 (svarint 2), 8 code units.
    table = bytes([0x80 | (13 << 3) | 7, 2])
    memory.regions.update(
        {
            0x20000: _ascii_object("first"),
            0x21000: _ascii_object("second"),
            0x22000: _ascii_object("app.py"),
            0x23000: _bytes_object(table),
            CODE: _code_object(0x20000, 0x22000, 0x23000, 10),
        }
    )
    symbolizer = CodeSymbolizer(_L, memory.read, CODE_TYPE)
    instr = CODE + _L.code_adaptive + 4
    first = symbolizer.symbolize(CODE, instr, stamp=code_stamp(0x20000, 10))
    assert first is not None and (first.qualname, first.filename, first.line) == ("first", "app.py", 11)
    reads_when_cached = memory.reads
    assert symbolizer.symbolize(CODE, instr) == first
    assert memory.reads == reads_when_cached + 1  # a cached entry costs one header read
    assert symbolizer.symbolize(CODE, instr, stamp=code_stamp(0x20000, 10)) == first
    assert memory.reads == reads_when_cached + 1  # and none with the sample's matching stamp

    # The object is freed and another code object takes its address.
    memory.regions[CODE] = _code_object(0x21000, 0x22000, 0x23000, 20)
    second = symbolizer.symbolize(CODE, instr, stamp=code_stamp(0x21000, 20))  # sampled after the reuse
    assert second is not None and (second.qualname, second.line) == ("second", 21)
    assert symbolizer.symbolize(CODE, instr) == second
    # A sample taken while the first object lived must not be named after the second.
    assert symbolizer.symbolize(CODE, instr, stamp=code_stamp(0x20000, 10)) is None
    assert symbolizer.reasons["code_object_stale"] == 1


def test_corrupt_code_objects_are_counted() -> None:
    memory = FakeMemory()
    memory.regions[CODE] = _code_object(0x20000, 0x22000, 0x23000, 10)  # strings unmapped
    symbolizer = CodeSymbolizer(_L, memory.read, CODE_TYPE)
    assert symbolizer.symbolize(CODE, 0) is None
    huge = bytearray(_ascii_object("x"))
    struct.pack_into("<Q", huge, 16, 1 << 40)  # a length no name has
    memory.regions.update({0x20000: bytes(huge), 0x22000: _ascii_object("a.py"), 0x23000: _bytes_object(b"")})
    assert symbolizer.symbolize(CODE, 0) is None
    assert symbolizer.reasons == {"code_object_unreadable": 1, "code_object_corrupt": 1}
    # A corrupt location table (no entry-start bit) gives no line rather than a wrong one.
    assert line_for(_L, bytes([0x05, 0x06]), 1, 0) is None
