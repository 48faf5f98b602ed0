"""Partial aggregation (pxq.broker.partial): rows cut into parts as agents would hold them, each
part reduced to states, the states merged. Expected values: pandas over the rows all together."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import example, given, settings, strategies as st

import pxq.funcs  # noqa: F401 - fills the aggregate registry
from pxq.broker.partial import merge_partials, partial_aggregate
from pxq.errors import ExecutionError
from pxq.funcs.aggregates import QUANTILE_KEYS
from pxq.plan.nodes import Agg, AggSpec, Field, Schema, Source
from pxq.types import DataType as T, SemanticType as S

SCHEMA = Schema(
    (
        Field("k", T.STRING),
        Field("i", T.INT64),
        Field("f", T.FLOAT64),
        Field("b", T.BOOLEAN),
        Field("t", T.TIME64NS, S.TIME),
    )
)
ARROW = pa.schema(
    [("k", pa.string()), ("i", pa.int64()), ("f", pa.float64()), ("b", pa.bool_()), ("t", pa.timestamp("ns"))]
)
SOURCE = Source("t", SCHEMA, SCHEMA.names)
SPECS = (
    AggSpec("n", "count", "i", T.INT64),
    AggSpec("si", "sum", "i", T.INT64),
    AggSpec("sf", "sum", "f", T.FLOAT64),
    AggSpec("sb", "sum", "b", T.INT64),
    AggSpec("mi", "mean", "i", T.FLOAT64),
    AggSpec("mf", "mean", "f", T.FLOAT64),
    AggSpec("mb", "mean", "b", T.FLOAT64),
    AggSpec("lo", "min", "i", T.INT64),
    AggSpec("hi", "max", "k", T.STRING),
    AggSpec("last", "max", "t", T.TIME64NS, S.TIME),
)


def _parts(rows: list[tuple], cuts: list[int]) -> list[pa.Table]:
    bounds = [0, *sorted(c % (len(rows) + 1) for c in cuts), len(rows)]
    columns = list(zip(*rows)) if rows else [[] for _ in ARROW]
    whole = pa.Table.from_arrays([pa.array(list(c), f.type) for c, f in zip(columns, ARROW)], schema=ARROW)
    return [whole.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]


def _merged(parts: list[pa.Table], node: Agg) -> pd.DataFrame:
    return merge_partials([partial_aggregate(p, node) for p in parts], node).to_pandas()


row = st.tuples(
    st.sampled_from(["a", "b", "c", None]),
    st.one_of(st.none(), st.integers(-(10**12), 10**12)),
    st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
    st.one_of(st.none(), st.booleans()),
    st.one_of(st.none(), st.integers(0, 10**18)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(row, min_size=1, max_size=60), st.lists(st.integers(0, 60), max_size=3))
@example(rows=[("a", None, None, None, None)], cuts=[0, 0])  # a group without any value, empty parts
@example(rows=[(None, None, None, None, None)], cuts=[])  # the null key's group
@example(rows=[("a", None, None, None, None), ("a", None, None, None, 2**53 + 1)], cuts=[])  # beyond float64
def test_merged_states_equal_pandas_over_all_rows(rows, cuts):
    node = Agg(SOURCE, ("k",), SPECS)
    got = _merged(_parts(rows, cuts), node)
    frame = pd.DataFrame(
        {
            name: pd.array([r[j] for r in rows], dtype=dtype)
            for j, (name, dtype) in enumerate(
                [("k", object), ("i", "Int64"), ("f", "Float64"), ("b", "boolean"), ("t", "Int64")]
            )
        }
    )
    frame["k"] = frame["k"].fillna("<null>")
    got["k"] = got["k"].fillna("<null>")
    got = got.set_index("k").sort_index()
    groups = frame.groupby("k")
    assert list(got.index) == sorted(groups.groups)
    assert got["n"].tolist() == groups.size().tolist()
    for out, column in (("si", "i"), ("sb", "b")):
        expected = [None if s.count() == 0 else int(s.dropna().astype("int64").sum()) for _, s in groups[column]]
        assert [None if pd.isna(v) else int(v) for v in got[out]] == expected
    expected_sf = groups["f"].apply(lambda s: None if s.count() == 0 else float(s.dropna().sum()))
    np.testing.assert_allclose(got["sf"].to_numpy(float), expected_sf.to_numpy(float), rtol=1e-9, atol=1e-6)
    for out, column in (("mi", "i"), ("mf", "f"), ("mb", "b")):
        expected = groups[column].apply(lambda s: None if s.count() == 0 else float(s.dropna().astype(float).mean()))
        np.testing.assert_allclose(got[out].to_numpy(float), expected.to_numpy(float), rtol=1e-9, atol=1e-6)
    assert [None if pd.isna(v) else int(v) for v in got["lo"]] == [
        None if s.count() == 0 else int(s.min()) for _, s in groups["i"]
    ]
    keys = [None if k == "<null>" else k for k in got.index]
    assert [None if pd.isna(v) else v for v in got["hi"]] == keys  # max of the key column within its own group
    # Python's own ints for times (pandas would go through float64 for a column holding None).
    times: dict[str, list[int]] = {}
    for k, *_, t in rows:
        times.setdefault("<null>" if k is None else k, [])
        if t is not None:
            times["<null>" if k is None else k].append(t)
    last = [max(times[k]) if times[k] else None for k in got.index]
    assert [None if pd.isna(v) else pd.Timestamp(v).value for v in got["last"]] == last


def test_integer_sums_stay_exact_across_agents_even_when_one_agents_sum_leaves_int64():
    big = 2**62
    node = Agg(SOURCE, (), (AggSpec("s", "sum", "i", T.INT64), AggSpec("m", "mean", "i", T.FLOAT64)))
    parts = _parts(
        [("a", big, None, None, None)] * 3 + [("a", -big, None, None, None)] * 3 + [("a", 5, None, None, None)], [3]
    )
    got = _merged(parts, node)
    assert int(got["s"][0]) == 5  # the first agent's state alone is 3 * 2**62, beyond INT64
    assert got["m"][0] == pytest.approx(5 / 7)
    with pytest.raises(ExecutionError, match="beyond INT64"):
        _merged(_parts([("a", big, None, None, None)] * 4, [2]), node)


def test_no_rows_and_no_keys_gives_the_one_empty_group_of_the_local_aggregate():
    """As documented in pxq.funcs.aggregates: count 0, quantiles without data, the rest null."""
    node = Agg(SOURCE, (), (*SPECS, AggSpec("q", "quantiles", "i", T.STRING, S.JSON)))
    got = _merged(_parts([], [0, 0]), node).iloc[0]
    assert got["n"] == 0
    assert json.loads(got["q"]) == dict.fromkeys(QUANTILE_KEYS)
    assert all(pd.isna(got[c]) for c in ("si", "sf", "mi", "mf", "lo", "hi", "last"))


def test_quantile_states_are_centroids_not_the_rows():
    """An agent sends at most 1000 centroids per group, whatever its rows."""
    node = Agg(SOURCE, ("k",), (AggSpec("q", "quantiles", "f", T.STRING, S.JSON),))
    rng = np.random.default_rng(5)
    table = pa.table({"k": ["a"] * 200_000, "f": rng.lognormal(0, 1, 200_000)})
    table = pa.Table.from_arrays(
        [
            table["k"],
            pa.nulls(200_000, pa.int64()),
            table["f"],
            pa.nulls(200_000, pa.bool_()),
            pa.nulls(200_000, pa.timestamp("ns")),
        ],
        schema=ARROW,
    )
    state = partial_aggregate(table, node)
    assert state.num_rows == 1 and len(state.column("__state0_0")[0]) <= 1000
    assert state.nbytes < table.nbytes / 50


def test_explain_shows_the_group_by_running_partly_on_every_agent(tmp_path):
    from tests.cli_support import run_pxq

    script = tmp_path / "stats.pxl"
    script.write_text(
        "import px\ndf = px.DataFrame('http_events')\n"
        "df = df.groupby('req_path').agg(n=('latency', px.count), q=('latency', px.quantiles))\n"
        "px.display(df[df.n > 2], 'stats')\n"
    )
    out = run_pxq("explain", str(script), check=True).stdout
    single, fleet = out.split("== where each part runs over many agents", 1)
    assert "Agg[" in single.split("-- merge fragment", 1)[1]  # one agent: the group-by runs here
    agent_side, merge = fleet.split("-- merge fragment", 1)
    assert "partial aggregation: per group n: px.count state, q: px.quantiles state" in agent_side
    assert "Agg[r0] by req_path" in agent_side
    assert "FragmentInput[0]" in merge and "Filter[" in merge and "Agg[" not in merge


@pytest.mark.parametrize("n", [1, 2, 5, 50, 300])
def test_merged_digests_of_few_values_give_numpys_linear_quantiles_exactly(n):
    """Up to 1000 values per group every centroid is one value: the merge is exact."""
    node = Agg(SOURCE, (), (AggSpec("q", "quantiles", "i", T.STRING, S.JSON),))
    values = np.random.default_rng(n).integers(-1000, 1000, n)
    rows = [("a", int(v), None, None, None) for v in values]
    got = json.loads(_merged(_parts(rows, [n // 3, n // 2]), node)["q"][0])
    expected = np.quantile(values.astype(float), [0.01, 0.10, 0.25, 0.50, 0.75, 0.90, 0.99])
    assert [got[k] for k in QUANTILE_KEYS] == pytest.approx(list(expected), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("distribution", ["lognormal", "exponential", "uniform", "small_integers"])
def test_merged_digest_quantiles_are_within_two_tenths_of_a_point_of_rank(distribution):
    """Three agents' digests of 20,000 + 20,000 + 7,000 values: every estimate of p lies between
    numpy's quantiles at p - 0.002 and p + 0.002 (measured worst: 0.07 point)."""
    rng = np.random.default_rng(3)
    draw = {
        "lognormal": lambda m: rng.lognormal(15, 1, m),
        "exponential": lambda m: rng.exponential(1e6, m),
        "uniform": lambda m: rng.uniform(0, 1e6, m),
        "small_integers": lambda m: rng.integers(0, 20, m).astype(float),
    }[distribution]
    parts = [draw(m) for m in (20_000, 20_000, 7_000)]
    node = Agg(SOURCE, (), (AggSpec("q", "quantiles", "f", T.STRING, S.JSON),))
    tables = [
        pa.Table.from_arrays(
            [
                pa.nulls(len(p), pa.string()),
                pa.nulls(len(p), pa.int64()),
                pa.array(p),
                pa.nulls(len(p), pa.bool_()),
                pa.nulls(len(p), pa.timestamp("ns")),
            ],
            schema=ARROW,
        )
        for p in parts
    ]
    got = json.loads(_merged(tables, node)["q"][0])
    values = np.concatenate(parts)
    for p, key in zip([0.01, 0.10, 0.25, 0.50, 0.75, 0.90, 0.99], QUANTILE_KEYS):
        assert np.quantile(values, p - 0.002) - 1e-6 <= got[key] <= np.quantile(values, p + 0.002) + 1e-6, key


def test_an_agent_summing_as_int64_and_one_needing_decimals_merge_exactly():
    """Small values are summed as int64 (no sum of them can leave it); 2**62, 2**62, -2**62 could
    (3 x 2**62 > INT64), so that agent sums decimals: both states have one type and merge to the
    exact sum."""
    big = 2**62
    node = Agg(SOURCE, ("k",), (AggSpec("s", "sum", "i", T.INT64), AggSpec("m", "mean", "i", T.FLOAT64)))
    rows = [("a", v, None, None, None) for v in (3, -8, 11, big, big, -big)]
    states = [partial_aggregate(part, node) for part in _parts(rows, [3])]
    assert states[0].schema == states[1].schema
    got = merge_partials(states, node).to_pandas()
    assert int(got["s"][0]) == 6 + big
    assert got["m"][0] == pytest.approx((6 + big) / 6, rel=1e-15)


def test_digests_of_many_small_groups_give_numpys_quantiles_exactly():
    """More groups than are sorted one by one (one sort by group and value instead): every group
    of at most 1000 values keeps its values, so each merged group gives numpy's quantiles."""
    rng = np.random.default_rng(9)
    groups = 5000
    keys = rng.integers(0, groups, 30_000)
    values = rng.integers(-(10**6), 10**6, 30_000)
    rows = [(f"g{k}", int(v), None, None, None) for k, v in zip(keys, values)]
    node = Agg(SOURCE, ("k",), (AggSpec("q", "quantiles", "i", T.STRING, S.JSON),))
    got = _merged(_parts(rows, [11_000, 19_000]), node)
    assert len(got) == len(set(keys))
    frame = pd.DataFrame({"k": [f"g{k}" for k in keys], "v": values.astype(float)})
    expected = frame.groupby("k")["v"].quantile([0.01, 0.10, 0.25, 0.50, 0.75, 0.90, 0.99]).unstack()
    for key, estimate in zip(got["k"], got["q"]):
        quantiles = json.loads(estimate)
        assert [quantiles[name] for name in QUANTILE_KEYS] == pytest.approx(list(expected.loc[key]), rel=1e-12)
