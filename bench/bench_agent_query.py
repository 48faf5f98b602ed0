"""`pxq run http_data` against a running node agent: command start to the first row on stdout
(target <= 1.0 s), beside the same command replaying the same rows from a capture (`--from`), so
the agent's share is seen apart from Python's start-up on this (shared, noisy) machine.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_agent_query.py            # live agent (root, eBPF)
    PYTHONPATH=$PWD .venv/bin/python bench/bench_agent_query.py --replay   # agent serving a capture

    PYTHONPATH=$PWD .venv/bin/python bench/bench_agent_query.py --compare /path/to/old/checkout

Live: the agent collects host-wide; the bench sends HTTP requests to a test backend first, so
the agent's history holds them, then times the query over the last 5 minutes. Rounds alternate
agent and replay runs; medians and the spread (min..max) are printed.

--compare OLD runs the same commands with another checkout's pxq (its root first on sys.path)
beside this one's, alternating within each round, against the same agent; --without-pyc adds a
copy of this checkout's pxq without its .pyc files, as an editable install runs under
PYTHONDONTWRITEBYTECODE=1 without tools/setup.sh's byte-compiling.
Each checkout's total import time (`python -X importtime`, the sum of every module's own time,
which that report inflates) is printed too.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pxq.testing.agent_process import running_agent
from pxq.testing.synthetic import write_synthetic_capture

TARGET_S = 1.0
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Checkout:
    """A pxq source tree the commands run from (cwd and PYTHONPATH: ``-m`` puts cwd first)."""

    label: str
    root: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.root)}


def first_row_seconds(command: list[str], checkout: Checkout) -> float:
    """Seconds from starting ``command`` to its first line on stdout (the first row, -o json)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=checkout.root, env=checkout.env()
    )
    line = proc.stdout.readline() if proc.stdout else ""
    elapsed = time.perf_counter() - start
    proc.stdout.read() if proc.stdout else None
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0 or not line.startswith("{"):
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}): {err}")
    return elapsed


def import_seconds(command: list[str], checkout: Checkout) -> float:
    """The sum of every module's own import time in ``python -X importtime`` of ``command``."""
    proc = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]],
        capture_output=True,
        text=True,
        cwd=checkout.root,
        env=checkout.env(),
    )
    own_us = 0
    for line in proc.stderr.splitlines():
        own = line.removeprefix("import time:").split("|")[0].strip() if line.startswith("import time:") else ""
        own_us += int(own) if own.isdigit() else 0  # not the header line, nor the program's own stderr
    return own_us / 1e6


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
    parser.add_argument("--compare", metavar="OLD_ROOT", help="also time another checkout's pxq, alternating")
    parser.add_argument(
        "--without-pyc", action="store_true", help="also time this checkout with its .pyc files out of reach"
    )
    args = parser.parse_args()
    pxq = [sys.executable, "-m", "pxq.cli.main"]
    this = Checkout("new" if args.compare else "this", ROOT)
    checkouts = [this]
    if args.compare:
        checkouts.insert(0, Checkout("old", Path(args.compare).resolve()))
    no_pyc_dir = tempfile.TemporaryDirectory(prefix="pxq-bench-nopyc-")
    if args.without_pyc:  # the package and the data files beside it (pxq.resources), no __pycache__
        for part in ("pxq", "grammar", "scripts", "bpf"):
            shutil.copytree(ROOT / part, Path(no_pyc_dir.name) / part, ignore=shutil.ignore_patterns("__pycache__"))
        checkouts.append(Checkout("new-src", Path(no_pyc_dir.name)))
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
            commands = {"agent": agent_cmd, "replay": replay_cmd}
            times: dict[tuple[str, str], list[float]] = {(c.label, m): [] for c in checkouts for m in commands}
            for checkout in checkouts:  # warm the page cache for every checkout and both commands
                for command in commands.values():
                    first_row_seconds(command, checkout)
            for _ in range(args.rounds):
                for mode, command in commands.items():
                    for checkout in checkouts:
                        times[(checkout.label, mode)].append(first_row_seconds(command, checkout))
            imports = {checkout.label: import_seconds(agent_cmd, checkout) for checkout in checkouts}
            from pxq.agent.flight import AgentClient

            with AgentClient(agent.address) as client:
                status = client.status()
    mode = "replayed capture" if args.replay else "live agent"
    no_pyc_dir.cleanup()
    print(f"pxq run http_data, command start to first row ({mode}, {args.rounds} rounds, cpus={os.cpu_count()}):")
    for (label, name), samples in times.items():
        print(
            f"  {label:7} {name:7} median {statistics.median(samples):.3f} s"
            f"  (min {min(samples):.3f} .. max {max(samples):.3f})"
        )
    for checkout in checkouts:
        print(f"  {checkout.label:7} imports {imports[checkout.label]:.3f} s (-X importtime of the agent run)")
    rows = status["tables"]["http_events"]["rows"]
    print(
        f"agent after the runs: http_events {rows:,} rows, rss {status['rss_bytes'] / 2**20:.0f} MiB, "
        f"cpu {status['cpu_user_s'] + status['cpu_system_s']:.1f} s since start"
    )
    median = statistics.median(times[(this.label, "agent")])
    print(f"agent: {median:.3f} s (target <= {TARGET_S:.1f} s): {'OK' if median <= TARGET_S else 'OVER'}")
    return 0 if median <= TARGET_S else 1  # as every bench in README's list


if __name__ == "__main__":
    raise SystemExit(main())
