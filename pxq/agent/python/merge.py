"""One stack from a native stack and the Python frames of the same moment.

Each native frame inside _PyEval_EvalFrameDefault is replaced by the Python frames that call runs: from 3.11
the frames up to and including the next entry frame (is_entry in 3.11, the frame above a
FRAME_OWNED_BY_CSTACK shim from 3.12), before 3.11 exactly one (every frame there is an entry frame). This is
py-spy's ``merge_native_stack`` (benfred/py-spy:src/native_stack_trace.rs) and the OTel profiler's switch at
``interpreter_offsets`` (support/ebpf/tracemgmt.h).

When the counts disagree (a native unwind that stopped early, or an eval call whose Python frames are already
gone) nothing is guessed away: every frame is kept, the unplaced Python frames go to the outer end as py-spy
does, and the stack is marked partial with a reason to count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class EntryMarked(Protocol):
    @property
    def entry(self) -> bool: ...


PythonFrameT = TypeVar("PythonFrameT", bound=EntryMarked)

REASON_PYTHON_UNPLACED = "python_frames_unplaced"  # more Python frames than eval calls in the native stack
REASON_EVAL_UNMATCHED = "eval_frames_unmatched"  # an eval call with no Python frame left to run


@dataclass(frozen=True)
class NativeFrame:
    """An address in the native stack: the PC for the innermost frame, a return address for the others."""

    address: int


@dataclass
class MergedStack(Generic[PythonFrameT]):
    frames: list[NativeFrame | PythonFrameT] = field(default_factory=list)  # innermost first
    partial: bool = False
    reason: str | None = None


def in_eval(address: int, innermost: bool, eval_ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether a native frame runs _PyEval_EvalFrameDefault. A return address points after its call, possibly
    one past the function's end for a final call, so callers' addresses are tested one byte earlier."""
    probe = address if innermost else address - 1
    return any(start <= probe < end for start, end in eval_ranges)


def merge_stacks(
    native_frames: Sequence[int],
    python_frames: Sequence[PythonFrameT],
    eval_ranges: Sequence[tuple[int, int]],
) -> MergedStack[PythonFrameT]:
    """native_frames and python_frames innermost first; eval_ranges the [start, end) address ranges of the
    evaluation function (process.PythonProcess.eval_ranges)."""
    merged: MergedStack[PythonFrameT] = MergedStack()
    next_python = 0
    for index, address in enumerate(native_frames):
        if not in_eval(address, index == 0, eval_ranges):
            merged.frames.append(NativeFrame(address))
            continue
        if next_python >= len(python_frames):
            merged.frames.append(NativeFrame(address))  # kept as it is: no Python frame to put here
            merged.partial, merged.reason = True, merged.reason or REASON_EVAL_UNMATCHED
            continue
        while next_python < len(python_frames):
            frame = python_frames[next_python]
            merged.frames.append(frame)
            next_python += 1
            if frame.entry:
                break
    if next_python < len(python_frames):
        merged.frames.extend(python_frames[next_python:])
        merged.partial, merged.reason = True, merged.reason or REASON_PYTHON_UNPLACED
    return merged
