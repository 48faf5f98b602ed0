"""The CPU profiler on the running kernel: real programs (C built with and without frame pointers,
a syscall loop, a Python program) sampled by bpf/profile.c, symbolized, and py-spy's Python frames.

Kernel tests need root and bcc. They fail (never skip silently) when eBPF is unavailable, unless
PXQ_ALLOW_NO_BPF=1. The machine may be shared, so sample counts are checked against the CPU time
the target actually got (from /proc), not against the wall clock.
"""

from __future__ import annotations

import ctypes as ct
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pxq.agent.bpf_program import build_program, layout_asserts
from pxq.agent.collectors import COLLECTORS
from pxq.agent.embedded import AgentOptions, EmbeddedAgent
from pxq.agent.procinfo import upid_of
from pxq.agent.profiler import (
    TABLE,
    NewPid,
    Profiler,
    ProfilerOptions,
    Sample,
    options_from_request,
    profiler_program,
    rows_to_table,
    stack_trace_id,
)
from pxq.agent.programs import generated_programs
from pxq.agent.pyspy import PySpySampler, find_pyspy, parse_collapsed
from pxq.plan.manifest import CollectorRequest, ProbeManifest
from pxq.tables import CATALOG
from pxq.testing.kernel import require_bpf
from tests.agent.programs.build import (
    BUSY_PY,
    FRAME_POINTERS,
    NO_FRAME_POINTERS,
    compile_c,
    cpu_seconds,
    marked_line,
    python_busy,
    read_line,
    running,
    without_eh_frame,
)

SCHEMA = CATALOG[TABLE].arrow_schema()
PYTHON_37 = "/root/.pyenv/versions/3.7.16/bin/python"  # a CPython the BPF walker does not read
kernel = pytest.mark.kernel


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    out = tmp_path_factory.mktemp("profiler-programs")
    return {
        "fp": compile_c("spin.c", out, FRAME_POINTERS, "spin_fp"),
        "nofp": compile_c("spin.c", out, NO_FRAME_POINTERS, "spin_nofp"),
        "no_cfi": without_eh_frame(compile_c("spin.c", out, NO_FRAME_POINTERS, "spin_no_cfi")),
        "syscalls": compile_c("syscalls.c", out, FRAME_POINTERS, "syscalls"),
    }


def profile(
    options: ProfilerOptions,
    seconds: float,
    during=None,
    cpu: dict | None = None,
    min_cpu_s: float = 0.0,
    max_seconds: float = 90.0,
) -> tuple[Profiler, pa.Table]:
    """Run a profiler for ``seconds`` (polling like the agent does), then stop it and drain.

    ``cpu``: {pid: None} to fill with the CPU seconds each process got while the profiler was
    attached (what the sample counts should follow on a shared machine). ``min_cpu_s``: go on
    past ``seconds`` until each of those processes got that much CPU (a condition, not a longer
    guess: on a loaded machine a busy target may get a fifth of a CPU), for at most ``max_seconds``."""
    profiler = Profiler(options).start()
    before = {pid: cpu_seconds(pid) for pid in cpu or ()}

    def enough_cpu() -> bool:
        return all(cpu_seconds(pid) - start_cpu >= min_cpu_s for pid, start_cpu in before.items())

    try:
        begin = time.monotonic()
        end = begin + seconds
        tables = []
        while time.monotonic() < end or (min_cpu_s and not enough_cpu() and time.monotonic() < begin + max_seconds):
            profiler.poll(100)
            tables.append(profiler.drain())
            if during is not None:
                during(profiler)
        for pid in before:
            cpu[pid] = cpu_seconds(pid) - before[pid]
    finally:
        profiler.stop()
    tables.append(profiler.drain())
    return profiler, pa.concat_tables(tables)


def rows_of(table: pa.Table, pid: int, sampler: str | None = None) -> list[dict]:
    return [
        r
        for r in table.to_pylist()
        if r["upid"].split(":")[1] == str(pid) and (sampler is None or r["sampler"] == sampler)
    ]


def total(rows: list[dict]) -> int:
    return sum(r["count"] for r in rows)


# -- pieces that need no kernel -----------------------------------------------------------------
def test_sample_layout_is_pinned_to_the_header():
    text = build_program("profile.c", {}, layout_asserts("pxq_profile_sample", Sample)).text
    # 10 words of registers and sizes, the comm, 127 kernel frames (profile.h)
    assert ct.sizeof(Sample) == 8 + 4 * 4 + 3 * 8 + 4 * 4 + 16 + 127 * 8 and ct.sizeof(NewPid) == 32
    assert "struct pxq_profile_sample {" in text
    assert f"_Static_assert(sizeof(struct pxq_profile_sample) == {ct.sizeof(Sample)}" in text


def test_program_text_for_explain():
    text = profiler_program(CollectorRequest("perf_profiler", (TABLE,), (42, 43), options=(("sample_hz", "49"),)))
    assert "// bcc cflags: " in text and "-DFILTER_PIDS=1" in text and "-DSELF_PID=" in text
    assert "on_sample" in text and "_Static_assert" in text
    assert "// attach: on_sample on a software CPU_CLOCK perf event, sample_freq=49 Hz" in text
    assert "// allowed_pids: 42, 43" in text and "-DSTACK_COPY_BYTES=16384" in text
    # Python frames walked in the kernel by default, their record pinned to the reader's layout.
    assert "-DPYTHON_FRAMES=1" in text and "_Static_assert(sizeof(struct python_frames) == 1544" in text
    assert "-DPYTHON_FRAMES=0" in profiler_program(ProfilerOptions(python="off"))
    manifest = ProbeManifest(0, (), (CollectorRequest("perf_profiler", (TABLE,), None),))
    [(name, program)] = generated_programs(manifest)
    assert name == "perf_profiler" and "-DFILTER_PIDS=0" in program


def test_options_from_the_script():
    request = CollectorRequest(
        "perf_profiler", (TABLE,), (7,), options=(("sample_hz", "49"), ("python", "OFF"), ("drain_interval_s", "0.5"))
    )
    options = options_from_request(request)
    assert (options.sample_hz, options.python, options.drain_interval_s, options.pids) == (
        49,
        "off",
        0.5,
        frozenset({7}),
    )
    assert options_from_request(CollectorRequest("perf_profiler", (TABLE,), None)).sample_hz == 99
    from pxq.agent.bpf_program import BpfError

    with pytest.raises(BpfError, match="sample_hz"):
        options_from_request(CollectorRequest("perf_profiler", (TABLE,), None, options=(("sample_hz", "0"),)))
    with pytest.raises(BpfError, match="python"):
        options_from_request(CollectorRequest("perf_profiler", (TABLE,), None, options=(("python", "maybe"),)))
    for bad in ("1000", "131072", "0"):
        with pytest.raises(BpfError, match="stack_copy_bytes must be a power of two from 4096 to 65536"):
            options_from_request(
                CollectorRequest("perf_profiler", (TABLE,), None, options=(("stack_copy_bytes", bad),))
            )
    sized = CollectorRequest("perf_profiler", (TABLE,), None, options=(("stack_copy_bytes", "65536"),))
    assert options_from_request(sized).stack_copy_bytes == 65536


def test_rows_have_the_catalog_schema_and_stable_ids():
    table = rows_to_table([(10, "0:1:2", "main;f", 3, "ebpf", False), (11, "0:1:2", "g (x.py:1)", 1, "py-spy", False)])
    assert table.schema == SCHEMA
    assert table.column("stack_trace_id").to_pylist() == [stack_trace_id("main;f"), stack_trace_id("g (x.py:1)")]
    assert stack_trace_id("main;f") == stack_trace_id("main;f") != stack_trace_id("main;g")
    assert rows_to_table([]).schema == SCHEMA
    assert "perf_profiler" in COLLECTORS


def test_parse_collapsed():
    text = (
        "<module> (busy.py:27);outer (busy.py:23);leaf_work (busy.py:12) 95\n"
        "<module> (busy.py:27);outer (busy.py:23);leaf_work (busy.py:12) 5\n"
        "weird;frame with space (a b.py:3) 7\n"
        "not a count line\n\n"
    )
    assert parse_collapsed(text) == {
        "<module> (busy.py:27);outer (busy.py:23);leaf_work (busy.py:12)": 100,
        "weird;frame with space (a b.py:3)": 7,
    }


def test_missing_pyspy_is_counted_not_fatal():
    sampler = PySpySampler(rate_hz=99, executable=None)
    sampler.add(os.getpid(), "0:1:2")
    assert sampler.poll() == 0 and sampler.take() == []
    sampler.stop()
    assert sampler.counters["pyspy_missing"] == 1


# -- the kernel ---------------------------------------------------------------------------------
@kernel
def test_full_chains_with_and_without_frame_pointers_and_truncation_without_cfi(programs):
    require_bpf()
    with (
        running([programs["fp"], "120"]) as fp,
        running([programs["nofp"], "120"]) as nofp,
        running([programs["no_cfi"], "120"]) as no_cfi,
    ):
        upids = {p.pid: upid_of(p.pid) for p in (fp, nofp, no_cfi)}
        cpu = dict.fromkeys(upids)
        profiler, table = profile(ProfilerOptions(pids=frozenset(upids)), 2.5, cpu=cpu, min_cpu_s=1.0)
    assert table.schema == SCHEMA
    assert {r["sampler"] for r in table.to_pylist()} == {"ebpf"}  # C programs: py-spy never ran
    assert profiler.pyspy is None or not profiler.pyspy.targets

    # With or without frame pointers, .eh_frame unwinds the whole chain from _start.
    for proc in (fp, nofp):
        rows = rows_of(table, proc.pid)
        chain = [r for r in rows if "main;outer_loop;spin_leaf" in r["stack_trace"]]
        assert total(chain) >= 0.8 * total(rows), rows  # the hot function dominates
        assert not any(r["truncated"] for r in chain)
        assert all(r["stack_trace"].startswith("_start;__libc_start_main;__libc_start_call_main;") for r in chain)
        assert all(r["upid"] == upids[proc.pid] for r in rows)
        assert upids[proc.pid] not in profiler.truncated_by_process()

    # Without call-frame information the stack stops at the leaf: marked, not silently shallow.
    no_cfi_rows = rows_of(table, no_cfi.pid)
    leaf = [r for r in no_cfi_rows if r["stack_trace"].split(";")[-1] == "spin_leaf"]
    assert total(leaf) >= 0.8 * total(no_cfi_rows)
    assert all(r["truncated"] for r in leaf), leaf
    assert not any("main;outer_loop;spin_leaf" in r["stack_trace"] for r in no_cfi_rows)
    drops, incomplete = profiler.drops(), profiler.incomplete()
    # Truncated samples are kept, not lost: counted apart from the losses, with the reason.
    assert incomplete["truncated_user_stack"] >= total(leaf) > 0
    assert sum(v for k, v in incomplete.items() if k.startswith("unwind_")) >= total(leaf)
    assert "truncated_user_stack" not in drops and not set(drops) & set(incomplete)
    assert profiler.truncated_by_process().get(upids[no_cfi.pid], 0) >= total(leaf)

    # 99 Hz on one busy thread: samples ~ 99 x the CPU time it got (about 200 in 2 s), +-30 %.
    for proc in (fp, nofp, no_cfi):
        rows = rows_of(table, proc.pid)
        expected = 99 * cpu[proc.pid]
        assert expected > 50, f"the target got only {cpu[proc.pid]:.2f}s of CPU"
        assert 0.7 * expected <= total(rows) <= 1.3 * expected, (total(rows), expected)
    assert drops["samples_lost"] == 0


@kernel
def test_host_wide_run_shows_kernel_frames_of_a_syscall_loop(programs):
    require_bpf()
    idle_python = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(120)"]
    with (
        running(idle_python) as idle,
        running([programs["syscalls"], "120"]) as proc,
        running(python_busy(120)) as busy_python,
    ):
        time.sleep(0.5)  # the idle one is done starting up: it uses no CPU from now on
        cpu = {proc.pid: None, busy_python.pid: None}
        profiler, table = profile(ProfilerOptions(), 3.0, cpu=cpu, min_cpu_s=1.0)
    # The busy Python process (found by its samples) has its Python frames in its eBPF rows from
    # when the agent registered it (its samples before that, python_not_ready, are marked); py-spy
    # runs for none of the test's processes (every CPython here is one the BPF walker reads). Other
    # Pythons of the host (another job's) may need py-spy: host-wide, they are not this test's.
    busy_rows = rows_of(table, busy_python.pid)
    complete = [r for r in busy_rows if not r["truncated"]]
    assert total([r for r in complete if "leaf_work (" in r["stack_trace"]]) >= 0.9 * total(complete) > 10
    without_python = [r for r in busy_rows if " (" + str(BUSY_PY) not in r["stack_trace"]]
    assert all(r["truncated"] for r in without_python), without_python[:3]
    assert profiler.incomplete()["python_not_ready"] >= total(without_python)
    assert rows_of(table, busy_python.pid, "py-spy") == []
    assert not {busy_python.pid, idle.pid, proc.pid} & set(profiler.pyspy.targets), profiler.pyspy.targets
    assert profiler.python_modes.get(busy_python.pid) == "walker" and proc.pid not in profiler.python_modes
    assert profiler.python_modes.get(idle.pid) in (None, "walker")  # registered only if it was sampled
    rows = rows_of(table, proc.pid)
    assert total(rows) > 50
    in_kernel = [r for r in rows if r["stack_trace"].endswith("_[k]")]
    assert total(in_kernel) >= 0.3 * total(rows), rows
    kernel_frames = {f for r in in_kernel for f in r["stack_trace"].split(";") if f.endswith("_[k]")}
    assert any(f == "do_syscall_64_[k]" or re.match(r"__(x64|ia32|do)_sys_", f) for f in kernel_frames), kernel_frames
    assert any("main;syscall_loop" in r["stack_trace"] for r in rows), rows
    # User frames come first (root first), kernel frames after them.
    for r in in_kernel:
        frames = r["stack_trace"].split(";")
        first_kernel = next(i for i, f in enumerate(frames) if f.endswith("_[k]"))
        assert all(f.endswith("_[k]") for f in frames[first_kernel:])
    # Host-wide: other processes are there too, pxq itself never is.
    pids = {r["upid"].split(":")[1] for r in table.to_pylist()}
    assert str(os.getpid()) not in pids
    assert len(pids) >= 1
    assert not any(re.search(r"(^|;)0x[0-9a-f]+($|;)", r["stack_trace"]) for r in table.to_pylist())


@kernel
def test_symbols_resolve_after_the_target_exited_before_the_drain(programs):
    require_bpf()
    proc_pid = None

    def kill_once(profiler):
        nonlocal proc_pid
        if (
            proc.poll() is None
            and profiler.symbolizer.processes.get(proc.pid) is not None
            and time.monotonic() > kill_at
        ):
            proc_pid = proc.pid
            proc.kill()
            proc.wait()

    with running([programs["fp"], "120"]) as proc:
        kill_at = time.monotonic() + 2.5  # after the profiler started (about 1.5 s) and sampled it
        # No periodic read: everything is read at stop(), after the target is gone.
        profiler, table = profile(
            ProfilerOptions(pids=frozenset({proc.pid}), drain_interval_s=3600), 4.0, during=kill_once
        )
    assert proc_pid is not None, "the target was never killed"
    assert not Path(f"/proc/{proc_pid}").exists()
    assert profiler.reads == 1
    rows = rows_of(table, proc_pid)
    chain = [r for r in rows if "main;outer_loop;spin_leaf" in r["stack_trace"]]
    assert total(chain) >= 0.8 * total(rows) > 0, rows


@kernel
def test_python_frames_in_the_ebpf_rows_and_no_pyspy():
    """A Python the BPF walker reads (the venv's CPython): its Python frames are in its eBPF rows, under
    the interpreter's native frames, and py-spy does not sample it (its CPU counted once)."""
    require_bpf()
    with running(python_busy(120)) as proc:
        profiler, table = profile(ProfilerOptions(pids=frozenset({proc.pid})), 3.0, cpu={proc.pid: None}, min_cpu_s=1.0)
    rows = rows_of(table, proc.pid)
    assert total(rows) > 50, profiler.drops()
    assert rows_of(table, proc.pid, "py-spy") == [] and profiler.stats()["pyspy_samples"] == 0
    name = str(BUSY_PY)
    leaf = f"leaf_work ({name}:{marked_line(BUSY_PY, 'LEAF_LINE')})"
    chain = (
        f"outer ({name}:{marked_line(BUSY_PY, 'OUTER_LINE')});"
        f"middle ({name}:{marked_line(BUSY_PY, 'MIDDLE_LINE')});leaf_work ({name}:"
    )
    in_leaf = [r for r in rows if chain in r["stack_trace"]]
    assert total(in_leaf) >= 0.7 * total(rows), rows
    assert any(leaf in r["stack_trace"].split(";") for r in rows), rows
    assert all(r["stack_trace"].startswith("_start;") and f";<module> ({name}:" in r["stack_trace"] for r in in_leaf)
    assert not any(r["truncated"] for r in in_leaf)


@kernel
def test_pyspy_rows_survive_the_target_exiting_early():
    require_bpf()
    if find_pyspy() is None:
        pytest.fail("py-spy is not installed (pip install py-spy)", pytrace=False)
    state = {}

    def end_target_once(profiler):
        target = profiler.pyspy.targets.get(proc.pid)
        if target is None or target.segment is None or "killed" in state:
            return
        state.setdefault("attached", time.monotonic())
        if time.monotonic() - state["attached"] > 1.5:  # py-spy has sampled it for a while
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            state["killed"] = time.monotonic()

    # CPython 3.7 is outside the BPF walker's versions: py-spy samples it (the fallback).
    with running([PYTHON_37, BUSY_PY, "120"]) as proc:
        profiler, table = profile(ProfilerOptions(pids=frozenset({proc.pid})), 6.0, during=end_target_once)
    assert "killed" in state, "py-spy never ran for the target"
    rows = rows_of(table, proc.pid, "py-spy")
    assert total(rows) > 50, (rows, profiler.drops(), profiler.pyspy.last_error)
    assert any("leaf_work (" in r["stack_trace"] for r in rows)
    assert profiler.drops()["pyspy_attach_failed"] == 0


@kernel
def test_embedded_agent_collects_stack_traces_with_script_options(programs):
    require_bpf()
    with running([programs["fp"], "120"]) as proc:
        request = CollectorRequest("perf_profiler", (TABLE,), (proc.pid,), options=(("sample_hz", "49"),))
        manifest = ProbeManifest(time.time_ns(), (), (request,))
        before = cpu_seconds(proc.pid)
        upid = upid_of(proc.pid)
        store = EmbeddedAgent(manifest, AgentOptions()).run(2.5)
        cpu = cpu_seconds(proc.pid) - before
    table = store.table(TABLE)
    rows = rows_of(table, proc.pid)
    # 49 Hz, not the default 99 (cpu also counts the time before the profiler attached).
    assert 20 <= total(rows) <= 49 * cpu * 1.3, (total(rows), cpu)
    assert any("main;outer_loop;spin_leaf" in r["stack_trace"] for r in rows)
    assert store.processes[upid]["pid"] == proc.pid


# -- who a sample belongs to ---------------------------------------------------------------------
PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 on (after the comm's closing parenthesis)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _is_kernel_thread(pid: int) -> bool:
    try:
        return bool(int(_stat_fields(pid)[6]) & PF_KTHREAD)  # field 9: flags
    except OSError:
        return False


@kernel
def test_a_process_gone_before_its_first_read_keeps_its_name_and_start(programs):
    """The profiler handles new-process records when polled: one that ran and was reaped before
    that is gone from /proc, and its samples still carry its name and start time."""
    require_bpf()
    hz = 999  # enough samples of a short run even when a loaded machine gives it little CPU
    profiler = Profiler(ProfilerOptions(python="off", sample_hz=hz, drain_interval_s=3600)).start()  # host-wide
    try:
        proc = subprocess.Popen(
            [str(programs["fp"]), "0.6"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        read_line(proc)  # "ready": it runs
        ticks = int(_stat_fields(proc.pid)[19])  # field 22: start time in clock ticks
        out, _ = proc.communicate(timeout=30)
        assert not Path(f"/proc/{proc.pid}").exists()
    finally:
        profiler.stop()  # never polled before: its records are handled only now
    rows = rows_of(profiler.drain(), proc.pid)
    # The program's own getrusage at its end ("done <leaf calls> <cpu seconds> ..."): the samples
    # it earned, however little CPU the machine gave it in its 0.6 s.
    cpu_s = float(out.split()[2])
    assert total(rows) >= 1 and abs(total(rows) - cpu_s * hz) <= 0.25 * cpu_s * hz + 5, (cpu_s, rows)
    (upid,) = {r["upid"] for r in rows}
    # The kernel stamps the fork microseconds after the start /proc showed: across a tick
    # boundary its start_ticks is one more (documented in ProcessIdentities).
    assert upid in (f"0:{proc.pid}:{ticks}", f"0:{proc.pid}:{ticks + 1}")
    info = profiler.processes()[upid]
    # No exec argv in the profiler's records: the name in brackets, as ps shows a process
    # whose command line it cannot read.
    assert (info["comm"], info["cmdline"]) == (programs["fp"].name, f"[{programs['fp'].name}]")


@kernel
def test_a_kernel_thread_sampled_is_named_in_brackets_like_ps(tmp_path):
    require_bpf()
    profiler = Profiler(ProfilerOptions(python="off", sample_hz=999, drain_interval_s=0.5)).start()
    threads: dict[int, str] = {}  # pid -> upid of kernel threads sampled (and still there)
    try:
        deadline = time.monotonic() + 60
        while not threads and time.monotonic() < deadline:
            # Work for kernel threads: writeback of data written and synced.
            with open(tmp_path / "scratch", "wb") as f:
                f.write(os.urandom(1 << 20))
                f.flush()
                os.fsync(f.fileno())
            profiler.poll(100)
            for row in profiler.drain().to_pylist():
                pid = int(row["upid"].split(":")[1])
                if _is_kernel_thread(pid):
                    threads[pid] = row["upid"]
    finally:
        profiler.stop()
    assert threads, "no kernel thread was sampled in 60 s"
    for pid, upid in threads.items():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().rstrip("\n")
            ticks = int(_stat_fields(pid)[19])
        except OSError:
            continue  # a worker thread that has exited since
        assert upid == f"0:{pid}:{ticks}"
        info = profiler.processes()[upid]
        assert info["cmdline"] == f"[{info['comm']}]"
        # A kworker's comm carries the workqueue it runs right now ("kworker/1:3-events_freezable"),
        # so it may change between the sample and this read; its base name does not.
        seen, now = (
            (info["comm"], comm)
            if not comm.startswith("kworker/")
            else (info["comm"].split("-")[0], comm.split("-")[0])
        )
        assert seen == now
        break
    else:
        raise AssertionError(f"every kernel thread sampled has exited: {threads}")


@kernel
def test_truncated_samples_are_kept_not_counted_as_drops_by_the_agent(programs):
    """Without call-frame information nearly every user stack is cut short: those samples are kept
    (and marked), so the agent's progress says drops 0 and counts them as incomplete instead."""
    require_bpf()
    import io

    from pxq.cli.progress import progress_printer

    with running([programs["no_cfi"], "120"]) as proc:
        request = CollectorRequest("perf_profiler", (TABLE,), (proc.pid,), options=(("python", "off"),))
        reports = []
        store = EmbeddedAgent(ProbeManifest(time.time_ns(), (), (request,)), AgentOptions()).run(2.5, reports.append)
    final = reports[-1]
    truncated = total([r for r in rows_of(store.table(TABLE), proc.pid) if r["truncated"]])
    assert final.final and truncated > 50
    assert final.drops == 0, store.drops
    assert final.incomplete >= truncated and store.drops[TABLE]["truncated_user_stack"] >= truncated
    stream = io.StringIO()
    progress_printer(2.5, stream)(final)
    assert f"  drops 0  incomplete {final.incomplete:,}" in stream.getvalue().splitlines()[-1]
