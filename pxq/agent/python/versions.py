"""Per-version layouts of the CPython structures a frame walk reads, 3.8 to 3.13 on x86-64.

The offsets were read with ``gdb -batch -ex 'ptype /o struct _ts'`` (and ``_is``, ``pyruntimestate``,
``_frame``/``_PyInterpreterFrame``, ``_PyCFrame``, ``PyCodeObject``, ``PyASCIIObject``) from the DWARF of the
pyenv builds 3.8.18, 3.9.18, 3.10.13, 3.11.7, 3.12.1 and 3.13.0, and agree with
parca-dev/runtime-data:pkg/python/layout/amd64/*.yaml for 3.8-3.12 and with the 3.11 values in
open-telemetry/opentelemetry-ebpf-profiler:interpreter/python/python.go (f_code=32, previous=48,
prev_instr=56, is_entry=68, cframe=56, current_frame=8). The source headers are CPython's
Include/cpython/pystate.h, Include/internal/pycore_frame.h, Include/cpython/code.h, Include/cpython/frameobject.h.

From 3.13 on the interpreter publishes its own layout in ``_Py_DebugOffsets`` at the start of ``_PyRuntime``
(Include/internal/pycore_runtime.h, cookie ``xdebugpy``); ``layout_from_debug_offsets`` reads it and is
preferred over the table when the cookie and version check out.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, replace

from pxq.agent.python.elf_symbols import InterpreterElf

NO_FIELD = -1
# _PyInterpreterFrame.owner of the shim frame _PyEval_EvalFrameDefault pushes on entry (3.12+,
# Include/internal/pycore_frame.h: FRAME_OWNED_BY_CSTACK = 3).
FRAME_OWNED_BY_CSTACK = 3
# glibc's struct pthread keeps the kernel thread id at 0x2d0 on x86-64 (nptl/descr.h: after the 0x2c0-byte
# tcbhead_t and the 16-byte list_t). Before 3.11 PyThreadState.thread_id is pthread_self(), the address
# of that struct, and there is no native_thread_id field.
GLIBC_PTHREAD_TID_OFFSET = 0x2D0

LINE_TABLE_LNOTAB = "lnotab"  # 3.8, 3.9: co_lnotab, (byte offset delta, line delta) pairs
LINE_TABLE_310 = "linetable310"  # 3.10: co_linetable, (byte offset delta, line delta or -128) pairs
LINE_TABLE_LOCATIONS = "locations"  # 3.11+: co_linetable location table (Objects/locations.md)

SUPPORTED_VERSIONS = ((3, 8), (3, 9), (3, 10), (3, 11), (3, 12), (3, 13))


@dataclass(frozen=True)
class PythonLayout:
    """Byte offsets of the fields one frame walk reads; NO_FIELD where a version lacks the field."""

    version: tuple[int, int]
    runtime_interpreters_head: int  # _PyRuntimeState.interpreters.head
    interp_threads_head: int  # PyInterpreterState.tstate_head (threads.head from 3.11)
    interp_next: int
    tstate_next: int
    tstate_thread_id: int
    tstate_native_thread_id: int
    # PyThreadState -> current frame: tstate_frame is the field's offset; when cframe_current_frame is not
    # NO_FIELD, tstate_frame points at a _PyCFrame whose current_frame is at cframe_current_frame (3.11, 3.12).
    tstate_frame: int
    cframe_current_frame: int
    frame_code: int  # f_code / f_executable
    frame_previous: int  # f_back / previous
    frame_instr: int  # f_lasti (int, <=3.10) or prev_instr / instr_ptr (pointer, 3.11+)
    frame_is_entry: int  # 3.11 only
    frame_owner: int  # 3.11+
    code_filename: int
    code_name: int
    code_qualname: int
    code_firstlineno: int
    code_linetable: int
    code_adaptive: int  # co_code_adaptive, the bytecode inside the code object (3.11+)
    line_table: str
    lasti_unit: int  # bytes per f_lasti step before 3.11 (3.8/3.9 count bytes, 3.10 code units)
    ascii_data: int  # sizeof(PyASCIIObject): compact ASCII characters start here
    compact_data: int  # sizeof(PyCompactUnicodeObject): other compact strings start here
    bytes_size: int = 16  # PyBytesObject.ob_size (PyVarObject)
    bytes_data: int = 32  # PyBytesObject.ob_sval
    object_type: int = 8  # PyObject.ob_type

    @property
    def instr_is_pointer(self) -> bool:
        return self.version >= (3, 11)

    @property
    def label(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


_PRE_311 = dict(
    runtime_interpreters_head=32,
    interp_threads_head=8,
    interp_next=0,
    tstate_next=8,
    tstate_thread_id=176,
    tstate_native_thread_id=NO_FIELD,
    tstate_frame=24,
    cframe_current_frame=NO_FIELD,
    frame_code=32,
    frame_previous=24,
    frame_is_entry=NO_FIELD,
    frame_owner=NO_FIELD,
    code_filename=104,
    code_name=112,
    code_qualname=NO_FIELD,
    code_firstlineno=40,
    code_linetable=120,
    code_adaptive=NO_FIELD,
    ascii_data=48,
    compact_data=72,
)

LAYOUTS: dict[tuple[int, int], PythonLayout] = {
    (3, 8): PythonLayout(version=(3, 8), frame_instr=104, line_table=LINE_TABLE_LNOTAB, lasti_unit=1, **_PRE_311),
    (3, 9): PythonLayout(version=(3, 9), frame_instr=104, line_table=LINE_TABLE_LNOTAB, lasti_unit=1, **_PRE_311),
    (3, 10): PythonLayout(version=(3, 10), frame_instr=96, line_table=LINE_TABLE_310, lasti_unit=2, **_PRE_311),
    (3, 11): PythonLayout(
        version=(3, 11),
        runtime_interpreters_head=40,
        interp_threads_head=16,
        interp_next=0,
        tstate_next=8,
        tstate_thread_id=152,
        tstate_native_thread_id=160,
        tstate_frame=56,
        cframe_current_frame=8,
        frame_code=32,
        frame_previous=48,
        frame_instr=56,
        frame_is_entry=68,
        frame_owner=69,
        code_filename=112,
        code_name=120,
        code_qualname=128,
        code_firstlineno=72,
        code_linetable=136,
        code_adaptive=184,
        line_table=LINE_TABLE_LOCATIONS,
        lasti_unit=2,
        ascii_data=48,
        compact_data=72,
    ),
    (3, 12): PythonLayout(
        version=(3, 12),
        runtime_interpreters_head=40,
        interp_threads_head=72,
        interp_next=0,
        tstate_next=8,
        tstate_thread_id=136,
        tstate_native_thread_id=144,
        tstate_frame=56,
        cframe_current_frame=0,
        frame_code=0,
        frame_previous=8,
        frame_instr=56,
        frame_is_entry=NO_FIELD,
        frame_owner=70,
        code_filename=112,
        code_name=120,
        code_qualname=128,
        code_firstlineno=68,
        code_linetable=136,
        code_adaptive=192,
        line_table=LINE_TABLE_LOCATIONS,
        lasti_unit=2,
        ascii_data=40,
        compact_data=56,
    ),
    (3, 13): PythonLayout(
        version=(3, 13),
        runtime_interpreters_head=632,
        interp_threads_head=7344,
        interp_next=7264,  # no longer the first field: 3.13 puts the interpreter's _PyRuntime header first
        tstate_next=8,
        tstate_thread_id=152,
        tstate_native_thread_id=160,
        tstate_frame=72,
        cframe_current_frame=NO_FIELD,
        frame_code=0,
        frame_previous=8,
        frame_instr=56,
        frame_is_entry=NO_FIELD,
        frame_owner=70,
        code_filename=112,
        code_name=120,
        code_qualname=128,
        code_firstlineno=68,
        code_linetable=136,
        code_adaptive=200,
        line_table=LINE_TABLE_LOCATIONS,
        lasti_unit=2,
        ascii_data=40,
        compact_data=56,
    ),
}


def layout_for(version: tuple[int, int]) -> PythonLayout | None:
    """The layout of a major.minor version, or None when pxq does not know it (reason python_version_unknown)."""
    return LAYOUTS.get(version)


DEBUG_OFFSETS_COOKIE = b"xdebugpy"
DEBUG_OFFSETS_SIZE = 536  # bytes of _Py_DebugOffsets that layout_from_debug_offsets reads (3.13)
_U64 = struct.Struct("<Q")


def layout_from_debug_offsets(blob: bytes) -> PythonLayout | None:
    """A layout from the ``_Py_DebugOffsets`` header of ``_PyRuntime`` (3.13+), or None when the cookie is
    absent, the version is not one whose header shape is known, or the blob is short."""
    if len(blob) < DEBUG_OFFSETS_SIZE or blob[:8] != DEBUG_OFFSETS_COOKIE:
        return None

    def field_at(offset: int) -> int:
        return int(_U64.unpack_from(blob, offset)[0])

    hex_version = field_at(8)
    version = (hex_version >> 24, (hex_version >> 16) & 0xFF)
    base = LAYOUTS.get(version)
    # The header's own shape (where each offset lives) is that of 3.13 (pycore_runtime.h); 3.14 reorders it.
    if base is None or version != (3, 13) or field_at(16) != 0:  # free-threaded builds: other frame layout
        return None
    return replace(
        base,
        runtime_interpreters_head=field_at(40),
        interp_next=field_at(64),
        interp_threads_head=field_at(72),
        tstate_next=field_at(168),
        tstate_frame=field_at(184),
        tstate_thread_id=field_at(192),
        tstate_native_thread_id=field_at(200),
        frame_previous=field_at(232),
        frame_code=field_at(240),
        frame_instr=field_at(248),
        frame_owner=field_at(264),
        code_filename=field_at(280),
        code_name=field_at(288),
        code_qualname=field_at(296),
        code_linetable=field_at(304),
        code_firstlineno=field_at(312),
        code_adaptive=field_at(344),
        object_type=field_at(360),
        bytes_size=field_at(520),
        bytes_data=field_at(528),
    )


_NAME_VERSION = re.compile(r"(?:libpython|python)(\d)\.(\d+)")


def detect_version(elf: InterpreterElf) -> tuple[int, int] | None:
    """major.minor of an interpreter binary: ``Py_Version`` (3.11+, PY_VERSION_HEX in .rodata) when present,
    else the file name (``libpython3.X.so``, ``python3.X``) as the OTel profiler does; None when neither says."""
    symbol = elf.symbols.get("Py_Version")
    if symbol is not None:
        raw = elf.read_vaddr(symbol[0], 4)
        if raw is not None:
            hex_version = int.from_bytes(raw, "little")
            return (hex_version >> 24, (hex_version >> 16) & 0xFF)
    match = _NAME_VERSION.search(elf.path.rsplit("/", 1)[-1])
    if match is None:
        return None
    return (int(match.group(1)), int(match.group(2)))
