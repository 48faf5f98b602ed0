"""Executor results against pandas computations of the same queries on generated data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pxq.api import run_script
from pxq.library import Script
from pxq.testing.synthetic import synthetic_processes


def run(text: str, capture) -> dict[str, pd.DataFrame]:
    _, results = run_script(Script("query", "import px\n" + text, "query.pxl"), source=capture)
    return {name: table.to_pandas() for name, table in results.tables.items()}


def sort(df: pd.DataFrame, by) -> pd.DataFrame:
    return df.sort_values(by, kind="stable", na_position="first").reset_index(drop=True)


def test_filter_and_map(synthetic_capture, http_frame):
    out = run(
        """
df = px.DataFrame(table='http_events')
df = df[df.resp_status >= 400 and df.req_method != 'GET']
df.lat_ms = df.latency / 1000000.0
df.double = df.resp_body_size * 2 + 1
px.display(df[['time_', 'resp_status', 'req_method', 'lat_ms', 'double']], 'out')
""",
        synthetic_capture,
    )["out"]
    ref = http_frame[(http_frame.resp_status >= 400) & (http_frame.req_method != "GET")].copy()
    ref["lat_ms"] = ref.latency / 1e6
    ref["double"] = ref.resp_body_size * 2 + 1
    assert len(out) == len(ref) > 0
    np.testing.assert_allclose(out.lat_ms.to_numpy(dtype=float), ref.lat_ms.to_numpy(dtype=float), equal_nan=True)
    assert out.double.tolist() == ref.double.tolist()
    assert out.time_.tolist() == ref.time_.tolist()


def test_boolean_logic_with_nulls_is_kleene(synthetic_capture, http_frame):
    out = run(
        """
df = px.DataFrame(table='http_events')
df.flag = (df.resp_status >= 500 or df.latency > 3000000) and not df.encrypted
px.display(df[['flag']], 'out')
""",
        synthetic_capture,
    )["out"]
    status_5xx = http_frame.resp_status.astype("Float64") >= 500
    slow = http_frame.latency.astype("Float64") > 3_000_000
    ref = (status_5xx | slow) & ~http_frame.encrypted.astype("boolean")
    assert out.flag.astype("boolean").fillna(False).tolist() == ref.astype("boolean").fillna(False).tolist()
    assert out.flag.isna().sum() == ref.isna().sum()


@pytest.mark.parametrize("fn", ["count", "sum", "mean", "min", "max"])
def test_groupby_aggregates(synthetic_capture, http_frame, fn):
    out = run(
        f"""
df = px.DataFrame(table='http_events')
df = df.groupby(['req_method', 'trace_role']).agg(v=('resp_body_size', px.{fn}))
px.display(df, 'out')
""",
        synthetic_capture,
    )["out"]
    grouped = http_frame.groupby(["req_method", "trace_role"], dropna=False).resp_body_size
    ref = getattr(grouped, fn)().reset_index(name="v")
    out, ref = sort(out, ["req_method", "trace_role"]), sort(ref, ["req_method", "trace_role"])
    assert out.req_method.tolist() == ref.req_method.tolist()
    np.testing.assert_allclose(out.v.to_numpy(dtype=float), ref.v.to_numpy(dtype=float))


def test_bool_sum_and_mean_are_count_and_rate(synthetic_capture, http_frame):
    out = run(
        """
df = px.DataFrame(table='http_events')
df.failure = df.resp_status >= 400
df = df.groupby('req_path').agg(errors=('failure', px.sum), rate=('failure', px.mean), n=('failure', px.count))
px.display(df, 'out')
""",
        synthetic_capture,
    )["out"]
    frame = http_frame.copy()
    frame["failure"] = frame.resp_status >= 400  # null status compares False in pandas
    known = frame[frame.resp_status.notna()]
    ref = known.groupby("req_path", dropna=False).failure.agg(["sum", "mean"]).reset_index()
    out = sort(out, "req_path")
    ref = sort(ref, "req_path")
    assert out.errors.tolist() == ref["sum"].tolist()
    np.testing.assert_allclose(out.rate.to_numpy(dtype=float), ref["mean"].to_numpy(dtype=float))


def test_quantiles_json_matches_numpy(synthetic_capture, http_frame):
    out = run(
        """
df = px.DataFrame(table='http_events')
df = df.groupby('req_path').agg(q=('latency', px.quantiles))
df.p50 = px.pluck_float64(df.q, 'p50')
df.p99 = px.pluck_float64(df.q, 'p99')
px.display(df, 'out')
""",
        synthetic_capture,
    )["out"]
    for row in out.itertuples():
        values = (
            http_frame[http_frame.req_path == row.req_path].latency.dropna()
            if isinstance(row.req_path, str)
            else http_frame[http_frame.req_path.isna()].latency.dropna()
        )
        parsed = json.loads(row.q)
        assert set(parsed) == {"p01", "p10", "p25", "p50", "p75", "p90", "p99"}
        for key, q in (("p50", 0.5), ("p99", 0.99)):
            expected = np.quantile(values, q)
            # t-digest is approximate; ranks within 2% of the distribution are fine.
            rank = (values <= parsed[key]).mean()
            assert abs(rank - q) < 0.02 or np.isclose(parsed[key], expected, rtol=0.05)
        assert row.p50 == parsed["p50"] and row.p99 == parsed["p99"]


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
def test_merge_matches_pandas(synthetic_capture, http_frame, how):
    out = run(
        f"""
df = px.DataFrame(table='http_events')
a = df.groupby('req_path').agg(n=('latency', px.count))
a = a[a.req_path != '/']
b = df[df.resp_status >= 500].groupby('req_path').agg(errors=('latency', px.count))
b = b[b.req_path != '/api/items']
j = a.merge(b, how='{how}', left_on='req_path', right_on='req_path')
px.display(j, 'out')
""",
        synthetic_capture,
    )["out"]
    # A comparison with null is null, so the filters drop null paths (SQL semantics, unlike
    # pandas' NaN != '/' being True); nulls never match in joins either.
    a = http_frame.groupby("req_path").latency.size().reset_index(name="n")
    a = a[a.req_path != "/"]
    b = http_frame[http_frame.resp_status >= 500].groupby("req_path").latency.size().reset_index(name="errors")
    b = b[b.req_path != "/api/items"]
    ref = a.merge(b, how=how, on="req_path")
    key = lambda s: s.fillna("<null>")  # noqa: E731
    out = out.assign(k=key(out.req_path)).sort_values("k").reset_index(drop=True)
    ref = ref.assign(k=key(ref.req_path)).sort_values("k").reset_index(drop=True)
    assert out.k.tolist() == ref.k.tolist()
    assert out.n.fillna(-1).tolist() == ref.n.fillna(-1).tolist()
    assert out.errors.fillna(-1).tolist() == ref.errors.fillna(-1).tolist()


def test_merge_with_overlapping_columns_gets_suffixes(synthetic_capture):
    out = run(
        """
df = px.DataFrame(table='http_events', select=['upid', 'latency', 'req_path'])
a = df.groupby('upid').agg(latency=('latency', px.max))
b = df.groupby('upid').agg(latency=('latency', px.min))
px.display(a.merge(b, how='inner', left_on='upid', right_on='upid', suffixes=['_max', '_min']), 'out')
""",
        synthetic_capture,
    )["out"]
    assert list(out.columns) == ["upid", "latency_max", "latency_min"]
    assert (out.latency_max >= out.latency_min).all()


def test_append_head_drop(synthetic_capture, http_frame):
    out = run(
        """
df = px.DataFrame(table='http_events')
a = df[df.resp_status == 404]
b = df[df.resp_status == 503]
both = a.append(b)
px.display(both.drop(['req_headers', 'resp_headers']), 'both')
px.display(df.head(7), 'head')
""",
        synthetic_capture,
    )
    ref = http_frame[http_frame.resp_status.isin([404, 503])]
    assert len(out["both"]) == len(ref)
    assert out["both"].time_.is_monotonic_increasing
    assert "req_headers" not in out["both"].columns and "req_body" in out["both"].columns
    assert out["head"].time_.tolist() == http_frame.time_.head(7).tolist()


def test_ctx_metadata_and_upid_functions(synthetic_capture, http_frame):
    out = run(
        """
df = px.DataFrame(table='http_events')
df.pid = df.ctx['pid']
df.cmdline = df.ctx['cmdline']
df.pod = df.ctx['pod']
px.display(df[['upid', 'pid', 'cmdline', 'pod']], 'out')
""",
        synthetic_capture,
    )["out"]
    processes = synthetic_processes()
    assert out.pid.tolist() == [int(u.split(":")[1]) for u in http_frame.upid]
    assert out.cmdline.tolist() == [processes[u]["cmdline"] for u in http_frame.upid]
    assert out.pod.tolist() == [processes[u]["pod"] for u in http_frame.upid]


def test_bin_and_time_window(synthetic_capture, http_frame):
    out = run(
        """
df = px.DataFrame(table='http_events', start_time='-60s')
df.bucket = px.bin(df.time_, px.seconds(10))
df = df.groupby('bucket').agg(n=('latency', px.count))
px.display(df, 'out')
""",
        synthetic_capture,
    )["out"]
    end = http_frame.time_.max().floor("s")  # capture end is start + span
    cutoff = pd.Timestamp(1_764_115_500_000_000_000 - 60 * 10**9)
    recent = http_frame[http_frame.time_ >= cutoff]
    ref = recent.groupby(recent.time_.dt.floor("10s")).size()
    out = out.sort_values("bucket")
    assert out.bucket.tolist() == list(ref.index) and out.n.tolist() == ref.tolist()
    assert end >= cutoff
