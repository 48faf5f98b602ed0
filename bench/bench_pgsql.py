"""PostgreSQL capture completeness and agent cost on real pgbench traffic (issue 12's benchmarks).

A real PostgreSQL 15 (:func:`pxq.testing.servers.postgres.postgres_server`, a free loopback port)
initialised by ``pgbench -i``, then ``pgbench -S`` (select-only: one simple Query per transaction)
at a fixed ``--rate`` over a few connections, traced by the socket tracer in this process (pids:
the postmaster, whose backends are forked during the run, and pgbench). Figures, side by side:

* completeness: pgsql_events rows of the benchmark's SELECT ÷ transactions pgbench reports it
  processed, on the client side (pgbench's rows) and on the server side (the backends' rows);
  target >= 99.9 % below the drop threshold; every loss counted by reason (kernel and agent
  drop counters, the stitcher's error reasons) is printed;
* agent CPU per 10,000 transactions: this process's CPU time (getrusage) from the start of the
  run to the last row taken, the BPF program already compiled and attached (target <= 0.3 s);
* agent RSS: peak resident size of this process (target <= 250 MB).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_pgsql.py [--rate 500] [--seconds 10] [--clients 4]

Needs root, bcc and PostgreSQL 15 with pgbench. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import time

from pxq.agent.socket_tracer import SocketTracer
from pxq.testing.servers.postgres import PG_BIN, postgres_server

SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = "


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=500, help="transactions per second pgbench aims at")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with postgres_server() as server:
        base = [str(PG_BIN / "pgbench"), "-h", server.host, "-p", str(server.port), "-U", "postgres"]
        subprocess.run([*base, "-i", "-s", "1", "-q", "postgres"], env=server.env(), check=True, capture_output=True)
        # The shell waits for "go" and becomes pgbench: its pid is traced from its first call.
        bench = subprocess.Popen(["sh", "-c", 'read go; exec "$@"', "sh", *base, "-S", "-n", "-c", str(args.clients),
                                  "-j", "1", "--rate", str(args.rate), "-T", str(args.seconds), "postgres"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env=server.env(), text=True)  # fmt: skip
        tracer = SocketTracer(pids={server.pid, bench.pid}).start()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        bench.stdin.write("go\n")
        bench.stdin.close()
        rows = {1: 0, 2: 0}
        last_drain = time.monotonic()
        while bench.poll() is None:
            tracer.poll(50)
            if time.monotonic() - last_drain > 1.0:  # rows taken once a second, as the embedded agent does
                _count(tracer, rows)
                last_drain = time.monotonic()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and tracer.open_connections():
            tracer.poll(50)
        tracer.poll(50)
        _count(tracer, rows)
        tracer.stop()
        _count(tracer, rows)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        output = bench.stdout.read()
        bench.stdout.close()
    found = re.search(r"number of transactions actually processed: (\d+)", output)
    if bench.returncode != 0 or found is None:
        print(output)
        return 1
    done = int(found.group(1))
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    rss_mb = cpu1.ru_maxrss / 1024
    print(f"pgbench -S --rate {args.rate} -c {args.clients} -T {args.seconds}: {done} transactions")
    ok = True
    for role, name in ((1, "client (pgbench)"), (2, "server (backends)")):
        share = rows[role] / done if done else 0.0
        ok &= share >= 0.999
        print(f"  {name}: {rows[role]} rows, {100 * share:.2f} % (target >= 99.9 %)")
    per_10k = cpu / max(rows[1] + rows[2], 1) * 10_000
    print(f"  agent CPU {cpu:.2f} s, {per_10k:.3f} s per 10,000 captured transactions (target <= 0.3 s)")
    print(f"  agent peak RSS {rss_mb:.0f} MB (target <= 250 MB)")
    print(f"  drops: { {k: v for k, v in tracer.drops().items() if v} or 'none' }")
    print(f"  pgsql stitcher errors: {dict(tracer._tracker.error_counts('pgsql')) or 'none'}")
    ok &= per_10k <= 0.3 and rss_mb <= 250
    return 0 if ok else 1


def _count(tracer: SocketTracer, rows: dict[int, int]) -> None:
    table = tracer.drain_tables().get("pgsql_events")
    if table is None or not table.num_rows:
        return
    for role, req in zip(table["trace_role"].to_pylist(), table["req"].to_pylist(), strict=True):
        if req.startswith(SELECT):
            rows[role] = rows.get(role, 0) + 1


if __name__ == "__main__":
    sys.exit(main())
