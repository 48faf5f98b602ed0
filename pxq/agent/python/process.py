"""A live CPython process seen from outside: its interpreter binary and version, the address of
``_PyRuntime``, every thread's (kernel thread id → PyThreadState address), and a user-space walk of one
thread's frames through /proc/pid/mem.

The walk records per frame what the BPF walker (bpf/python_stack.h) records: the code object address, the
raw instruction value (f_lasti before 3.11, prev_instr/instr_ptr from 3.11) and whether the frame is the
first one run by its _PyEval_EvalFrameDefault call. It is the reference the BPF walker is tested against.

Failures never raise out of ``walk``: a frame chain that cannot be read ends with a flag and a reason.
``attach`` raises PythonAttachError whose ``reason`` is a short counter name (python_version_unknown,
python_not_found, process_exited, ...). One reason is not final: ``python_starting``, a ``python3.X`` whose
executable needs a libpython that is not mapped yet (caught between its exec and its dynamic loader's
work: a profiler meets new processes there); attached again a moment later it is read.
"""

from __future__ import annotations

import os
import re
import struct
from collections import Counter
from dataclasses import dataclass, field

from pxq.agent.proc_maps import read_maps
from pxq.agent.python.code import CodeSymbolizer, PyFrame
from pxq.agent.python.elf_symbols import ElfFormatError, InterpreterElf, read_interpreter_elf
from pxq.agent.python.versions import (
    DEBUG_OFFSETS_SIZE,
    FRAME_OWNED_BY_CSTACK,
    GLIBC_PTHREAD_TID_OFFSET,
    NO_FIELD,
    PythonLayout,
    detect_version,
    layout_for,
    layout_from_debug_offsets,
)

MAX_FRAMES = 128
MAX_THREADS = 4096
MAX_INTERPRETERS = 64
# Flags of one walk, the same bits as bpf/python_stack.h.
FLAG_TRUNCATED = 1
FLAG_READ_FAILED = 2

# The evaluation function and its GCC-split cold part (3.11, 3.12 builds have one): a native frame in either
# runs Python frames.
EVAL_SYMBOLS = ("_PyEval_EvalFrameDefault", "_PyEval_EvalFrameDefault.cold")
_WANTED = frozenset({"_PyRuntime", "Py_Version", "PyCode_Type", *EVAL_SYMBOLS})
_LIBPYTHON = re.compile(r"/libpython\d\.\d+[^/]*\.so")
_LIBPYTHON_SONAME = re.compile(r"^libpython\d\.\d+")
# The reasons attach may give a different answer for later in the same process (see the docstring).
PYTHON_STARTING = "python_starting"
TRANSIENT_REASONS = frozenset({PYTHON_STARTING})
_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")


class PythonAttachError(Exception):
    """A process whose Python frames cannot be read; ``reason`` names the counter to bump."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProcessMemory:
    """Reads another process's memory with pread on /proc/pid/mem (needs ptrace access: root here)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)

    def read(self, address: int, size: int) -> bytes:
        """Exactly size bytes at address; OSError when any of them is unmapped or the process is gone."""
        if address <= 0 or address + size > 1 << 47:
            raise OSError(f"address {address:#x} is outside user space")
        data = os.pread(self.fd, size, address)
        if len(data) != size:
            raise OSError(f"short read at {address:#x}: {len(data)} of {size} bytes")
        return data

    def u64(self, address: int) -> int:
        return int(_U64.unpack(self.read(address, 8))[0])

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class RawFrame:
    """What one walk step records (and what the BPF walker emits)."""

    code: int
    instr: int
    entry: bool


@dataclass
class FrameWalk:
    frames: list[RawFrame] = field(default_factory=list)
    flags: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class ThreadState:
    tid: int  # kernel thread id; 0 when it could not be learned
    address: int


@dataclass
class PythonProcess:
    pid: int
    binary: str
    bias: int
    layout: PythonLayout
    memory: ProcessMemory
    runtime_address: int
    code_type_address: int | None
    eval_ranges: list[tuple[int, int]]  # [start, end) of _PyEval_EvalFrameDefault's parts in this process
    reasons: Counter[str] = field(default_factory=Counter)

    def thread_states(self) -> list[ThreadState]:
        """Every thread state of every interpreter, with its kernel thread id; a failing read ends the list
        early and counts ``thread_list_unreadable``."""
        layout, states = self.layout, []
        seen: set[int] = set()
        try:
            interp = self.memory.u64(self.runtime_address + layout.runtime_interpreters_head)
            for _ in range(MAX_INTERPRETERS):
                if interp == 0:
                    break
                tstate = self.memory.u64(interp + layout.interp_threads_head)
                while tstate != 0 and tstate not in seen and len(seen) < MAX_THREADS:
                    seen.add(tstate)
                    states.append(ThreadState(self._thread_id(tstate), tstate))
                    tstate = self.memory.u64(tstate + layout.tstate_next)
                interp = self.memory.u64(interp + layout.interp_next)
        except OSError:
            self.reasons["thread_list_unreadable"] += 1
        return states

    def _thread_id(self, tstate: int) -> int:
        layout = self.layout
        if layout.tstate_native_thread_id != NO_FIELD:
            return self.memory.u64(tstate + layout.tstate_native_thread_id) & 0xFFFFFFFF
        pthread = self.memory.u64(tstate + layout.tstate_thread_id)
        try:
            tid = int.from_bytes(self.memory.read(pthread + GLIBC_PTHREAD_TID_OFFSET, 4), "little")
        except OSError:
            tid = 0
        # Only a tid of this process counts (a non-glibc libc keeps something else there).
        if tid == 0 or not os.path.exists(f"/proc/{self.pid}/task/{tid}"):
            self.reasons["thread_id_unknown"] += 1
            return 0
        return tid

    def walk(self, tstate: int, max_frames: int = MAX_FRAMES) -> FrameWalk:
        """The raw frames of one thread, innermost first."""
        layout, read_u64 = self.layout, self.memory.u64
        result = FrameWalk()
        try:
            frame = read_u64(tstate + layout.tstate_frame)
            if layout.cframe_current_frame != NO_FIELD and frame != 0:
                frame = read_u64(frame + layout.cframe_current_frame)
            steps = 0
            while frame != 0:
                steps += 1
                if len(result.frames) >= max_frames or steps > 2 * max_frames:
                    result.flags |= FLAG_TRUNCATED
                    break
                if layout.frame_owner != NO_FIELD and layout.frame_is_entry == NO_FIELD:
                    owner = self.memory.read(frame + layout.frame_owner, 1)[0]
                    if owner == FRAME_OWNED_BY_CSTACK:  # the shim of an eval call: the frame above is its entry
                        if result.frames:
                            last = result.frames[-1]
                            result.frames[-1] = RawFrame(last.code, last.instr, True)
                        frame = read_u64(frame + layout.frame_previous)
                        continue
                code = read_u64(frame + layout.frame_code)
                if layout.instr_is_pointer:
                    instr = read_u64(frame + layout.frame_instr)
                else:
                    instr = _I32.unpack(self.memory.read(frame + layout.frame_instr, 4))[0] & 0xFFFFFFFF
                if layout.frame_is_entry != NO_FIELD:
                    entry = self.memory.read(frame + layout.frame_is_entry, 1)[0] != 0
                else:
                    entry = not layout.instr_is_pointer  # before 3.11 every frame has its own eval call
                result.frames.append(RawFrame(code, instr, entry))
                frame = read_u64(frame + layout.frame_previous)
        except OSError:
            result.flags |= FLAG_READ_FAILED
            result.reason = "process_exited" if not os.path.exists(f"/proc/{self.pid}") else "frame_unreadable"
            self.reasons[result.reason] += 1
        return result

    def symbolizer(self) -> CodeSymbolizer:
        return CodeSymbolizer(self.layout, self.memory.read, self.code_type_address)

    def stacks(self, max_frames: int = MAX_FRAMES) -> dict[int, list[PyFrame | None]]:
        """tid → symbolized frames (innermost first) of every thread: for diagnostics and tests."""
        symbolizer = self.symbolizer()
        stacks: dict[int, list[PyFrame | None]] = {}
        for state in self.thread_states():
            walk = self.walk(state.address, max_frames)
            stacks[state.tid] = [symbolizer.symbolize(frame.code, frame.instr) for frame in walk.frames]
        return stacks

    def close(self) -> None:
        self.memory.close()


def _maps(pid: int) -> tuple[list[tuple[int, int, int, str]], set[str]]:
    """(start, end, file offset, path) of every file-backed mapping, and the paths mapped executable."""
    mappings = [m for m in read_maps(pid) if m.path.startswith("/")]
    return [(m.start, m.end, m.offset, m.path) for m in mappings], {m.path for m in mappings if m.executable}


def _load_bias(elf: InterpreterElf, mappings: list[tuple[int, int, int, str]]) -> int | None:
    """Runtime address minus ELF virtual address, from the first mapping of the file and the PT_LOAD
    segment that holds its file offset."""
    start, _, offset, _ = min(mappings)
    for p_offset, p_vaddr, p_filesz in elf.segments:
        page_offset = p_offset & ~0xFFF
        if page_offset <= offset < p_offset + max(p_filesz, 1):
            return start - offset - ((p_vaddr & ~0xFFF) - page_offset)
    return None


def attach(pid: int) -> PythonProcess:
    """The CPython interpreter running in pid: libpython when mapped, else the executable itself."""
    try:
        mappings, executable = _maps(pid)
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except FileNotFoundError as error:
        raise PythonAttachError("process_exited", f"process {pid} exited") from error
    except OSError as error:
        raise PythonAttachError("process_unreadable", f"cannot read process {pid}: {error}") from error
    by_path: dict[str, list[tuple[int, int, int, str]]] = {}
    for row in mappings:
        by_path.setdefault(row[3], []).append(row)
    # A libpython runs here only if its code is mapped executable: py-spy and pxq's own symbolizer map
    # binaries read-only to parse them (a pytest of pxq's profiler tests maps CPython 3.7's, say).
    libpythons = [path for path in by_path if _LIBPYTHON.search(path) and path in executable]
    candidates = libpythons + ([exe] if exe in by_path else [])
    exe_elf = None
    for path in candidates:
        try:
            elf = read_interpreter_elf(f"/proc/{pid}/root{path}", _WANTED)
        except (OSError, ElfFormatError):
            continue
        elf.path = path
        if path == exe:
            exe_elf = elf
        if "_PyRuntime" not in elf.symbols:
            continue
        return _attach_binary(pid, elf, by_path[path])
    unmapped = None if libpythons else _libpython_not_mapped(exe_elf)
    if unmapped is not None:
        raise PythonAttachError(
            PYTHON_STARTING, f"process {pid} runs {exe}, which needs {unmapped}: not mapped yet (it is starting)"
        )
    raise PythonAttachError("python_not_found", f"process {pid} maps no CPython with a _PyRuntime symbol")


def _libpython_not_mapped(exe: InterpreterElf | None) -> str | None:
    """The libpython the executable needs (DT_NEEDED), called while none is mapped: its interpreter is
    not loaded yet. (A libpython mapped that has no _PyRuntime is final: python_not_found.)"""
    if exe is None:
        return None
    return next((name for name in exe.needed if _LIBPYTHON_SONAME.match(name)), None)


def _attach_binary(pid: int, elf: InterpreterElf, mappings: list[tuple[int, int, int, str]]) -> PythonProcess:
    bias = _load_bias(elf, mappings)
    if bias is None:
        raise PythonAttachError("python_not_found", f"{elf.path}: no loadable segment matches its mapping")
    try:
        memory = ProcessMemory(pid)
    except OSError as error:
        raise PythonAttachError("process_exited", f"cannot open the memory of process {pid}: {error}") from error
    runtime = bias + elf.symbols["_PyRuntime"][0]
    version = detect_version(elf)
    layout = layout_for(version) if version is not None else None
    if version is not None and version >= (3, 13):
        try:
            published = layout_from_debug_offsets(memory.read(runtime, DEBUG_OFFSETS_SIZE))
        except OSError:
            published = None
        layout = published or layout
    if layout is None:
        memory.close()
        shown = "an unknown version" if version is None else f"version {version[0]}.{version[1]}"
        raise PythonAttachError(
            "python_version_unknown", f"{elf.path} is CPython {shown}; pxq reads frames of 3.8 to 3.13"
        )
    code_type = elf.symbols.get("PyCode_Type")
    eval_symbols = [elf.symbols[name] for name in EVAL_SYMBOLS if name in elf.symbols]
    return PythonProcess(
        pid=pid,
        binary=elf.path,
        bias=bias,
        layout=layout,
        memory=memory,
        runtime_address=runtime,
        code_type_address=bias + code_type[0] if code_type else None,
        eval_ranges=[(bias + value, bias + value + size) for value, size in eval_symbols],
    )
