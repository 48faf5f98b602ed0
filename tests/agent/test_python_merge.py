"""merge_stacks (pxq/agent/python/merge.py) on stacks taken from real processes: the native stack of the
chain target's main thread as gdb unwinds it (DWARF CFI, an unwinder independent of pxq), the Python frames
from the user-space walker, and _PyEval_EvalFrameDefault's ranges from the process's symbols."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pxq.agent.python.merge import REASON_EVAL_UNMATCHED, REASON_PYTHON_UNPLACED, NativeFrame, merge_stacks
from pxq.agent.python.process import attach
from tests.agent.python_targets import SYSTEM_STATIC, VERSIONS, chain_target, missing

_GDB_SCRIPT = """
import gdb, json
frames = []
for thread in gdb.selected_inferior().threads():
    if thread.ptid[1] == {tid}:
        thread.switch()
        frame = gdb.newest_frame()
        while frame is not None:
            if frame.type() != gdb.INLINE_FRAME:  # inlined calls share their caller's machine frame
                frames.append([frame.pc(), frame.name() or ""])
            frame = frame.older()
print("NATIVE" + json.dumps(frames))
"""


def native_stack(pid: int, tid: int) -> list[tuple[int, str]]:
    """(address, function name) innermost first, as gdb unwinds the thread."""
    if shutil.which("gdb") is None:
        missing("gdb is not installed: these tests take the native stack from gdb's unwinder")
    scope = Path("/proc/sys/kernel/yama/ptrace_scope")
    if os.geteuid() != 0 and scope.exists() and scope.read_text().strip() != "0":
        missing("gdb attaches to a sibling process: Yama's ptrace_scope forbids it without root")
    run = subprocess.run(
        ["gdb", "-nx", "-batch", "-p", str(pid), "-ex", "python\n" + _GDB_SCRIPT.format(tid=tid) + "\nend"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next(line for line in run.stdout.splitlines() if line.startswith("NATIVE"))
    return [(address, name) for address, name in json.loads(line[len("NATIVE") :])]


@dataclass(frozen=True)
class Named:
    name: str
    entry: bool


def _real_stacks(version: str) -> tuple[list[tuple[int, str]], list[Named], list[tuple[int, int]]]:
    with chain_target(version) as target:
        process = attach(target.pid)
        try:
            state = next(state for state in process.thread_states() if state.tid == target.pid)
            walk = process.walk(state.address)
            symbolizer = process.symbolizer()
            python = []
            for frame in walk.frames:
                symbol = symbolizer.symbolize(frame.code, frame.instr)
                assert symbol is not None
                python.append(Named(symbol.qualname, frame.entry))
            native = native_stack(target.pid, target.pid)
            return native, python, process.eval_ranges
        finally:
            process.close()


@pytest.mark.slow
@pytest.mark.parametrize("version", [*VERSIONS, SYSTEM_STATIC])
def test_merge_places_every_python_frame_at_its_eval_call(version: str) -> None:
    native, python, eval_ranges = _real_stacks(version)
    names = {address: name for address, name in native}
    eval_calls = [name for _, name in native if name.startswith("_PyEval_EvalFrameDefault")]
    # gdb's own names and the walker's entry markers agree on how many eval calls the stack holds.
    assert len(eval_calls) == sum(frame.entry for frame in python)

    merged = merge_stacks([address for address, _ in native], python, eval_ranges)
    assert not merged.partial and merged.reason is None
    assert [frame for frame in merged.frames if isinstance(frame, Named)] == python
    assert len(merged.frames) == len(native) - len(eval_calls) + len(python)
    shown = [names[frame.address] if isinstance(frame, NativeFrame) else frame.name for frame in merged.frames]
    assert not any(name.startswith("_PyEval_EvalFrameDefault") for name in shown)
    # The chain's order holds with native frames interleaved, and the interpreter's C entry sits outside
    # the module frame.
    python_order = [name for name in shown if name in {frame.name for frame in python}]
    assert python_order[0] == "élan_leaf" and python_order[-1] == "<module>"
    outer = shown[shown.index("<module>") + 1 :]
    assert any(name.startswith("PyEval_EvalCode") for name in outer) and "Py_RunMain" in outer
    if version.startswith("3.11"):
        # 3.11 resumes the generator from C (Objects/genobject.c: gen_iternext -> gen_send_ex2, inlined here):
        # native frames between its body and the caller.
        between = shown[shown.index("generator") + 1 : shown.index("through_generator")]
        assert any(name in ("gen_iternext", "gen_send_ex2") for name in between)


@pytest.mark.slow
def test_counts_that_disagree_keep_every_frame_and_mark_partial() -> None:
    native, python, eval_ranges = _real_stacks("3.11.7")
    addresses = [address for address, _ in native]
    # A native unwind that stopped after the innermost eval call (e.g. a stack deeper than the copy).
    first_eval = next(i for i, (_, name) in enumerate(native) if name.startswith("_PyEval_EvalFrameDefault"))
    cut = merge_stacks(addresses[: first_eval + 1], python, eval_ranges)
    assert cut.partial and cut.reason == REASON_PYTHON_UNPLACED
    assert [frame for frame in cut.frames if isinstance(frame, Named)] == python
    assert len(cut.frames) == first_eval + len(python)
    # Python frames already gone while the eval call still runs: the eval frame stays, native.
    fewer = merge_stacks(addresses, python[:2], eval_ranges)
    assert fewer.partial and fewer.reason == REASON_EVAL_UNMATCHED
    assert sum(isinstance(frame, Named) for frame in fewer.frames) == 2
    assert len(fewer.frames) == len(addresses) - 1 + 2
    # No Python frames at all (not a Python thread): the native stack unchanged, marked only if it had eval calls.
    assert [frame.address for frame in merge_stacks(addresses, [], eval_ranges).frames] == addresses  # type: ignore[union-attr]
