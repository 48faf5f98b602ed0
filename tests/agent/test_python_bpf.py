"""The BPF Python walker (bpf/python_stack.h) on every installed CPython: a uprobe on libc's getpid, which
the chain target calls on its reporting line, walks the calling thread's frames in the kernel; they must equal
the user-space walk (pxq/agent/python/process.py) of the same thread blocked later on that same line, and
symbolize to the interpreter's own view of its stack. Only the target's threads are in the tid hash."""

from __future__ import annotations

import concurrent.futures
import ctypes
import subprocess
import time
from pathlib import Path

import pytest

from pxq.agent.python.bpf_records import (
    PY_FLAG_READ_FAILED,
    PY_FLAG_TRUNCATED,
    bpf_offsets,
    decode_python_frames,
    python_frames_struct,
)
from pxq.agent.python.code import PyFrame
from pxq.agent.python.merge import NativeFrame, in_eval
from pxq.agent.python.process import attach
from pxq.agent.python.resolver import PythonStacks
from pxq.testing.kernel import require_bpf
from tests.agent.programs.build import cpu_seconds
from tests.agent.python_targets import SYSTEM_STATIC, VERSIONS, held_chain_process, interpreter, wait_for_reports
from tests.agent.test_python_merge import native_stack

pytestmark = pytest.mark.kernel
BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"

PROGRAM = """
#include <uapi/linux/ptrace.h>
#include <uapi/linux/bpf_perf_event.h>
#include "python_stack.h"

struct walk_event {
    u32 tid;
    u32 walk_ns; /* the walk's own duration, for the cost figure in bpf/python_stack.h */
    struct python_frames frames;
};

BPF_HASH(tid_tstate, u32, u64, 1024);
BPF_HASH(pid_offsets, u32, struct pxq_python_offsets, 64);
BPF_PERCPU_ARRAY(scratch, struct walk_event, 1);
BPF_PERF_OUTPUT(events);

int on_sample(struct bpf_perf_event_data *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    u64 *tstate = tid_tstate.lookup(&tid);
    struct pxq_python_offsets *off = pid_offsets.lookup(&tgid);
    int zero = 0;
    struct walk_event *event = scratch.lookup(&zero);
    if (!tstate || !off || !event)
        return 0;
    event->tid = tid;
    u64 start = bpf_ktime_get_ns();
    pxq_python_walk(*tstate, off, &event->frames);
    event->walk_ns = bpf_ktime_get_ns() - start;
    events.perf_submit(ctx, event, sizeof(*event));
    return 0;
}

int on_getpid(struct pt_regs *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
    u64 *tstate = tid_tstate.lookup(&tid);
    struct pxq_python_offsets *off = pid_offsets.lookup(&tgid);
    int zero = 0;
    struct walk_event *event = scratch.lookup(&zero);
    if (!tstate || !off || !event)
        return 0;
    event->tid = tid;
    pxq_python_walk(*tstate, off, &event->frames);
    events.perf_submit(ctx, event, sizeof(*event));
    return 0;
}
"""


def _load(max_frames: int):  # type: ignore[no-untyped-def]
    from bcc import BPF

    return BPF(text=PROGRAM.encode(), cflags=[f"-I{BPF_DIR}", f"-DPY_MAX_FRAMES={max_frames}"])


def _collect(bpf, max_frames: int) -> list[tuple[int, bytes]]:  # type: ignore[no-untyped-def]
    events: list[tuple[int, bytes]] = []
    header = 8

    def on_event(cpu: int, data: int, size: int) -> None:
        raw = ctypes.string_at(data, size)
        events.append((int.from_bytes(raw[:4], "little"), raw[header:]))

    bpf["events"].open_perf_buffer(on_event, page_cnt=64)
    return events


@pytest.mark.parametrize("version", [*VERSIONS, SYSTEM_STATIC])
def test_bpf_walk_equals_the_user_space_walk(version: str) -> None:
    require_bpf()
    max_frames = 64
    bpf = _load(max_frames)
    events = _collect(bpf, max_frames)
    with held_chain_process(version) as process:
        python = attach(process.pid)
        try:
            states = python.thread_states()
            assert len(states) == 2 and all(state.tid for state in states)
            for state in states:
                bpf["tid_tstate"][ctypes.c_uint32(state.tid)] = ctypes.c_uint64(state.address)
            bpf["pid_offsets"][ctypes.c_uint32(process.pid)] = bpf_offsets(python.layout)
            bpf.attach_uprobe(name="c", sym="getpid", fn_name="on_getpid", pid=process.pid)
            assert process.stdin is not None
            process.stdin.write(b"x")  # let both threads run the chain
            process.stdin.flush()
            target = wait_for_reports(process)
            deadline = time.monotonic() + 10
            symbolizer = python.symbolizer()
            walked = {}
            while len(walked) < 2:
                assert time.monotonic() < deadline, f"BPF events of {sorted(walked)} only"
                bpf.perf_buffer_poll(timeout=100)
                for tid, raw in events:
                    stack = decode_python_frames(raw, max_frames)
                    leaf = stack.frames and symbolizer.symbolize(stack.frames[0].code, stack.frames[0].instr)
                    if leaf and leaf.qualname == "élan_leaf":
                        assert tid not in walked, "one getpid call per thread on the reporting line"
                        walked[tid] = stack
                events.clear()
            for tid, stack in walked.items():
                assert stack.flags == 0
                user = python.walk(next(state.address for state in states if state.tid == tid))
                assert [(frame.code, frame.entry) for frame in stack.frames] == [
                    (frame.code, frame.entry) for frame in user.frames
                ]
                symbolized = [symbolizer.symbolize(frame.code, frame.instr, frame.stamp) for frame in stack.frames]
                assert [
                    (frame.qualname, frame.filename, frame.line) for frame in symbolized if frame
                ] == target.reports[tid]
            assert not symbolizer.reasons  # every stamp matched
        finally:
            python.close()
            bpf.cleanup()


def test_bpf_walk_truncates_and_flags_garbage() -> None:
    """A walk deeper than PY_MAX_FRAMES stops flagged truncated with the innermost frames kept; a garbage
    thread-state pointer ends flagged read-failed, with no frame."""
    require_bpf()
    max_frames = 4
    bpf = _load(max_frames)
    events = _collect(bpf, max_frames)
    with held_chain_process("3.12.1") as process:
        python = attach(process.pid)
        try:
            main, side = sorted(python.thread_states(), key=lambda state: state.tid != process.pid)
            bpf["tid_tstate"][ctypes.c_uint32(main.tid)] = ctypes.c_uint64(main.address)
            bpf["tid_tstate"][ctypes.c_uint32(side.tid)] = ctypes.c_uint64(0xDEAD_BEEF_000)
            bpf["pid_offsets"][ctypes.c_uint32(process.pid)] = bpf_offsets(python.layout)
            bpf.attach_uprobe(name="c", sym="getpid", fn_name="on_getpid", pid=process.pid)
            assert process.stdin is not None
            process.stdin.write(b"x")
            process.stdin.flush()
            wait_for_reports(process)
            deadline = time.monotonic() + 10
            seen: dict[int, object] = {}
            while len(seen) < 2:
                assert time.monotonic() < deadline
                bpf.perf_buffer_poll(timeout=100)
                for tid, raw in events:
                    seen.setdefault(tid, decode_python_frames(raw, max_frames))
            truncated, garbage = seen[main.tid], seen[side.tid]
            user = python.walk(main.address, max_frames=max_frames)
            assert truncated.flags == PY_FLAG_TRUNCATED  # type: ignore[attr-defined]
            assert [frame.code for frame in truncated.frames] == [frame.code for frame in user.frames]  # type: ignore[attr-defined]
            assert garbage.flags == PY_FLAG_READ_FAILED and garbage.frames == []  # type: ignore[attr-defined]
        finally:
            python.close()
            bpf.cleanup()
    assert ctypes.sizeof(python_frames_struct(max_frames)) == 8 + 24 * max_frames


RATIO_SCRIPT = Path(__file__).parent / "programs" / "py_ratio.py"
SAMPLE_HZ = 499  # more samples than the profiler takes (99 Hz): the ratio check needs a few hundred


@pytest.mark.slow
@pytest.mark.parametrize("version", [*VERSIONS, SYSTEM_STATIC])
def test_sampled_python_stacks_show_the_2_to_1_paths(version: str) -> None:
    """CPU-clock sampling of a running Python (frames change under the walker): samples = CPU time x rate
    within 10%, the full chain main -> path_x -> leaf in every sample, path_a:path_b = 2.0 +- 0.5."""
    require_bpf()
    from bcc import BPF, PerfSWConfig, PerfType
    from bcc.libbcc import lib

    sampler = -1

    bpf = _load(64)
    events = _collect(bpf, 64)
    process = subprocess.Popen(
        [interpreter(version), str(RATIO_SCRIPT), "3", "hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline() == b"ready\n"
        cpu_at_ready = cpu_seconds(process.pid)  # its start-up, before the sampler is attached
        python = attach(process.pid)
        (state,) = python.thread_states()
        bpf["tid_tstate"][ctypes.c_uint32(state.tid)] = ctypes.c_uint64(state.address)
        bpf["pid_offsets"][ctypes.c_uint32(process.pid)] = bpf_offsets(python.layout)
        # One event on the target task on any CPU (bcc's attach_perf_event opens one per CPU): it fires every
        # period of the task's own CPU time, so the count is CPU time x rate without the sampling noise of
        # host-wide events on a shared 2-CPU machine (which the profiler's own tests face, not this walker's).
        program = bpf.load_func(b"on_sample", BPF.PERF_EVENT)
        sampler = lib.bpf_attach_perf_event(
            program.fd, PerfType.SOFTWARE, PerfSWConfig.CPU_CLOCK, 1_000_000_000 // SAMPLE_HZ, 0, process.pid, -1, -1
        )
        assert sampler >= 0
        process.stdin.write(b"go\n")
        process.stdin.flush()
        symbolizer = python.symbolizer()
        chains: list[tuple[str, ...]] = []
        flagged: list[int] = []

        def drain() -> None:  # symbolized at once: the code objects are read from the living process
            bpf.perf_buffer_poll(timeout=100)
            for _, raw in events:
                stack = decode_python_frames(raw, 64)
                if stack.flags:  # a read that met a page not present: counted, allowed rarely
                    flagged.append(stack.flags)
                    continue
                frames = [symbolizer.symbolize(frame.code, frame.instr, frame.stamp) for frame in stack.frames]
                chains.append(tuple(frame.qualname if frame else "?" for frame in reversed(frames)))
            events.clear()

        reader = concurrent.futures.ThreadPoolExecutor(1)
        done_line = reader.submit(process.stdout.readline)
        while not done_line.done():
            drain()
        done, _leaf_calls, own_cpu = done_line.result().split()  # b"done LEAF_CALLS CPU_SECONDS"
        assert done == b"done"
        sampled_cpu = float(own_cpu) - cpu_at_ready
        reader.shutdown()
        drain()  # still held: its code objects can be read
        process.stdin.close()  # lets it exit
        python.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if sampler >= 0:
            lib.bpf_close_perf_event_fd(sampler)
        bpf.cleanup()
    # The sampled window runs from "ready" to the hold after "done": the CPU the program counts for itself
    # less its start-up (/proc at "ready"); a few samples outside the loop (reading stdin, printing).
    expected = sampled_cpu * SAMPLE_HZ
    assert len(flagged) <= 0.01 * expected
    assert abs(len(chains) + len(flagged) - expected) <= 0.1 * expected, (len(chains), expected)
    in_loop = [chain for chain in chains if chain[:2] == ("<module>", "main") and len(chain) > 2]
    assert len(in_loop) >= 0.95 * len(chains)
    path_a = sum(chain[2:] == ("path_a", "leaf") for chain in in_loop)
    path_b = sum(chain[2:] == ("path_b", "leaf") for chain in in_loop)
    assert path_a + path_b >= 0.9 * len(in_loop)  # the rest: samples in main's own loop code
    print(f"{version}: {len(chains)} samples for {expected:.0f} expected, path_a:path_b = {path_a}:{path_b}")
    assert 1.5 <= path_a / path_b <= 2.5, (path_a, path_b)


@pytest.mark.slow
@pytest.mark.parametrize("version", [*VERSIONS, SYSTEM_STATIC])
def test_resolver_merges_bpf_frames_into_a_real_native_stack(version: str) -> None:
    """The agent-facing PythonStacks: maps filled from it, a BPF record taken at getpid, the native stack of
    the same thread (gdb's unwind, later on the same line): one stack with the interpreter's own Python
    frames in place of every _PyEval_EvalFrameDefault frame."""
    require_bpf()
    bpf = _load(64)
    events = _collect(bpf, 64)
    stacks = PythonStacks()
    not_python = subprocess.Popen(["sleep", "60"])
    with held_chain_process(version) as process:
        try:
            assert stacks.is_python(process.pid) and not stacks.is_python(not_python.pid)
            for state in stacks.thread_table(process.pid):
                bpf["tid_tstate"][ctypes.c_uint32(state.tid)] = ctypes.c_uint64(state.address)
            bpf["pid_offsets"][ctypes.c_uint32(process.pid)] = stacks.bpf_config(process.pid)
            bpf.attach_uprobe(name=b"c", sym=b"getpid", fn_name=b"on_getpid", pid=process.pid)
            assert process.stdin is not None
            process.stdin.write(b"x")
            process.stdin.flush()
            target = wait_for_reports(process)
            deadline = time.monotonic() + 10
            records: dict[int, bytes] = {}
            while process.pid not in records:
                assert time.monotonic() < deadline
                bpf.perf_buffer_poll(timeout=100)
                for tid, raw in events:
                    records.setdefault(tid, raw)  # the first getpid of each thread: the reporting line
            native = [address for address, _ in native_stack(process.pid, process.pid)]
            resolved = stacks.resolve(process.pid, native, records[process.pid])
            assert not resolved.partial and resolved.reasons == []
            python = [
                (frame.qualname, frame.filename, frame.line) for frame in resolved.frames if isinstance(frame, PyFrame)
            ]
            assert python == target.reports[process.pid]
            native_left = [frame.address for frame in resolved.frames if isinstance(frame, NativeFrame)]
            assert not any(
                in_eval(address, False, stacks._get(process.pid).process.eval_ranges) for address in native_left
            )  # type: ignore[union-attr]
            # A process that is no CPython keeps its native frames and counts its reason once.
            assert stacks.resolve(not_python.pid, native[:3], records[process.pid]).frames == [
                NativeFrame(a) for a in native[:3]
            ]
            assert stacks.counts()["python_not_found"] == 1
        finally:
            not_python.kill()
            not_python.wait()
            stacks.close()
            bpf.cleanup()
