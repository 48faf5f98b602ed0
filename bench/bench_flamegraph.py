"""Rendering stacks: 1M samples over about 100k distinct stacks (depth 10-40, plus kernel tails) to
every stack format.

The stacks are generated: a random tree of function names (native, Python ``func (file.py:N)`` and
kernel ``name_[k]`` frames), each new stack sharing a random prefix with an earlier one, counts
Zipf-distributed to 1M samples in total. Times are the best of ``--repeats`` runs; the record is
built once per format run (as ``render`` does). Target: the SVG well under 2 s.

    .venv/bin/python bench/bench_flamegraph.py [--stacks 100000] [--samples 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import pyarrow as pa

from pxq.render.flamegraph_svg import flamegraph_svg
from pxq.render.folded import folded_text
from pxq.render.pprof import pprof_bytes
from pxq.render.speedscope import speedscope_json
from pxq.render.stacks import StackSamples

TARGET_SVG_S = 2.0
KERNEL_TAIL = [
    "entry_SYSCALL_64_[k]",
    "do_syscall_64_[k]",
    "__x64_sys_read_[k]",
    "ksys_read_[k]",
    "vfs_read_[k]",
    "__x64_sys_write_[k]",
    "ksys_write_[k]",
    "vfs_write_[k]",
    "tcp_sendmsg_[k]",
    "schedule_[k]",
]


def synthetic_stacks(stacks: int = 100_000, samples: int = 1_000_000, seed: int = 1) -> pa.Table:
    """A ``stack_trace``/``count`` table of ``stacks`` distinct stacks summing to ``samples``."""
    rng = random.Random(seed)
    native = [
        f"{rng.choice(['lib', 'srv', 'core', 'net', 'db'])}::{rng.choice(['Run', 'Handle', 'Parse', 'Send'])}{i}"
        for i in range(6000)
    ]
    python = [
        f"{rng.choice(['handle', 'render', 'query', 'load', 'loop'])}_{i} (app/mod_{i % 97}.py:{rng.randint(1, 900)})"
        for i in range(6000)
    ]
    seen: set[tuple[str, ...]] = set()
    out: list[tuple[str, ...]] = [("main", "run_loop")]
    while len(out) < stacks:
        parent = out[int(len(out) * rng.random() ** 0.3)]
        depth = rng.randint(10, 40)
        frames = list(parent[: rng.randint(1, len(parent))])
        vocabulary = python if len(frames) % 3 == 0 else native
        while len(frames) < depth:
            frames.append(vocabulary[int(len(vocabulary) * rng.random() ** 2)])
        if rng.random() < 0.3:
            frames.extend(KERNEL_TAIL[: rng.randint(2, len(KERNEL_TAIL))])
        stack = tuple(frames)
        if stack not in seen:
            seen.add(stack)
            out.append(stack)
    weights = 1.0 / np.arange(1, stacks + 1) ** 1.1
    gen = np.random.default_rng(seed)
    gen.shuffle(weights)
    counts = 1 + gen.multinomial(samples - stacks, weights / weights.sum())
    return pa.table({"stack_trace": [";".join(s) for s in out], "count": pa.array(counts, pa.int64())})


def best(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stacks", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    start = time.perf_counter()
    table = synthetic_stacks(opts.stacks, opts.samples)
    frames = sum(s.count(";") + 1 for s in table["stack_trace"].to_pylist())
    print(
        f"generated {table.num_rows:,} distinct stacks, {frames:,} frames, "
        f"{sum(table['count'].to_pylist()):,} samples in {time.perf_counter() - start:.1f} s"
    )

    record_s, record = best(lambda: StackSamples.from_table(table, title="bench"), opts.repeats)
    print(
        f"record (parse, merge, sort, intern): {record_s * 1000:7.0f} ms  "
        f"({len(record.name_list):,} distinct frames, max depth {record.max_depth})"
    )
    formats = {
        "svg": lambda r: flamegraph_svg(r).encode(),
        "icicle": lambda r: flamegraph_svg(r, inverted=True).encode(),
        "folded": lambda r: folded_text(r).encode(),
        "speedscope": lambda r: speedscope_json(r).encode(),
        "pprof": pprof_bytes,
    }
    svg_total = 0.0
    for name, render in formats.items():
        # best() calls these within this iteration; the default binds this iteration's renderer all the same.
        seconds, data = best(lambda render=render: render(StackSamples.from_table(table, title="bench")), opts.repeats)
        only, _ = best(lambda render=render: render(record), opts.repeats)
        note = ""
        if name == "svg":
            svg_total = seconds
            drawn = data.count(b"<g><title>")
            verdict = "OK" if seconds < TARGET_SVG_S else "OVER"
            note = f", {drawn:,} frames drawn; target < {TARGET_SVG_S:.0f} s: {verdict}"
        print(
            f"{name:>10}: {seconds * 1000:7.0f} ms from the table ({only * 1000:6.0f} ms from the record), "
            f"{len(data) / 1e6:6.2f} MB{note}"
        )
    # The same samples as 1M one-sample rows, as a raw sample table would come.
    raw = table.take(pa.array(np.repeat(np.arange(table.num_rows), table["count"].to_numpy())))
    raw = raw.set_column(1, "count", pa.array(np.ones(raw.num_rows, dtype=np.int64)))
    raw_s, _ = best(lambda: flamegraph_svg(StackSamples.from_table(raw, title="raw")), opts.repeats)
    print(f"svg from {raw.num_rows:,} one-sample rows: {raw_s * 1000:.0f} ms")
    return 0 if svg_total < TARGET_SVG_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
