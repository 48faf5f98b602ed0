"""Pixie's own protocol scripts (the conformance corpus, ../shared/conformance/pixie-px/, read as
they are) over a capture made of the recorded real PostgreSQL, MySQL, Redis and DNS conversations
(pxq/agent/protocols/*/streams/), each seen from both ends, with conn_stats as the agent reports
those connections. Expected values: pandas over the capture's own rows, following each script's
code; off Kubernetes no IP is a pod's (metadata_ops.h's lookups give ""), so a remote end is its
address."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pxq
from pxq.agent.protocols import dns, mysql, pgsql, redis
from pxq.replay import open_capture
from pxq.replay.writer import write_capture
from pxq.testing.conversations import ConversationCapture, both_ends
from pxq.testing.fuzz import CONFORMANCE_DIR
from pxq.testing.streams import load_stream

PIXIE = CONFORMANCE_DIR
START_NS = 1_764_115_200_000_000_000
SPAN_NS = 400 * 10**9
NS = 10**9

APP, STORE, TOOL, HOST_DB = "0:3001:11", "0:3002:12", "0:3003:13", "0:3004:14"
PROCESSES = {
    APP: {"pid": 3001, "comm": "python3", "cmdline": "python3 app.py", "exe": "/usr/bin/python3", "container_id": "c1",
          "pod": "default/app-0", "namespace": "default"},
    STORE: {"pid": 3002, "comm": "server", "cmdline": "server --db", "exe": "/usr/sbin/server", "container_id": "c2",
            "pod": "db/store-0", "namespace": "db"},
    TOOL: {"pid": 3003, "comm": "psql", "cmdline": "psql", "exe": "/usr/bin/psql", "container_id": "",
           "pod": "", "namespace": ""},
    HOST_DB: {"pid": 3004, "comm": "hostdb", "cmdline": "hostdb", "exe": "/usr/sbin/hostdb", "container_id": "",
              "pod": "", "namespace": ""},
}  # fmt: skip
ADDRESS = {APP: "10.1.0.11", STORE: "10.1.0.12", TOOL: "192.0.2.13", HOST_DB: "198.51.100.14"}
# Who talks to whom, in turn: pod to pod, a host tool to a pod, a pod to a server off the cluster,
# and the same over loopback.
PAIRS = [(APP, STORE, False), (TOOL, STORE, False), (APP, HOST_DB, False), (APP, HOST_DB, True)]
SERVER_PORT = {"pgsql": 5432, "mysql": 3306, "redis": 6379, "dns": 53}


def recorded_streams() -> list[tuple[str, Path, bool]]:
    """(protocol, recording, over UDP), the protocols taking turns so that each has conversations
    before and inside the scripts' default five minutes."""
    by_protocol = [
        [("pgsql", p, False) for p in sorted(pgsql.RECORDED_STREAMS.glob("*.json"))],
        [("mysql", p, False) for p in sorted(mysql.RECORDED_STREAMS.glob("*.json"))],
        [("redis", p, False) for p in sorted(redis.RECORDED_STREAMS.glob("*.json"))],
        [("dns", p, False) for p in sorted(dns.RECORDED_STREAMS.glob("*.json"))]
        + [("dns", p, True) for p in sorted(dns.RECORDED_DATAGRAMS.glob("*.json"))],
    ]
    turns = max(len(streams) for streams in by_protocol)
    return [streams[k] for k in range(turns) for streams in by_protocol if k < len(streams)]


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    conversations = ConversationCapture()
    turn: dict[str, int] = {}
    for i, (protocol, path, datagrams) in enumerate(recorded_streams()):
        k = turn[protocol] = turn.get(protocol, -1) + 1  # each protocol goes through every pair
        client, server, loopback = PAIRS[k % len(PAIRS)]
        client_addr, server_addr = ("127.0.0.1", "127.0.0.1") if loopback else (ADDRESS[client], ADDRESS[server])
        ends = both_ends(client, (client_addr, 40000 + i), server, (server_addr, SERVER_PORT[protocol]))
        conversations.add(protocol, load_stream(path), ends, START_NS + (12 + 15 * i) * NS, datagrams=datagrams)
    directory = tmp_path_factory.mktemp("pixie_protocols")
    write_capture(directory, conversations.tables(), host="test-host", start_time_ns=START_NS,
                  end_time_ns=START_NS + SPAN_NS, processes=PROCESSES)  # fmt: skip
    return str(directory)


def run(script: str, capture: str, **args) -> dict[str, pd.DataFrame]:
    """Pixie's script folder, as it is, over the capture: display name -> rows."""
    folder = PIXIE / script
    assert (folder / "vis.json").is_file(), f"{folder} is missing: Pixie's conformance scripts are needed"
    return pxq.run(str(folder), args=args, source=capture)


def rows_of(capture: str, table: str, start_time_s: int) -> pd.DataFrame:
    """The table's rows of the last ``start_time_s`` seconds, in the capture's order, with the
    process's pod and namespace (df.ctx) and times as int64 ns."""
    cap = open_capture(capture)
    frame = cap.scan(table).to_pandas()
    frame["time_"] = frame["time_"].astype("int64")
    frame = frame[frame["time_"] >= cap.end_time_ns - start_time_s * NS].reset_index(drop=True)
    frame["pod"] = frame["upid"].map(lambda u: PROCESSES[u]["pod"])
    frame["namespace"] = frame["upid"].map(lambda u: PROCESSES[u]["namespace"])
    return frame


def source_destination(frame: pd.DataFrame) -> pd.DataFrame:
    """Pixie's add_source_dest_columns: the server's rows go from the remote end to the pod, the
    client's from the pod to the remote end; a remote end is its address (no IP is a known pod's
    off Kubernetes); rows with an empty end are left out."""
    server = frame["trace_role"] == 2
    frame = frame.assign(
        source=frame["remote_addr"].where(server, frame["pod"]),
        destination=frame["pod"].where(server, frame["remote_addr"]),
        is_source_pod_type=~server,
        is_dest_pod_type=server,
    )
    return frame[(frame["source"] != "") & (frame["destination"] != "")].reset_index(drop=True)


def as_ns(column: pd.Series) -> list[int]:
    if pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(column):
        return column.astype("int64").tolist()
    return [int(v) for v in column]


def quantile_bounds(values, p: float) -> tuple[float, float]:
    """A quantile estimate lies between the neighbouring values (pxq's t-digest is exact up to
    interpolation on groups this small: pxq/funcs/aggregates.py)."""
    return float(np.quantile(values, p, method="lower")), float(np.quantile(values, p, method="higher"))


def check_quantiles(got: float, groups: list, p: float) -> None:
    """``got`` is the mean over ``groups`` of each group's floored p-quantile (Pixie's LET summary)."""
    lows, highs = zip(*(quantile_bounds(g, p) for g in groups))
    assert np.floor(np.mean(lows)) - 1 <= got <= np.mean(highs) + 1, (got, lows, highs)


# ------------------------------------------------------------- pgsql_data, mysql_data, redis_data, dns_data

DATA_SCRIPTS = {
    "pgsql_data": ("pgsql_events", ["remote_port", "req", "resp", "latency"]),
    "mysql_data": ("mysql_events", ["remote_port", "req_cmd", "req_body", "resp_status", "resp_body", "latency"]),
    "redis_data": ("redis_events", ["remote_port", "req_cmd", "req_args", "resp", "latency"]),
    "dns_data": ("dns_events", ["latency", "req_header", "req_body", "resp_header", "resp_body"]),
}


@pytest.mark.parametrize("script", sorted(DATA_SCRIPTS))
@pytest.mark.parametrize(("start_time", "source_filter", "destination_filter", "max_num_records"), [
    ("-5m", "", "", 1000),
    ("-7m", "", "", 1000),
    ("-7m", "app-0", "", 1000),
    ("-7m", "", "store-0", 1000),
    ("-7m", "", "", 3),
])  # fmt: skip
def test_data_scripts_show_each_request_from_source_to_destination(
    capture, script, start_time, source_filter, destination_filter, max_num_records
):
    table, columns = DATA_SCRIPTS[script]
    (got,) = run(script, capture, start_time=start_time, source_filter=source_filter,
                 destination_filter=destination_filter, max_num_records=max_num_records).values()  # fmt: skip
    want = source_destination(rows_of(capture, table, int(start_time[1:-1]) * 60))
    want = want[want["source"].str.contains(source_filter, regex=False)]
    want = want[want["destination"].str.contains(destination_filter, regex=False)].head(max_num_records)
    assert list(got.columns) == ["time_", "source", "destination", *columns]
    assert len(want) > 0 and len(got) == len(want)
    assert as_ns(got["time_"]) == want["time_"].tolist()
    assert as_ns(got["latency"]) == want["latency"].tolist()
    for column in ["source", "destination", *columns]:
        if column != "latency":
            assert got[column].tolist() == want[column].tolist(), column


def test_data_scripts_name_off_cluster_ends_by_address(capture):
    """What the columns hold off Kubernetes: pods for traced ends that have one, addresses for the
    remote ends; a process without a pod traced as the client is no source (Pixie's filter)."""
    (got,) = run("pgsql_data", capture, start_time="-7m").values()
    pairs = set(zip(got["source"], got["destination"]))
    assert ("default/app-0", ADDRESS[STORE]) in pairs and (ADDRESS[APP], "db/store-0") in pairs
    assert (ADDRESS[TOOL], "db/store-0") in pairs and ("default/app-0", "127.0.0.1") in pairs
    assert not {s for s, _ in pairs} & {"", ADDRESS[HOST_DB]}


# ------------------------------------------------------------- LET: pgsql_stats, sql_query, flow graphs

WINDOW_NS = 10 * NS  # the scripts' window_ns


def windows(frame: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """Pixie's calc_LET: per 10 s window and ``groups``, the latencies and their count."""
    frame = frame.assign(timestamp=frame["time_"] // WINDOW_NS * WINDOW_NS)
    return (
        frame.groupby(["timestamp", *groups]).agg(latencies=("latency", list), count=("latency", "size")).reset_index()
    )


def check_let(got: pd.DataFrame, want: pd.DataFrame, keys: list[str]) -> None:
    """One row per window and group: its throughput exact (count / window_ns), its quantiles
    between their neighbouring latencies."""
    assert len(got) == len(want) > 0
    got = got.assign(time_=as_ns(got["time_"])).set_index(["time_", *keys]).sort_index()
    want = want.set_index(["timestamp", *keys]).sort_index()
    assert got.index.tolist() == want.index.tolist()
    assert got["request_throughput"].tolist() == pytest.approx((want["count"] / WINDOW_NS).tolist())
    for (_, row), latencies in zip(got.iterrows(), want["latencies"], strict=True):
        for p in (50, 90, 99):
            check_quantiles(row[f"latency_p{p}"], [latencies], p / 100)


def check_summary(got: pd.DataFrame, per_window: pd.DataFrame, keys: list[str], names: dict[str, str]) -> None:
    """Windows summarized per ``keys``: throughput the mean of the windows', the request count
    their sum, and each latency quantile the mean of the windows'."""
    assert len(got) == per_window.groupby(keys).ngroups > 0
    for key, group in per_window.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        (row,) = [r for _, r in got.iterrows() if tuple(r[k] for k in keys) == key]
        assert row[names["total"]] == group["count"].sum()
        assert row["request_throughput"] == pytest.approx((group["count"] / WINDOW_NS).mean())
        for p, column in names.get("quantiles", {}).items():
            check_quantiles(row[column], list(group["latencies"]), p / 100)


@pytest.mark.parametrize("pod", ["", "store-0", "app-0"])
def test_pgsql_stats_latency_and_throughput_per_window(capture, pod):
    got = run("pgsql_stats", capture, start_time="-7m", pod=pod)
    assert list(got) == ["LET", "Request Latency Histogram", "Summary"]  # the four LET charts show one table
    frame = source_destination(rows_of(capture, "pgsql_events", 7 * 60))
    frame = frame[frame["pod"] != ""]
    frame = frame[frame["source"].str.contains(pod, regex=False) | frame["destination"].str.contains(pod, regex=False)]
    check_let(got["LET"], windows(frame, ["destination"]), ["destination"])
    histogram = (frame["latency"] // (50 * 10**6) * (50 * 10**6)).value_counts()
    assert dict(zip(got["Request Latency Histogram"]["request_latency"], got["Request Latency Histogram"]["count"])) \
        == histogram.to_dict()  # fmt: skip
    keys = ["source", "destination", "is_source_pod_type", "is_dest_pod_type", "namespace"]
    check_summary(got["Summary"], windows(frame, keys), ["source", "destination"],
                  {"total": "total_requests", "quantiles": {50: "latency"}})  # fmt: skip


def sql_params(pattern: str):
    """The parameters Pixie's normalization takes out of a query matching ``pattern`` (its
    literals, as a JSON list), or None. A PostgreSQL Execute row holds its query as
    ``query=[...] params=[...]`` (Pixie's pgsql stitcher), whose text is what is normalized."""

    def params_of(text: str) -> str | None:
        execute = re.fullmatch(r"query=\[(.*)\] params=\[(.*)\]", text, re.S)
        if execute and not execute.group(2):
            text = execute.group(1)
        found = re.fullmatch(pattern, text)
        return None if found is None else json.dumps(list(found.groups())).replace(", ", ",")

    return params_of


SQL_QUERIES = [
    # A query without literals normalizes to itself, with no parameters (both dialects ran it).
    ("SELECT * FROM no_such_table", sql_params(r"SELECT \* FROM no_such_table")),
    # Pixie's normalization: a literal becomes $n and goes to the parameters, one group per
    # parameter list (the capture ran pg_sleep(0.2) as Parse/Execute and pg_sleep(0.05) as Query).
    ("SELECT pg_sleep($1)", sql_params(r"SELECT pg_sleep\(([0-9.]+)\)")),
]


@pytest.mark.parametrize(("query", "params_of"), SQL_QUERIES)
@pytest.mark.parametrize("pod", ["", "store-0"])
def test_sql_query_latency_and_throughput_of_one_normalized_query(capture, query, params_of, pod):
    got = run("sql_query", capture, start_time="-7m", pod=pod, query=query)
    assert list(got) == ["LET", "Summary"]
    pgsql_rows = source_destination(rows_of(capture, "pgsql_events", 7 * 60))
    pgsql_rows = pgsql_rows[pgsql_rows["req_cmd"].isin(["Query", "Execute"])]
    pgsql_rows = pgsql_rows.assign(params=pgsql_rows["req"].map(params_of))
    mysql_rows = source_destination(rows_of(capture, "mysql_events", 7 * 60))
    mysql_rows = mysql_rows[mysql_rows["req_cmd"].isin([3, 23])]
    mysql_rows = mysql_rows.assign(params=mysql_rows["req_body"].map(params_of))
    frame = pd.concat([pgsql_rows, mysql_rows], ignore_index=True)
    frame = frame[frame["params"].notna() & (frame["pod"] != "")]
    frame = frame[frame["source"].str.contains(pod, regex=False) | frame["destination"].str.contains(pod, regex=False)]
    per_window = windows(frame.assign(normed_query=query), ["normed_query", "params"])
    check_let(got["LET"], per_window, ["normed_query", "params"])
    check_summary(got["Summary"], per_window, ["normed_query", "params"],
                  {"total": "total_requests", "quantiles": {50: "latency"}})  # fmt: skip


@pytest.mark.parametrize("script", ["mysql_flow_graph", "redis_flow_graph"])
@pytest.mark.parametrize(("namespace", "source_filter", "destination_filter"), [
    (None, "", ""),  # no namespace given: "" off Kubernetes, where Pixie's script keeps no row
    ("default", "", ""),
    ("db", "", ""),
    ("default", "", "127.0.0.1"),
])  # fmt: skip
def test_flow_graphs_per_source_and_destination(capture, script, namespace, source_filter, destination_filter):
    args = {"start_time": "-7m", "source_filter": source_filter, "destination_filter": destination_filter}
    if namespace is not None:
        args["namespace"] = namespace
    got = run(script, capture, **args)
    graph, table = got.values()
    frame = source_destination(rows_of(capture, script.replace("_flow_graph", "_events"), 7 * 60))
    frame = frame[frame["namespace"] == (namespace or "")]
    frame = frame[frame["source"].str.contains(source_filter, regex=False)]
    frame = frame[frame["destination"].str.contains(destination_filter, regex=False)]
    keys = ["source", "destination", "is_source_pod_type", "is_dest_pod_type", "namespace"]
    per_window = windows(frame, keys)
    names = {"total": "throughput_total", "quantiles": {50: "latency_p50", 90: "latency_p90", 99: "latency_p99"}}
    # Off Kubernetes (namespace "") every end is a process without a pod: no source or no destination.
    assert (len(per_window) > 0) == (namespace is not None)
    if len(per_window):
        check_summary(graph, per_window, keys, names)
        check_summary(table, per_window, ["source", "destination"], names)
    else:
        assert graph.empty and table.empty
    assert list(table.columns) == ["source", "destination", "latency_p50", "latency_p90", "latency_p99",
                                   "request_throughput", "throughput_total"]  # fmt: skip


# ------------------------------------------------------------- dns_flow_graph, outbound_conns, ip


def reverse_name(addr: str) -> str:
    """px.nslookup's answer, from the system's resolver (the address when it has no name)."""
    try:
        return socket.gethostbyaddr(addr)[0]
    except OSError:
        return addr


@pytest.mark.parametrize(
    ("from_entity_filter", "to_entity_filter"), [("", ""), ("app", ""), ("", "198.51"), ("", "app-0")]
)
def test_dns_flow_graph_counts_client_queries_per_pod_and_server(capture, from_entity_filter, to_entity_filter):
    got = run("dns_flow_graph", capture, start_time="-7m", from_entity_filter=from_entity_filter,
              to_entity_filter=to_entity_filter)  # fmt: skip
    assert list(got) == ["dns_events", "dns_flow"]  # px.debug's table, then the graph's
    frame = rows_of(capture, "dns_events", 7 * 60)
    frame = frame[frame["trace_role"] == 1]
    assert len(got["dns_events"]) == len(frame)
    frame = frame[~frame["pod"].str.contains("pl", regex=False) & (frame["pod"] != "") & (frame["remote_addr"] != "-")]
    loopback = frame["remote_addr"].str.fullmatch(r"127\.0\.0\.[0-9]+")
    frame = frame.assign(from_entity=frame["pod"],
                         to_entity=frame["pod"].where(loopback, frame["remote_addr"].map(reverse_name)))  # fmt: skip
    cut = frame["to_entity"].str.find(".svc.cluster")
    frame["to_entity"] = [t[:i] if i >= 0 else t for t, i in zip(frame["to_entity"], cut, strict=True)]
    want = frame.groupby(["from_entity", "to_entity"])["latency"].agg(["mean", "max", "size"]).reset_index()
    want = want[want["from_entity"].str.contains(from_entity_filter, regex=False)]
    want = want[want["to_entity"].str.contains(to_entity_filter, regex=False)]
    flows = got["dns_flow"]
    assert len(want) > 0 and len(flows) == len(want)
    by_pair = {(r.from_entity, r.to_entity): r for r in flows.itertuples()}
    for r in want.itertuples():
        row = by_pair[(r.from_entity, r.to_entity)]
        assert (row.count, as_ns(pd.Series([row.latency_max]))[0]) == (r.size, r.max)
        assert as_ns(pd.Series([row.latency_avg]))[0] == pytest.approx(r.mean, abs=1)


def counter_growth(frame: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """Per group: max - min of the conn_stats counters (they only grow) and the last sample."""
    g = frame.groupby(groups).agg(
        o_min=("conn_open", "min"), o_max=("conn_open", "max"), s_min=("bytes_sent", "min"),
        s_max=("bytes_sent", "max"), r_min=("bytes_recv", "min"), r_max=("bytes_recv", "max"),
        last=("time_", "max"),
    ).reset_index()  # fmt: skip
    return g.assign(conn_open=g["o_max"] - g["o_min"], bytes_sent=g["s_max"] - g["s_min"],
                    bytes_recv=g["r_max"] - g["r_min"])  # fmt: skip


@pytest.mark.parametrize("ip_filter", ["", "10.1", "198.51.100.14"])
def test_outbound_conns_per_pod_and_remote_endpoint(capture, ip_filter):
    (got,) = run("outbound_conns", capture, ip_filter=ip_filter).values()
    frame = rows_of(capture, "conn_stats", 24 * 3600)
    frame = frame[(frame["trace_role"] == 1) & ~frame["remote_addr"].isin(["127.0.0.1", "0.0.0.0"])]
    frame = frame[frame["remote_addr"].str.contains(ip_filter, regex=False)]
    per_process = counter_growth(frame, ["pod", "upid", "remote_addr", "remote_port"])
    want = per_process.groupby(["pod", "remote_addr", "remote_port"]).agg(
        conn_open=("conn_open", "sum"), bytes_sent=("bytes_sent", "sum"), bytes_recv=("bytes_recv", "sum"),
        last_activity_time=("last", "max"),
    ).reset_index()  # fmt: skip
    assert list(got.columns) == ["pod", "remote_addr", "remote_port", "conn_open", "bytes_sent", "bytes_recv",
                                 "last_activity_time"]  # fmt: skip
    assert len(want) > 0 and (want["bytes_sent"] > 0).all()
    got = got.assign(last_activity_time=as_ns(got["last_activity_time"]))
    key = ["pod", "remote_addr", "remote_port"]
    assert sorted(map(tuple, got.values.tolist())) == sorted(map(tuple, want[list(got.columns)].values.tolist()))
    assert set(map(tuple, got[key].values.tolist())) == set(map(tuple, want[key].values.tolist()))


@pytest.mark.parametrize("ip", [ADDRESS[STORE], ADDRESS[HOST_DB], ADDRESS[APP]])
def test_ip_traffic_to_and_from_one_address(capture, ip):
    got = run("ip", capture, start_time="-7m", ip=ip)
    assert list(got) == ["Net Flow Graph", "IP Summary", "Pod Traffic to IP"]
    frame = rows_of(capture, "conn_stats", 7 * 60)
    frame = frame[frame["remote_addr"] == ip]
    delta = frame["time_"].max() - frame["time_"].min()
    per_role = counter_growth(frame, ["pod", "upid", "trace_role"]).groupby(["pod", "trace_role"])[
        ["bytes_sent", "bytes_recv"]].sum().reset_index()  # fmt: skip
    per_role["from_ip"], per_role["to_ip"] = per_role["bytes_recv"] / delta, per_role["bytes_sent"] / delta
    assert len(per_role) > 0
    flows = got["Net Flow Graph"]
    server = per_role["trace_role"] == 2
    want_flows = sorted(zip(
        per_role["pod"].where(~server, ip),
        per_role["pod"].where(server, ip),
        per_role["from_ip"].where(server, per_role["to_ip"]),
        per_role["to_ip"].where(server, per_role["from_ip"]),
    ))  # fmt: skip
    got_flows = sorted(zip(flows["requestor"], flows["responder"], flows["requestor_sent_bytes_per_s"],
                           flows["responder_sent_bytes_per_s"]))  # fmt: skip
    assert [f[:2] for f in got_flows] == [f[:2] for f in want_flows]
    assert [f[2:] for f in got_flows] == [pytest.approx(f[2:]) for f in want_flows]
    per_pod = got["Pod Traffic to IP"]
    want_pods = per_role.groupby("pod")[["from_ip", "to_ip"]].sum()
    assert sorted(per_pod["pod"]) == sorted(want_pods.index)
    for row in per_pod.itertuples():
        assert (row.bytes_per_s_from_ip, row.bytes_per_s_to_ip) == pytest.approx(tuple(want_pods.loc[row.pod]))
    (summary,) = got["IP Summary"].itertuples()
    assert (summary.bytes_per_s_from_ip, summary.bytes_per_s_to_ip) == pytest.approx(tuple(want_pods.sum()))
    # Off Kubernetes the address is no pod's, service's or node's (metadata_ops.h: "" when unknown).
    assert (summary.resolved_domain, summary.ip_pod, summary.ip_service, summary.ip_node) == (
        reverse_name(ip),
        "",
        "",
        "",
    )
