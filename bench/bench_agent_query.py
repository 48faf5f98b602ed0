"""`pxq run http_data` against a running node agent: command start to the first row on stdout
(target <= 1.0 s), beside the same command replaying the same rows from a capture (`--from`), so
the agent's share is seen apart from Python's start-up on this (shared, noisy) machine.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_agent_query.py            # live agent (root, eBPF)
    PYTHONPATH=$PWD .venv/bin/python bench/bench_agent_query.py --replay   # agent serving a capture

Live: the agent collects host-wide; the bench sends HTTP requests to a test backend first, so
the agent's history holds them, then times the query over the last 5 minutes. Rounds alternate
agent and replay runs; medians and the spread (min..max) are printed.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pxq.testing.agent_process import running_agent
from pxq.testing.synthetic import write_synthetic_capture

TARGET_S = 1.0


def first_row_seconds(command: list[str]) -> float:
    """Seconds from starting ``command`` to its first line on stdout (the first row, -o json)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    elapsed = time.perf_counter() - start
    proc.stdout.read() if proc.stdout else None
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0 or not line.startswith("{"):
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}): {err}")
    return elapsed


def send_traffic(n: int) -> None:
    from pxq.testing.workload import python_backend

    with python_backend() as backend:
        conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=10)
        for i in range(n):
            conn.request("GET", f"/api/items?bench={i}")
            conn.getresponse().read()
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replay", action="store_true", help="the agent serves a synthetic capture (no eBPF)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests sent before timing (live)")
    args = parser.parse_args()
    pxq = [sys.executable, "-m", "pxq.cli.main"]
    with tempfile.TemporaryDirectory(prefix="pxq-bench-agent-") as tmp:
        capture = write_synthetic_capture(Path(tmp) / "cap", 20_000, seed=1)
        agent_args = ["--from", capture] if args.replay else ["--no-perf-profiler"]
        with running_agent(*agent_args, state_dir=Path(tmp) / "state", timeout_s=180) as agent:
            if not args.replay:
                send_traffic(args.requests)
                time.sleep(0.5)  # the agent moves rows every 100 ms poll
            query = ["run", "http_data", "-o", "json", "--", "--start_time=-5m"]
            agent_cmd = [*pxq, *query[:2], "--agent", agent.address, *query[2:]]
            replay_cmd = [*pxq, *query[:2], "--from", capture, *query[2:]]
            times: dict[str, list[float]] = {"agent": [], "replay": []}
            first_row_seconds(agent_cmd)  # warm the page cache for both
            first_row_seconds(replay_cmd)
            for _ in range(args.rounds):
                times["agent"].append(first_row_seconds(agent_cmd))
                times["replay"].append(first_row_seconds(replay_cmd))
            from pxq.agent.flight import AgentClient

            with AgentClient(agent.address) as client:
                status = client.status()
    mode = "replayed capture" if args.replay else "live agent"
    print(f"pxq run http_data, command start to first row ({mode}, {args.rounds} rounds, cpus={os.cpu_count()}):")
    for name, samples in times.items():
        print(
            f"  {name:7} median {statistics.median(samples):.3f} s  (min {min(samples):.3f} .. max {max(samples):.3f})"
        )
    rows = status["tables"]["http_events"]["rows"]
    print(
        f"agent after the runs: http_events {rows:,} rows, rss {status['rss_bytes'] / 2**20:.0f} MiB, "
        f"cpu {status['cpu_user_s'] + status['cpu_system_s']:.1f} s since start"
    )
    median = statistics.median(times["agent"])
    print(f"agent: {median:.3f} s (target <= {TARGET_S:.1f} s): {'OK' if median <= TARGET_S else 'OVER'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
