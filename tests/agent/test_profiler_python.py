"""Python processes in the CPU profiler, on the running kernel (Pixie's 2:1 test style): every sample of a
Python process is one eBPF row whose stack holds the native frames with the Python frames where the
interpreter's evaluation function stands (bpf/python_stack.h walked in bpf/profile.c, merged by
pxq/agent/profiler.py), on the machine's python3.11 and other CPythons.

Expected values come from outside the profiler: the program's source (its call chain, its 2:1 split), the
CPU time the kernel says the target got (/proc/PID/stat utime + stime) times the sampling rate, and the
interpreter version (3.7 is outside the walker's table: py-spy's, or marked native-only samples).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pxq.agent.profiler import Profiler, ProfilerOptions
from pxq.agent.pyspy import find_pyspy
from pxq.testing.kernel import require_bpf
from tests.agent.programs.build import cpu_seconds, read_line
from tests.agent.python_targets import SYSTEM_STATIC, interpreter
from tests.agent.test_profiler_native import competing_loads

pytestmark = pytest.mark.kernel
HZ = 397  # as test_profiler_native: ~1,000 samples in 2.5 CPU seconds, no beat with the 250 Hz tick
PROGRAM = Path(__file__).parent / "programs" / "py_ratio.py"
CALLS = {("<module>", "main"), ("main", "path_a"), ("main", "path_b"), ("path_a", "leaf"), ("path_b", "leaf")}
# "function (file:line)", the form py-spy writes and pxq's Python frames follow.
PYTHON_FRAME = re.compile(r"^(?P<name>.+) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
UNKNOWN_VERSION = "3.7.16"  # installed under pyenv, outside the walker's 3.8-3.13


def program_frames(row: dict) -> list[str]:
    """The names of the row's Python frames of py_ratio.py, root first."""
    names = []
    for frame in row["stack_trace"].split(";"):
        match = PYTHON_FRAME.match(frame)
        if match and match["file"].endswith(PROGRAM.name):
            names.append(match["name"])
    return names


def chain_of(row: dict) -> tuple[str, ...]:
    """("main", "path_x", "leaf") when the row holds that chain at the end of its program frames."""
    return tuple(program_frames(row)[-3:])


def is_python(frame: str) -> bool:
    return PYTHON_FRAME.match(frame) is not None and not frame.endswith("_[k]")


def total(rows: list[dict]) -> int:
    return sum(r["count"] for r in rows)


def profile_python(version: str, argv: tuple[str, ...], min_cpu_s: float, configure=None, max_s: float = 90.0):
    """Run py_ratio.py under ``version``, profiled by pid from before its loop starts, until it got
    ``min_cpu_s`` of CPU or exited. Returns (profiler, rows of the target in the window, its CPU seconds
    in the window, or None when it exited, and its own 'done' CPU seconds if it printed them)."""
    proc = subprocess.Popen(
        [interpreter(version), str(PROGRAM), *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    tables = []
    try:
        assert read_line(proc) == "ready\n"
        profiler = Profiler(ProfilerOptions(pids=frozenset({proc.pid}), sample_hz=HZ))
        if configure is not None:
            configure(profiler)
        profiler.start()
        try:
            window_start_ns, cpu_start = time.time_ns(), cpu_seconds(proc.pid)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            deadline = time.monotonic() + max_s
            cpu = None
            while time.monotonic() < deadline:
                profiler.poll(100)
                tables.append(profiler.drain())
                if proc.poll() is not None:
                    break
                got = cpu_seconds(proc.pid) - cpu_start
                if got >= min_cpu_s:
                    cpu = got
                    break
            window_end_ns = time.time_ns()
            for _ in range(3):  # reads after an exit: its last samples
                profiler.poll(100)
        finally:
            profiler.stop()
        tables.append(profiler.drain())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        done = proc.stdout.read().split()
        proc.stdout.close()
    rows = [
        r
        for r in pa.concat_tables(tables).to_pylist()
        if r["upid"].split(":")[1] == str(proc.pid)
        # py-spy's rows carry the time their segment was collected (at stop), not a sample's
        and (r["sampler"] == "py-spy" or window_start_ns <= r["time_"].value <= window_end_ns)
    ]
    own_cpu = float(done[2]) if done[:1] == ["done"] else None  # "done LEAF_CALLS CPU_SECONDS"
    return profiler, rows, cpu if cpu is not None else None, own_cpu - cpu_start if own_cpu is not None else None


def assert_no_wrong_frame(rows: list[dict]) -> None:
    """Adjacent frames of the program are calls its source makes; a row not marked truncated holds native
    frames below its Python frames (the interpreter's entry). (Before 3.11 each Python call has its own eval
    call, so native frames stand between Python frames; from 3.11 they run inside one.)"""
    for row in rows:
        names = program_frames(row)
        for caller, callee in zip(names, names[1:]):
            assert (caller, callee) in CALLS, row["stack_trace"]
        frames = row["stack_trace"].split(";")
        python_at = [i for i, frame in enumerate(frames) if is_python(frame)]
        if python_at and not row["truncated"]:
            assert python_at[0] > 0 and not is_python(frames[0]), row["stack_trace"]  # native below the Python frames


@pytest.mark.parametrize("version", [SYSTEM_STATIC, "3.8.18", "3.12.1", "3.13.0"])
def test_python_two_to_one_paths_one_row_per_sample(version):
    require_bpf()
    with competing_loads(2):
        profiler, rows, cpu, _ = profile_python(version, ("120",), min_cpu_s=2.5)
    assert cpu is not None and cpu >= 2.0, f"the target got only {cpu}s of CPU"
    expected = HZ * cpu
    # One row per sample, each sampled once: by the eBPF sampler only (no py-spy for a Python the walker
    # reads), one sample per 1/HZ s of the CPU the target got, +-10 %.
    assert {r["sampler"] for r in rows} == {"ebpf"}, profiler.drops()
    assert all(r["count"] == 1 for r in rows)
    assert 0.9 * expected <= total(rows) <= 1.1 * expected, (total(rows), expected, profiler.drops())
    assert profiler.drops()["python_samples_via_pyspy"] == 0 and profiler.stats()["pyspy_samples"] == 0
    # The full chain main -> path -> leaf as Python frames inside the native stack, for nearly every sample.
    path_a = total([r for r in rows if chain_of(r) == ("main", "path_a", "leaf") and not r["truncated"]])
    path_b = total([r for r in rows if chain_of(r) == ("main", "path_b", "leaf") and not r["truncated"]])
    assert path_a + path_b >= 0.9 * total(rows), sorted({r["stack_trace"] for r in rows})[:10]
    assert 1.5 <= path_a / path_b <= 2.5, (path_a, path_b)
    for row in rows:
        if chain_of(row)[1:] in (("path_a", "leaf"), ("path_b", "leaf")) and not row["truncated"]:
            assert program_frames(row)[:2] == ["<module>", "main"], row["stack_trace"]
    assert_no_wrong_frame(rows)
    truncated = total([r for r in rows if r["truncated"]])
    assert truncated < 0.05 * total(rows), [r["stack_trace"] for r in rows if r["truncated"]][:5]
    assert profiler.stats()["python_walker"] == 1 and profiler.python_fallbacks() == {}
    # Every sample has its own time.
    assert len({r["time_"] for r in rows}) >= 0.9 * len(rows)


def test_a_thread_started_while_sampled_gets_its_python_frames():
    """The work runs in a thread that did not exist when the process was registered: its first samples
    miss (counted, marked), the kernel's notice makes the agent read the thread list again at once."""
    require_bpf()
    profiler, rows, cpu, _ = profile_python("3.11.7", ("120", "thread"), min_cpu_s=2.0)
    assert cpu is not None and 0.9 * HZ * cpu <= total(rows) <= 1.1 * HZ * cpu, (total(rows), HZ * cpu)
    in_chain = total([r for r in rows if chain_of(r)[1:] in (("path_a", "leaf"), ("path_b", "leaf"))])
    assert in_chain >= 0.9 * total(rows)
    missed = profiler.kernel_stats()["python_thread_miss"]
    assert 0 < missed < 0.05 * total(rows), (missed, total(rows))
    # Each sample that missed is marked (no Python frame was guessed for it) and counted per sample.
    assert profiler.incomplete()["python_thread_unknown"] == missed
    unmarked = [r for r in rows if not program_frames(r) and not r["truncated"]]
    assert total(unmarked) <= 0.02 * total(rows), [r["stack_trace"] for r in unmarked][:3]
    assert_no_wrong_frame(rows)


def test_a_python_exiting_mid_sampling_keeps_its_samples():
    require_bpf()
    profiler, rows, cpu, own_cpu = profile_python("3.12.1", ("4",), min_cpu_s=1000.0)
    assert cpu is None and own_cpu is not None and own_cpu > 0.3, "the target did not run to its end"
    # Its own CPU count (at exit, less the CPU before the profiler attached) x the rate, +-10 %; the few
    # samples after that count (its exit) are within the rounding.
    assert 0.9 * HZ * own_cpu <= total(rows) <= 1.1 * HZ * own_cpu + 5, (total(rows), HZ * own_cpu)
    in_chain = total([r for r in rows if chain_of(r)[1:] in (("path_a", "leaf"), ("path_b", "leaf"))])
    assert in_chain >= 0.9 * total(rows)
    assert_no_wrong_frame(rows)
    # The frames a sample could not name (the process gone) are marked on the row and counted.
    incomplete = profiler.incomplete()
    unnamed = [r for r in rows if "<unknown python frame>" in r["stack_trace"]]
    assert all(r["truncated"] for r in unnamed)
    assert incomplete["python_code_unknown"] >= total(unnamed)


def test_an_unknown_python_version_falls_back_to_pyspy_counted_once():
    """CPython 3.7 is outside the walker's table: py-spy samples it, and its eBPF samples are not kept
    (counted), so its CPU is counted once."""
    require_bpf()
    if find_pyspy() is None:
        pytest.fail("py-spy is not installed (pip install py-spy)", pytrace=False)
    profiler, rows, cpu, _ = profile_python(UNKNOWN_VERSION, ("120",), min_cpu_s=2.0)
    assert profiler.python_fallbacks() == {"python_version_unknown": 1}
    assert profiler.stats()["python_pyspy"] == 1
    assert [r for r in rows if r["sampler"] == "ebpf"] == []
    assert profiler.drops()["python_samples_via_pyspy"] >= 0.9 * HZ * cpu
    pyspy = [r for r in rows if r["sampler"] == "py-spy"]
    assert total(pyspy) > 0.5 * HZ * cpu, (total(pyspy), profiler.drops(), profiler.pyspy.last_error)
    assert any(chain_of(r) == ("main", "path_a", "leaf") for r in pyspy), pyspy[:3]


def test_an_unknown_python_version_without_pyspy_keeps_marked_native_samples():
    require_bpf()

    def without_pyspy(profiler: Profiler) -> None:
        profiler.pyspy.executable = None

    profiler, rows, cpu, _ = profile_python(UNKNOWN_VERSION, ("120",), min_cpu_s=2.0, configure=without_pyspy)
    assert profiler.python_fallbacks() == {"python_version_unknown": 1}
    assert {r["sampler"] for r in rows} == {"ebpf"}
    assert 0.9 * HZ * cpu <= total(rows) <= 1.1 * HZ * cpu, (total(rows), HZ * cpu)
    # Native frames only, each sample marked and counted: no Python frame is made up.
    assert all(r["truncated"] for r in rows)
    assert not any(is_python(frame) for r in rows for frame in r["stack_trace"].split(";"))
    assert total([r for r in rows if "_PyEval_EvalFrameDefault" in r["stack_trace"]]) >= 0.9 * total(rows)
    assert profiler.incomplete()["python_unsupported"] >= total(rows)
