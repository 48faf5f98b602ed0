"""Overhead of the CPU profiler on a CPU-bound target at 99 Hz, and the agent's cost.

The target (tests/agent/programs/spin.c, built with frame pointers) spins for ``--seconds`` and
reports its spin_leaf calls and the CPU time it got; its throughput is calls per CPU second, so
other load on a shared machine (which takes CPU time away, not speed) does not bias the ratio.
Without IRQ time accounting (this kernel), the perf interrupt and the BPF program's stack walk
are charged to the interrupted task, so they show in that number. Runs alternate without and
with a whole-host profiler attached; the ratio is the median of the pairs (target: loss <= 1 %).

Then, profiling the whole host for ``--host-seconds`` with a few workloads (the C spinner, a
syscall loop, a Python loop with py-spy): the agent's RSS, the kernel maps' memory, and how long
one read of the kernel maps (flip, take, symbolize, fold) takes.

    .venv/bin/python bench/bench_profiler_overhead.py [--seconds 3] [--pairs 5] [--host-seconds 10]

Needs root and bcc, and gcc for the target.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pxq.agent.profiler import Profiler, ProfilerOptions

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "tests" / "agent" / "programs"
TARGET_LOSS = 0.01


def build(directory: str) -> dict[str, Path]:
    out = {}
    for name in ("spin", "syscalls"):
        binary = Path(directory) / name
        subprocess.run(
            ["gcc", "-O2", "-fno-omit-frame-pointer", "-o", str(binary), str(PROGRAMS / f"{name}.c")], check=True
        )
        out[name] = binary
    return out


def run_target(spin: Path, seconds: float, profiler: Profiler | None) -> tuple[float, float]:
    """(spin_leaf calls per CPU second, per wall second) of one run, polling ``profiler`` meanwhile."""
    proc = subprocess.Popen([str(spin), str(seconds)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    begin = time.monotonic()
    while proc.poll() is None:
        if profiler is not None:
            profiler.poll(100)
        else:
            time.sleep(0.1)
    wall = time.monotonic() - begin
    words = proc.stdout.read().split()
    proc.stdout.close()
    calls, cpu = int(words[1]), float(words[2])
    return calls / cpu, calls / wall


def kernel_map_bytes(profiler: Profiler) -> int:
    """Kernel memory of the profiler's maps: the ``memlock`` of each map fd's fdinfo."""
    total = 0
    for table in profiler._tables.values():
        fd = getattr(table, "map_fd", None)
        if fd is None:
            continue
        for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
            if line.startswith("memlock:"):
                total += int(line.split()[1])
    return total


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def overhead(spin: Path, seconds: float, pairs: int) -> float:
    ratios, walls = [], []
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        result = {}
        for attached in order:
            if attached:
                profiler = Profiler(ProfilerOptions(sample_hz=99)).start()
                try:
                    result[True] = run_target(spin, seconds, profiler)
                finally:
                    profiler.stop()
                    profiler.drain()
            else:
                result[False] = run_target(spin, seconds, None)
        ratio = result[True][0] / result[False][0]
        ratios.append(ratio)
        walls.append(result[True][1] / result[False][1])
        print(
            f"pair {i + 1}: without {result[False][0]:,.0f} calls/cpu-s, with {result[True][0]:,.0f} "
            f"-> ratio {ratio:.4f} (per wall second {walls[-1]:.4f})",
            flush=True,
        )
    median = statistics.median(ratios)
    print(
        f"throughput with/without profiler at 99 Hz: ratio {median:.4f} (median of {pairs} pairs; "
        f"per wall second {statistics.median(walls):.4f}); loss {100 * (1 - median):.2f}% "
        f"(target <= {100 * TARGET_LOSS:.0f}%)"
    )
    return median


def host_wide(programs: dict[str, Path], seconds: float) -> None:
    base_rss = rss_kib()
    workloads = [
        subprocess.Popen([str(programs["spin"]), str(seconds + 30)], stdout=subprocess.DEVNULL),
        subprocess.Popen([str(programs["syscalls"]), str(seconds + 30)], stdout=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, str(PROGRAMS / "busy.py"), str(seconds + 30)], stdout=subprocess.DEVNULL),
    ]
    reads: list[float] = []
    try:
        begin = time.monotonic()
        profiler = Profiler(ProfilerOptions(sample_hz=99)).start()
        started = time.monotonic() - begin
        loaded_rss = rss_kib()
        rows = 0
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                before = profiler.reads
                profiler.poll(100)
                if profiler.reads != before:
                    reads.append(profiler.last_read_s)
                rows += profiler.drain().num_rows
            map_bytes = kernel_map_bytes(profiler)
            rss = rss_kib()
            processes = len(profiler.symbolizer.processes)
        finally:
            stop_begin = time.monotonic()
            profiler.stop()
            stop_s = time.monotonic() - stop_begin
            rows += profiler.drain().num_rows
        stats = profiler.stats()  # after stop: py-spy's samples arrive when its segments end
    finally:
        for proc in workloads:
            proc.kill()
            proc.wait()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"whole host, {seconds:g}s at 99 Hz: {stats['samples']:,} samples, {stats['pyspy_samples']:,} py-spy samples, "
        f"{rows:,} rows, {processes} processes snapshotted"
    )
    print(
        f"agent RSS: {base_rss / 1024:.0f} MiB before start, {loaded_rss / 1024:.0f} MiB after compile+load, "
        f"{rss / 1024:.0f} MiB while profiling the whole host (peak {peak / 1024:.0f} MiB); "
        f"kernel maps {map_bytes / 2**20:.1f} MiB"
    )
    print(
        f"start (compile, load, attach) {started:.2f}s; read of the kernel maps: median "
        f"{1000 * statistics.median(reads):.1f} ms, max {1000 * max(reads):.1f} ms over {len(reads)} reads; "
        f"stop (last read, py-spy's last segment) {stop_s:.2f}s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one target run")
    parser.add_argument("--pairs", type=int, default=5, help="runs without and with the profiler")
    parser.add_argument("--host-seconds", type=float, default=10.0, help="whole-host profiling for RSS and drain time")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (eBPF)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as directory:
        programs = build(directory)
        host_wide(programs, opts.host_seconds)  # first: RSS before start is then pxq's alone, without LLVM
        ratio = overhead(programs["spin"], opts.seconds, opts.pairs)
    return 0 if ratio >= 1 - TARGET_LOSS else 1


if __name__ == "__main__":
    sys.exit(main())
