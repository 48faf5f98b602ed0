"""Generated PxL scripts: every plan the language accepts is valid after every optimizer rule and
gives pandas' answer.

The generator writes a script as text (run through the real parser and compiler) and, step by
step, the same computation on a pandas DataFrame of the same rows. Steps are maps, drops,
selections, filters, group-bys, merges, appends and head() in any order over ``http_events``
of a small synthetic capture with nulls. Each script is checked four ways: unoptimized,
optimized, split into agent and merge fragments, and after each rule alone and after every
prefix of the rule list, all against pandas.

Rows are compared as sorted lists (joins and group-bys promise no order), except that head()
is only generated where the order is defined (source order, kept by filters, maps, selections,
and by append, which orders by time_).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import example, given, settings, strategies as st

from pxq.exec.execute import execute, execute_fragments
from pxq.lang import parse
from pxq.plan.compile import compile
from pxq.plan.optimize import optimize
from pxq.plan.rules import RULES
from pxq.plan.split import split
from pxq.replay import open_capture
from pxq.testing.synthetic import synthetic_http_events, synthetic_processes, write_synthetic_capture

ROWS, SEED, NULLS = 200, 11, 0.1
MAX_JOIN_ROWS = 2000  # a generated join that would give more rows is not generated (keeps runs fast)
START_NS, SPAN_NS = 1_764_115_200_000_000_000, 300_000_000_000

# Columns a generated script starts from, with the generator's notion of their type.
POOL = {
    "time_": "time",
    "upid": "upid",
    "req_path": "str",
    "req_method": "str",
    "resp_status": "int",
    "latency": "int",
    "req_body_size": "int",
    "encrypted": "bool",
    "trace_role": "int",
}


@cache
def capture():
    directory = Path(tempfile.mkdtemp(prefix="pxq-plan-properties-"))
    write_synthetic_capture(directory, ROWS, seed=SEED, start_ns=START_NS, span_ns=SPAN_NS, null_fraction=NULLS)
    return open_capture(directory)


_PANDAS_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.string(): pd.StringDtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.float64(): pd.Float64Dtype(),
}


@cache
def base_frame() -> pd.DataFrame:
    # The rows as generated, not as pxq's replay reader returns them.
    table = synthetic_http_events(ROWS, seed=SEED, start_ns=START_NS, span_ns=SPAN_NS, null_fraction=NULLS)
    return table.to_pandas(types_mapper=_PANDAS_TYPES.get)


# ---------------------------------------------------------------------------------------------
# The generator: PxL text and the pandas computation, built side by side.


@dataclass
class Frame:
    data: pd.DataFrame
    types: dict[str, str]  # column -> int/str/bool/time/upid/float, in column order
    ordered: bool  # is the row order defined (so that head() is comparable)?


@dataclass
class Script:
    # Displays are compared whole: no truncation at the default 10,000 rows.
    lines: list[str] = field(default_factory=lambda: ["#px:set max_output_rows_per_table=1000000", "import px"])
    expected: dict[str, pd.DataFrame] = field(default_factory=dict)
    temp: int = 0

    def fresh(self, prefix: str) -> str:
        self.temp += 1
        return f"{prefix}{self.temp}"

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def __repr__(self) -> str:  # what a failing example shows: the script itself
        return f"Script(<<\n{self.text}>>)"


def _cols(frame: Frame, *kinds: str) -> list[str]:
    return [c for c, t in frame.types.items() if t in kinds]


def _now_ns() -> int:
    return capture().end_time_ns


def _mask(series) -> pd.Series:
    """A PxL filter keeps rows where the predicate is true; null drops the row."""
    return series.fillna(False).astype(bool)


def _pid(upids: pd.Series) -> pd.Series:
    return upids.str.split(":").str[1].astype("Int64")


def draw_value_expr(draw, frame: Frame, var: str):
    """(PxL expression, pandas Series, type) for a column assignment."""
    d = frame.data
    options = ["int_literal", "str_literal", "now", "copy"]
    ints = _cols(frame, "int")
    if ints:
        options += ["times", "compare", "times"]
    if len(ints) >= 2:
        options.append("plus")
    if frame.types.get("upid") == "upid":
        options += ["pod", "pid"]
    kind = draw(st.sampled_from(options))
    n = len(d)
    if kind == "int_literal":
        value = draw(st.integers(-5, 5))
        return str(value), pd.Series([value] * n, index=d.index, dtype="Int64"), "int"
    if kind == "str_literal":
        value = draw(st.sampled_from(["lit", "", "GET"]))
        return repr(value), pd.Series([value] * n, index=d.index, dtype=pd.StringDtype()), "str"
    if kind == "now":
        return (
            "px.now()",
            pd.Series([pd.Timestamp(_now_ns(), unit="ns")] * n, index=d.index, dtype="datetime64[ns]"),
            "time",
        )
    if kind == "copy":  # a plain column copy: filters on it are pushed below the map, renamed
        col = draw(st.sampled_from(list(frame.types)))
        return f"{var}.{col}", d[col], frame.types[col]
    if kind == "times":
        col, k = draw(st.sampled_from(ints)), draw(st.integers(-3, 3))
        return f"{var}.{col} * {k}", d[col] * k, "int"
    if kind == "plus":
        a, b = draw(st.sampled_from(ints)), draw(st.sampled_from(ints))
        return f"{var}.{a} + {var}.{b}", d[a] + d[b], "int"
    if kind == "compare":
        col = draw(st.sampled_from(ints))
        k = _threshold(draw, d[col])
        return f"{var}.{col} > {k}", (d[col] > k).astype(pd.BooleanDtype()), "bool"
    if kind == "pod":
        processes = synthetic_processes()
        # Pixie's rule: "" for an unknown process; a null upid (from an outer join) gives null.
        pods = d["upid"].map(lambda u: None if pd.isna(u) else processes.get(u, {}).get("pod", "") or "")
        return f"{var}.ctx['pod']", pods.astype(pd.StringDtype()), "str"
    return f"px.upid_to_pid({var}.upid)", _pid(d["upid"]), "int"


def _threshold(draw, column: pd.Series) -> int:
    values = column.dropna()
    if len(values) and draw(st.booleans()):
        return int(values.iloc[draw(st.integers(0, len(values) - 1))])
    return draw(st.integers(-1, 300_000))


def draw_predicate(draw, frame: Frame, var: str):
    """(PxL predicate, pandas boolean Series with nulls) over ``frame``."""
    d = frame.data
    options = []
    if _cols(frame, "int"):
        options += ["int_cmp", "int_cmp"]
    if _cols(frame, "str"):
        options.append("str_cmp")
    if _cols(frame, "bool"):
        options.append("bool")
    if "time_" in frame.types and frame.types["time_"] == "time":
        options.append("recent")
    if frame.types.get("upid") == "upid":
        options.append("pid")
    if not options:
        return None
    kind = draw(st.sampled_from(options))
    if kind == "int_cmp":
        col = draw(st.sampled_from(_cols(frame, "int")))
        op = draw(st.sampled_from([">", ">=", "<", "==", "!="]))
        k = _threshold(draw, d[col])
        series = {">": d[col] > k, ">=": d[col] >= k, "<": d[col] < k, "==": d[col] == k, "!=": d[col] != k}[op]
        text, result = f"{var}.{col} {op} {k}", series
    elif kind == "str_cmp":
        col = draw(st.sampled_from(_cols(frame, "str")))
        values = sorted(set(d[col].dropna())) or ["none"]
        value = draw(st.sampled_from(values + ["/nowhere"]))
        op = draw(st.sampled_from(["==", "!="]))
        text = f"{var}.{col} {op} {value!r}"
        result = d[col] == value if op == "==" else d[col] != value
    elif kind == "bool":
        col = draw(st.sampled_from(_cols(frame, "bool")))
        text, result = f"{var}.{col}", d[col]
    elif kind == "recent":
        seconds = draw(st.integers(0, 300))
        text = f"{var}.time_ > px.now() - px.seconds({seconds})"
        result = d["time_"] > pd.Timestamp(_now_ns() - seconds * 1_000_000_000, unit="ns")
    else:
        pid = draw(st.sampled_from(sorted({int(u.split(":")[1]) for u in synthetic_processes()})))
        text, result = f"px.upid_to_pid({var}.upid) == {pid}", _pid(d["upid"]) == pid
    if draw(st.integers(0, 4)) == 0:  # sometimes a conjunction
        other = draw_predicate(draw, frame, var)
        if other is not None:
            return f"({text}) and ({other[0]})", _kleene_and(result, other[1])
    return text, result


def _kleene_and(a: pd.Series, b: pd.Series) -> pd.Series:
    return a.astype(pd.BooleanDtype()) & b.astype(pd.BooleanDtype())


def _subset(draw, names: list[str], min_size=1, max_size=None) -> list[str]:
    return draw(st.lists(st.sampled_from(names), min_size=min_size, max_size=max_size or len(names), unique=True))


AGG_RESULT = {
    "count": lambda t: "int",
    "sum": lambda t: "int",
    "min": lambda t: t,
    "max": lambda t: t,
    "mean": lambda t: "float",
}


def draw_agg(draw, script: Script, frame: Frame, var: str) -> Frame:
    d = frame.data
    keyable = [c for c, t in frame.types.items() if t != "float"]
    keys = _subset(draw, keyable, 0, 2) if keyable else []
    specs = []
    for _ in range(draw(st.integers(1, 3))):
        fn = draw(st.sampled_from(["count", "sum", "min", "max", "mean"]))
        candidates = list(frame.types) if fn == "count" else _cols(frame, "int")
        if not candidates:
            fn, candidates = "count", list(frame.types)
        col = draw(st.sampled_from(candidates))
        taken = set(keys) | {spec[0] for spec in specs}
        out = col if col not in taken and draw(st.booleans()) else script.fresh("a")
        specs.append((out, fn, col))
    call = ", ".join(f"{out}=('{col}', px.{fn})" for out, fn, col in specs)
    if keys:
        script.lines.append(f"{var} = {var}.groupby({keys!r}).agg({call})")
    else:
        script.lines.append(f"{var} = {var}.agg({call})")

    def reduce(values: pd.Series, fn: str):
        if fn == "count":
            return len(values)
        present = values.dropna()
        if present.empty:
            return None
        return {"sum": present.sum, "min": present.min, "max": present.max, "mean": present.mean}[fn]()

    rows = []
    groups = d.groupby(keys, dropna=False, sort=False) if keys else [((), d)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        for out, fn, col in specs:
            row[out] = reduce(part[col], fn)
        rows.append(row)
    types = {k: frame.types[k] for k in keys}
    types.update({out: AGG_RESULT[fn](frame.types[col]) for out, fn, col in specs})
    return Frame(_typed(pd.DataFrame(rows, columns=list(types)), types), types, ordered=False)


PANDAS_DTYPE = {
    "int": pd.Int64Dtype(),
    "float": pd.Float64Dtype(),
    "str": pd.StringDtype(),
    "upid": pd.StringDtype(),
    "bool": pd.BooleanDtype(),
    "time": "datetime64[ns]",
}


def _typed(data: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """Columns built from Python values, in the nullable dtypes the rest of the generator expects."""
    return data.astype({name: PANDAS_DTYPE[kind] for name, kind in types.items()})


def draw_join(draw, script: Script, frame: Frame, var: str) -> Frame | str | None:
    d = frame.data
    keyable = [c for c, t in frame.types.items() if t in ("int", "str", "bool", "upid", "time")]
    if not keyable:
        return None
    keys = _subset(draw, keyable, 1, 2)
    lines_before = list(script.lines)
    right_var = script.fresh("r")
    how = draw(st.sampled_from(["inner", "left", "right", "outer"]))
    shape = draw(st.sampled_from(["totals", "self", "renamed"]))
    if shape == "totals":
        count = script.fresh("n")
        script.lines.append(f"{right_var} = {var}.groupby({keys!r}).agg({count}=('{keys[0]}', px.count))")
        right = d.groupby(keys, dropna=False, sort=False).size().reset_index(name=count)
        right_types = {**{k: frame.types[k] for k in keys}, count: "int"}
        right = _typed(right, right_types)
        right_keys = keys
    elif shape == "self":
        cols = list(dict.fromkeys(keys + _subset(draw, list(frame.types), 0, 3)))
        script.lines.append(f"{right_var} = {var}[{cols!r}]")
        right, right_types, right_keys = d[cols], {c: frame.types[c] for c in cols}, keys
    else:
        right_keys = [script.fresh("k") for _ in keys]  # fresh: "k_" + key may name another key
        script.lines.append(f"{right_var} = {var}[{keys!r}]")
        for k, rk in zip(keys, right_keys):
            script.lines.append(f"{right_var}.{rk} = {right_var}.{k}")
        script.lines.append(f"{right_var} = {right_var}.drop({keys!r})")
        right = pd.DataFrame({rk: d[k] for k, rk in zip(keys, right_keys)})
        right_types = {rk: frame.types[k] for k, rk in zip(keys, right_keys)}
    suffixes = draw(st.sampled_from([("_x", "_y"), ("", "_r"), ("_l", "")]))
    script.lines.append(
        f"{var} = {var}.merge({right_var}, how='{how}', left_on={keys!r}, "
        f"right_on={right_keys!r}, suffixes={list(suffixes)!r})"
    )
    layout = _layout(list(frame.types), list(right_types), keys, right_keys, suffixes)
    if len({name for name, _, _ in layout}) != len(layout):
        return "duplicate"  # the compiler must reject it (checked by the caller)
    data = _pandas_join(d, right, keys, right_keys, how, suffixes)
    if len(data) > MAX_JOIN_ROWS:
        script.lines = lines_before
        return None
    types = {name: (frame.types if side == "left" else right_types)[original] for name, side, original in layout}
    assert list(data.columns) == list(types), (list(data.columns), list(types))
    return Frame(data, types, ordered=False)


def _layout(left, right, keys, right_keys, suffixes):
    """(output, side, input column) of pandas' merge naming, for the generator's column types: a
    key named alike on both sides appears once; other names on both sides get the suffixes
    (the test checks this against the columns pandas' merge really returns)."""
    shared = {k for k, rk in zip(keys, right_keys) if k == rk}
    out = []
    for c in left:
        out.append((c + suffixes[0] if c in right and c not in shared else c, "left", c))
    for c in right:
        if c not in shared:
            out.append((c + suffixes[1] if c in left else c, "right", c))
    return out


def _pandas_join(left: pd.DataFrame, right: pd.DataFrame, keys, right_keys, how: str, suffixes):
    """pandas' merge, except that a null key matches nothing (as in SQL and Arrow)."""
    left_null, right_null = left[keys].isna().any(axis=1), right[right_keys].isna().any(axis=1)
    common = dict(left_on=keys, right_on=right_keys, suffixes=suffixes)
    parts = [left[~left_null].merge(right[~right_null], how=how, **common)]
    if how in ("left", "outer") and left_null.any():
        parts.append(left[left_null].merge(right.iloc[0:0], how="left", **common))
    if how in ("right", "outer") and right_null.any():
        parts.append(left.iloc[0:0].merge(right[right_null], how="right", **common))
    parts = [p for p in parts if len(p)] or parts[:1]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


LITERAL_OF = {
    "int": ("0", 0, "Int64"),
    "str": ("'lit'", "lit", pd.StringDtype()),
    "bool": ("True", True, pd.BooleanDtype()),
}


def draw_append(draw, script: Script, frame: Frame, var: str) -> Frame:
    d = frame.data
    other = script.fresh("o")
    shape = draw(st.sampled_from(["filtered", "literal", "reordered", "same"]))
    other_data = d
    if shape == "filtered":
        predicate = draw_predicate(draw, frame, var)
        if predicate is not None:
            script.lines.append(f"{other} = {var}[{predicate[0]}]")
            other_data = d[_mask(predicate[1])]
        else:
            script.lines.append(f"{other} = {var}")
    elif shape == "literal":
        # The same column made another way: a literal or function instead of a table column.
        script.lines.append(f"{other} = {var}")
        replaceable = [c for c, t in frame.types.items() if t in LITERAL_OF or t == "time"]
        other_data = d.copy()
        for col in _subset(draw, replaceable, 0, 2) if replaceable else []:
            if frame.types[col] == "time":
                script.lines.append(f"{other}.{col} = px.now()")
                other_data[col] = pd.Series(
                    [pd.Timestamp(_now_ns(), unit="ns")] * len(d), index=d.index, dtype="datetime64[ns]"
                )
            else:
                text, value, dtype = LITERAL_OF[frame.types[col]]
                script.lines.append(f"{other}.{col} = {text}")
                other_data[col] = pd.Series([value] * len(d), index=d.index, dtype=dtype)
    elif shape == "reordered":
        cols = list(draw(st.permutations(list(frame.types))))
        script.lines.append(f"{other} = {var}[{cols!r}]")
        other_data = d[cols]
    else:
        script.lines.append(f"{other} = {var}")
    if draw(st.integers(0, 3)) == 0:  # sometimes a list: df.append([other, df])
        script.lines.append(f"{var} = {var}.append([{other}, {var}])")
        data = pd.concat([d, other_data[list(d.columns)], d], ignore_index=True)
    else:
        script.lines.append(f"{var} = {var}.append({other})")
        data = pd.concat([d, other_data[list(d.columns)]], ignore_index=True)
    if "time_" in frame.types and frame.types["time_"] == "time":
        data = data.sort_values("time_", kind="stable", ignore_index=True)
    return Frame(data, frame.types, ordered=frame.ordered)


@st.composite
def scripts(draw) -> Script:
    script = Script()
    base = base_frame()
    if draw(st.booleans()):
        start = _subset(draw, list(POOL), 1)
        script.lines.append(f"df = px.DataFrame(table='http_events', select={start!r})")
    else:
        script.lines.append("df = px.DataFrame(table='http_events')")
        script.lines.append(f"df = df.drop({[c for c in base.columns if c not in POOL]!r})")
        start = [c for c in base.columns if c in POOL]
    frame = Frame(base[start].copy(), {c: POOL[c] for c in start}, ordered=True)
    mid_shown = False
    for _ in range(draw(st.integers(1, 6))):
        step = draw(
            st.sampled_from(
                ["map", "map", "drop", "select", "filter", "filter", "agg", "join", "append", "head", "display"]
            )
        )
        d = frame.data
        if step == "map":
            target = draw(st.sampled_from([script.fresh("m")] + _cols(frame, "int", "str")))
            text, series, kind = draw_value_expr(draw, frame, "df")
            script.lines.append(f"df.{target} = {text}")
            data = d.copy()
            data[target] = series.values if len(series) == len(d) else series
            types = dict(frame.types)
            types[target] = kind
            frame = Frame(data, types, frame.ordered)
        elif step == "drop" and len(frame.types) > 1:
            dropped = _subset(draw, list(frame.types), 1, len(frame.types) - 1)
            script.lines.append(f"df = df.drop({dropped!r})")
            kept = [c for c in frame.types if c not in dropped]
            frame = Frame(d[kept], {c: frame.types[c] for c in kept}, frame.ordered)
        elif step == "select":
            chosen = _subset(draw, list(frame.types))
            script.lines.append(f"df = df[{chosen!r}]")
            frame = Frame(d[chosen], {c: frame.types[c] for c in chosen}, frame.ordered)
        elif step == "filter":
            predicate = draw_predicate(draw, frame, "df")
            if predicate is not None:
                script.lines.append(f"df = df[{predicate[0]}]")
                frame = Frame(d[_mask(predicate[1])], frame.types, frame.ordered)
        elif step == "agg":
            frame = draw_agg(draw, script, frame, "df")
        elif step == "join":
            joined = draw_join(draw, script, frame, "df")
            if joined == "duplicate":
                script.expected = {"error": "duplicate column names"}
                return script
            frame = joined or frame
        elif step == "append" and len(d) <= MAX_JOIN_ROWS // 3:
            frame = draw_append(draw, script, frame, "df")
        elif step == "head" and frame.ordered:
            count = draw(st.sampled_from([0, 1, 3, 10, 1000]))
            script.lines.append(f"df = df.head({count})")
            frame = Frame(d.head(count), frame.types, True)
        elif step == "display" and not mid_shown:
            mid_shown = True
            script.lines.append("px.display(df, 'mid')")
            script.expected["mid"] = frame.data
    script.lines.append("px.display(df, 'out')")
    script.expected["out"] = frame.data
    return script


# ---------------------------------------------------------------------------------------------
# Comparing results.


def _normal(value):
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return float(f"{value:.9g}")
    if isinstance(value, pd.Timestamp):
        return value.value
    if hasattr(value, "item"):  # numpy scalars
        return _normal(value.item())
    return value


def _sorted_rows(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=lambda r: [(v is None, str(v)) for v in r])


def pxq_rows(table: pa.Table) -> list[tuple]:
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns.append([_normal(v) for v in column.to_pylist()])
    return list(zip(*columns)) if columns else []


def pandas_rows(frame: pd.DataFrame) -> list[tuple]:
    columns = []
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series):
            values = [None if pd.isna(v) else pd.Timestamp(v).value for v in series]
        else:
            values = [None if pd.isna(v) else _normal(v) for v in series.astype(object)]
        columns.append(values)
    return list(zip(*columns)) if columns else []


def check(script: Script) -> None:
    text = script.text
    if "error" in script.expected:
        from pxq.errors import CompileError

        with pytest.raises(CompileError, match=script.expected["error"]):
            compile(parse(text), now_ns=_now_ns())
        return
    source = capture()
    graph = compile(parse(text), now_ns=_now_ns())
    runs = {"unoptimized": graph}
    for i, rule in enumerate(RULES):
        runs[f"only {rule.NAME}"] = optimize(graph, rules=(rule,))
        runs[f"after {rule.NAME}"] = optimize(graph, rules=RULES[: i + 1])
    trace: list = []
    optimized = optimize(graph, trace=trace)
    assert trace[-1][1] is optimized
    results = {name: execute(g, source).tables for name, g in runs.items()}
    plan = split(optimized)
    fragments = execute_fragments(plan.agent_fragments, optimized, source)
    # The merge half gets the source for its process metadata (df.ctx after a join runs there).
    results["split"] = execute(plan.merge, source, fragment_inputs=fragments).tables
    for display, frame in script.expected.items():
        frame = frame() if callable(frame) else frame
        want = pandas_rows(frame)
        for name, tables in results.items():
            table = tables[display]
            assert table.column_names == list(frame.columns), (name, display, text)
            got = pxq_rows(table)
            assert _sorted_rows(got) == _sorted_rows(want), (name, display, text)


def written(text: str, **expected) -> Script:
    """A hand-written script (after the #px:set and import lines) and its pandas results."""
    script = Script()
    script.lines += text.strip().splitlines()
    script.expected = expected
    return script


def _base(*columns):
    return base_frame()[list(columns)] if columns else base_frame()


def _slow_without_upid():
    d = _base()
    return d.drop(columns=["upid"])[_mask(d["latency"] > 1000000)]


def _by_path_count():
    d = _base().drop(columns=["upid", "time_"])
    return d.groupby("req_path", dropna=False, sort=False).size().reset_index(name="n")


def _now_column():
    return pd.DataFrame({"t": pd.Series([pd.Timestamp(_now_ns(), unit="ns")] * 5, dtype="datetime64[ns]")})


def _appended_literals():
    d = _base("time_", "req_path", "latency")
    other = d.copy()
    other["req_path"], other["latency"] = "lit", 0
    return pd.concat([d, other], ignore_index=True).sort_values("time_", kind="stable")


def _suffixed_only():
    d = _base("req_path", "latency", "resp_status")
    errors = d[_mask(d["resp_status"] == 500)].dropna(subset=["req_path"])
    paths = d[["req_path", "latency"]].dropna(subset=["req_path"])
    return errors.merge(paths, on="req_path", suffixes=("_x", "_y"))[["latency_x"]]


def _first_appended_without_time():
    d = _base("time_", "upid", "req_path")
    both = pd.concat([d, d], ignore_index=True).sort_values("time_", kind="stable")
    both["m"] = 0
    return both.drop(columns=["time_"]).head(3)


# Scripts that once failed: the plan after prune_columns named a column it had pruned, or its
# answer differed.
REGRESSIONS = [
    written(
        """
df = px.DataFrame(table='http_events')
df.x = df.latency * 2
df = df[['req_path']]
px.display(df, 'out')""",
        out=partial(_base, "req_path"),
    ),
    written(
        """
df = px.DataFrame(table='http_events')
df.age = px.now() - df.time_
df = df[['req_path']]
px.display(df, 'out')""",
        out=partial(_base, "req_path"),
    ),
    written(
        """
df = px.DataFrame(table='http_events')
df = df.drop(['upid'])
df = df[df.latency > 1000000]
px.display(df, 'out')""",
        out=_slow_without_upid,
    ),
    written(
        """
df = px.DataFrame(table='http_events')
df = df.drop(['upid', 'time_'])
df = df.groupby('req_path').agg(n=('latency', px.count))
px.display(df, 'out')""",
        out=_by_path_count,
    ),
    written(
        """
df = px.DataFrame(table='http_events')
df.pod = df.ctx['pod']
df = df[['req_path']]
px.display(df, 'out')""",
        out=partial(_base, "req_path"),
    ),
    written(
        """
df = px.DataFrame(table='http_events', select=['req_path', 'latency'])
df.t = px.now()
df = df.drop(['req_path', 'latency'])
df = df.head(5)
px.display(df, 'out')""",
        out=_now_column,
    ),
    written(
        """
df = px.DataFrame(table='http_events', select=['time_', 'req_path', 'latency'])
o = df
o.req_path = 'lit'
o.latency = 0
df = df.append(o)
px.display(df, 'out')""",
        out=_appended_literals,
    ),
    # Only a suffixed column is used: its namesake on the other side must stay for the suffix.
    written(
        """
df = px.DataFrame(table='http_events', select=['req_path', 'latency', 'resp_status'])
paths = df[['req_path', 'latency']]
df = df[df.resp_status == 500]
df = df.merge(paths, how='inner', left_on=['req_path'], right_on=['req_path'], suffixes=['_x', '_y'])
df = df[['latency_x']]
px.display(df, 'out')""",
        out=_suffixed_only,
    ),
    # The union's time_ was pruned, and with it the order head() takes its rows in.
    written(
        """
df = px.DataFrame(table='http_events', select=['time_', 'upid', 'req_path'])
df = df.append(df)
df.m = 0
df = df.drop(['time_'])
df = df.head(3)
px.display(df, 'out')""",
        out=_first_appended_without_time,
    ),
    # A frame without columns is refused where it is made.
    written(
        """
df = px.DataFrame(table='http_events')
df = df[['req_path']]
df = df.drop(['req_path'])
px.display(df.head(1000), 'out')""",
        error="no columns",
    ),
    written(
        """
df = px.DataFrame(table='http_events')
px.display(df[[]], 'out')""",
        error="no columns",
    ),
]


def _with_examples(test):
    for script in reversed(REGRESSIONS):
        test = example(script)(test)
    return test


@settings(max_examples=150, deadline=None)
@_with_examples
@given(scripts())
def test_generated_scripts_match_pandas(script: Script):
    check(script)
