"""Bad input for the Python frame readers: any bytes as a line table, as process memory holding code objects,
or as the memory a frame walk follows, end in a value or a counted reason, never an exception."""

from __future__ import annotations

import struct

from hypothesis import example, given, strategies as st

from pxq.agent.python.code import CodeSymbolizer, line_for
from pxq.agent.python.process import FLAG_READ_FAILED, FLAG_TRUNCATED, ProcessMemory, PythonProcess
from pxq.agent.python.versions import LAYOUTS

BASE = 0x10000
layouts = st.sampled_from(sorted(LAYOUTS))


class BytesMemory(ProcessMemory):
    """One region of arbitrary bytes at BASE standing in for a process's memory."""

    def __init__(self, data: bytes) -> None:
        self.pid = -1
        self.data = data

    def read(self, address: int, size: int) -> bytes:
        begin = address - BASE
        if begin < 0 or begin + size > len(self.data):
            raise OSError(f"unmapped {address:#x}")
        return self.data[begin : begin + size]

    def close(self) -> None:
        pass


@given(layouts, st.binary(max_size=200), st.integers(-5, 10_000), st.integers(-(2**31), 2**31 - 1))
@example((3, 11), bytes([0xF0]), 0, 1)  # a long-form header with its varints cut off
@example((3, 10), bytes([4, 0x80]), 2, 1)  # a range without a line
def test_line_tables_of_any_bytes_give_a_line_or_none(
    version: tuple[int, int], table: bytes, offset: int, firstlineno: int
) -> None:
    line = line_for(LAYOUTS[version], table, firstlineno, offset)
    assert line is None or isinstance(line, int)


def _pointers_into_memory(draw: st.DrawFn, size: int) -> bytes:
    """Memory whose 8-byte words are mostly pointers back into it (so walks go somewhere), or noise."""
    words = draw(
        st.lists(
            st.one_of(st.integers(BASE, BASE + size - 1), st.integers(0, 2**64 - 1), st.just(0)),
            min_size=size // 8,
            max_size=size // 8,
        )
    )
    return struct.pack(f"<{len(words)}Q", *words)


@st.composite
def memories(draw: st.DrawFn) -> bytes:
    return _pointers_into_memory(draw, 1024)


@given(layouts, memories(), st.integers(BASE, BASE + 1023), st.integers(0, 2**64 - 1))
def test_symbolizing_garbage_counts_a_reason(version: tuple[int, int], data: bytes, code: int, instr: int) -> None:
    symbolizer = CodeSymbolizer(LAYOUTS[version], BytesMemory(data).read, code_type_address=None)
    frame = symbolizer.symbolize(code, instr)
    if frame is None:  # every refusal names its reason
        assert sum(symbolizer.reasons.values()) == 1


@given(layouts, memories(), st.integers(BASE, BASE + 1023), st.integers(1, 16))
@example((3, 12), struct.pack("<128Q", *([BASE] * 128)), BASE, 4)  # a frame whose previous is itself
def test_walking_garbage_ends_flagged(version: tuple[int, int], data: bytes, tstate: int, max_frames: int) -> None:
    process = PythonProcess(
        pid=-1,
        binary="garbage",
        bias=0,
        layout=LAYOUTS[version],
        memory=BytesMemory(data),
        runtime_address=BASE,
        code_type_address=None,
        eval_ranges=[],
    )
    walk = process.walk(tstate, max_frames=max_frames)
    assert len(walk.frames) <= max_frames
    assert walk.flags in (0, FLAG_TRUNCATED, FLAG_READ_FAILED)
    assert (walk.reason is not None) == bool(walk.flags & FLAG_READ_FAILED)
    process.thread_states()  # bounded even when the lists loop
