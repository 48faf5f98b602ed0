"""The eager_aggregation rule: a group-by above an N:1 join moves below it exactly when the rule's
conditions hold (each condition has a case where it fails and the plan is unchanged), the moved
plan gives pandas' answer over the same rows, and generated joins-then-group-bys (hypothesis) give
the unoptimized plan's results whether the rule applies or not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, example, given, settings, strategies as st

from pxq.exec.execute import execute
from pxq.lang import parse
from pxq.plan.compile import compile
from pxq.plan.nodes import Agg, Graph, Join, Relation
from pxq.plan.optimize import optimize
from pxq.plan.rules import eager_aggregation
from pxq.testing.synthetic import SYNTHETIC_SPAN_NS, SYNTHETIC_START_NS, open_synthetic_capture

HEAD = """import px
df = px.DataFrame('http_events', start_time='-10m')
"""
PER_METHOD = "per_method = df.groupby('req_method').agg(method_requests=('latency', px.count))\n"

# A group-by over an inner join with a per-key aggregate of the same rows, keyed like the join.
INNER = (
    HEAD
    + PER_METHOD
    + """df = df.merge(per_method, how='inner', left_on='req_method', right_on='req_method')
df = df[df.resp_status >= 400]
df.slow = df.latency > 3000000
df = df.groupby(['req_method', 'resp_status', 'method_requests']).agg(
    errors=('latency', px.count), slow_errors=('slow', px.sum), worst=('latency', px.max))
px.display(df, 'out')
"""
)
# A left join whose right side renames its key (a copy keeps it unique): the right key is not
# in the group, the left one is.
LEFT = (
    HEAD
    + PER_METHOD
    + """per_method.method = per_method.req_method
per_method = per_method[['method', 'method_requests']]
df = df.merge(per_method, how='left', left_on='req_method', right_on='method')
df = df.groupby(['req_method', 'req_path', 'method_requests']).agg(
    n=('latency', px.count), mean_latency=('latency', px.mean))
px.display(df, 'out')
"""
)
# An inner join grouped by the right side's key under its own name, with a Project between.
RIGHT_KEY = (
    HEAD
    + PER_METHOD
    + """per_method.method = per_method.req_method
per_method = per_method[['method', 'method_requests']]
df = df.merge(per_method, how='inner', left_on='req_method', right_on='method')
df = df[['method', 'resp_status', 'latency', 'method_requests']]
df = df.groupby(['method', 'method_requests']).agg(total=('latency', px.sum))
px.display(df, 'out')
"""
)
# Both sides have a column named latency: the aggregate reads the left one under its suffix.
SUFFIXED = (
    HEAD
    + """per_method = df.groupby('req_method').agg(latency=('latency', px.max))
df = df.merge(per_method, how='inner', left_on='req_method', right_on='req_method')
df = df.groupby(['req_method', 'resp_status']).agg(n=('latency_x', px.count), low=('latency_x', px.min))
px.display(df, 'out')
"""
)
# Two N:1 joins: the group-by moves below both.
TWO_JOINS = (
    HEAD
    + PER_METHOD
    + """per_process = df.groupby('upid').agg(process_requests=('latency', px.count))
df = df.merge(per_method, how='inner', left_on='req_method', right_on='req_method')
df = df.merge(per_process, how='inner', left_on='upid', right_on='upid')
df = df.groupby(['upid', 'req_method', 'method_requests', 'process_requests']).agg(n=('latency', px.count))
px.display(df, 'out')
"""
)
# service_stats' shape: every row meets a one-row aggregate through a constant key.
CONSTANT_KEY = (
    HEAD
    + """df.all = 1
first = df.groupby('all').agg(first_seen=('time_', px.min))
df = df.merge(first, how='inner', left_on='all', right_on='all')
df.timestamp = px.bin(df.time_, px.parse_duration('60s'))
df = df.groupby(['req_path', 'timestamp', 'first_seen']).agg(n=('latency', px.count))
px.display(df, 'out')
"""
)

POSITIVE = {
    "inner": INNER,
    "left": LEFT,
    "right_key": RIGHT_KEY,
    "suffixed": SUFFIXED,
    "two_joins": TWO_JOINS,
    "constant_key": CONSTANT_KEY,
}


def _join_then(tail: str, how: str = "inner", right: str = "per_method") -> str:
    return (
        HEAD + PER_METHOD + f"df = df.merge({right}, how='{how}', left_on='req_method', right_on='req_method')\n" + tail
    )


GROUP = "df = df.groupby(['req_method', 'resp_status']).agg(n=('latency', px.count))\npx.display(df, 'out')\n"
NEGATIVE = {
    # 1. only inner and left joins
    "right_join": _join_then(GROUP, how="right"),
    "outer_join": _join_then(GROUP, how="outer"),
    # 2. the right side is not known to be unique on the key: raw rows, or a computed key
    "right_side_rows": HEAD
    + "other = px.DataFrame('http_events', start_time='-10m')\nother.tag = 'x'\n"
    + "other = other[['req_method', 'tag']]\n"
    + "df = df.merge(other, how='inner', left_on='req_method', right_on='req_method')\n"
    + GROUP,
    "right_key_computed": HEAD
    + PER_METHOD
    + "per_method.req_method = px.substring(per_method.req_method, 0, 1)\n"
    + "df = df.merge(per_method, how='inner', left_on='req_method', right_on='req_method')\n"
    + GROUP,
    # 3. no group-by keys: one row even when the join leaves none
    "no_keys": HEAD
    + "df.all = 1\nfirst = df.groupby('all').agg(first_seen=('time_', px.min))\n"
    + "df = df.merge(first, how='inner', left_on='all', right_on='all')\n"
    + "df = df.agg(n=('latency', px.count))\npx.display(df, 'out')\n",
    # 4. something above the join reads the right side
    "aggregate_reads_right": _join_then(
        "df = df.groupby(['req_method']).agg(n=('method_requests', px.sum))\npx.display(df, 'out')\n"
    ),
    "filter_reads_right": _join_then("df = df[df.method_requests > 100]\n" + GROUP),
    "map_reads_right": _join_then("df.share = df.latency / df.method_requests\n" + GROUP),
    "map_reassigns_key": HEAD
    + PER_METHOD
    + "per_method.method = per_method.req_method\n"
    + "per_method = per_method[['method', 'method_requests']]\n"
    + "df = df.merge(per_method, how='inner', left_on='req_method', right_on='method')\n"
    + "df.req_method = 'x'\n"
    + GROUP,
    "map_assigns_right_name": _join_then("df.method_requests = 1\n" + GROUP),
    # 5. the key is not determined by the group: the group would split per key
    "key_not_in_group": _join_then(
        "df = df.groupby(['resp_status', 'method_requests']).agg(n=('latency', px.count))\npx.display(df, 'out')\n"
    ),
    "left_join_grouped_by_right_key": HEAD
    + PER_METHOD
    + "per_method.method = per_method.req_method\n"
    + "per_method = per_method[['method', 'method_requests']]\n"
    + "df = df.merge(per_method, how='left', left_on='req_method', right_on='method')\n"
    + "df = df.groupby(['method', 'resp_status']).agg(n=('latency', px.count))\npx.display(df, 'out')\n",
    # 6. a floating-point key
    "float_key": HEAD
    + "df.k = 1.0\nfirst = df.groupby('k').agg(first_seen=('time_', px.min))\n"
    + "df = df.merge(first, how='inner', left_on='k', right_on='k')\n"
    + "df = df.groupby(['req_path', 'first_seen']).agg(n=('latency', px.count))\npx.display(df, 'out')\n",
    # 7. the join is read by something else too
    "join_shared": _join_then("px.display(df, 'joined')\n" + GROUP),
    # 8. a name the new join would have to suffix: an aggregate named like a right column
    "output_named_like_right": _join_then(
        "df = df.groupby(['req_method', 'resp_status']).agg(method_requests=('latency', px.count))\n"
        "px.display(df, 'out')\n",
        right="per_method",
    ),
    "group_by_suffixed_right_column": HEAD
    + "per_method = df.groupby('req_method').agg(latency=('latency', px.max))\n"
    + "df = df.merge(per_method, how='inner', left_on='req_method', right_on='req_method')\n"
    + "df = df.groupby(['req_method', 'latency_y']).agg(n=('time_', px.count))\npx.display(df, 'out')\n",
    "group_by_suffixed_left_column": HEAD
    + "per_method = df.groupby('req_method').agg(latency=('latency', px.max))\n"
    + "df = df.merge(per_method, how='inner', left_on='req_method', right_on='req_method')\n"
    + "df = df.groupby(['req_method', 'latency_x']).agg(n=('time_', px.count))\npx.display(df, 'out')\n",
}


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """3,000 generated http_events rows (5% nulls)."""
    return open_synthetic_capture(tmp_path_factory.mktemp("eager-agg"), 3000, seed=5)


@pytest.fixture(scope="module")
def rows(capture) -> pd.DataFrame:
    return capture.scan("http_events").to_pandas()


def _compiled(text: str, capture) -> Graph:
    return compile(parse(text), now_ns=capture.end_time_ns, name="eager")


def _moved_aggs(graph: Graph) -> list[Agg]:
    """The group-bys that read no join but feed one as its left side (where the rule puts them)."""
    nodes = graph.nodes()
    return [n.left for n in nodes if isinstance(n, Join) and isinstance(n.left, Agg) and not _reads_join(n.left)]


def _reads_join(node: Relation) -> bool:
    from pxq.plan.nodes import relations_postorder

    return any(isinstance(n, Join) for n in relations_postorder(node.inputs))


def _canonical(table) -> list:
    return sorted(table.to_pylist(), key=lambda r: [(v is None, str(v)) for v in r.values()])


@pytest.mark.parametrize("name", sorted(POSITIVE))
def test_the_group_by_moves_below_the_join_and_results_do_not_change(name, capture):
    graph = _compiled(POSITIVE[name], capture)
    moved = eager_aggregation.apply(graph)
    assert moved is not graph
    assert _moved_aggs(moved) and not _moved_aggs(graph)
    if name == "two_joins":  # below both joins: the Agg reads neither
        joins = [n for n in moved.nodes() if isinstance(n, Join)]
        assert len(joins) == 2 and any(isinstance(j.left, Agg) for j in joins)
    for optimized in (moved, optimize(graph)):
        assert optimized.displays[0].schema == graph.displays[0].schema
        assert _canonical(execute(optimized, capture).tables["out"]) == _canonical(
            execute(graph, capture).tables["out"]
        )


@pytest.mark.parametrize("name", sorted(NEGATIVE))
def test_the_plan_is_unchanged_when_a_condition_fails(name, capture):
    graph = _compiled(NEGATIVE[name], capture)
    assert eager_aggregation.apply(graph) is graph
    # ... and after the other rules too, no group-by was moved under a join.
    assert not _moved_aggs(optimize(graph))


def test_the_docstring_states_the_conditions():
    doc = eager_aggregation.__doc__ or ""
    for number in range(1, 9):
        assert f"\n{number}. " in doc


# Results against pandas over the same rows (a null key matches nothing in a join: the keys
# used here, req_method and upid, have no nulls in the synthetic rows).


def _grouped_keys(frame: pd.DataFrame, keys: list[str]):
    return frame.groupby(keys, dropna=False, sort=False)


def _by_keys(table, keys: list[str]) -> pd.DataFrame:
    frame = table.to_pandas()
    return frame.fillna({k: -1 for k in keys if frame[k].dtype.kind in "if"}).set_index(keys).sort_index()


def test_inner_join_result_equals_pandas(capture, rows):
    table = execute(optimize(_compiled(INNER, capture)), capture).tables["out"]
    assert rows["req_method"].notna().all()
    per_method = rows.groupby("req_method").size().rename("method_requests").reset_index()
    joined = rows.merge(per_method, on="req_method", how="inner")
    joined = joined[joined["resp_status"] >= 400].assign(slow=lambda f: f["latency"] > 3_000_000)
    joined["slow"] = joined["slow"].where(joined["latency"].notna(), None)
    groups = _grouped_keys(joined, ["req_method", "resp_status", "method_requests"])
    expected = pd.DataFrame(
        {
            "errors": groups.size(),
            "slow_errors": groups["slow"].apply(lambda s: int(s.dropna().sum())),
            "worst": groups["latency"].max(),
        }
    ).sort_index()
    got = _by_keys(table, ["req_method", "resp_status", "method_requests"])
    assert len(got) == len(expected) > 5
    np.testing.assert_array_equal(got["errors"].to_numpy(), expected["errors"].to_numpy())
    np.testing.assert_array_equal(got["slow_errors"].to_numpy(), expected["slow_errors"].to_numpy())
    np.testing.assert_array_equal(got["worst"].to_numpy(float), expected["worst"].to_numpy(float))


def test_left_join_result_equals_pandas(capture, rows):
    table = execute(optimize(_compiled(LEFT, capture)), capture).tables["out"]
    per_method = rows.groupby("req_method").size().rename("method_requests").reset_index()
    joined = rows.merge(per_method.rename(columns={"req_method": "method"}), left_on="req_method", right_on="method")
    joined = joined.fillna({"req_path": "<null>"})
    groups = _grouped_keys(joined, ["req_method", "req_path", "method_requests"])
    expected = pd.DataFrame({"n": groups.size(), "mean_latency": groups["latency"].mean()}).sort_index()
    got = table.to_pandas().fillna({"req_path": "<null>"}).set_index(["req_method", "req_path", "method_requests"])
    got = got.sort_index()
    assert len(got) == len(expected) > 10
    np.testing.assert_array_equal(got["n"].to_numpy(), expected["n"].to_numpy())
    np.testing.assert_allclose(
        got["mean_latency"].to_numpy(float), expected["mean_latency"].to_numpy(float), rtol=1e-12
    )


def test_constant_key_result_equals_pandas(capture, rows):
    table = execute(optimize(_compiled(CONSTANT_KEY, capture)), capture).tables["out"]
    first_seen = rows["time_"].min()
    frame = rows.assign(
        timestamp=pd.to_datetime((rows["time_"].astype("int64") // 60_000_000_000) * 60_000_000_000),
        req_path=rows["req_path"].fillna("<null>"),
    )
    expected = frame.groupby(["req_path", "timestamp"]).size().rename("n").sort_index()
    got = table.to_pandas().fillna({"req_path": "<null>"})
    assert (got["first_seen"] == first_seen).all()
    got = got.set_index(["req_path", "timestamp"])["n"].sort_index()
    assert len(got) == len(expected) > 10
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
    assert list(got.index) == list(expected.index)


# Generated joins with a per-key aggregate, then group-bys: with the rule the results equal the
# unoptimized plan's (the executor, not the rule, is the reference), whether or not it applies.

_KEY_COLUMNS = ("req_method", "resp_status", "upid", "req_path")
_AGGREGATES = (("latency", "count"), ("latency", "max"), ("resp_body_size", "sum"), ("latency", "min"))


@st.composite
def _join_then_group(draw) -> tuple[str, bool]:
    lines = [HEAD.rstrip("\n")]
    constant = draw(st.booleans())
    if constant:
        lines += ["df.all = 1", "right = df.groupby('all').agg(first_seen=('time_', px.min))"]
        left_on, right_on, right_cols = ["all"], ["all"], ["first_seen"]
        if draw(st.booleans()):  # a right side that may be empty: the join then drops every row
            cut = SYNTHETIC_START_NS + draw(st.sampled_from([-1, SYNTHETIC_SPAN_NS // 2]))
            lines.append(f"right = right[px.time_to_int64(right.first_seen) < {cut}]")
    else:
        keys = draw(st.lists(st.sampled_from(_KEY_COLUMNS), min_size=1, max_size=2, unique=True))
        lines.append(f"right = df.groupby({keys!r}).agg(n_right=('time_', px.count))")
        if draw(st.booleans()):  # some keys of the left side without a match
            lines.append(f"right = right[right.n_right > {draw(st.integers(0, 400))}]")
        left_on, right_on, right_cols = keys, list(keys), ["n_right"]
        if draw(st.booleans()):  # the right side names its keys otherwise (copies)
            right_on = [f"{k}_r" for k in keys]
            lines += [f"right.{k}_r = right.{k}" for k in keys]
            lines.append(f"right = right[{[*right_on, 'n_right']!r}]")
    how = draw(st.sampled_from(["inner", "left"]))
    lines.append(f"df = df.merge(right, how='{how}', left_on={left_on!r}, right_on={right_on!r})")
    if draw(st.booleans()):
        lines.append(f"df = df[df.latency > {draw(st.integers(0, 6_000_000))}]")
    if draw(st.booleans()):
        lines.append("df.slow = df.latency > 3000000")
    pool = [c for c in _KEY_COLUMNS] + right_cols + [k for k in right_on if k not in left_on]
    group = draw(st.lists(st.sampled_from(pool), min_size=0, max_size=3, unique=True))
    aggregates = draw(st.lists(st.sampled_from(_AGGREGATES), min_size=1, max_size=3, unique=True))
    calls = ", ".join(f"a{i}=('{c}', px.{f})" for i, (c, f) in enumerate(aggregates))
    lines.append(f"df = df.groupby({group!r}).agg({calls})" if group else f"df = df.agg({calls})")
    lines.append("px.display(df, 'out')")
    return "\n".join(lines) + "\n", constant


@settings(max_examples=60, deadline=None)
@given(case=_join_then_group())
@example(  # service_stats' shape: pushed (a constant key), grouped by a right column
    case=(
        HEAD + "df.all = 1\nright = df.groupby('all').agg(first_seen=('time_', px.min))\n"
        "df = df.merge(right, how='left', left_on=['all'], right_on=['all'])\n"
        "df = df.groupby(['upid', 'first_seen']).agg(a0=('latency', px.max))\npx.display(df, 'out')\n",
        True,
    )
)
@example(  # not moved: a left join grouped by the right key, where only GET has a match (the
    # other methods' rows all have a null right key: one group, not one per method)
    case=(
        HEAD + "right = df.groupby(['req_method']).agg(n_right=('time_', px.count))\n"
        "right = right[right.n_right > 1000]\nright.req_method_r = right.req_method\n"
        "right = right[['req_method_r', 'n_right']]\n"
        "df = df.merge(right, how='left', left_on=['req_method'], right_on=['req_method_r'])\n"
        "df = df.groupby(['req_method_r']).agg(a0=('latency', px.count))\npx.display(df, 'out')\n",
        False,
    )
)
def test_generated_joins_then_group_bys_give_the_unoptimized_results(case, capture):
    text, _ = case
    graph = _compiled(text, capture)
    moved = eager_aggregation.apply(graph)
    event("moved below the join" if moved is not graph else "unchanged")
    plain = execute(graph, capture).tables["out"]
    for optimized in (moved, optimize(graph)):
        table = execute(optimized, capture).tables["out"]
        assert table.schema == plain.schema
        assert _canonical(table) == _canonical(plain)
