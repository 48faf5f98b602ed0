"""Record a replayable capture of real loopback HTTP traffic.

    python -m pxq.testing.make_capture OUTDIR [--requests N] [--seconds S]

Starts nginx in front of the Python test backend (:mod:`pxq.testing.workload`), puts the
recording proxy (:mod:`pxq.testing.recording_proxy`) in front of nginx, runs the client mix
through the proxy, and writes ``http_events`` plus ``capture.json`` into OUTDIR with
``pxq.replay.write_capture``, ready for ``pxq run http_data --from OUTDIR``. Everything it
started is stopped before it returns.

The rows come from real traffic parsed by pxq's HTTP/1.x stitcher, but captured by a user-space
proxy, not by eBPF: live kernel capture is the socket tracer's job.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pxq.testing.recording_proxy import RecordingProxy
from pxq.testing.workload import ClientResult, nginx_workload, run_client_mix

DEFAULT_REQUESTS = 60
DEFAULT_SECONDS = 30.0


@dataclass
class CaptureSummary:
    directory: Path
    rows: int
    client_results: list[ClientResult]
    errors: dict[str, int]
    nginx_port: int
    nginx_master_pid: int
    upids: list[str]


def make_capture(
    outdir: str | Path, n_requests: int = DEFAULT_REQUESTS, seconds: float = DEFAULT_SECONDS
) -> CaptureSummary:
    """Record ``n_requests`` requests (at most ``seconds`` of client time) into ``outdir``."""
    from pxq.replay import write_capture

    start_ns = time.time_ns()
    with nginx_workload() as workload:
        nginx = workload.nginx
        with RecordingProxy(nginx.port, server_pid=nginx.master_pid) as proxy:
            results = run_client_mix(proxy.base_url, n_requests, max_seconds=seconds)
        # stop() (leaving the block) waited for the client connections to close.
        table: pa.Table = proxy.http_events()
        processes = proxy.processes()
        errors = dict(proxy.errors)
    end_ns = time.time_ns()
    out = Path(outdir)
    write_capture(
        out,
        {"http_events": table},
        host=socket.gethostname(),
        start_time_ns=start_ns,
        end_time_ns=end_ns,
        processes=processes,
        drops={"http_events": errors} if errors else None,
    )
    return CaptureSummary(
        directory=out,
        rows=table.num_rows,
        client_results=results,
        errors=errors,
        nginx_port=nginx.port,
        nginx_master_pid=nginx.master_pid,
        upids=sorted(set(table.column("upid").to_pylist())),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pxq.testing.make_capture",
        description="Record real loopback HTTP traffic (nginx + a Python backend, through pxq's "
        "recording proxy) into a capture directory for `pxq run --from`.",
    )
    ap.add_argument("outdir", help="capture directory to write (created if missing)")
    ap.add_argument(
        "--requests", type=int, default=DEFAULT_REQUESTS, help=f"requests to send (default {DEFAULT_REQUESTS})"
    )
    ap.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"at most this long sending them (default {DEFAULT_SECONDS:g})",
    )
    args = ap.parse_args(argv)
    if args.requests < 1 or args.seconds <= 0:
        ap.error("--requests and --seconds must be positive")
    summary = make_capture(args.outdir, args.requests, args.seconds)
    statuses: dict[int, int] = {}
    for r in summary.client_results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    print(
        f"wrote {summary.rows} http_events rows from {len(summary.client_results)} requests "
        f"(statuses {dict(sorted(statuses.items()))}) to {summary.directory}",
        file=sys.stderr,
    )
    if summary.errors:
        print(f"recording problems: {summary.errors}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
