"""scripts/mysql_data and scripts/mysql_stats compute what their docs say, over a capture whose
mysql_events rows come from the conversations recorded from a real MariaDB (replayed at shifted
times on several connections of several processes, both roles). Expected values: pandas over
the capture's own rows, following each script's docstring."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pxq
from pxq.agent.protocols.mysql import RECORDED_STREAMS
from pxq.agent.protocols.registry import DEFAULT_BODY_LIMIT
from pxq.replay import open_capture, write_capture
from pxq.testing.conversations import Connection, add_conversation, conversation_pairs, new_rows
from pxq.testing.streams import load_stream
from pxq.testing.synthetic import synthetic_processes

START_NS = 1_764_115_200_000_000_000
SPAN_NS = 300_000_000_000
NS = 1_000_000_000


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory) -> str:
    rng = random.Random(5)
    processes = synthetic_processes()
    upids = sorted(processes)
    streams = [load_stream(p) for p in sorted(RECORDED_STREAMS.glob("*.json"))]
    rows = new_rows("mysql")
    for _ in range(60):
        pairs = conversation_pairs("mysql", rng.choice(streams), body_limit=DEFAULT_BODY_LIMIT)
        end = Connection(upid=rng.choice(upids), raddr=f"10.0.0.{rng.randint(1, 3)}", laddr="10.0.1.1",
                         rport=rng.choice([3306, 3307]), lport=rng.randint(30000, 60000),
                         role=rng.choice([1, 2]))  # fmt: skip
        add_conversation(rows, pairs, (end,), START_NS + rng.randint(0, SPAN_NS - 60 * NS))
    directory = tmp_path_factory.mktemp("mysql_capture")
    write_capture(directory, {"mysql_events": rows.table()}, host="h", start_time_ns=START_NS,
                  end_time_ns=START_NS + SPAN_NS, processes=processes)  # fmt: skip
    return str(directory)


def events(directory: str, start_time_s: float) -> tuple[pd.DataFrame, int]:
    capture = open_capture(directory)
    frame = capture.scan("mysql_events").to_pandas()
    frame["time_ns"] = frame["time_"].astype("int64")
    end = capture.end_time_ns
    frame = frame[frame["time_ns"] >= end - int(start_time_s * NS)].copy()
    meta = json.loads((Path(directory) / "capture.json").read_text())["processes"]

    def local(upid: str) -> str:
        process = meta[upid]
        return process["pod"] or f"{process['comm']}[{process['pid']}]"

    frame["local"] = frame["upid"].map(local)
    frame["remote"] = frame["remote_addr"] + ":" + frame["remote_port"].astype(str)
    server = frame["trace_role"] == 2
    frame["source"] = np.where(server, frame["remote"], frame["local"])
    frame["destination"] = np.where(server, frame["local"], frame["remote"])
    return frame, end


def run(script: str, directory: str, **args) -> pd.DataFrame:
    (table,) = pxq.run(script, args=args, source=directory).values()
    return table


def test_mysql_data_rows_in_capture_order_with_filters(capture_dir):
    frame, _ = events(capture_dir, 300)
    frame = frame[frame["destination"].str.contains(":3307")]
    got = run("scripts/mysql_data/mysql_data.pxl", capture_dir, start_time="-5m", destination_filter=":3307",
              num_head=50)  # fmt: skip
    expected = frame.head(50)
    assert len(got) == len(expected) == 50
    assert list(got.columns) == ["timestamp", "source", "destination", "remote_port", "req_cmd", "req_body",
                                 "resp_status", "resp_body", "latency"]  # fmt: skip
    for column in ("source", "destination", "remote_port", "req_cmd", "req_body", "resp_status", "resp_body"):
        assert got[column].tolist() == expected[column].tolist(), column
    assert got["latency"].astype("int64").tolist() == expected["latency"].tolist()
    assert got["timestamp"].astype("int64").tolist() == expected["time_ns"].tolist()


def test_mysql_stats_per_source_and_destination(capture_dir):
    frame, end = events(capture_dir, 300)
    frame = frame[frame["resp_status"] != 1]
    first = frame["time_ns"].min()
    got = run("scripts/mysql_stats/mysql_stats.pxl", capture_dir).set_index(["source", "destination"]).sort_index()
    groups = frame.groupby(["source", "destination"])
    assert len(got) == groups.ngroups > 5
    for key, group in groups:
        row = got.loc[key]
        failures = (group["resp_status"] == 3).sum()
        assert row["requests"] == len(group)
        assert row["errors"] == failures
        assert row["error_rate"] == pytest.approx(failures / len(group))
        assert row["requests_per_s"] == pytest.approx(len(group) / ((end - first) / NS))
        assert int(row["latency_max"]) == group["latency"].max()
        assert group["latency"].min() <= int(row["latency_p50"]) <= group["latency"].max()
