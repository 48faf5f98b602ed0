"""Every registered aggregate on every column type its signature accepts, against pandas grouping and
Python references.

Columns come both plain and, for strings, dictionary-encoded (as Parquet scans give them); groups
come from no key, a dictionary-encoded string key, and the aggregated column itself; inputs are
empty, all null, partly null and without nulls.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pxq.api import run_script
from pxq.errors import ExecutionError
from pxq.exec.aggregate import aggregate
from pxq.funcs.aggregates import QUANTILE_KEYS, QUANTILES
from pxq.funcs.registry import AGGREGATES, load_builtins
from pxq.library import Script
from pxq.types import DataType, arrow_type

load_builtins()

# Six rows of each type, two of them null.
SAMPLES = {
    DataType.BOOLEAN: [True, None, False, True, None, True],
    DataType.INT64: [5, None, -(2**62), 7, None, 2**62],
    DataType.FLOAT64: [2.5, None, -1e300, 0.0, None, 7.25],
    DataType.STRING: ["b", None, "é", "", None, "b"],
    DataType.TIME64NS: [1_700_000_000_000_000_000, None, 0, 5, None, 1_700_000_000_000_000_000],
    DataType.UINT128: ["1:20:3", None, "1:10:3", "1:20:3", None, "2:1:1"],
}
GROUP_KEY = ["x", "y", "x", None, "y", "x"]
CASES = {
    "partly null": slice(0, 6),
    "no nulls": [0, 2, 3, 5],
    "all null": [1, 4],
    "empty": slice(0, 0),
}


def accepted(fn) -> list[DataType]:
    return list(DataType) if fn.input_types is None else sorted(fn.input_types, key=lambda t: t.value)


COMBINATIONS = [
    (name, data_type, encoded)
    for name, fn in sorted(AGGREGATES.items())
    for data_type in accepted(fn)
    for encoded in ((False, True) if arrow_type(data_type) == pa.string() else (False,))
]


def pick(values: list, rows) -> list:
    return values[rows] if isinstance(rows, slice) else [values[i] for i in rows]


def make_table(data_type: DataType, encoded: bool, rows) -> pa.Table:
    values = pa.array(pick(SAMPLES[data_type], rows), arrow_type(data_type))
    key = pa.array(pick(GROUP_KEY, rows), pa.string()).dictionary_encode()
    if encoded:
        values = values.dictionary_encode()
    return pa.table({"v": values, "k": key})


def reference(fn: str, data_type: DataType, values: list):
    """The aggregate of one group's values (Python, nulls skipped as the registry docs say)."""
    present = [v for v in values if v is not None]
    if fn == "count":
        return len(values)
    if fn == "any":
        return present[0] if present else None
    if not present:
        return None
    if fn == "sum":
        return float(sum(present)) if data_type is DataType.FLOAT64 else int(sum(present))
    if fn == "mean":
        return sum(present) / len(present)
    if fn == "min":
        return min(present)
    if fn == "max":
        return max(present)
    raise AssertionError(f"no reference for {fn}")


def as_plain(value):
    if isinstance(value, pd.Timestamp):
        return value.value
    return value


def groups_in_order(keys: list, values: list) -> list[tuple[object, list]]:
    """(key, values) per group, in order of first appearance, nulls as a group (pandas groupby)."""
    frame = pd.DataFrame({"k": pd.Series(keys, dtype=object), "v": pd.Series(values, dtype=object)})
    grouped = frame.groupby("k", dropna=False, sort=False)["v"]
    return [(None if pd.isna(key) else key, [None if pd.isna(v) else v for v in group]) for key, group in grouped]


def check_quantiles(text, values: list) -> None:
    parsed = json.loads(text)
    present = [v for v in values if v is not None]
    if not present:
        assert parsed == dict.fromkeys(QUANTILE_KEYS)
        return
    data = np.array(present, dtype=float)
    tolerance = 1 / len(data) + 0.002
    for key, q in zip(QUANTILE_KEYS, QUANTILES):
        low = np.quantile(data, max(0.0, q - tolerance), method="lower")
        high = np.quantile(data, min(1.0, q + tolerance), method="higher")
        assert low <= parsed[key] <= high, (key, parsed[key], low, high)


def check(fn: str, data_type: DataType, result, expected_values: list) -> None:
    if fn == "quantiles":
        check_quantiles(result, expected_values)
        return
    expected = reference(fn, data_type, expected_values)
    if isinstance(expected, float):
        assert result == pytest.approx(expected, rel=1e-12)
    else:
        assert result == expected


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fn,data_type,encoded", COMBINATIONS)
def test_aggregate_without_keys(fn, data_type, encoded, case):
    table = make_table(data_type, encoded, CASES[case])
    out = aggregate(table, [], [("out", fn, "v")])
    values = pick(SAMPLES[data_type], CASES[case])
    assert out.num_rows == 1
    check(fn, data_type, as_plain(out.column("out")[0].as_py()), values)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fn,data_type,encoded", COMBINATIONS)
def test_aggregate_by_a_dictionary_key(fn, data_type, encoded, case):
    table = make_table(data_type, encoded, CASES[case])
    out = aggregate(table, ["k"], [("out", fn, "v")])
    expected = groups_in_order(pick(GROUP_KEY, CASES[case]), pick(SAMPLES[data_type], CASES[case]))
    assert out.column("k").cast(pa.string()).to_pylist() == [key for key, _ in expected]
    for result, (_, values) in zip(out.column("out").to_pylist(), expected):
        check(fn, data_type, as_plain(result), values)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fn,data_type,encoded", COMBINATIONS)
def test_aggregate_of_the_group_key_itself(fn, data_type, encoded, case):
    # df.groupby('req_path').agg(p=('req_path', px.any)): the column is the key and the value.
    table = make_table(data_type, encoded, CASES[case])
    out = aggregate(table, ["v"], [("out", fn, "v")])
    values = pick(SAMPLES[data_type], CASES[case])
    expected = groups_in_order(values, values)
    keys = out.column("v")
    if pa.types.is_dictionary(keys.type):
        keys = keys.cast(keys.type.value_type)
    assert [as_plain(k) for k in keys.to_pylist()] == [key for key, _ in expected]
    for result, (_, group) in zip(out.column("out").to_pylist(), expected):
        check(fn, data_type, as_plain(result), group)


def test_string_aggregates_of_a_scanned_capture_match_pandas(synthetic_capture, http_frame):
    # Regression: the replay scan keeps strings dictionary-encoded, and px.any/min/max on them
    # (also on the group key itself) raised ArrowNotImplementedError (hash_first_last/hash_min_max).
    _, results = run_script(
        Script(
            "query",
            """import px
df = px.DataFrame(table='http_events')
df = df.groupby('req_path').agg(p=('req_path', px.any), lo=('req_path', px.min), hi=('req_method', px.max),
                                first_method=('req_method', px.any), n=('req_method', px.count))
px.display(df, 'out')
""",
            "query.pxl",
        ),
        source=synthetic_capture,
    )
    out = results.tables["out"].to_pylist()
    frame = http_frame.astype({"req_path": object, "req_method": object})
    expected = groups_in_order(frame.req_path.tolist(), frame.req_method.tolist())
    assert [r["req_path"] for r in out] == [key for key, _ in expected]
    for r, (path, methods) in zip(out, expected):
        assert r["p"] == r["lo"] == path
        assert r["hi"] == reference("max", DataType.STRING, methods)
        assert r["first_method"] == reference("any", DataType.STRING, methods)
        assert r["n"] == len(methods)


def test_int64_sum_is_exact_up_to_the_limit_and_an_error_beyond():
    top = 2**63 - 1
    fits = pa.table({"k": ["a", "a", "b"], "v": [top - 10, 10, -(2**63)]})
    out = aggregate(fits, ["k"], [("s", "sum", "v"), ("m", "mean", "v")]).to_pylist()
    assert out == [{"k": "a", "s": top, "m": top / 2}, {"k": "b", "s": -(2**63), "m": float(-(2**63))}]
    # Acero's int64 sum would wrap this to a negative number.
    beyond = pa.table({"k": ["a", "a"], "v": [top, 1]})
    with pytest.raises(ExecutionError, match=r"px.sum of 'v' is 9,223,372,036,854,775,808, beyond INT64"):
        aggregate(beyond, ["k"], [("s", "sum", "v")])
    assert aggregate(beyond, [], [("m", "mean", "v")]).column("m").to_pylist() == [(top + 1) / 2]
