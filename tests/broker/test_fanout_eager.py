"""A group-by above an N:1 join over three agents (``pxq agent serve --from DIR``): the
eager_aggregation rule moves it below the join, so every agent reduces its rows to per-group
states and the broker joins the merged groups. service_stats (every row joined with a one-row
global aggregate, then grouped) and a script joining a per-process table give pandas' answer
over the three captures' rows concatenated, and the agents send groups, not rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pxq.agent.flight import AgentClient
from pxq.broker.fleet import ClusterAgent, run_fleet
from pxq.funcs.aggregates import QUANTILE_KEYS, QUANTILES
from pxq.library import load_script
from pxq.plan.nodes import Agg
from pxq.replay import write_capture
from pxq.testing.agent_process import AgentProcess
from pxq.testing.synthetic import synthetic_http_events, synthetic_processes

START_NS = 1_764_115_200_000_000_000
SPAN_NS = 300_000_000_000
WINDOW_NS = 10_000_000_000
NAMES = ("node-a", "node-b", "node-c")
ROWS = (3000, 2000, 4000)
SERVICE_STATS_ARGS = {"start_time": "-10m", "window": "10s"}

PER_PROCESS = """import px
df = px.DataFrame('http_events', start_time='-10m')
per_process = df.groupby('upid').agg(process_requests=('latency', px.count))
df = df.merge(per_process, how='inner', left_on='upid', right_on='upid')
df.failure = df.resp_status >= 500
df = df.groupby(['upid', 'req_method', 'process_requests']).agg(
    n=('latency', px.count), failures=('failure', px.sum), mean_latency=('latency', px.mean))
px.display(df, 'per_process')
"""


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> list[Path]:
    """Three nodes' http_events; a client-side row's remote is a server port (80, 443, 8080), as
    on a real node, so that services are few and the groups much fewer than the rows."""
    root = tmp_path_factory.mktemp("eager-caps")
    paths = []
    for i, (name, rows) in enumerate(zip(NAMES, ROWS)):
        table = synthetic_http_events(
            rows, seed=i + 21, null_fraction=0.05, asid=i + 1, start_ns=START_NS, span_ns=SPAN_NS
        )
        ports = np.random.default_rng(i).choice([80, 443, 8080], rows)
        table = table.set_column(
            table.schema.get_field_index("remote_port"), "remote_port", pa.array(ports, pa.int64())
        )
        write_capture(
            root / name,
            {"http_events": table},
            host=name,
            start_time_ns=START_NS,
            end_time_ns=START_NS + SPAN_NS,
            processes=synthetic_processes(asid=i + 1),
        )
        paths.append(root / name)
    return paths


@pytest.fixture(scope="module")
def fleet(captures, tmp_path_factory):
    agents = [AgentProcess("--from", str(c), state_dir=tmp_path_factory.mktemp("eager-state")) for c in captures]
    try:
        for agent in agents:
            agent.wait_ready()
        yield [ClusterAgent(name, agent.address) for name, agent in zip(NAMES, agents)]
    finally:
        for agent in agents:
            agent.stop()


def _frames(captures: list[Path]) -> list[pd.DataFrame]:
    return [pa.parquet.read_table(c / "http_events.parquet").to_pandas() for c in captures]


def _services(frame: pd.DataFrame) -> pd.Series:
    """service_stats' service: the pod, else comm[pid], for server-side rows; remote addr:port else."""
    processes = {}
    for asid in range(1, len(NAMES) + 1):
        processes.update(synthetic_processes(asid=asid))
    pod = frame["upid"].map(lambda u: processes[u]["pod"])
    process = frame["upid"].map(lambda u: f"{processes[u]['comm']}[{processes[u]['pid']}]")
    local = pod.where(pod != "", process)
    remote = frame["remote_addr"] + ":" + frame["remote_port"].astype(str)
    return local.where(frame["trace_role"] == 2, remote)


def _sent_tables(monkeypatch) -> list[pa.Table]:
    """Every table an agent answers with (what crosses the network), recorded."""
    sent: list[pa.Table] = []
    original = AgentClient.get

    def recording_get(self, ticket, **options):
        table = original(self, ticket, **options)
        sent.append(table)
        return table

    monkeypatch.setattr(AgentClient, "get", recording_get)
    return sent


def test_service_stats_over_three_agents_equals_pandas_over_the_rows_concatenated(fleet, captures):
    compiled, results, _ = run_fleet(load_script("service_stats"), fleet, args=SERVICE_STATS_ARGS)
    assert not results.partial
    now_ns = START_NS + SPAN_NS
    assert compiled.optimized.now_ns == now_ns  # the captures' end: px.now() over replayed data
    frame = pd.concat(_frames(captures), ignore_index=True)
    times = frame["time_"].astype("int64")
    frame = frame.assign(service=_services(frame), timestamp=times // WINDOW_NS * WINDOW_NS)
    frame["failure"] = (frame["resp_status"] >= 400).astype(float).where(frame["resp_status"].notna())
    first_ns = int(times.min())
    groups = frame.groupby(["service", "timestamp"])
    expected = pd.DataFrame(
        {
            "requests": groups.size(),
            "error_rate": groups["failure"].mean(),
            "resp_bytes": groups["resp_body_size"].sum(),
        }
    ).reset_index()
    start = np.maximum(expected["timestamp"], first_ns)
    end = np.minimum(expected["timestamp"] + WINDOW_NS, now_ns)
    expected["covered_s"] = np.where(end > start, end - start, 0) / 1e9
    expected["requests_per_s"] = expected["requests"] / expected["covered_s"]
    expected = expected.set_index(["service", "timestamp"]).sort_index()

    got = results.tables["service_stats"].to_pandas()
    got["timestamp"] = got["timestamp"].astype("int64")
    got = got.set_index(["service", "timestamp"]).sort_index()
    assert len(got) == len(expected) > 50
    assert list(got.index) == list(expected.index)
    np.testing.assert_array_equal(got["requests"].to_numpy(), expected["requests"].to_numpy())
    np.testing.assert_array_equal(got["resp_bytes"].to_numpy(), expected["resp_bytes"].to_numpy())
    for column in ("error_rate", "covered_s", "requests_per_s"):
        np.testing.assert_allclose(
            got[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-12, err_msg=column
        )
    # Latency quantiles merged from the agents' t-digests: within 0.2 point of rank (as
    # test_fanout's bound), floored to whole nanoseconds by the script.
    checked = 0
    for key, row in got.iterrows():
        values = groups.get_group(key)["latency"].dropna().to_numpy(float)
        for name, p in zip(QUANTILE_KEYS, QUANTILES):
            column = f"latency_{name}"
            if column not in got.columns:
                continue
            if len(values) == 0:
                assert pd.isna(row[column])
                continue
            low = np.floor(np.quantile(values, max(0.0, p - 0.002)))
            high = np.floor(np.quantile(values, min(1.0, p + 0.002)))
            assert low - 1 <= row[column] <= high + 1, (key, column, row[column], low, high)
            checked += 1
    assert checked > 100


def test_service_stats_agents_send_per_group_states_not_rows(fleet, captures, monkeypatch):
    sent = _sent_tables(monkeypatch)
    run_fleet(load_script("service_stats"), fleet, args=SERVICE_STATS_ARGS)
    # Per agent: one fragment with a row per (service, time bin) of its rows, one with the one
    # row of its first_seen state.
    expected_sizes = []
    for frame in _frames(captures):
        times = frame["time_"].astype("int64")
        service = _services(frame)
        expected_sizes += [
            1,
            frame.assign(service=service, timestamp=times // WINDOW_NS).groupby(["service", "timestamp"]).ngroups,
        ]
    assert sorted(t.num_rows for t in sent) == sorted(expected_sizes)
    assert all(any(name.startswith("__state") for name in t.column_names) for t in sent)
    assert sum(t.num_rows for t in sent) < sum(ROWS) / 2


def test_a_join_with_a_per_process_table_over_three_agents_equals_pandas(fleet, captures, monkeypatch):
    sent = _sent_tables(monkeypatch)
    _, results, _ = run_fleet(PER_PROCESS, fleet)
    frame = pd.concat(_frames(captures), ignore_index=True)
    assert frame["upid"].notna().all()  # a null key would match nothing in the join
    per_process = frame.groupby("upid").size().rename("process_requests").reset_index()
    joined = frame.merge(per_process, on="upid", how="inner")
    joined["failure"] = (joined["resp_status"] >= 500).astype(float).where(joined["resp_status"].notna())
    groups = joined.groupby(["upid", "req_method", "process_requests"])
    expected = pd.DataFrame(
        {
            "n": groups.size(),
            "failures": groups["failure"].sum(min_count=1),
            "mean_latency": groups["latency"].mean(),
        }
    ).sort_index()
    got = results.tables["per_process"].to_pandas().set_index(["upid", "req_method", "process_requests"]).sort_index()
    assert len(got) == len(expected) > 20
    assert list(got.index) == list(expected.index)
    np.testing.assert_array_equal(got["n"].to_numpy(), expected["n"].to_numpy())
    np.testing.assert_array_equal(got["failures"].to_numpy(float), expected["failures"].to_numpy(float))
    np.testing.assert_allclose(
        got["mean_latency"].to_numpy(float), expected["mean_latency"].to_numpy(float), rtol=1e-12
    )
    # Both group-bys ran on the agents: groups crossed the network, not rows (the upids of two
    # agents differ, so each group came from one agent; and one row per process).
    assert sum(t.num_rows for t in sent) == len(expected) + frame["upid"].nunique()


def test_explain_shows_service_stats_grouping_on_every_agent_below_the_join():
    from tests.cli_support import run_pxq

    out = run_pxq("explain", "service_stats", check=True).stdout
    _, fleet = out.split("== where each part runs over many agents", 1)
    agent_side, merge = fleet.split("-- merge fragment", 1)
    assert "Agg[r5] by service, timestamp, all" in agent_side
    assert "per group requests: px.count state, error_rate: px.mean state" in agent_side
    assert "Agg[" not in merge and "Join[r0, r1] how=inner on all=all" in merge


def test_each_fragment_over_many_agents_computes_only_what_it_reads():
    """service_stats' column assignments are shared by its two group-bys; over many agents each
    fragment is its own ticket, so the one-row first_seen aggregate must not compute services."""
    from pxq.api import compile_script
    from pxq.plan.nodes import Map, Source, relations_postorder
    from pxq.plan.split import split

    compiled = compile_script(load_script("service_stats"), args=SERVICE_STATS_ARGS, now_ns=START_NS + SPAN_NS)
    whole = split(compiled.optimized)
    fleet_plan = split(compiled.optimized, partial_aggs=True)
    first_seen = next(f for f in fleet_plan.agent_fragments if isinstance(f, Agg) and f.keys == ("all",))
    nodes = list(relations_postorder((first_seen,)))
    (source,) = [n for n in nodes if isinstance(n, Source)]
    assert source.columns == ("time_",)
    assert [name for n in nodes if isinstance(n, Map) for name, _ in n.assignments] == ["all"]
    # Every fragment keeps its output columns (the merge fragment reads them by position).
    per_service = next(f for f in fleet_plan.agent_fragments if f is not first_seen)
    assert per_service.schema.names[:3] == ("service", "timestamp", "all")
    assert len(whole.agent_fragments) == len(fleet_plan.agent_fragments) == 2
