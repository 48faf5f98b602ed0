"""The net_flow_graph script computes what its docstring says, checked with pandas over generated
conn_stats captures (cumulative counters per process and endpoint, both roles, samples before and
inside the window). The live check against curl's own counts is in
tests/agent/test_conn_stats_live.py."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import pxq
from pxq.replay import write_capture
from pxq.tables import CATALOG
from pxq.testing.synthetic import synthetic_processes

START_NS = 1_764_115_200_000_000_000
NS = 1_000_000_000
ADDRESSES = ["127.0.0.1", "192.0.2.10", "198.51.100.7"]  # loopback, and documentation nets (no names)


def conn_stats_capture(directory, seed: int, span_s: int) -> tuple[pd.DataFrame, dict, int]:
    """A capture of conn_stats only: per (process, endpoint, role) a series of samples one to ten
    seconds apart whose counters only grow. Returns (the rows, the processes, the end)."""
    rng = np.random.default_rng(seed)
    processes = synthetic_processes(6)
    rows = []
    for upid in processes:
        for addr in ADDRESSES:
            for role in (1, 2):
                if rng.random() < 0.3:
                    continue
                port = 0 if role == 2 else int(rng.choice([80, 5432, 6379]))
                t = START_NS + int(rng.integers(0, span_s // 2)) * NS
                opened = closed = sent = recv = 0
                while t < START_NS + span_s * NS:
                    opened += int(rng.integers(0, 3))
                    closed = min(opened, closed + int(rng.integers(0, 2)))
                    sent += int(rng.integers(0, 5000))
                    recv += int(rng.integers(0, 50000))
                    rows.append(dict(time_=t, upid=upid, remote_addr=addr, remote_port=port, trace_role=role,
                                     addr_family=2, protocol=1, ssl=False, conn_open=opened, conn_close=closed,
                                     conn_active=opened - closed, bytes_sent=sent, bytes_recv=recv))  # fmt: skip
                    t += int(rng.integers(1, 11)) * NS
    frame = pd.DataFrame(rows)
    schema = CATALOG["conn_stats"].arrow_schema()
    table = pa.Table.from_pandas(
        frame.assign(time_=pd.to_datetime(frame["time_"])), schema=schema, preserve_index=False
    )
    end = START_NS + span_s * NS
    write_capture(directory, {"conn_stats": table}, host="test-host", start_time_ns=START_NS, end_time_ns=end,
                  processes=processes)  # fmt: skip
    return frame, processes, end


def reference(frame: pd.DataFrame, processes: dict, end: int, start_time_s: int, throughput: float) -> list[tuple]:
    """The docstring, in pandas."""
    df = frame[(frame["time_"] >= end - start_time_s * NS) & (frame["trace_role"] == 1)].copy()

    def source(upid: str) -> str:
        p = processes[upid]
        return p["pod"] or f"{p['comm']}[{p['pid']}]"

    def name(addr: str) -> str:
        try:
            return socket.gethostbyaddr(addr)[0]
        except OSError:
            return addr

    df["from_entity"] = df["upid"].map(source)
    delta = df["time_"].max() - df["time_"].min()
    g = df.groupby(["from_entity", "upid", "remote_addr", "remote_port"]).agg(
        o_min=("conn_open", "min"), o_max=("conn_open", "max"), s_min=("bytes_sent", "min"),
        s_max=("bytes_sent", "max"), r_min=("bytes_recv", "min"), r_max=("bytes_recv", "max"),
    ).reset_index()  # fmt: skip
    g["connections"] = g["o_max"] - g["o_min"]
    g["bytes_sent"] = g["s_max"] - g["s_min"]
    g["bytes_recv"] = g["r_max"] - g["r_min"]
    g["to_entity"] = g["remote_addr"].map(name) + ":" + g["remote_port"].astype(str)
    flows = g.groupby(["from_entity", "to_entity"])[["connections", "bytes_sent", "bytes_recv"]].sum().reset_index()
    flows["bytes_total"] = flows["bytes_sent"] + flows["bytes_recv"]
    flows["bytes_per_s"] = flows["bytes_total"] * 1e9 / delta if delta > 0 else 0.0
    flows = flows[flows["bytes_per_s"] > throughput]
    return sorted(
        (
            r.from_entity,
            r.to_entity,
            r.connections,
            r.bytes_sent,
            r.bytes_recv,
            r.bytes_total,
            pytest.approx(r.bytes_per_s),
        )
        for r in flows.itertuples()
    )


@pytest.mark.parametrize(
    ("seed", "span_s", "start_time", "throughput"),
    [(1, 120, 300, 0.0), (2, 900, 300, 0.0), (3, 900, 60, 2000.0), (4, 400, 300, 1e12)],
)
def test_net_flow_graph_is_the_per_flow_difference_of_the_counters(tmp_path, seed, span_s, start_time, throughput):
    frame, processes, end = conn_stats_capture(tmp_path / "cap", seed, span_s)
    got = pxq.run(
        "net_flow_graph",
        args={"start_time": f"-{start_time}s", "throughput_filter": throughput},
        source=str(tmp_path / "cap"),
    )["net_flow_graph"]
    assert list(got.columns) == [
        "from_entity", "to_entity", "connections", "bytes_sent", "bytes_recv", "bytes_total", "bytes_per_s",
    ]  # fmt: skip
    rows = sorted(tuple(r) for r in got.itertuples(index=False))
    expected = reference(frame, processes, end, start_time, throughput)
    assert rows == expected
    assert (len(rows) == 0) == (throughput == 1e12)
