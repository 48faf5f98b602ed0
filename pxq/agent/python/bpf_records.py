"""The user-space side of bpf/python_stack.h: the per-process offsets struct packed from a PythonLayout, and
the `struct python_frames` record decoded. ctypes mirrors of the C structs; the C header is the reference."""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

from pxq.agent.python.versions import NO_FIELD, PythonLayout

PY_MAX_FRAMES = 64  # the header's default; a program built with another -DPY_MAX_FRAMES passes its own
PY_FLAG_TRUNCATED = 1
PY_FLAG_READ_FAILED = 2
PY_FLAG_NO_THREAD = 4  # set by bpf/profile.c: the thread's PyThreadState was not in its map


class PythonOffsets(ctypes.Structure):
    _fields_ = [
        ("tstate_frame", ctypes.c_int32),
        ("cframe_current_frame", ctypes.c_int32),
        ("frame_code", ctypes.c_int32),
        ("frame_previous", ctypes.c_int32),
        ("frame_instr", ctypes.c_int32),
        ("frame_is_entry", ctypes.c_int32),
        ("frame_owner", ctypes.c_int32),
        ("code_name", ctypes.c_int32),
        ("code_firstlineno", ctypes.c_int32),
        ("instr_is_pointer", ctypes.c_uint32),
    ]


class PythonFrameRecord(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint64),
        ("instr", ctypes.c_uint64),
        ("entry", ctypes.c_uint32),
        ("stamp", ctypes.c_uint32),
    ]


@functools.cache  # one type per size: building a ctypes type costs far more than decoding a record
def python_frames_struct(max_frames: int = PY_MAX_FRAMES) -> type[ctypes.Structure]:
    """The ctypes mirror of `struct python_frames` for a program built with PY_MAX_FRAMES = max_frames."""
    return type(
        f"PythonFrames{max_frames}",
        (ctypes.Structure,),
        {
            "_fields_": [
                ("count", ctypes.c_uint32),
                ("flags", ctypes.c_uint32),
                ("frame", PythonFrameRecord * max_frames),
            ]
        },
    )


def bpf_offsets(layout: PythonLayout) -> PythonOffsets:
    """The config value bpf/python_stack.h walks a process of this layout with. Before 3.11 and in 3.11 the
    owner field is left out (3.11 marks entries with is_entry; its owner has no C-stack value)."""
    owner = layout.frame_owner if layout.frame_is_entry == NO_FIELD else NO_FIELD
    return PythonOffsets(
        tstate_frame=layout.tstate_frame,
        cframe_current_frame=layout.cframe_current_frame,
        frame_code=layout.frame_code,
        frame_previous=layout.frame_previous,
        frame_instr=layout.frame_instr,
        frame_is_entry=layout.frame_is_entry,
        frame_owner=owner,
        code_name=layout.code_qualname if layout.code_qualname != NO_FIELD else layout.code_name,
        code_firstlineno=layout.code_firstlineno,
        instr_is_pointer=int(layout.instr_is_pointer),
    )


@dataclass(frozen=True)
class BpfFrame:
    code: int
    instr: int
    entry: bool
    stamp: int


@dataclass(frozen=True)
class BpfPythonStack:
    frames: list[BpfFrame]
    flags: int


def decode_python_frames(raw: bytes, max_frames: int = PY_MAX_FRAMES) -> BpfPythonStack:
    """A `struct python_frames` record; a count beyond the array (a corrupt record) keeps what fits, flagged."""
    struct = python_frames_struct(max_frames)
    record = struct.from_buffer_copy(raw[: ctypes.sizeof(struct)])
    count, flags = int(record.count), int(record.flags)
    if count > max_frames:
        count, flags = max_frames, flags | PY_FLAG_TRUNCATED
    frames = [
        BpfFrame(int(slot.code), int(slot.instr), bool(slot.entry), int(slot.stamp)) for slot in record.frame[:count]
    ]
    return BpfPythonStack(frames, flags)
