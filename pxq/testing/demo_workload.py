"""A small real workload on loopback for the demo: nginx in front of the Python backend, and a
client loop making a paced mix of requests (2xx, 404, 500, a slow endpoint, uploads) for a bounded
time. Everything it starts is stopped when it ends.

    python -m pxq.testing.demo_workload --seconds 20 [--rate 20] [--ready-file PATH]

The ready file receives the nginx base URL once the servers answer, so a script can start
tracing before the traffic it wants to see.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pxq.testing.workload import MIX, nginx_workload, run_client_mix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send requests (bounded)")
    parser.add_argument("--rate", type=float, default=20.0, help="rounds of single requests per second")
    parser.add_argument("--ready-file", type=Path, help="write the base URL here once serving")
    opts = parser.parse_args(argv)
    sent = 0
    with nginx_workload() as workload:
        if opts.ready_file:
            opts.ready_file.write_text(workload.base_url + "\n")
        print(
            f"workload: nginx {workload.base_url} (master pid {workload.nginx.master_pid}), "
            f"sending requests for {opts.seconds:g}s",
            file=sys.stderr,
        )
        deadline = time.monotonic() + opts.seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            sent += len(run_client_mix(workload.base_url, len(MIX), max_seconds=max(0.1, deadline - started)))
            # Pace the loop: one round of the mix per len(MIX)/rate seconds.
            time.sleep(max(0.0, len(MIX) / opts.rate - (time.monotonic() - started)))
    print(f"workload: sent {sent} requests, stopped nginx and the backend", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
