"""Record the captures the investigation notebooks in notebooks/ read (run once, as root; the
output is committed, a few tens of KB):

    sudo .venv/bin/python tools/notebook_captures.py [--out notebooks/captures] [--window 10]

- ``demo/``: the demo workload (pxq.testing.demo_workload: nginx -> Python backend -> PostgreSQL
  and Redis, with a slow endpoint and a slow report query) captured live with ``pxq capture``:
  http_events, pgsql_events and the CPU profiler's stack_traces.beta, from the workload's
  processes only (``--pid``). Read by 1-slow-endpoint and 2-database-latency.
- ``before/`` and ``after/``: stack_traces.beta of notebooks/order_worker.py running release v1,
  then v2 (the release whose checksum is slower). Read by 3-regression.

Each capture is what ``pxq capture`` wrote, unchanged. The captured processes are this tool's
children, started and stopped here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPTURE_TABLES = {"demo": "http_events,pgsql_events,stack_traces.beta", "regression": "stack_traces.beta"}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _wait_for_file(path: Path, process: subprocess.Popen, what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.stat().st_size):
        if process.poll() is not None:
            raise SystemExit(f"notebook_captures: {what} exited before it was ready")
        if time.monotonic() > deadline:
            raise SystemExit(f"notebook_captures: {what} was not ready in {timeout_s:g}s")
        time.sleep(0.1)


def _capture(out: Path, tables: str, pid: int, window_s: float) -> None:
    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, "-m", "pxq.cli.main", "capture", "--out", str(out), "--for", f"{window_s:g}s"]
    command += ["--tables", tables, "--pid", str(pid)]
    print("notebook_captures:", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True, env=_env(), cwd=ROOT)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # the demo workload stops its servers on SIGTERM
    process.wait(timeout=60)


def capture_demo(out: Path, window_s: float, work: Path) -> None:
    ready = work / "demo-ready"
    workload = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pxq.testing.demo_workload",
            "--seconds",
            str(window_s + 60),
            "--ready-file",
            str(ready),
        ],
        env=_env(),
        cwd=ROOT,
    )
    try:
        _wait_for_file(ready, workload, "the demo workload")
        _capture(out, CAPTURE_TABLES["demo"], workload.pid, window_s)
    finally:
        _stop(workload)


def capture_release(out: Path, release: str, window_s: float, work: Path) -> None:
    ready = work / f"worker-{release}-ready"
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "notebooks" / "order_worker.py"), "--release", release]
        + ["--seconds", str(window_s + 30), "--ready-file", str(ready)],
        env=_env(),
        cwd=ROOT,
    )
    try:
        _wait_for_file(ready, worker, f"order_worker {release}")
        _capture(out, CAPTURE_TABLES["regression"], worker.pid, window_s)
    finally:
        _stop(worker)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "notebooks" / "captures")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per capture")
    opts = parser.parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pxq-nb-captures-") as tmp:
        work = Path(tmp)
        capture_demo(opts.out / "demo", opts.window, work)
        capture_release(opts.out / "before", "v1", opts.window / 2, work)
        capture_release(opts.out / "after", "v2", opts.window / 2, work)
    print(f"notebook_captures: wrote {opts.out}/demo, before, after", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
