"""The node agent's own cost in steady state (issue 15's benchmark): CPU and RSS of `pxq agent serve`
with its default collectors and budgets (socket tracer, CPU profiler at 19 Hz, 15 min retention,
64 MiB per table), at an idle host and under 2k HTTP requests/s (nginx and the paced client of
bench_socket_tracer.py, on loopback). RSS target <= 300 MB.

    sudo PYTHONPATH=$PWD .venv/bin/python bench/bench_agent_steady.py [--quick] [--spill]

Phases, in one run, alternating (the machine is shared and noisy: medians and spreads are printed):
idle (no traffic from this bench) and load (2k req/s), each ``--seconds`` long, ``--rounds`` times.
Per phase: the agent's CPU (user + system CPU-seconds of its process over the phase ÷ the phase's
seconds: a share of one CPU) and its RSS sampled every 0.5 s (median and peak). RSS is also given
right after start-up (before any load: libraries, bcc and its compiled programs), so the share of
the held history is seen apart. With ``--spill`` the agent also spills to a temporary directory.

Measured 2026-12-07, the profiler's symbol and unwind caches mapped instead of copied (branch
h-rss): ``pxq agent serve`` with the defaults on this shared host (other helpers' tests running,
no load from a bench), RSS sampled every 0.5 s for 45 s, 3 rounds alternating the two trees:
median 253.3 [234.0-314.7] MB before vs 216.9 [212.1-217.3] after; peak 279.0 [274.1-332.4] vs
224.8 [224.5-235.1].
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_socket_tracer import build_client, nginx_pids, paced, process_cpu_s  # noqa: E402

from pxq.agent.flight import AgentClient  # noqa: E402
from pxq.testing.agent_process import running_agent  # noqa: E402

RSS_TARGET_MB = 300.0
RATE = 2_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def phase(pid: int, seconds: float, load: tuple[Path, int] | None) -> dict:
    """The agent's CPU share and RSS samples over ``seconds`` (with the paced client when ``load``)."""
    samples: list[float] = []
    done = threading.Event()
    sent: dict = {}

    def drive() -> None:
        assert load is not None
        client, port = load
        run = paced(client, port, RATE, int(RATE * seconds), 8)
        sent.update(done=run.done, rate=run.rate, errors=run.errors)

    driver = threading.Thread(target=drive) if load else None
    cpu0, t0 = process_cpu_s([pid]), time.monotonic()
    if driver:
        driver.start()
    while not done.is_set():
        samples.append(rss_mb(pid))
        if driver is not None and not driver.is_alive():
            break
        if driver is None and time.monotonic() - t0 >= seconds:
            break
        time.sleep(0.5)
    if driver:
        driver.join()
    elapsed = time.monotonic() - t0
    return {"cpu": (process_cpu_s([pid]) - cpu0) / elapsed, "rss": samples, **sent}


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} (spread {min(values):.3f}..{max(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases and fewer rounds")
    parser.add_argument("--seconds", type=float, help="each phase's length (default 60, --quick 20)")
    parser.add_argument("--rounds", type=int, help="idle/load pairs (default 3, --quick 2)")
    parser.add_argument("--spill", action="store_true", help="the agent also spills to a temporary directory")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (eBPF)", file=sys.stderr)
        return 2
    from pxq.testing.ports import free_port
    from pxq.testing.workload import nginx_server

    seconds = opts.seconds or (20.0 if opts.quick else 60.0)
    rounds = opts.rounds or (2 if opts.quick else 3)
    print(f"pxq agent steady-state bench: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="pxq-steady-") as work:
        client = build_client(work)
        args = ["--spill-dir", str(Path(work) / "spill")] if opts.spill else []
        with nginx_server(free_port()) as nginx, running_agent(*args, state_dir=work, timeout_s=240) as agent:
            pids = nginx_pids(nginx)
            pid = agent.proc.pid
            time.sleep(2.0)  # the first ring-buffer reads and the status row
            startup = rss_mb(pid)
            print(f"nginx pids {pids}; agent pid {pid}; agent RSS after start-up {startup:.1f} MB")
            results: dict[str, list[dict]] = {"idle": [], "load": []}
            for i in range(rounds):
                for name in ("idle", "load"):
                    r = phase(pid, seconds, (client, nginx.port) if name == "load" else None)
                    results[name].append(r)
                    extra = f", client {r['rate']:.0f} req/s, {r['errors']} errors" if name == "load" else ""
                    print(
                        f"  round {i + 1} {name:4}: agent cpu {r['cpu']:.3f} CPU, rss median "
                        f"{statistics.median(r['rss']):.1f} MB, peak {max(r['rss']):.1f} MB{extra}"
                    )
            with AgentClient(agent.address) as c:
                status = c.status()
    print("\n== summary")
    peak = 0.0
    for name, runs in results.items():
        rss = [max(r["rss"]) for r in runs]
        peak = max(peak, *rss)
        print(f"  {name:4}: agent cpu {spread([r['cpu'] for r in runs])} CPUs; rss peak {spread(rss)} MB")
    tables = {t: v for t, v in status["tables"].items() if v["rows"]}
    print(
        "  held at the end: "
        + ", ".join(f"{t} {v['rows']:,} rows {(v['bytes'] or 0) / 2**20:.1f} MiB" for t, v in tables.items())
    )
    held = status.get("store_held_bytes") or 0
    print(f"  the store holds them in {held / 2**20:.1f} MiB (compressed): the rest of the RSS is not history")
    drops = {t: d for t, d in status["drops"].items() if any(d.values())}
    print(f"  drops: {drops or 'none'}")
    if status.get("spill"):
        s = status["spill"]
        print(f"  spill: {s['files']} files, {s['bytes'] / 2**20:.1f} MiB, disk full {s['disk_full']}")
    verdict = "ok" if peak <= RSS_TARGET_MB else "MISSED"
    print(f"  rss peak {peak:.1f} MB vs target <= {RSS_TARGET_MB:g} MB: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
