"""The bundled Redis scripts (redis_data, redis_stats) through the CLI over a capture made of the
recorded real conversations (pxq/agent/protocols/redis/streams/); expected values computed with
pandas from the capture's own redis_events rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from pxq.agent.protocols.redis import RECORDED_STREAMS
from pxq.replay import open_capture, write_capture
from pxq.testing.conversations import ConversationCapture, both_ends
from pxq.testing.streams import load_stream
from tests.cli_support import run_pxq

ROOT = Path(__file__).resolve().parents[2]
START_NS = 1_764_115_200_000_000_000
SERVER_UPID, CLIENT_UPID = "0:100:1", "0:200:2"
PROCESSES = {
    SERVER_UPID: {"pid": 100, "comm": "redis-server", "cmdline": "redis-server *:6379", "exe": "/usr/bin/redis-server",
                  "container_id": "", "pod": "", "namespace": ""},
    CLIENT_UPID: {"pid": 200, "comm": "python3", "cmdline": "python3 app.py", "exe": "/usr/bin/python3",
                  "container_id": "", "pod": "", "namespace": ""},
}  # fmt: skip


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    """Each recording replayed as one connection seen from both ends (the server's and the
    client's), the recordings 3 s apart."""
    conversations = ConversationCapture()
    apart = [ROOT / "tests" / "agent" / "data" / f"redis_{name}_stream.json" for name in ("inline", "pubsub")]
    for i, path in enumerate(sorted(RECORDED_STREAMS.glob("*.json")) + apart):
        client, server = both_ends(CLIENT_UPID, ("127.0.0.1", 40000 + i), SERVER_UPID, ("127.0.0.1", 6379))
        conversations.add("redis", load_stream(path), (server, client), START_NS + i * 3 * 10**9)
    directory = tmp_path_factory.mktemp("redis_capture")
    write_capture(directory, {"redis_events": conversations.tables()["redis_events"]}, host="redis-host",
                  start_time_ns=START_NS, end_time_ns=START_NS + 30 * 10**9, processes=PROCESSES)  # fmt: skip
    return str(directory)


@pytest.fixture(scope="module")
def frame(capture) -> pd.DataFrame:
    df = open_capture(capture).scan("redis_events").to_pandas()
    comm = {upid: f"{p['comm']}[{p['pid']}]" for upid, p in PROCESSES.items()}
    df["local"] = df["upid"].map(comm)
    df["remote"] = df["remote_addr"] + ":" + df["remote_port"].astype(str)
    server = df["trace_role"] == 2
    df["source"] = df["remote"].where(server, df["local"])
    df["destination"] = df["local"].where(server, df["remote"])
    return df


def pxq_json(script: str, capture: str, *script_args: str) -> dict[str, list[dict]]:
    """``pxq run SCRIPT --from CAPTURE -o json -- ARGS``: rows by display."""
    args = ("run", script, "--from", capture, "-o", "json", "--", "--start_time=-1h", *script_args)
    proc = run_pxq(*args, check=True, env=dict(os.environ, COLUMNS="200"))
    out: dict[str, list[dict]] = {}
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        out.setdefault(row.pop("_table"), []).append(row)
    return out


def test_redis_data_rows_in_capture_order_with_endpoints(capture, frame):
    got = pxq_json("redis_data", capture, "--num_head=1000")["redis_data"]
    assert len(got) == len(frame)
    assert [(r["source"], r["destination"], r["req_cmd"], r["req_args"], r["resp"]) for r in got] == list(
        frame[["source", "destination", "req_cmd", "req_args", "resp"]].itertuples(index=False, name=None)
    )
    assert list(got[0]) == ["time_", "source", "destination", "remote_port", "req_cmd", "req_args", "resp", "latency"]


def test_redis_data_filters_and_head(capture, frame):
    got = pxq_json("redis_data", capture, "--num_head=1000",
                   "--destination_filter=redis-server")["redis_data"]  # fmt: skip
    assert len(got) == int((frame["destination"] == "redis-server[100]").sum())
    got = pxq_json("redis_data", capture, "--num_head=7",
                   "--source_filter=python3")["redis_data"]  # fmt: skip
    expected = frame[frame["source"].str.contains("python3", regex=False)].head(7)
    assert [r["req_args"] for r in got] == list(expected["req_args"])


def test_redis_stats_displays_against_pandas(capture, frame):
    window_ns = 5 * 10**9
    out = pxq_json("redis_stats", capture, "--window=5s",
                   "--latency_bin=1ms")  # fmt: skip
    assert set(out) == {"LET", "Summary", "Latency Histogram", "Commands"}
    commands = frame[frame["req_cmd"] != "PUSH PUB"].copy()
    assert len(commands) < len(frame)  # the pub/sub recording pushes messages
    ns = commands["time_"].astype("int64")
    commands["bin"] = ns - ns % window_ns
    commands["error"] = commands["resp"].str.startswith("-")

    let = out["LET"]
    expected = commands.groupby(["bin", "destination"]).agg(requests=("latency", "size"), errors=("error", "sum"))
    got = {(pd.Timestamp(r["time_"]).value, r["destination"]): (r["requests"], r["errors"]) for r in let}
    assert got == {k: (int(v.requests), int(v.errors)) for k, v in expected.iterrows()}
    for r in let:
        assert r["request_throughput"] == pytest.approx(r["requests"] / 5)

    summary = {(r["source"], r["destination"]): r for r in out["Summary"]}
    expected = commands.groupby(["source", "destination"]).agg(n=("latency", "size"), errors=("error", "sum"))
    assert {k: (r["total_requests"], r["total_errors"]) for k, r in summary.items()} == {
        k: (int(v.n), int(v.errors)) for k, v in expected.iterrows()
    }

    histogram = {r["request_latency"]: r["count"] for r in out["Latency Histogram"]}
    bins = (commands["latency"] // 10**6 * 10**6).value_counts()
    assert histogram == {int(k): int(v) for k, v in bins.items()}

    per_command = {(pd.Timestamp(r["time_"]).value, r["req_cmd"]): r["throughput_total"] for r in out["Commands"]}
    expected = commands.groupby(["bin", "req_cmd"]).size()
    assert per_command == {k: int(v) for k, v in expected.items()}


def test_redis_stats_endpoint_filter(capture, frame):
    out = pxq_json("redis_stats", capture, "--endpoint_filter=:40003")
    commands = frame[(frame["req_cmd"] != "PUSH PUB")]
    matching = commands[commands["source"].str.contains(":40003") | commands["destination"].str.contains(":40003")]
    assert sum(r["total_requests"] for r in out["Summary"]) == len(matching) > 0
