"""Accuracy and cost of the CPU profiler on the 2:1 programs (tests/agent/programs/ratio.c, built
with and without frame pointers): main -> dispatch -> path_a/path_b -> leaf, path_a doing twice
path_b's work; and its Python twin (tests/agent/programs/py_ratio.py, <module> -> main ->
path_a/path_b -> leaf in Python frames, merged into the interpreter's native stack) on ``--python``.

For each build, profiled by pid at ``--hz`` while it runs ``--seconds``:

* samples / expected: samples taken while it ran over its own CPU time (getrusage at exit, less
  /proc's figure when the profiler attached) x the rate;
* path_a / path_b: the ratio of the two paths' samples (the truth: 2.0);
* full chains: the share of samples whose stack is _start -> ... -> main -> dispatch -> path -> leaf
  (Python: _start -> ... -> <module> -> main -> path -> leaf, the Python frames inside the native stack);
* truncated: the share of samples marked truncated;
* agent CPU per 1,000 samples: the profiler's reads (unwind, symbolize, fold), and the whole
  agent process while polling (ring buffer callbacks included);
* kernel cost per sample: on_sample's run time from the kernel's BPF statistics
  (kernel.bpf_stats_enabled, switched on for the run and restored).

Then the overhead on the target: its throughput (leaf calls per CPU second) profiled vs not, two
copies running side by side at the same time, one profiled (which one alternates by pair), so the
shared machine's moment-to-moment speed weighs on both; median and spread of the ratios (target:
loss <= 1 %), for the C program without frame pointers and for the Python one, with the profiler's
kernel time as a share of the profiled copy's CPU (the part charged to the target, measured).

    .venv/bin/python bench/bench_profiler_accuracy.py [--seconds 4] [--hz 99] [--pairs 5]
        [--python /usr/bin/python3.11]

Needs root and bcc, and gcc for the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pxq.agent.profiler import Profiler, ProfilerOptions

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "agent" / "programs" / "ratio.c"
PY_SOURCE = ROOT / "tests" / "agent" / "programs" / "py_ratio.py"
PY_FRAME = re.compile(r"^(?P<name>.+) \((?P<file>[^()]*):\d+\)$")
BUILDS = {"fp": ("-O2", "-fno-omit-frame-pointer"), "nofp": ("-O2", "-fomit-frame-pointer")}
ENTRY = "_start;__libc_start_main;__libc_start_call_main;main;dispatch;"
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
TARGET_LOSS = 0.01


def build(directory: str) -> dict[str, Path]:
    out = {}
    for name, flags in BUILDS.items():
        binary = Path(directory) / f"ratio_{name}"
        subprocess.run(["gcc", *flags, "-o", str(binary), str(SOURCE)], check=True)
        out[name] = binary
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def bpf_stats():
    """kernel.bpf_stats_enabled on for the block (restored after)."""
    try:
        before = BPF_STATS.read_text().strip()
        BPF_STATS.write_text("1")
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            BPF_STATS.write_text(before)


def program_stats(profiler: Profiler) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of on_sample, from its fd's fdinfo."""
    fd = profiler._bpf.funcs[b"on_sample"].fd
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines() if ":" in line
    )
    return int(fields.get("run_time_ns", "0")), int(fields.get("run_cnt", "0"))


def target_argv(target: str | Path, seconds: float) -> list[str]:
    """The 2:1 program's command line: a built ratio.c, or py_ratio.py under a Python interpreter."""
    if str(target).endswith(".py") or "python" in Path(target).name:
        return [str(target), str(PY_SOURCE), str(seconds)]
    return [str(target), str(seconds), "wait"]


def python_chain(stack: str) -> tuple[str, ...]:
    """The names of py_ratio.py's frames in a folded stack, root first."""
    names = []
    for frame in stack.split(";"):
        match = PY_FRAME.match(frame)
        if match and match["file"].endswith(PY_SOURCE.name):
            names.append(match["name"])
    return tuple(names)


def run(binary: Path, seconds: float, hz: int, profiled: bool) -> dict:
    """One run of a 2:1 program, profiled by pid or not."""
    argv = target_argv(binary, seconds)
    is_python = argv[1:2] == [str(PY_SOURCE)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    proc.stdout.readline()
    profiler = None
    out: dict = {}
    try:
        if profiled:
            python = "auto" if is_python else "off"
            profiler = Profiler(ProfilerOptions(pids=frozenset({proc.pid}), python=python, sample_hz=hz)).start()
        cpu_start = cpu_seconds(proc.pid)
        agent_start = time.process_time()
        prog_start = program_stats(profiler) if profiler is not None else (0, 0)
        proc.stdin.write("go\n")
        proc.stdin.close()
        while proc.poll() is None:
            if profiler is not None:
                profiler.poll(100)
            else:
                time.sleep(0.1)
        words = proc.stdout.read().split()  # "done LEAF_CALLS CPU_SECONDS ..."
        calls, cpu = int(words[1]), float(words[2])
        out["throughput"] = calls / cpu
        out["cpu"] = cpu - cpu_start
        if profiler is not None:
            prog_end = program_stats(profiler)
            profiler.stop()
            out["agent_cpu"] = time.process_time() - agent_start
            out["read_cpu"] = profiler.read_cpu_s
            out["kernel_ns"] = prog_end[0] - prog_start[0]
            out["kernel_runs"] = prog_end[1] - prog_start[1]
            rows = [r for r in profiler.drain().to_pylist() if r["upid"].split(":")[1] == str(proc.pid)]
            out["rows"] = rows
            out["samplers"] = sorted({r["sampler"] for r in rows})
            out["incomplete"] = profiler.incomplete()
            out["drops"] = profiler.drops()
    finally:
        if profiler is not None:
            profiler.stop()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    return out


def accuracy(binaries: dict[str, Path], seconds: float, hz: int) -> None:
    with bpf_stats() as kernel_stats:
        for name, binary in binaries.items():
            result = run(binary, seconds, hz, profiled=True)
            rows = result["rows"]
            samples = sum(r["count"] for r in rows)
            expected = hz * result["cpu"]
            if name == "python":  # the full chain in Python frames, under the interpreter's native frames
                chains = [(r, python_chain(r["stack_trace"])) for r in rows if r["stack_trace"].startswith("_start;")]
                path_a = sum(r["count"] for r, c in chains if c == ("<module>", "main", "path_a", "leaf"))
                path_b = sum(r["count"] for r, c in chains if c == ("<module>", "main", "path_b", "leaf"))
            else:
                path_a = sum(r["count"] for r in rows if r["stack_trace"].startswith(ENTRY + "path_a;leaf"))
                path_b = sum(r["count"] for r in rows if r["stack_trace"].startswith(ENTRY + "path_b;leaf"))
            truncated = sum(r["count"] for r in rows if r["truncated"])
            per_1000 = 1000 / max(samples, 1)
            kernel = (
                f"{result['kernel_ns'] / max(samples, 1) / 1000:.1f} us per target sample "
                f"(on_sample's whole run time over its samples; {result['kernel_runs']} runs in all, "
                f"{result['kernel_ns'] / max(result['kernel_runs'], 1) / 1000:.1f} us each)"
                if kernel_stats
                else "n/a (kernel.bpf_stats_enabled not writable)"
            )
            print(
                f"{name}: {samples} samples / {expected:.0f} expected = {samples / max(expected, 1):.3f}; "
                f"path_a/path_b {path_a}/{path_b} = {path_a / max(path_b, 1):.2f} (truth 2.0); "
                f"full chains {(path_a + path_b) / max(samples, 1):.1%}; truncated {truncated / max(samples, 1):.1%}; "
                f"agent CPU per 1,000 samples: reads {result['read_cpu'] * per_1000:.3f} s, "
                f"whole agent {result['agent_cpu'] * per_1000:.3f} s; kernel {kernel}; "
                f"samplers {','.join(result['samplers'])}",
                flush=True,
            )
            lost = {k: v for k, v in {**result["drops"], **result["incomplete"]}.items() if v}
            if lost:
                print(f"    counters: {lost}")


def start_target(binary: Path, seconds: float) -> subprocess.Popen:
    """A 2:1 program started and waiting for its "go" (it has printed "ready"). A Python copy gets
    a fixed hash seed: the two copies' dicts then behave alike."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        target_argv(binary, seconds), stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, env=env
    )
    proc.stdout.readline()
    return proc


def overhead(binary: Path, seconds: float, hz: int, pairs: int, label: str) -> float:
    """The target's throughput profiled ÷ not, the two measured side by side: per pair two copies
    of the program run at the same time, one profiled by pid, the other not (which one alternates),
    so that whatever else the shared machine does at that moment (other jobs, the CPU's clock,
    the interpreter's speed from one run to the next) weighs on both. Also the profiler's kernel
    time (on_sample's run time, all its runs) as a share of the profiled copy's CPU time: the
    part of the overhead charged to the target, measured directly."""
    ratios, kernel_shares = [], []
    python = "auto" if target_argv(binary, seconds)[1:2] == [str(PY_SOURCE)] else "off"
    with bpf_stats() as kernel_stats:
        for i in range(pairs):
            procs = [start_target(binary, seconds) for _ in range(2)]
            profiled = procs[i % 2]
            profiler = None
            try:
                options = ProfilerOptions(pids=frozenset({profiled.pid}), python=python, sample_hz=hz)
                profiler = Profiler(options).start()
                cpu_start = cpu_seconds(profiled.pid)
                prog_start = program_stats(profiler)
                for proc in procs:
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                for proc in procs:
                    proc.stdin.close()
                while any(proc.poll() is None for proc in procs):
                    profiler.poll(100)
                prog_end = program_stats(profiler)
                throughput = {}
                cpu = {}
                for proc in procs:
                    words = proc.stdout.read().split()  # "done LEAF_CALLS CPU_SECONDS"
                    throughput[proc.pid], cpu[proc.pid] = int(words[1]) / float(words[2]), float(words[2])
            finally:
                if profiler is not None:
                    profiler.stop()
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                    proc.wait()
                    proc.stdout.close()
            other = procs[1 - i % 2]
            ratios.append(throughput[profiled.pid] / throughput[other.pid])
            share = ""
            if kernel_stats:
                kernel_shares.append((prog_end[0] - prog_start[0]) / 1e9 / max(cpu[profiled.pid] - cpu_start, 1e-9))
                share = f"; on_sample {100 * kernel_shares[-1]:.3f}% of the profiled copy's CPU"
            print(
                f"pair {i + 1}: not profiled {throughput[other.pid]:,.0f} leaf calls/cpu-s, profiled "
                f"{throughput[profiled.pid]:,.0f} (side by side) -> ratio {ratios[-1]:.4f}{share}",
                flush=True,
            )
    median = statistics.median(ratios)
    kernel = (
        f"; on_sample's kernel time {100 * statistics.median(kernel_shares):.3f}% of the target's CPU (median)"
        if kernel_shares
        else ""
    )
    print(
        f"{label}: target throughput profiled/not at {hz} Hz, side by side: median {median:.4f} of {pairs} pairs "
        f"(spread {min(ratios):.4f}..{max(ratios):.4f}); loss {100 * (1 - median):.2f}% "
        f"(target <= {100 * TARGET_LOSS:.0f}%){kernel}"
    )
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one target run")
    parser.add_argument("--hz", type=int, default=99, help="sampling rate")
    parser.add_argument("--pairs", type=int, default=5, help="runs without and with the profiler")
    parser.add_argument("--python", default="/usr/bin/python3.11", help="the interpreter of the Python target")
    parser.add_argument("--only", choices=("accuracy", "overhead"), help="run one part")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (eBPF)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as directory:
        binaries = build(directory)
        if opts.only != "overhead":
            accuracy({**binaries, "python": Path(opts.python)}, opts.seconds, opts.hz)
        if opts.only == "accuracy":
            return 0
        ratios = [
            overhead(binaries["nofp"], opts.seconds, opts.hz, opts.pairs, "nofp"),
            overhead(Path(opts.python), opts.seconds, opts.hz, opts.pairs, "python"),
        ]
    return 0 if min(ratios) >= 1 - TARGET_LOSS else 1


if __name__ == "__main__":
    sys.exit(main())
