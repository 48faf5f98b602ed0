"""Where the socket tracer starts dropping events, two agents side by side (issue 14).

One nginx (pxq.testing.workload, two workers, keep-alive static files) on a free 127.0.0.1 port;
the embedded agent (bench_socket_tracer's agent process: EmbeddedAgent, socket tracer, http) traces
nginx and, with ``--both-ends`` (the default), this bench's own process too, so that the load
clients it starts (the paced C client, wrk) are traced as well: each transaction is then seen at
both ends, four data events. The paced client steps its rate up (each step ``--step`` seconds,
32 keep-alive connections), then wrk runs unpaced. Per step: the events per second that reached
the ring buffer (taken by the agent, plus those the kernel could not queue: ``ringbuf_full``),
the agent's CPU-seconds per second, and the drops. The onset is the first step with
``ringbuf_full`` > 0 (target: above 150,000 events/s).

Two code trees are compared (``--old``, default /work/main, and ``--new``, default this
checkout): the agent process imports pxq from the tree's directory (PYTHONPATH). Rounds
alternate which tree goes first; the machine is shared, so only figures of one run are compared.

    .venv/bin/python bench/bench_drop_onset.py [--rounds 2] [--step 3] [--rates 4000,8000,...]

Needs root (eBPF), nginx, wrk and gcc.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_socket_tracer as tracer_bench  # noqa: E402  (the agent process, the clients, nginx's pids)

TARGET_ONSET = 150_000
DEFAULT_RATES = (4_000, 8_000, 12_000, 16_000, 24_000, 32_000, 48_000)


def one_agent(tree: str, pids: list[int], client: Path, port: int, rates: list[int], step_s: float,
              wrk_s: float) -> dict:  # fmt: skip
    """Step the load up against one agent importing pxq from ``tree``; per step (label, achieved
    req/s, events/s reaching the ring buffer, agent CPU-s per s, ringbuf_full in the step, other
    drops in the step)."""
    os.environ["PYTHONPATH"] = tree
    steps = []
    with tracer_bench.agent(pids) as agent:
        prev = agent.snapshot()
        for rate in [*rates, None]:
            t0 = time.monotonic()
            if rate is None:
                achieved, _ = tracer_bench.wrk(port, wrk_s)
                label = "wrk"
            else:
                achieved = tracer_bench.paced(client, port, rate, int(rate * step_s), 32).rate
                label = f"{rate:,}"
            elapsed = time.monotonic() - t0
            time.sleep(1.2)  # the agent catches up (its CPU for the step includes that)
            snap = agent.snapshot()
            moved = {k: v - prev["drops"].get(k, 0) for k, v in snap["drops"].items() if v - prev["drops"].get(k, 0)}
            full = moved.pop("ringbuf_full", 0)
            events = (snap["events"] - prev["events"] + full) / elapsed
            steps.append((label, achieved, events, (snap["cpu"] - prev["cpu"]) / elapsed, full, moved))
            prev = snap
        final = agent.finish()
    onset = next((s for s in steps if s[4] > 0), None)
    return {"steps": steps, "onset": onset, "hwm_mb": final["hwm"] / 1e6}


def print_agent(round_no: int, name: str, result: dict) -> None:
    print(f"\n  round {round_no + 1}, {name} ({tracer_bench.load()}); peak RSS {result['hwm_mb']:.0f} MB")
    print(f"  {'offered':>8} {'achieved':>9} {'events/s':>9} {'agent CPU':>9} {'ringbuf_full':>12}  other")
    for label, achieved, events, cpu, full, other in result["steps"]:
        other_text = ", ".join(f"{k}={v:,}" for k, v in sorted(other.items())) or "-"
        print(f"  {label:>8} {achieved:>9,.0f} {events:>9,.0f} {cpu:>9.2f} {full:>12,}  {other_text}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default="/work/main", help="the tree to compare against (its pxq package)")
    parser.add_argument("--new", default=str(HERE.parent), help="the tree measured (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--step", type=float, default=3.0, help="seconds per paced step")
    parser.add_argument("--wrk", type=float, default=4.0, help="seconds of the final unpaced wrk step")
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="paced req/s per step")
    parser.add_argument("--nginx-only", action="store_true", help="trace nginx alone, not the load clients")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (eBPF)", file=sys.stderr)
        return 2
    from pxq.testing.ports import free_port
    from pxq.testing.workload import nginx_server

    rates = [int(r) for r in opts.rates.split(",")]
    trees = {"old": opts.old, "new": opts.new}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    print(f"drop onset: {os.cpu_count()} CPUs, {tracer_bench.load()}; old = {opts.old}, new = {opts.new}")
    with tempfile.TemporaryDirectory(prefix="pxq-onset-") as work:
        client = tracer_bench.build_client(work)
        with nginx_server(free_port()) as nginx:
            pids = tracer_bench.nginx_pids(nginx) + ([] if opts.nginx_only else [os.getpid()])
            tracer_bench.paced(client, nginx.port, 2_000, 2_000, 8)  # warm-up: page cache, workers
            for round_no in range(opts.rounds):
                order = ("old", "new") if round_no % 2 == 0 else ("new", "old")
                for name in order:
                    result = one_agent(trees[name], pids, client, nginx.port, rates, opts.step, opts.wrk)
                    results[name].append(result)
                    print_agent(round_no, name, result)
    print(f"\n== summary ({tracer_bench.load()})")
    for name in trees:
        onsets = [r["onset"][2] for r in results[name] if r["onset"]]
        clean = [max(s[2] for s in r["steps"]) for r in results[name] if not r["onset"]]
        parts = []
        if onsets:
            parts.append(f"drops began at {statistics.median(onsets):,.0f} events/s (median of {len(onsets)}; "
                         f"{min(onsets):,.0f}-{max(onsets):,.0f})")  # fmt: skip
        if clean:
            parts.append(f"no drop up to {max(clean):,.0f} events/s in {len(clean)} round(s)")
        per_event = [s[3] / s[2] * 1e6 for r in results[name] for s in r["steps"] if s[2] and not s[4]]
        cost = f"; agent CPU per event without drops: median {statistics.median(per_event):.1f} us" if per_event else ""
        print(f"  {name}: {'; '.join(parts)}{cost} (target: onset above {TARGET_ONSET:,} events/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
