"""The user-space Python frame walk (pxq/agent/python/process.py) on every installed CPython: its frames equal
the interpreter's own view of the same stack, for two threads; and bad input ends in a counted reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pxq.agent.python import versions
from pxq.agent.python.elf_symbols import InterpreterElf
from pxq.agent.python.process import FLAG_READ_FAILED, FLAG_TRUNCATED, PythonAttachError, attach
from pxq.agent.python.resolver import PythonStacks
from tests.agent.python_targets import SYSTEM_STATIC, VERSIONS, chain_target, interpreter


@pytest.mark.parametrize("version", [*VERSIONS, SYSTEM_STATIC])
def test_user_walk_equals_the_interpreters_own_view(version: str) -> None:
    with chain_target(version) as target:
        process = attach(target.pid)
        try:
            assert process.layout.version == tuple(int(part) for part in version.split("-")[-1].split(".")[:2])
            stacks = process.stacks()
            assert set(stacks) == set(target.reports)  # every thread, by its kernel thread id
            for tid, expected in target.reports.items():
                walked = [(frame.qualname, frame.filename, frame.line) if frame else None for frame in stacks[tid]]
                assert walked == expected
            assert not process.reasons
        finally:
            process.close()


def test_a_static_stripped_interpreter_is_found_by_its_dynamic_symbols() -> None:
    """Debian's python3.11 links CPython into the executable and ships without .symtab: _PyRuntime,
    Py_Version, PyCode_Type and _PyEval_EvalFrameDefault are exported in .dynsym, which is all the walk needs;
    only the local _PyEval_EvalFrameDefault.cold part is unknown there."""
    with chain_target(SYSTEM_STATIC) as target:
        process = attach(target.pid)
        try:
            assert process.binary == str(os.path.realpath(interpreter(SYSTEM_STATIC)))
            assert process.code_type_address is not None and len(process.eval_ranges) == 1
        finally:
            process.close()


def test_a_stripped_libpython_still_walks(tmp_path: Path) -> None:
    """libpython stripped of .symtab (strip --strip-all keeps .dynsym) and loaded through LD_LIBRARY_PATH."""
    source = Path(interpreter("3.12.1")).parents[1] / "lib" / "libpython3.12.so.1.0"
    stripped = tmp_path / source.name
    subprocess.run(["strip", "--strip-all", "-o", str(stripped), str(source)], check=True)
    with chain_target("3.12.1", env={"LD_LIBRARY_PATH": str(tmp_path)}) as target:
        process = attach(target.pid)
        try:
            assert process.binary == str(stripped)
            stacks = process.stacks()
            for tid, expected in target.reports.items():
                assert [(frame.qualname, frame.filename, frame.line) for frame in stacks[tid] if frame] == expected
        finally:
            process.close()


@pytest.mark.parametrize("version", ["3.8.18", "3.11.7", "3.12.1", "3.13.0"])
def test_entry_frames_mark_each_eval_call(version: str) -> None:
    """Before 3.11 every frame has its own _PyEval_EvalFrameDefault call; from 3.11 the frames one call runs
    inline end at an entry frame. The chain's generator is resumed from C (gen_send_ex) on 3.11, so its body
    starts a new eval call there; the threads' run() bottom is entered from C on every version."""
    with chain_target(version) as target:
        process = attach(target.pid)
        try:
            main_tid = target.pid
            state = next(state for state in process.thread_states() if state.tid == main_tid)
            walk = process.walk(state.address)
            names = [frame[0] for frame in target.reports[main_tid]]
            entries = [name for name, frame in zip(names, walk.frames) if frame.entry]
            if version.startswith("3.8"):
                assert entries == names
            else:
                assert entries[-1] == "<module>"
                assert "élan_leaf" not in entries and "path_a" not in entries
            if version.startswith("3.11"):
                assert "generator" in entries
        finally:
            process.close()


def test_max_frames_truncates_and_flags() -> None:
    with chain_target("3.11.7") as target:
        process = attach(target.pid)
        try:
            state = next(state for state in process.thread_states() if state.tid == target.pid)
            walk = process.walk(state.address, max_frames=4)
            assert len(walk.frames) == 4 and walk.flags == FLAG_TRUNCATED
        finally:
            process.close()


def test_process_exiting_mid_walk_is_a_counted_reason() -> None:
    with chain_target("3.11.7") as target:
        process = attach(target.pid)
        state = next(state for state in process.thread_states() if state.tid == target.pid)
        target.process.kill()
        target.process.wait()
        walk = process.walk(state.address)
        assert walk.flags & FLAG_READ_FAILED and walk.reason == "process_exited"
        assert process.thread_states() == [] and process.reasons["thread_list_unreadable"] == 1
        process.close()


def test_garbage_pointers_are_counted_not_raised() -> None:
    with chain_target("3.11.7") as target:
        process = attach(target.pid)
        try:
            walk = process.walk(0xDEAD_BEEF_000)
            assert walk.flags == FLAG_READ_FAILED and walk.reason == "frame_unreadable"
            symbolizer = process.symbolizer()
            # Mapped memory that is no code object (the runtime state), then unmapped memory.
            assert symbolizer.symbolize(process.runtime_address, 0) is None
            assert symbolizer.symbolize(0xDEAD_BEEF_000, 0) is None
            assert symbolizer.reasons == {"not_a_code_object": 1, "code_object_unreadable": 1}
        finally:
            process.close()


def test_unknown_version_is_a_counted_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPython whose layout pxq lacks (here: 3.11 taken out of the table) is refused with the reason
    python_version_unknown, never walked with another version's offsets."""
    monkeypatch.delitem(versions.LAYOUTS, (3, 11))
    with chain_target("3.11.7") as target:
        with pytest.raises(PythonAttachError) as raised:
            attach(target.pid)
        assert raised.value.reason == "python_version_unknown"
        assert "3.11" in str(raised.value)


def test_version_from_the_file_name_when_py_version_is_absent() -> None:
    assert versions.detect_version(InterpreterElf(path="/usr/lib/libpython3.9.so.1.0")) == (3, 9)
    assert versions.detect_version(InterpreterElf(path="/usr/bin/python3.10")) == (3, 10)
    assert versions.detect_version(InterpreterElf(path="/usr/bin/mystery")) is None


def test_a_process_without_python_is_python_not_found() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(PythonAttachError) as raised:
            attach(child.pid)
        assert raised.value.reason == "python_not_found"
    finally:
        child.kill()
        child.wait()
    with pytest.raises(PythonAttachError) as raised:
        attach(child.pid)
    assert raised.value.reason == "process_exited"


def test_debug_offsets_of_313_agree_with_the_table() -> None:
    """3.13 publishes its own layout; the table's DWARF-read values must match what the running
    interpreter says about itself (so the table stays right where the cookie is missing)."""
    with chain_target("3.13.0") as target:
        process = attach(target.pid)
        try:
            blob = process.memory.read(process.runtime_address, versions.DEBUG_OFFSETS_SIZE)
            published = versions.layout_from_debug_offsets(blob)
            assert published is not None
            assert published == versions.LAYOUTS[(3, 13)]
        finally:
            process.close()
    assert versions.layout_from_debug_offsets(b"notdebug" + bytes(600)) is None
    assert os.path.exists(interpreter("3.13.0"))


def test_the_diagnostic_command_prints_each_threads_stack() -> None:
    with chain_target("3.12.1") as target:
        run = subprocess.run(
            [sys.executable, "-m", "pxq.agent.python", str(target.pid)], capture_output=True, text=True, check=True
        )
    for tid, frames in target.reports.items():
        block = run.stdout.split(f"Thread {tid} (most recent call last):\n")[1].split("Thread ")[0]
        expected = "".join(
            f'  File "{filename}", line {line}, in {name}\n' for name, filename, line in reversed(frames)
        )
        assert block == expected
    failed = subprocess.run([sys.executable, "-m", "pxq.agent.python", "999999999"], capture_output=True, text=True)
    assert failed.returncode == 1 and "(process_exited)" in failed.stderr and "Traceback" not in failed.stderr


_THREADS_SCRIPT = """
import os, sys, threading
ready_r, ready_w = os.pipe()
end_r, end_w = os.pipe()
def worker():
    os.write(ready_w, str(threading.get_native_id()).encode() + b"\\n")
    os.read(end_r, 1)
print("ready", flush=True)
os.read(0, 1)
thread = threading.Thread(target=worker)
thread.start()
print(os.read(ready_r, 64).decode().strip(), flush=True)
os.read(0, 1)
os.write(end_w, b"x")
thread.join()
print("joined", flush=True)
os.read(0, 1)
"""


def test_refresh_threads_reports_threads_that_start_and_end() -> None:
    stacks = PythonStacks()
    child = subprocess.Popen(
        [interpreter("3.12.1"), "-c", _THREADS_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == b"ready\n"
        added, removed = stacks.refresh_threads(child.pid)
        assert [state.tid for state in added] == [child.pid] and removed == []
        child.stdin.write(b"x")
        child.stdin.flush()
        worker_tid = int(child.stdout.readline())
        added, removed = stacks.refresh_threads(child.pid)
        assert [state.tid for state in added] == [worker_tid] and removed == []
        child.stdin.write(b"x")
        child.stdin.flush()
        assert child.stdout.readline() == b"joined\n"
        added, removed = stacks.refresh_threads(child.pid)
        assert added == [] and [state.tid for state in removed] == [worker_tid]
    finally:
        child.kill()
        child.wait()
        stacks.close()
