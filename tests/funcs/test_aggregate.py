"""pxq.exec.aggregate against pandas groupby on generated tables, plus t-digest accuracy against
numpy.quantile."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

from pxq.exec.aggregate import aggregate
from pxq.funcs.aggregates import QUANTILE_KEYS, QUANTILES
from pxq.funcs.registry import resolve_semantic, resolve_type
from pxq.types import DataType, SemanticType
from tests.funcs.funcs_support import AGGREGATES, SETTINGS, call, lit

SCHEMA = pa.schema(
    [
        ("skey", pa.string()),
        ("ikey", pa.int64()),
        ("bkey", pa.bool_()),
        ("tkey", pa.timestamp("ns")),
        ("i", pa.int64()),
        ("f", pa.float64()),
        ("b", pa.bool_()),
        ("s", pa.string()),
        ("t", pa.timestamp("ns")),
    ]
)
# pandas' nullable dtypes, so that nulls stay nulls and int64 stays exact.
PANDAS_DTYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.string(): pd.StringDtype(),
}
KEY_COLUMNS = ["skey", "ikey", "bkey", "tkey"]
# Which aggregates apply to which value columns.
APPLICABLE = {"count": "ifbst", "sum": "ifb", "mean": "ifb", "min": "ifbst", "max": "ifbst", "any": "ifbst"}

row = st.fixed_dictionaries(
    {
        "skey": st.none() | st.sampled_from(["a", "b", "é"]),
        "ikey": st.none() | st.integers(-1, 1),
        "bkey": st.none() | st.booleans(),
        "tkey": st.none() | st.sampled_from([0, 10**18]),
        "i": st.none() | st.integers(-(2**40), 2**40),
        "f": st.none() | st.floats(-1e9, 1e9, allow_nan=False),
        "b": st.none() | st.booleans(),
        "s": st.none() | st.text(alphabet="xyzé", max_size=3),
        "t": st.none() | st.integers(0, 2**62),
    }
)
specs_strategy = st.lists(
    st.sampled_from([(fn, c) for fn, cols in APPLICABLE.items() for c in cols]),
    min_size=1,
    max_size=6,
).map(lambda pairs: [(f"out{n}", fn, c) for n, (fn, c) in enumerate(pairs)])


def make_table(rows) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def py(value):
    """A pandas scalar as the plain Python value pyarrow's to_pylist gives."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.value
    if isinstance(value, (np.integer, np.bool_, np.floating)):
        return value.item()
    return value


def arrow_py(value):
    if isinstance(value, pd.Timestamp):  # pyarrow gives pandas Timestamps for timestamp[ns]
        return value.value
    return value


def pandas_reference(rows, keys, specs) -> dict:
    frame = make_table(rows).to_pandas(types_mapper=PANDAS_DTYPES.get)
    groups = frame.groupby(list(keys), dropna=False, sort=False)
    out: dict = {}
    for name, fn, column in specs:
        series = groups[column]
        if fn == "count":
            result = groups.size()
        elif fn == "sum":
            result = series.sum(min_count=1)
        elif fn == "any":
            result = series.first()
        else:
            result = getattr(series, fn)()
        for key, value in result.items():
            key = key if isinstance(key, tuple) else (key,)
            out.setdefault(tuple(py(k) for k in key), {})[name] = py(value)
    return out


def close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return a == b


@SETTINGS
@given(
    st.lists(row, max_size=40),
    st.lists(st.sampled_from(KEY_COLUMNS), min_size=1, max_size=3, unique=True),
    specs_strategy,
)
def test_grouped_aggregates_match_pandas(rows, keys, specs):
    result = aggregate(make_table(rows), keys, specs)
    assert result.column_names == keys + [name for name, _, _ in specs]
    got = {tuple(arrow_py(r[k]) for k in keys): {n: arrow_py(r[n]) for n, _, _ in specs} for r in result.to_pylist()}
    expect = pandas_reference(rows, keys, specs) if rows else {}
    assert set(got) == set(expect)
    for key, outputs in expect.items():
        for name, value in outputs.items():
            assert close(got[key][name], value), (key, name, got[key][name], value)
    # Groups come out in the order of their first row.
    first_seen = list(dict.fromkeys(tuple(arrow_py(r[k]) for k in keys) for r in make_table(rows).to_pylist()))
    assert list(got) == first_seen


@SETTINGS
@given(st.lists(row, min_size=1, max_size=40), specs_strategy)
def test_whole_table_aggregates_match_pandas(rows, specs):
    # pandas groups by a constant column to aggregate the whole frame.
    tagged = [dict(r, skey="all") for r in rows]
    expect = pandas_reference(tagged, ["skey"], specs)[("all",)]
    result = aggregate(make_table(rows), [], specs)
    assert result.num_rows == 1
    got = {n: arrow_py(v) for n, v in result.to_pylist()[0].items()}
    assert all(close(got[n], expect[n]) for n in expect)


def test_types_of_outputs():
    table = make_table(
        [{"skey": "a", "ikey": 1, "bkey": True, "tkey": 5, "i": 3, "f": 1.5, "b": True, "s": "x", "t": 9}]
    )
    specs = [
        ("c", "count", "s"),
        ("si", "sum", "i"),
        ("sf", "sum", "f"),
        ("sb", "sum", "b"),
        ("mb", "mean", "b"),
        ("mi", "mean", "i"),
        ("tmin", "min", "t"),
        ("tmax", "max", "t"),
        ("tany", "any", "t"),
        ("smin", "min", "s"),
        ("q", "quantiles", "i"),
    ]
    result = aggregate(table, ["tkey"], specs)
    expect = [
        pa.timestamp("ns"),
        pa.int64(),
        pa.int64(),
        pa.float64(),
        pa.int64(),
        pa.float64(),
        pa.float64(),
        pa.timestamp("ns"),
        pa.timestamp("ns"),
        pa.timestamp("ns"),
        pa.string(),
        pa.string(),
    ]
    assert result.schema.types == expect
    assert result.to_pylist()[0]["sb"] == 1 and result.to_pylist()[0]["mb"] == 1.0


def test_registered_types_agree_with_execution():
    # Declared result types (the compiler's view) against the Arrow types the executor produces.
    arrow = {
        DataType.INT64: pa.int64(),
        DataType.FLOAT64: pa.float64(),
        DataType.BOOLEAN: pa.bool_(),
        DataType.STRING: pa.string(),
        DataType.TIME64NS: pa.timestamp("ns"),
    }
    columns = {
        DataType.INT64: "i",
        DataType.FLOAT64: "f",
        DataType.BOOLEAN: "b",
        DataType.STRING: "s",
        DataType.TIME64NS: "t",
    }
    table = make_table([{"i": 1, "f": 1.0, "b": True, "s": "x", "t": 1}])
    for fn in AGGREGATES.values():
        for data_type, column in columns.items():
            if fn.input_types is not None and data_type not in fn.input_types:
                continue
            declared = resolve_type(fn.returns, (data_type,))
            out = aggregate(table, [], [("o", fn.name, column)])
            assert out.schema.field("o").type == arrow[declared], (fn.name, data_type)


def test_aggregate_semantics():
    S = SemanticType
    sem = {name: fn.semantic for name, fn in AGGREGATES.items()}
    assert resolve_semantic(sem["mean"], (S.DURATION_NS,)) is S.DURATION_NS
    assert resolve_semantic(sem["max"], (S.BYTES,)) is S.BYTES
    assert resolve_semantic(sem["sum"], (S.TIME,)) is S.NONE
    assert resolve_semantic(sem["count"], (S.DURATION_NS,)) is S.NONE
    assert resolve_semantic(sem["quantiles"], (S.DURATION_NS,)) is S.JSON


def test_null_keys_form_their_own_group():
    table = pa.table({"k": pa.array(["a", None, "a", None]), "v": [1, 2, 3, 4]})
    out = aggregate(table, ["k"], [("n", "count", "v"), ("s", "sum", "v")]).to_pylist()
    assert out == [{"k": "a", "n": 2, "s": 4}, {"k": None, "n": 2, "s": 6}]


def test_empty_input():
    empty = make_table([])
    specs = [("n", "count", "i"), ("s", "sum", "f"), ("m", "min", "t"), ("q", "quantiles", "f"), ("a", "any", "s")]
    grouped = aggregate(empty, ["skey", "tkey"], specs)
    assert grouped.num_rows == 0
    assert grouped.schema.names == ["skey", "tkey", "n", "s", "m", "q", "a"]
    assert grouped.schema.types == [
        pa.string(),
        pa.timestamp("ns"),
        pa.int64(),
        pa.float64(),
        pa.timestamp("ns"),
        pa.string(),
        pa.string(),
    ]
    whole = aggregate(empty, [], specs)
    # Quantiles of no data are a JSON object of nulls, as for a group of nulls (Pixie's QuantilesUDA,
    # src/carnot/funcs/builtins/math_sketches.h, always finalizes to an object).
    no_data = json.dumps(dict.fromkeys(QUANTILE_KEYS), separators=(",", ":"))
    assert whole.to_pylist() == [{"n": 0, "s": None, "m": None, "q": no_data, "a": None}]
    assert whole.schema == grouped.schema.remove(0).remove(0)


def test_groupby_without_aggregates_gives_distinct_keys():
    table = pa.table({"k": [1, 2, 1, None], "j": ["x", "x", "x", "y"]})
    assert aggregate(table, ["k", "j"], []).to_pylist() == [
        {"k": 1, "j": "x"},
        {"k": 2, "j": "x"},
        {"k": None, "j": "y"},
    ]


def test_same_input_column_in_several_specs_and_as_key():
    table = pa.table({"k": [1, 1, 2], "v": [1.0, 3.0, 5.0]})
    specs = [("a", "sum", "v"), ("b", "sum", "v"), ("c", "max", "v"), ("d", "count", "k"), ("e", "min", "k")]
    assert aggregate(table, ["k"], specs).to_pylist() == [
        {"k": 1, "a": 4.0, "b": 4.0, "c": 3.0, "d": 2, "e": 1},
        {"k": 2, "a": 5.0, "b": 5.0, "c": 5.0, "d": 1, "e": 2},
    ]


def test_any_skips_nulls_and_count_counts_them():
    table = pa.table({"k": [1, 1, 1, 2], "v": pa.array([None, 5, 6, None], pa.int64())})
    out = aggregate(table, ["k"], [("a", "any", "v"), ("n", "count", "v"), ("s", "sum", "v")]).to_pylist()
    assert out == [{"k": 1, "a": 5, "n": 3, "s": 11}, {"k": 2, "a": None, "n": 1, "s": None}]


def test_unknown_aggregate():
    with pytest.raises(ValueError, match="unknown aggregate"):
        aggregate(pa.table({"v": [1]}), [], [("x", "median", "v")])


# ---------------------------------------------------------------- quantiles


def quantiles_of(values, data_type=pa.float64()) -> dict:
    out = aggregate(pa.table({"v": pa.array(values, data_type)}), [], [("q", "quantiles", "v")])
    text = out.column("q")[0].as_py()
    parsed = json.loads(text)  # strict JSON: no NaN/Infinity tokens
    assert list(parsed) == list(QUANTILE_KEYS)
    return parsed


def within_tdigest_tolerance(data, estimates, tolerance=0.002):
    for q, key in zip(QUANTILES, QUANTILE_KEYS):
        low = np.quantile(data, max(0.0, q - tolerance), method="lower")
        high = np.quantile(data, min(1.0, q + tolerance), method="higher")
        assert low <= estimates[key] <= high, (key, low, estimates[key], high)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2_000, 20_000, 200_000])
@pytest.mark.parametrize("distribution", ["lognormal", "uniform", "exponential", "integers"])
def test_quantiles_accuracy_against_numpy(n, distribution):
    rng = np.random.default_rng(n)
    data = {
        "lognormal": lambda: rng.lognormal(10, 2, n),
        "uniform": lambda: rng.uniform(0, 1e6, n),
        "exponential": lambda: rng.exponential(5e6, n),
        "integers": lambda: rng.integers(0, 1000, n).astype(float),
    }[distribution]()
    within_tdigest_tolerance(data, quantiles_of(data))


@SETTINGS
@given(st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=300))
def test_quantiles_of_small_groups(data):
    estimates = quantiles_of(data, pa.int64())
    values = [estimates[k] for k in QUANTILE_KEYS]
    assert values == sorted(values)
    assert min(data) <= values[0] and values[-1] <= max(data)
    within_tdigest_tolerance(np.array(data), estimates, tolerance=1 / len(data) + 0.002)


def test_quantiles_per_group_and_without_data():
    table = pa.table({"k": ["a", "a", "b", "c"], "v": pa.array([1.0, 3.0, float("nan"), None])})
    rows = aggregate(table, ["k"], [("q", "quantiles", "v")]).to_pylist()
    parsed = {r["k"]: json.loads(r["q"]) for r in rows}
    assert parsed["a"]["p01"] == 1.0 and parsed["a"]["p99"] == 3.0
    assert parsed["b"] == dict.fromkeys(QUANTILE_KEYS) and parsed["c"] == dict.fromkeys(QUANTILE_KEYS)


def test_quantiles_read_back_with_pluck_float64():
    data = list(range(1, 1001))
    text = aggregate(pa.table({"v": data}), [], [("q", "quantiles", "v")]).column("q").combine_chunks()
    p99 = call("pluck_float64", text, lit("p99", DataType.STRING)).to_pylist()[0]
    assert 985 <= p99 <= 995
