"""The profiler and a CPython met at the start of its life, on the running kernel.

A host-wide run once handed a busy pyenv CPython 3.11.7 (a version the BPF walker reads) to py-spy: the agent
attached at the process's exec notice, before the dynamic loader had mapped libpython, found no ``_PyRuntime``
in the executable and decided "python_not_found" for good. Here the new program is held by the kernel right
after its exec (tests/agent/held_at_exec.py) while the profiler decides, then let go: its Python frames must
come from the walker, py-spy must never run for it, and the samples from before are marked, not lost.

Expected values come from outside the profiler: busy.py's own functions (its source), the CPU time the kernel
says the target got, the interpreter the test started. Only this test's processes are asserted on (other
helpers trace concurrently).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from pxq.agent.collector import AgentOptions
from pxq.agent.collectors import COLLECTORS
from pxq.agent.profiler import TABLE, Profiler, ProfilerOptions
from pxq.agent.pyspy import find_pyspy
from pxq.plan.manifest import CollectorRequest
from pxq.testing.kernel import require_bpf
from tests.agent.held_at_exec import build_launcher, exec_and_hold, launched, release
from tests.agent.programs.build import BUSY_PY, cpu_seconds, read_line, running
from tests.agent.python_targets import SYSTEM_STATIC, interpreter, missing

pytestmark = pytest.mark.kernel
UNKNOWN_VERSION = "3.7.16"  # installed under pyenv, outside the walker's 3.8-3.13


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> Path:
    return build_launcher(tmp_path_factory.mktemp("launcher"))


def poll_until(profiler: Profiler, condition: Callable[[], bool], tables: list[pa.Table], timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the profiler never got there"
        profiler.poll(100)
        tables.append(profiler.drain())


def rows_of(tables: list[pa.Table], pid: int) -> list[dict]:
    return [r for r in pa.concat_tables(tables).to_pylist() if r["upid"].split(":")[1] == str(pid)]


def assert_walked_by_the_bpf_walker(profiler: Profiler, pid: int, rows: list[dict], cpu_s: float) -> None:
    assert profiler.python_modes.get(pid) == "walker", profiler.python_modes.get(pid)
    assert pid not in profiler.pyspy.targets and not [r for r in rows if r["sampler"] == "py-spy"]
    assert not [f for upid, f in profiler.python_fallback_processes.items() if upid.split(":")[1] == str(pid)]
    complete = [r for r in rows if not r["truncated"]]
    # Its Python frames from busy.py in most samples (the rest: the interpreter starting up, imports), in
    # leaf_work, its hot loop, in most of those.
    in_busy = sum(r["count"] for r in complete if str(BUSY_PY) in r["stack_trace"])
    in_leaf = sum(r["count"] for r in complete if "leaf_work (" + str(BUSY_PY) in r["stack_trace"])
    assert in_busy >= 0.8 * sum(r["count"] for r in complete) and in_busy > 0.5 * 99 * cpu_s, (in_busy, cpu_s)
    assert in_leaf >= 0.5 * in_busy, (in_leaf, in_busy)
    # An evaluation function left in a stack is a Python part missing (samples from before the walker could
    # read it: python_not_ready): never in a stack called complete.
    unplaced = [r for r in complete if "_PyEval_EvalFrameDefault" in r["stack_trace"]]
    assert not unplaced, unplaced[:3]


def run_until_busy(profiler: Profiler, pid: int, tables: list[pa.Table], cpu_s: float = 1.0) -> float:
    """Poll until the target got cpu_s of CPU; returns the CPU it got meanwhile."""
    before = cpu_seconds(pid)
    poll_until(profiler, lambda: cpu_seconds(pid) - before >= cpu_s, tables, timeout=90)
    return cpu_seconds(pid) - before


def profile_held_by_pid(
    launcher: Path, argv: list, while_held: Callable[[Profiler, int, list[pa.Table]], None], env: dict | None = None
) -> tuple[Profiler, int, list[dict], float]:
    """Profile by pid a program held at its exec: ``while_held(profiler, pid, tables)`` runs before it is
    released, then it runs until busy. Returns the profiler, the pid, the pid's rows and the CPU it got."""
    tables: list[pa.Table] = []
    with launched(launcher, argv, env=env) as held:
        exec_and_hold(held)
        profiler = Profiler(ProfilerOptions(pids=frozenset({held.pid}), drain_interval_s=0.5)).start()
        try:
            while_held(profiler, held.pid, tables)
            release(held)
            assert read_line(held).strip() == str(held.pid)
            cpu_s = run_until_busy(profiler, held.pid, tables)
        finally:
            profiler.stop()
        tables.append(profiler.drain())
    return profiler, held.pid, rows_of(tables, held.pid), cpu_s


def test_host_wide_a_python_caught_at_its_exec_is_walked_not_sent_to_pyspy(launcher: Path):
    require_bpf()
    tables: list[pa.Table] = []
    with launched(launcher, [sys.executable, BUSY_PY, "120"]) as held:  # the venv's python: pyenv's 3.11.7
        profiler = Profiler(ProfilerOptions(drain_interval_s=0.5)).start()
        try:
            # The launcher is sampled (so its exec is announced), then execs and is held there while the
            # agent handles the notice: exactly the state the failing run met.
            poll_until(profiler, lambda: held.pid in profiler.symbolizer.processes, tables)
            exec_and_hold(held)
            poll_until(profiler, lambda: held.pid in profiler.python_modes, tables)
            assert profiler.python_modes[held.pid] == "starting"
            release(held)
            assert read_line(held).strip() == str(held.pid)  # busy.py runs
            cpu_s = run_until_busy(profiler, held.pid, tables)
        finally:
            profiler.stop()
        tables.append(profiler.drain())
    assert_walked_by_the_bpf_walker(profiler, held.pid, rows_of(tables, held.pid), cpu_s)


@pytest.mark.parametrize("version", ["venv", "3.13.0", SYSTEM_STATIC])
def test_by_pid_a_python_held_at_its_exec_is_walked_once_it_runs(launcher: Path, version: str):
    """Asked for by pid while it is held at its exec: py-spy is not started for it (it would have been at
    once); the walker reads it once its libpython is mapped (Debian's static python3.11 at once)."""
    require_bpf()
    python = sys.executable if version == "venv" else interpreter(version)

    def not_sent_to_pyspy(profiler: Profiler, pid: int, _tables: list[pa.Table]) -> None:
        assert pid not in profiler.pyspy.targets

    profiler, pid, rows, cpu_s = profile_held_by_pid(launcher, [python, BUSY_PY, "120"], not_sent_to_pyspy)
    assert_walked_by_the_bpf_walker(profiler, pid, rows, cpu_s)


def test_the_run_warns_which_python_went_to_pyspy_and_why():
    """One warning line per reason, naming the process: here a CPython 3.7 (its own sys.version_info says
    so), outside the walker's versions."""
    require_bpf()
    python = interpreter(UNKNOWN_VERSION)
    version_code = "import sys; print('%d.%d' % sys.version_info[:2])"
    own_version = subprocess.run([python, "-c", version_code], capture_output=True, text=True, check=True).stdout
    warnings: list[str] = []
    with running([python, BUSY_PY, "120"]) as proc:
        request = CollectorRequest("perf_profiler", (TABLE,), (proc.pid,))
        collector = COLLECTORS["perf_profiler"].build(request, AgentOptions(on_warning=warnings.append))
        collector.start()
        try:
            deadline = time.monotonic() + 30
            while proc.pid not in collector.profiler.python_modes:
                assert time.monotonic() < deadline
                collector.poll(100)
        finally:
            collector.stop()
    assert len(warnings) == 1, warnings
    how = "sampled by py-spy" if find_pyspy() is not None else "native frames only"
    assert "(python_version_unknown)" in warnings[0] and how in warnings[0], warnings
    assert f"pid {proc.pid} " in warnings[0] and f"version {own_version.strip()};" in warnings[0], warnings


@pytest.fixture(scope="module")
def python_without_symbols(tmp_path_factory) -> Path:
    """Debian's python3.11 (a static interpreter without .symtab) with ``_PyRuntime`` renamed in .dynsym too:
    a Python without symbols, where nothing locates the runtime state (no .gnu.hash lookup of that name
    happens while busy.py runs)."""
    source = Path(interpreter(SYSTEM_STATIC)).read_bytes()
    assert source.count(b"\0_PyRuntime\0") == 1, "expected one _PyRuntime name, in .dynstr"
    copy = tmp_path_factory.mktemp("nosyms") / "python3.11"
    copy.write_bytes(source.replace(b"\0_PyRuntime\0", b"\0_PyRuntimX\0"))
    copy.chmod(0o755)
    return copy


def test_a_python_without_symbols_falls_back_and_its_cpu_is_not_lost(python_without_symbols: Path):
    """python_not_found is final: py-spy samples it (asked for by pid: at once; py-spy finds the interpreter
    without the symbol), or, when it cannot, its eBPF samples are kept, native frames only, marked (see the
    next test): either way the process's CPU shows, and the warning says why."""
    require_bpf()
    env = {**os.environ, "PYTHONHOME": "/usr"}  # the copy lives elsewhere: tell it where its library is
    proc = subprocess.Popen(
        [str(python_without_symbols), str(BUSY_PY), "120"], stdout=subprocess.PIPE, text=True, env=env
    )
    tables: list[pa.Table] = []
    try:
        assert read_line(proc).strip() == str(proc.pid)
        profiler = Profiler(ProfilerOptions(pids=frozenset({proc.pid}), drain_interval_s=0.5)).start()
        try:
            cpu_s = run_until_busy(profiler, proc.pid, tables, cpu_s=1.5)
        finally:
            profiler.stop()
        tables.append(profiler.drain())
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert profiler.python_fallbacks() == {"python_not_found": 1}
    rows = rows_of(tables, proc.pid)
    ebpf = [r for r in rows if r["sampler"] == "ebpf"]
    pyspy = [r for r in rows if r["sampler"] == "py-spy"]
    # Whichever sampled it, most of its CPU shows (the first second or so went to py-spy's attempts).
    assert sum(r["count"] for r in rows) >= 0.4 * 99 * cpu_s, (len(ebpf), len(pyspy), profiler.drops())
    assert all(r["truncated"] for r in ebpf)  # native frames only: marked python_unsupported
    if ebpf:
        assert any("_PyEval_EvalFrameDefault" in r["stack_trace"] for r in ebpf)  # named from .dynsym
    [warning] = profiler.warnings()
    assert "(python_not_found)" in warning and f"pid {proc.pid} " in warning, warning
    assert ("sampled by py-spy" if pyspy and not ebpf else "native frames only") in warning, warning


def test_a_python_pyspy_cannot_attach_to_keeps_its_ebpf_samples(launcher: Path, python_without_symbols: Path):
    """py-spy sent to a Python it cannot read (here: held at its exec, no interpreter exists yet to find)
    fails to attach; after MAX_ATTACH_FAILURES tries it is not started again, and the process's eBPF samples
    are kept from then on (before, they were dropped as py-spy's while nothing sampled it: its CPU vanished)."""
    require_bpf()
    if find_pyspy() is None:
        missing("py-spy (a dependency of pxq) is not installed: nothing to give up")
    env = {**os.environ, "PYTHONHOME": "/usr"}

    def pyspy_given_up(profiler: Profiler, pid: int, tables: list[pa.Table]) -> None:
        assert profiler.python_modes.get(pid) == "py-spy"  # python_not_found: final, py-spy at once
        poll_until(profiler, lambda: pid in profiler.pyspy.given_up(), tables, timeout=60)

    argv = [python_without_symbols, BUSY_PY, "120"]
    profiler, pid, rows, cpu_s = profile_held_by_pid(launcher, argv, pyspy_given_up, env=env)
    assert profiler.python_modes.get(pid) == "native"
    assert {r["sampler"] for r in rows} == {"ebpf"} and all(r["truncated"] for r in rows)
    assert sum(r["count"] for r in rows) >= 0.5 * 99 * cpu_s, (sum(r["count"] for r in rows), profiler.drops())
    [warning] = profiler.warnings()
    assert "(python_not_found)" in warning and "native frames only" in warning, warning
    assert "py-spy could not read it either" in warning, warning


def test_host_wide_a_python_that_maps_another_libpython_for_reading_is_walked():
    """The case met live: a busy pytest on the venv's CPython 3.11.7 whose own profiler tests had pxq's
    symbolizer map CPython 3.7's libpython read-only (to parse it) was attached as "CPython 3.7" and handed to
    py-spy. Its interpreter is the libpython mapped executable."""
    require_bpf()
    library = Path(interpreter(UNKNOWN_VERSION)).parents[1] / "lib" / "libpython3.7m.so.1.0"
    code = (
        "import mmap, runpy, sys\n"
        f"f = open({str(library)!r}, 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
        f"sys.argv = [{str(BUSY_PY)!r}, '120']; runpy.run_path({str(BUSY_PY)!r}, run_name='__main__')\n"
    )
    tables: list[pa.Table] = []
    with running([sys.executable, "-c", code]) as proc:
        profiler = Profiler(ProfilerOptions(drain_interval_s=0.5)).start()
        try:
            cpu_s = run_until_busy(profiler, proc.pid, tables)
        finally:
            profiler.stop()
        tables.append(profiler.drain())
    assert_walked_by_the_bpf_walker(profiler, proc.pid, rows_of(tables, proc.pid), cpu_s)
