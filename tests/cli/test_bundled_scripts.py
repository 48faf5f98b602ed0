"""The bundled scripts compute what their docs say: every expected value here is computed with pandas
from the capture's own rows, following the script's docstring, over a synthetic capture (with
nulls) and over the shared capture of real traffic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import pxq
from pxq.replay import open_capture, write_capture
from pxq.testing.synthetic import synthetic_http_events, synthetic_processes, write_synthetic_capture

START_NS = 1_764_115_200_000_000_000
SPAN_NS = 300_000_000_000
NS = 1_000_000_000


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> str:
    # Starts 3.5 s into a 10 s bin and ends 2.5 s into one, so the first and last bins are partial.
    return write_synthetic_capture(
        tmp_path_factory.mktemp("bundled_synthetic"),
        3000,
        seed=21,
        start_ns=START_NS + 3_500_000_000,
        span_ns=SPAN_NS - 1_000_000_000,
        null_fraction=0.05,
    )


@pytest.fixture(params=["synthetic", pytest.param("real", marks=pytest.mark.servers)])
def capture_dir(request, synthetic_dir) -> str:
    return synthetic_dir if request.param == "synthetic" else str(request.getfixturevalue("http_capture_dir"))


def events(directory: str, start_time_s: float = 300.0) -> tuple[pd.DataFrame, int]:
    """The capture's http_events in the window [end - start_time_s, end), with the endpoint columns
    the scripts' docstrings describe (pod, else comm[pid]; remote address:port), and the end."""
    capture = open_capture(directory)
    frame = capture.scan("http_events").to_pandas()
    frame["time_ns"] = frame["time_"].astype("int64")
    end = capture.end_time_ns
    frame = frame[frame["time_ns"] >= end - int(start_time_s * NS)].copy()
    meta = json.loads((Path(directory) / "capture.json").read_text())["processes"]

    def local(upid: str) -> str:
        process = meta.get(upid, {})
        return process.get("pod") or f"{process.get('comm', '')}[{process.get('pid', upid.split(':')[1])}]"

    frame["local"] = frame["upid"].map(local)
    frame["remote"] = frame["remote_addr"] + ":" + frame["remote_port"].astype(str)
    server = frame["trace_role"] == 2
    frame["source"] = np.where(server, frame["remote"], frame["local"])
    frame["destination"] = np.where(server, frame["local"], frame["remote"])
    return frame, end


def run(script: str, directory: str, **args) -> pd.DataFrame:
    (table,) = pxq.run(script, args=args, source=directory).values()
    return table


# ---------------------------------------------------------------------- service_stats


@pytest.mark.parametrize("window_s", [10, 60])
def test_service_stats_rate_over_the_covered_time(capture_dir, window_s):
    frame, end = events(capture_dir)
    window = window_s * NS
    first_seen = frame["time_ns"].min()
    frame["bin"] = frame["time_ns"] // window * window
    frame["failure"] = (frame["resp_status"] >= 400).where(frame["resp_status"].notna())
    expected = {}
    for (service, start), group in frame.groupby(["destination", "bin"]):
        covered = (min(start + window, end) - max(start, first_seen)) / NS
        statuses = group["failure"].dropna()
        expected[(service, start)] = (
            len(group),
            covered,
            len(group) / covered,
            statuses.mean() if len(statuses) else None,
            int(group["resp_body_size"].sum()),
        )
    got = run("service_stats", capture_dir, window=f"{window_s}s")
    assert list(got.columns) == [
        "service",
        "timestamp",
        "requests",
        "covered_s",
        "requests_per_s",
        "error_rate",
        "latency_p50",
        "latency_p90",
        "latency_p99",
        "resp_bytes",
    ]
    actual = {}
    for row in got.itertuples():
        key = (row.service, pd.Timestamp(row.timestamp).value)
        actual[key] = (
            row.requests,
            row.covered_s,
            row.requests_per_s,
            None if pd.isna(row.error_rate) else row.error_rate,
            row.resp_bytes,
        )
    assert set(actual) == set(expected)
    for key, (requests, covered, rate, error_rate, resp_bytes) in expected.items():
        got_requests, got_covered, got_rate, got_error_rate, got_bytes = actual[key]
        assert (got_requests, got_bytes) == (requests, resp_bytes), key
        assert got_covered == pytest.approx(covered, rel=1e-12) and got_rate == pytest.approx(rate, rel=1e-12), key
        assert (got_error_rate is None) == (error_rate is None), key
        if error_rate is not None:
            assert got_error_rate == pytest.approx(error_rate, rel=1e-12), key
    if "bundled_synthetic" in capture_dir:  # built with partial bins at both ends
        starts = sorted({start for _, start in expected})
        assert {expected[k][1] for k in expected if k[1] == starts[0]} == {(starts[0] + window - first_seen) / NS}
        assert {expected[k][1] for k in expected if k[1] == starts[-1]} == {(end - starts[-1]) / NS}
        assert (end - starts[-1]) / NS < window_s


def test_service_stats_filter_keeps_the_cover_of_the_whole_data(synthetic_dir):
    """Filtering services does not move where the data begins (the first request of any service)."""
    everything = run("service_stats", synthetic_dir)
    only = run("service_stats", synthetic_dir, service_filter="python3")
    assert len(only) and set(only["service"]) <= set(everything["service"])
    merged = only.merge(everything, on=["service", "timestamp"], suffixes=("", "_all"))
    assert len(merged) == len(only)
    assert (merged["covered_s"] == merged["covered_s_all"]).all()


# ---------------------------------------------------------------------- largest_http_request


def expected_largest(frame: pd.DataFrame) -> dict[str, dict]:
    """The docstring's rule: the largest req_body_size per destination; ties to the earliest request;
    requests tied at the same nanosecond merged into one row of each column's smallest value."""
    out = {}
    sized = frame[frame["req_body_size"].notna()]
    for destination, group in sized.groupby("destination"):
        largest = group[group["req_body_size"] == group["req_body_size"].max()]
        earliest = largest[largest["time_ns"] == largest["time_ns"].min()]
        out[destination] = {
            "timestamp": int(earliest["time_ns"].min()),
            **{
                c: earliest[c].dropna().min() if earliest[c].notna().any() else None
                for c in (
                    "source",
                    "req_method",
                    "req_path",
                    "resp_status",
                    "req_body_size",
                    "resp_body_size",
                    "latency",
                    "req_body",
                )
            },
        }
    return out


def actual_rows(table: pd.DataFrame) -> dict[str, dict]:
    out = {}
    for row in table.to_dict("records"):
        destination = row.pop("destination")
        assert destination not in out, f"two rows for {destination}"
        row["timestamp"] = pd.Timestamp(row["timestamp"]).value
        out[destination] = {
            k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v) for k, v in row.items()
        }
    return out


def test_largest_http_request_one_row_per_destination(capture_dir):
    frame, _ = events(capture_dir)
    got = actual_rows(run("largest_http_request", capture_dir, num_head=100000))
    assert got == expected_largest(frame)


def test_largest_http_request_ties_go_to_the_earliest(tmp_path):
    table = synthetic_http_events(400, seed=4, start_ns=START_NS, span_ns=SPAN_NS)
    # Every request the same size: each destination ties on all of its requests.
    table = table.set_column(
        table.schema.get_field_index("req_body_size"), "req_body_size", pa.array([777] * table.num_rows, pa.int64())
    )
    # And a request at the same nanosecond as the first one, to another path: merged, smallest values.
    first = table.slice(0, 1).to_pylist()[0]
    twin = dict(first, req_path="/zzz-twin", req_method="AAA", latency=1, resp_status=599)
    table = pa.concat_tables([table, pa.Table.from_pylist([twin], schema=table.schema)])
    write_capture(
        tmp_path,
        {"http_events": table},
        host="h",
        start_time_ns=START_NS,
        end_time_ns=START_NS + SPAN_NS,
        processes=synthetic_processes(),
    )
    frame, _ = events(str(tmp_path))
    expected = expected_largest(frame)
    got = actual_rows(run("largest_http_request", str(tmp_path), num_head=100000))
    assert got == expected
    twin_row = next(r for r in got.values() if r["timestamp"] == pd.Timestamp(first["time_"]).value)
    assert (twin_row["req_method"], twin_row["latency"]) == ("AAA", 1)


# ---------------------------------------------------------------------- the other HTTP scripts


def test_http_request_stats_per_endpoint(capture_dir):
    frame, _ = events(capture_dir)
    frame["failure"] = (frame["resp_status"] >= 400).where(frame["resp_status"].notna())
    got = run("http_request_stats", capture_dir)
    keys = ["destination", "req_method", "req_path"]
    expected = {}
    for key, group in frame.groupby(keys, dropna=False):
        key = tuple(None if isinstance(k, float) and np.isnan(k) else k for k in key)
        failures = group["failure"].dropna()
        expected[key] = (
            len(group),
            int(failures.sum()) if len(failures) else None,
            failures.mean() if len(failures) else None,
            group["latency"].max(),
            int(group["req_body_size"].sum()),
            int(group["resp_body_size"].sum()),
        )
    actual = {}
    for row in got.to_dict("records"):
        key = tuple(
            None if row[k] is None or (isinstance(row[k], float) and np.isnan(row[k])) else row[k] for k in keys
        )
        actual[key] = (
            row["requests"],
            None if pd.isna(row["errors"]) else row["errors"],
            None if pd.isna(row["error_rate"]) else row["error_rate"],
            row["latency_max"],
            row["req_bytes"],
            row["resp_bytes"],
        )
    assert set(actual) == set(expected)
    for key, want in expected.items():
        have = actual[key]
        assert have[:2] == want[:2] and have[4:] == want[4:], key
        assert (have[2] is None) == (want[2] is None) and (want[2] is None or have[2] == pytest.approx(want[2])), key
        assert (pd.isna(have[3]) and pd.isna(want[3])) or have[3] == want[3], key


def test_http_data_rows_and_endpoints(capture_dir):
    frame, _ = events(capture_dir)
    got = run("http_data", capture_dir, num_head=100000)
    assert len(got) == len(frame)
    assert sorted(zip(got["source"], got["destination"])) == sorted(zip(frame["source"], frame["destination"]))
    assert len(run("http_data", capture_dir, num_head=7)) == min(7, len(frame))


def test_slow_http_requests_are_the_tail_of_their_destination(capture_dir):
    frame, _ = events(capture_dir)
    got = run("slow_http_requests", capture_dir, percentile="p90", num_head=100000)
    assert len(got)
    thresholds = got.groupby("destination")["threshold"].first()
    for destination, threshold in thresholds.items():
        latencies = frame.loc[(frame["destination"] == destination) & frame["latency"].notna(), "latency"]
        # Every request at or above the shown threshold is listed, and only those.
        want = sorted(latencies[latencies >= threshold].astype("int64"))
        have = sorted(got.loc[got["destination"] == destination, "latency"].astype("int64"))
        assert have == want, destination
        # The threshold is the destination's p90 (t-digest: approximate, within the sample's range).
        assert latencies.min() <= threshold <= latencies.max()
