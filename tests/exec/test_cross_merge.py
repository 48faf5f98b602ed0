"""merge with no keys (left_on=[], right_on=[], as Pixie's px/ip script joins a one-row time
window to every row): every left row meets every right row, like pandas' how='cross'; outer
joins keep a side's rows when the other side is empty. Unoptimized, optimized and split agree."""

from __future__ import annotations

import pandas as pd
import pytest

from pxq.exec.execute import execute, execute_fragments
from pxq.lang import parse
from pxq.plan.compile import compile
from pxq.plan.format import format_graph
from pxq.plan.optimize import optimize
from pxq.plan.split import split

SCRIPT = """import px
df = px.DataFrame(table='http_events')
df = df[df.resp_status >= {min_status}]
per_path = df.groupby('req_path').agg(n=('latency', px.count))
window = df.agg(t_min=('time_', px.min), t_max=('time_', px.max))
window.span = window.t_max - window.t_min
window = window.drop(['t_min', 't_max'])
px.display(per_path.merge(window, how='{how}', left_on=[], right_on=[]), 'out')
"""


def outputs(capture, how: str, min_status: int) -> list[pd.DataFrame]:
    graph = compile(parse(SCRIPT.format(how=how, min_status=min_status)), now_ns=capture.end_time_ns)
    optimized = optimize(graph)
    plan = split(optimized)
    fragments = execute_fragments(plan.agent_fragments, optimized, capture)
    runs = [execute(graph, capture), execute(optimized, capture), execute(plan.merge, None, fragment_inputs=fragments)]
    return [run.tables["out"].to_pandas() for run in runs]


def canonical(frame: pd.DataFrame) -> list[tuple]:
    values = frame.astype(object).where(frame.notna(), None)
    return sorted(map(tuple, values.itertuples(index=False)), key=lambda r: [(v is None, str(v)) for v in r])


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
@pytest.mark.parametrize("min_status", [0, 600])  # 600: no rows, an empty left and a one-row right of nulls
def test_a_merge_without_keys_pairs_every_row_with_every_row(synthetic_capture, http_frame, how, min_status):
    df = http_frame[http_frame["resp_status"] >= min_status]
    per_path = df.groupby("req_path", dropna=False).size().rename("n").reset_index()
    span = df["time_"].max() - df["time_"].min()
    window = pd.DataFrame({"span": [None if pd.isna(span) else int(span.value)]})
    expected = per_path.merge(window, how="cross")
    if how in ("right", "outer") and per_path.empty:
        expected = pd.DataFrame({"req_path": [None], "n": [None], "span": window["span"]})
    for got in outputs(synthetic_capture, how, min_status):
        assert list(got.columns) == ["req_path", "n", "span"]
        got = got.assign(span=[None if pd.isna(v) else int(pd.Timedelta(v).value) for v in got["span"]])
        assert canonical(got) == canonical(expected)


def test_explain_says_a_merge_without_keys_pairs_all_rows(synthetic_capture):
    graph = compile(parse(SCRIPT.format(how="inner", min_status=0)), now_ns=synthetic_capture.end_time_ns)
    (line,) = [line for line in format_graph(graph).splitlines() if "Join[" in line]
    assert "how=inner on (no keys: all pairs) suffixes=" in line
