"""A small real workload on loopback for the demo: nginx in front of the Python backend, which
also talks to a real PostgreSQL and a real Redis (each started here in a temporary directory on a
free loopback port), and a client loop making a paced mix of requests (2xx, 404, 500, a slow
endpoint, uploads, and the backend's database paths: cached reads, a slow query, a failing one)
for a bounded time. Everything it starts is stopped when it ends.

    python -m pxq.testing.demo_workload --seconds 20 [--rate 20] [--ready-file PATH] [--go-file PATH]
                                        [--no-databases]

The ready file receives the nginx base URL once the servers answer, so a script can start
tracing before the traffic it wants to see; with a go file, no request is sent before that file
exists (a tracer that has attached creates it: then every conversation is seen from its start).
Every server is a descendant of this process: tracing its pid (``pxq capture --pid``) covers the whole workload.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from pxq.testing.workload import DEMO_MIX, MIX, nginx_workload, run_client_mix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send requests (bounded)")
    parser.add_argument("--rate", type=float, default=20.0, help="rounds of single requests per second")
    parser.add_argument("--ready-file", type=Path, help="write the base URL here once serving")
    parser.add_argument("--go-file", type=Path, help="once serving, wait until this file exists before sending")
    parser.add_argument(
        "--no-databases",
        dest="databases",
        action="store_false",
        help="nginx and the backend only: no PostgreSQL or Redis, and no requests that need them",
    )
    opts = parser.parse_args(argv)
    # SIGTERM (the demo stops the workload once its capture is written) unwinds the servers'
    # context managers like Ctrl-C does; Python's default would exit at once and orphan them.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    mix = DEMO_MIX if opts.databases else MIX
    sent = 0
    with nginx_workload(databases=opts.databases) as workload:
        if opts.ready_file:
            opts.ready_file.write_text(workload.base_url + "\n")
        dbs = workload.databases
        print(
            f"workload: nginx {workload.base_url} (master pid {workload.nginx.master_pid})"
            + (
                f", PostgreSQL 127.0.0.1:{dbs.postgres.port} (pid {dbs.postgres.pid}), "
                f"Redis 127.0.0.1:{dbs.redis.port} (pid {dbs.redis.pid})"
                if dbs
                else ""
            )
            + f", sending requests for {opts.seconds:g}s",
            file=sys.stderr,
        )
        while opts.go_file is not None and not opts.go_file.exists():
            time.sleep(0.02)  # polling a file: SIGTERM still ends the wait
        deadline = time.monotonic() + opts.seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            sent += len(run_client_mix(workload.base_url, len(mix), max_seconds=max(0.1, deadline - started), mix=mix))
            # Pace the loop: one round of the mix per len(mix)/rate seconds.
            time.sleep(max(0.0, len(mix) / opts.rate - (time.monotonic() - started)))
    stopped = "nginx, the backend, PostgreSQL and Redis" if opts.databases else "nginx and the backend"
    print(f"workload: sent {sent} requests, stopped {stopped}", file=sys.stderr)
    return 0


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
