"""Synthetic http_events for executor tests and benchmarks (not for claims about real traffic:
those use captures of real servers, see pxq.testing.make_capture)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pxq.tables import CATALOG

if TYPE_CHECKING:
    from pxq.replay.reader import Capture

PATHS = ["/", "/api/items", "/api/items/42", "/api/slow", "/missing", "/api/error", "/api/echo", "/static/app.js"]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE", "GET", "HEAD"]
STATUSES = np.array([200, 200, 200, 201, 204, 304, 400, 404, 500, 503])
COMMS = ["nginx", "python3", "envoy", "curl", "node"]
# The window generated rows fall in by default: 2025-11-26 00:00 UTC and the 5 minutes after.
SYNTHETIC_START_NS = 1_764_115_200_000_000_000
SYNTHETIC_SPAN_NS = 300_000_000_000


def synthetic_processes(n_processes: int = 6, asid: int = 0) -> dict[str, dict]:
    """``asid``: the agent that recorded them (two agents' processes may share pids, never upids)."""
    processes = {}
    for i in range(n_processes):
        pid = 1000 + i * 17
        upid = f"{asid}:{pid}:{500000 + i}"
        comm = COMMS[i % len(COMMS)]
        processes[upid] = {
            "pid": pid,
            "comm": comm,
            "cmdline": f"/usr/bin/{comm} --worker {i}",
            "exe": f"/usr/bin/{comm}",
            "container_id": "",
            "pod": f"default/{comm}-{i}" if i % 3 == 0 else "",
            "namespace": "default" if i % 3 == 0 else "",
        }
    return processes


def synthetic_http_events(
    n_rows: int,
    *,
    seed: int = 0,
    start_ns: int = 1_764_115_200_000_000_000,
    span_ns: int = 300_000_000_000,
    n_processes: int = 6,
    null_fraction: float = 0.0,
    asid: int = 0,
) -> pa.Table:
    """``n_rows`` rows over ``span_ns`` starting at ``start_ns``, time-ordered, with nulls in a
    few nullable columns when ``null_fraction`` > 0."""
    rng = np.random.default_rng(seed)
    upids = list(synthetic_processes(n_processes, asid))
    times = np.sort(start_ns + rng.integers(0, span_ns, n_rows))
    path_idx = rng.integers(0, len(PATHS), n_rows)
    status = STATUSES[rng.integers(0, len(STATUSES), n_rows)]
    latency = (rng.lognormal(mean=15.0, sigma=1.0, size=n_rows)).astype(np.int64)
    req_size = rng.integers(0, 5000, n_rows)
    resp_size = rng.integers(0, 200_000, n_rows)
    role = rng.choice([1, 2], n_rows, p=[0.3, 0.7])
    remote_octet = rng.integers(1, 20, n_rows)
    paths = np.array(PATHS, dtype=object)[path_idx]
    methods = np.array(METHODS, dtype=object)[path_idx]
    headers = json.dumps({"Host": "127.0.0.1", "User-Agent": "pxq-synthetic"})
    columns = {
        "time_": pa.array(times, pa.timestamp("ns")),
        "upid": pa.array(np.array(upids, dtype=object)[rng.integers(0, len(upids), n_rows)], pa.string()),
        "remote_addr": pa.array(np.char.add("10.0.0.", remote_octet.astype(str)).astype(object), pa.string()),
        "remote_port": pa.array(rng.integers(30000, 60000, n_rows), pa.int64()),
        "local_addr": pa.array(["127.0.0.1"] * n_rows, pa.string()),
        "local_port": pa.array(rng.choice([80, 8080, 443], n_rows), pa.int64()),
        "trace_role": pa.array(role, pa.int64()),
        "encrypted": pa.array(rng.random(n_rows) < 0.1, pa.bool_()),
        "major_version": pa.array(np.ones(n_rows, dtype=np.int64), pa.int64()),
        "minor_version": pa.array(np.ones(n_rows, dtype=np.int64), pa.int64()),
        "content_type": pa.array(rng.integers(0, 2, n_rows), pa.int64()),
        "req_headers": pa.array([headers] * n_rows, pa.string()),
        "req_method": pa.array(methods, pa.string()),
        "req_path": pa.array(paths, pa.string()),
        "req_body": pa.array(np.where(methods == "POST", '{"name": "widget"}', "").astype(object), pa.string()),
        "req_body_size": pa.array(req_size, pa.int64()),
        "resp_headers": pa.array(['{"Content-Type": "application/json"}'] * n_rows, pa.string()),
        "resp_status": pa.array(status, pa.int64()),
        "resp_message": pa.array(np.where(status < 400, "OK", "Error").astype(object), pa.string()),
        "resp_body": pa.array(np.where(status < 400, '{"ok": true}', '{"ok": false}').astype(object), pa.string()),
        "resp_body_size": pa.array(resp_size, pa.int64()),
        "latency": pa.array(latency, pa.int64()),
    }
    if null_fraction > 0:
        for name in ("req_path", "resp_status", "latency"):
            nulls = rng.random(n_rows) < null_fraction
            values = columns[name].to_numpy(zero_copy_only=False)
            columns[name] = pa.array(values, columns[name].type, mask=nulls)
    return pa.table(columns, schema=CATALOG["http_events"].arrow_schema())


def write_synthetic_capture(
    directory,
    n_rows: int,
    *,
    seed: int = 0,
    start_ns: int = SYNTHETIC_START_NS,
    span_ns: int = SYNTHETIC_SPAN_NS,
    null_fraction: float = 0.0,
    asid: int = 0,
    host: str = "synthetic-host",
) -> str:
    """A capture directory holding ``n_rows`` synthetic http_events; returns its path."""
    from pxq.replay import write_capture

    table = synthetic_http_events(
        n_rows, seed=seed, start_ns=start_ns, span_ns=span_ns, null_fraction=null_fraction, asid=asid
    )
    write_capture(
        directory,
        {"http_events": table},
        host=host,
        start_time_ns=start_ns,
        end_time_ns=start_ns + span_ns,
        processes=synthetic_processes(asid=asid),
    )
    return str(directory)


def open_synthetic_capture(directory, n_rows: int, *, seed: int, null_fraction: float = 0.05) -> Capture:
    """:func:`write_synthetic_capture` in the default window, opened: the fixture the executor's and
    the optimizer's tests compare against pandas over."""
    from pxq.replay import open_capture

    return open_capture(write_synthetic_capture(directory, n_rows, seed=seed, null_fraction=null_fraction))
