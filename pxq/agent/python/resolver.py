"""The Python side of a profiler sample, for the agent to call per process: what to put in the BPF maps
(``thread_table``: tid → PyThreadState, ``bpf_config``: offsets) and, per sample, the one merged stack from the
native return addresses the agent unwound and the ``struct python_frames`` record bpf/python_stack.h filled.

A process is attached once; one that cannot be (not a CPython, an unknown version, gone) is remembered with its
reason, counted once, and its samples keep their native frames unchanged. A reason that may pass
(``python_starting``: the interpreter's libpython is not mapped yet) is tried again by ``retry``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pxq.agent.python.bpf_records import (
    PY_FLAG_NO_THREAD,
    PY_FLAG_READ_FAILED,
    PY_FLAG_TRUNCATED,
    PY_MAX_FRAMES,
    BpfFrame,
    PythonOffsets,
    bpf_offsets,
    decode_python_frames,
)
from pxq.agent.python.code import CodeSymbolizer, PyFrame
from pxq.agent.python.merge import NativeFrame, merge_stacks
from pxq.agent.python.process import TRANSIENT_REASONS, PythonAttachError, PythonProcess, ThreadState, attach

# A Python frame whose code object could not be named (its reason is counted by the symbolizer).
UNKNOWN_PYTHON_FRAME = PyFrame("<unknown python frame>", "", None)
REASON_CODE_UNKNOWN = "python_code_unknown"


def _by_tid(state: ThreadState) -> int:
    return state.tid


@dataclass
class ResolvedStack:
    frames: list[NativeFrame | PyFrame] = field(default_factory=list)  # innermost first
    partial: bool = False
    reasons: list[str] = field(default_factory=list)


@dataclass
class _Attached:
    process: PythonProcess
    symbolizer: CodeSymbolizer


class PythonStacks:
    """Python frames of the processes a profiler samples; ``reasons`` counts every failure by name."""

    def __init__(self, max_frames: int = PY_MAX_FRAMES) -> None:
        self.max_frames = max_frames
        self.reasons: Counter[str] = Counter()
        self._attached: dict[int, _Attached | str] = {}
        self._messages: dict[int, str] = {}  # pid -> what its failed attach said
        self._threads: dict[int, set[ThreadState]] = {}

    def _get(self, pid: int) -> _Attached | None:
        known = self._attached.get(pid)
        if known is None:
            try:
                process = attach(pid)
            except PythonAttachError as error:
                self.reasons[error.reason] += 1
                self._attached[pid] = error.reason
                self._messages[pid] = str(error)
                return None
            known = _Attached(process, process.symbolizer())
            self._attached[pid] = known
            self._messages.pop(pid, None)
        return known if isinstance(known, _Attached) else None

    def retry(self, pid: int) -> bool:
        """Attach again a process whose last attempt failed for a reason that may pass (python_starting);
        True once it is attached. The same reason again is not counted again."""
        known = self._attached.get(pid)
        if isinstance(known, str) and known in TRANSIENT_REASONS:
            del self._attached[pid]
            attached = self._get(pid)
            if self._attached.get(pid) == known:
                self.reasons[known] -= 1
            return attached is not None
        return isinstance(known, _Attached)

    def is_python(self, pid: int) -> bool:
        return self._get(pid) is not None

    def thread_table(self, pid: int) -> list[ThreadState]:
        """(tid, PyThreadState address) of every thread now: the entries of the BPF `tid -> tstate` hash.
        Call again when threads start (a sample of an unknown tid carries no Python frames)."""
        attached = self._get(pid)
        return attached.process.thread_states() if attached else []

    def refresh_threads(self, pid: int) -> tuple[list[ThreadState], list[ThreadState]]:
        """(added, removed) thread states since the last call for pid, for updating the BPF hash in place as
        threads start and end (a thread id reused with a new thread state shows as removed and added)."""
        current = set(self.thread_table(pid))
        previous = self._threads.get(pid, set())
        self._threads[pid] = current
        return sorted(current - previous, key=_by_tid), sorted(previous - current, key=_by_tid)

    def why_not(self, pid: int) -> str | None:
        """The reason pid's Python frames cannot be read (python_version_unknown, ...), None when they can."""
        known = self._attached.get(pid)
        return known if isinstance(known, str) else None

    def failure_message(self, pid: int) -> str | None:
        """What attaching pid said when it failed (the binary, its version), None when it did not fail."""
        return self._messages.get(pid) if self.why_not(pid) else None

    def warm(self, pid: int, python_record: bytes) -> None:
        """Name the code objects of a record now, while the process surely lives: resolve() later (the
        process maybe gone) is then served from the symbolizer's cache, checked by each frame's stamp."""
        known = self._attached.get(pid)
        if not isinstance(known, _Attached) or not python_record:
            return
        for frame in decode_python_frames(python_record, self.max_frames).frames:
            known.symbolizer.symbolize(frame.code, frame.instr, frame.stamp)

    def bpf_config(self, pid: int) -> PythonOffsets | None:
        attached = self._get(pid)
        return bpf_offsets(attached.process.layout) if attached else None

    def resolve(self, pid: int, native: Sequence[int], python_record: bytes | None) -> ResolvedStack:
        """One stack for a sample: native addresses (innermost first: the PC, then return addresses) with the
        Python frames of the record placed at the evaluation function's frames."""
        attached = self._get(pid)
        if attached is None or not python_record:
            return ResolvedStack([NativeFrame(address) for address in native])
        record = decode_python_frames(python_record, self.max_frames)
        resolved = ResolvedStack()
        for flag, reason in (
            (PY_FLAG_TRUNCATED, "python_truncated"),
            (PY_FLAG_READ_FAILED, "python_read_failed"),
            (PY_FLAG_NO_THREAD, "python_thread_unknown"),
        ):
            if record.flags & flag:
                resolved.partial = True
                resolved.reasons.append(reason)
        merged = merge_stacks(native, record.frames, attached.process.eval_ranges)
        if merged.partial and merged.reason:
            resolved.partial = True
            resolved.reasons.append(merged.reason)
        for reason in resolved.reasons:
            self.reasons[reason] += 1
        symbolizer = attached.symbolizer
        for frame in merged.frames:
            if isinstance(frame, BpfFrame):
                named = symbolizer.symbolize(frame.code, frame.instr, frame.stamp)
                if named is None:  # why is counted by the symbolizer; the stack is partial
                    resolved.partial = True
                    resolved.reasons.append(REASON_CODE_UNKNOWN)
                    self.reasons[REASON_CODE_UNKNOWN] += 1
                resolved.frames.append(named or UNKNOWN_PYTHON_FRAME)
            else:
                resolved.frames.append(frame)
        return resolved

    def counts(self) -> Counter[str]:
        """Every reason counted so far, the symbolizers' (code_object_stale, ...) and walkers' included."""
        total = Counter(self.reasons)
        for known in self._attached.values():
            if isinstance(known, _Attached):
                total.update(known.symbolizer.reasons)
                total.update(known.process.reasons)
        return total

    def forget(self, pid: int) -> None:
        """Drop a process that exited or exec'd (a new program may be another Python, or none)."""
        self._threads.pop(pid, None)
        self._messages.pop(pid, None)
        known = self._attached.pop(pid, None)
        if isinstance(known, _Attached):
            self.reasons.update(known.symbolizer.reasons)
            self.reasons.update(known.process.reasons)
            known.process.close()

    def close(self) -> None:
        for pid in list(self._attached):
            self.forget(pid)
