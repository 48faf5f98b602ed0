"""Chart records (``pxq.render.charts``) and their plotly figures, without a browser: which chart a
display gets, the values drawn (checked against pandas), and vis.json problems with their positions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import example, given, strategies as st

from pxq.errors import UsageError
from pxq.library import Script
from pxq.render import render
from pxq.render.charts import (
    BarPanel,
    FlamegraphPanel,
    GraphPanel,
    ProblemPanel,
    TablePanel,
    TimeseriesPanel,
    VisSource,
    checked_script,
    default_panels,
    json_span,
    vis_panels,
)
from pxq.render.html import timeseries_figure
from pxq.types import FIELD_SEMANTIC_KEY, SemanticType

T0 = 1_764_115_200_000_000_000  # 2025-11-26 00:00 UTC


def _marked(name: str, values, semantic: SemanticType, type_=pa.int64()) -> tuple[pa.Field, pa.Array]:
    return pa.field(name, type_, metadata={FIELD_SEMANTIC_KEY: semantic.value}), pa.array(values, type_)


def _table(columns: dict) -> pa.Table:
    fields, arrays = [], []
    for name, column in columns.items():
        if isinstance(column, tuple):
            f, a = column
        else:
            a = pa.array(column)
            f = pa.field(name, a.type)
        fields.append(f)
        arrays.append(a)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _stats_table(rng: np.random.Generator, services: int, rows: int) -> pa.Table:
    names = [f"svc-{i:02d}" for i in range(services)]
    # Service i gets weight i + 1: distinct row counts, so "the busiest" is well defined.
    chosen = rng.choice(names, size=rows, p=np.arange(1, services + 1) / sum(range(1, services + 1)))
    return _table(
        {
            "timestamp": (
                pa.field("timestamp", pa.timestamp("ns")),
                pa.array(T0 + rng.integers(0, 60, rows) * 10**9, pa.timestamp("ns")),
            ),
            "service": list(chosen),
            "requests": rng.integers(1, 50, rows).tolist(),
            "latency_p50": _marked("latency_p50", rng.integers(10**5, 10**8, rows).tolist(), SemanticType.DURATION_NS),
        }
    )


def test_default_time_series_split_by_the_series_column_sum_like_pandas():
    table = _stats_table(np.random.default_rng(5), services=4, rows=200)
    panels = default_panels({"stats": table})
    charts = [p for p in panels if isinstance(p, TimeseriesPanel)]
    assert [c.title for c in charts] == ["stats: requests", "stats: latency_p50"]
    assert isinstance(panels[-1], TablePanel) and panels[-1].total_rows == 200
    frame = table.to_pandas()
    expected = frame.groupby("service").requests.sum().to_dict()
    assert {s.name: sum(s.y) for s in charts[0].series} == expected
    # Each series in time order.
    for s in charts[0].series:
        assert s.x == sorted(s.x)


def test_busiest_series_kept_and_the_same_in_every_chart():
    table = _stats_table(np.random.default_rng(11), services=12, rows=3000)
    panels = [p for p in default_panels({"stats": table}) if isinstance(p, TimeseriesPanel)]
    counts = table.to_pandas().service.value_counts()
    top8 = set(counts.index[:8])
    assert counts.iloc[7] > counts.iloc[8]  # the data makes the top 8 unambiguous
    for panel in panels:
        assert {s.name for s in panel.series} == top8
        assert panel.hidden_series == 4


def test_duration_axis_reads_in_milliseconds():
    table = _stats_table(np.random.default_rng(2), services=3, rows=50)
    (panel,) = [p for p in default_panels({"s": table}) if p.title.endswith("latency_p50")]
    figure = timeseries_figure(panel)
    frame = table.to_pandas()
    for trace in figure.data:
        drawn = np.asarray(trace.y, dtype=float).sum()
        expected = frame.loc[frame.service == trace.name, "latency_p50"].sum() / 1e6
        assert drawn == pytest.approx(expected)
    assert figure.layout.yaxis.ticksuffix == " ms"


def test_no_time_column_label_and_metric_is_a_bar_chart():
    table = _table({"status": ["200", "404", "500"], "count": [7, 2, 1]})
    panels = default_panels({"codes": table})
    assert [type(p) for p in panels] == [BarPanel, TablePanel]
    (series,) = panels[0].series
    assert dict(zip(series.x, series.y, strict=True)) == {"200": 7.0, "404": 2.0, "500": 1.0}


def test_many_rows_without_time_are_the_top_bars_labelled_by_their_text_columns():
    rng = np.random.default_rng(4)
    requests = rng.permutation(np.arange(1, 61)) * 3  # distinct: the top 20 are unambiguous
    table = _table(
        {
            "service": [f"s{i % 4}" for i in range(60)],
            "path": [f"/p{i}" for i in range(60)],
            "requests": requests.tolist(),
            "headers": _marked("headers", ["{}"] * 60, SemanticType.JSON, pa.string()),
        }
    )
    bars = default_panels({"stats": table})[0]
    assert isinstance(bars, BarPanel) and bars.horizontal
    assert bars.title == "stats: requests by service / path (top 20 of 60)"
    frame = table.to_pandas().nlargest(20, "requests")
    (series,) = bars.series
    assert series.x == (frame.service + " " + frame.path).tolist()
    assert series.y == frame.requests.astype(float).tolist()


def test_endpoint_columns_make_a_flow_graph():
    table = _table({"requestor": ["a", "a", "b"], "responder": ["b", "c", "c"], "requests": [3, 1, 2]})
    graph = default_panels({"flows": table})[0]
    assert isinstance(graph, GraphPanel)
    assert graph.nodes == ["a", "b", "c"]
    assert [(e.source, e.target, e.weight) for e in graph.edges] == [("a", "b", 3.0), ("a", "c", 1.0), ("b", "c", 2.0)]


def test_stack_table_is_a_flamegraph_and_an_empty_table_just_a_table():
    stacks = _table({"stack_trace": ["main;a", "main;b"], "count": [3, 4]})
    (flame,) = default_panels({"cpu": stacks})
    assert isinstance(flame, FlamegraphPanel) and flame.record.total == 7
    empty = _table({"timestamp": pa.array([], pa.timestamp("ns")), "requests": pa.array([], pa.int64())})
    assert [type(p) for p in default_panels({"none": empty})] == [TablePanel]


VIS_TEXT = """{
  "widgets": [
    {"name": "codes", "position": {"x": 0, "y": 0, "w": 6, "h": 3},
     "displaySpec": {"@type": "types.px.dev/px.vispb.TimeseriesChart",
                     "timeseries": [{"value": "count"}]}},
    {"name": "bars", "position": {"x": 6, "y": 0, "w": 6, "h": 3},
     "displaySpec": {"@type": "types.px.dev/px.vispb.BarChart",
                     "bar": {"value": "cuont", "label": "status"}}}
  ]
}"""


def test_json_span_finds_values_where_they_are_written():
    text = VIS_TEXT
    span = json_span(text, ("widgets", 1, "displaySpec", "bar", "value"))
    start = text.index('"cuont"')
    assert (span.start_pos, span.end_pos) == (start, start + len('"cuont"'))
    assert span.line == text[:start].count("\n") + 1
    assert span.column == start - text.rindex("\n", 0, start)
    assert json_span(text, ("widgets", 2)) is None
    assert json_span(text, ("widgets", 0, "nope")) is None
    assert json_span(text, ("widgets", "x")) is None
    tricky = '{"a\\"b": {"c": [1, {"d": "x:y,}"}]}, "e": [10, 20]}'
    span = json_span(tricky, ("e", 1))
    assert tricky[span.start_pos : span.end_pos] == "20"


def test_bad_widgets_are_problems_pointing_into_vis_json_and_the_rest_draws():
    table = _table({"status": ["200", "404"], "count": [5, 1]})
    vis = VisSource(json.loads(VIS_TEXT), VIS_TEXT, "dir/vis.json")
    codes_panel, bars_panel = vis_panels({"codes": table, "bars": table}, vis)
    assert isinstance(codes_panel, ProblemPanel) and isinstance(bars_panel, ProblemPanel)
    type_line = next(i for i, ln in enumerate(VIS_TEXT.splitlines(), 1) if "TimeseriesChart" in ln)
    assert codes_panel.message.startswith(f"dir/vis.json:{type_line}:")
    assert "time series needs a time column" in codes_panel.message
    value_line = next(i for i, ln in enumerate(VIS_TEXT.splitlines(), 1) if '"cuont"' in ln)
    assert bars_panel.message.startswith(f"dir/vis.json:{value_line}:")
    assert "did you mean 'count'?" in bars_panel.message
    # A good widget beside a bad one still becomes its chart.
    good = json.loads(VIS_TEXT)
    good["widgets"][1]["displaySpec"]["bar"]["value"] = "count"
    codes_panel, bars_panel = vis_panels({"codes": table, "bars": table}, VisSource(good))
    assert isinstance(codes_panel, ProblemPanel) and isinstance(bars_panel, BarPanel)
    assert codes_panel.message.startswith("vis.json: error: widgets[0].displaySpec.@type: ")  # no text: no position


def test_undefined_function_leaves_the_other_widgets_their_display_names(tmp_path):
    """Regression: the widget is kept without its function, not removed, so the unnamed widget
    after it is still output_2 (display names of unnamed widgets count widget positions)."""
    from pxq.api import run_script
    from pxq.testing.synthetic import write_synthetic_capture

    folder = tmp_path / "s"
    folder.mkdir()
    pxl = "import px\ndef f(start_time: str):\n    return px.DataFrame(table='http_events', start_time=start_time)\n"
    (folder / "s.pxl").write_text(pxl)
    call = {"args": [{"name": "start_time", "value": "-5m"}]}
    vis = {
        "widgets": [
            {"name": "one", "func": {"name": "f", **call}},
            {"func": {"name": "missing", **call}},
            {"func": {"name": "f", **call}},
            {"name": "global", "globalFuncOutputName": "shared"},
            {"name": "typo", "globalFuncOutputName": "shraed"},
        ],
        "globalFuncs": [{"outputName": "shared", "func": {"name": "f", **call}}],
    }
    (folder / "vis.json").write_text(json.dumps(vis, indent=1))
    script = Script("s", pxl, str(folder / "s.pxl"), vis)
    checked, source = checked_script(script)
    assert list(source.problems) == [1, 4]
    assert "function 'missing' is not defined in s.pxl" in source.problems[1].render()
    typo = source.problems[4].render()
    assert "globalFuncOutputName 'shraed' names no globalFuncs entry" in typo
    assert "did you mean 'shared'?" in typo
    write_synthetic_capture(str(tmp_path / "cap"), 20, seed=1)
    _, results = run_script(checked, source=str(tmp_path / "cap"))
    assert list(results.tables) == ["one", "output_2", "global"]
    # Malformed lists are left for the script plan's own usage error.
    malformed = Script("s", pxl, str(folder / "s.pxl"), {"widgets": 5})
    assert checked_script(malformed)[0] is malformed


def test_html_needs_an_output_file(tmp_path):
    with pytest.raises(UsageError, match="--out report.html"):
        render({"t": _table({"a": [1]})}, "html", None)


def test_a_table_panel_shows_values_as_the_terminal_table_does():
    table = _table({"latency": _marked("latency", [1_500_000, None], SemanticType.DURATION_NS)})
    (panel,) = [p for p in default_panels({"t": table}) if isinstance(p, TablePanel)]
    assert panel.rows == [["1.5 ms"], [""]]
    assert pd.isna(table.to_pandas().latency[1])


def test_a_widget_kind_pxq_does_not_draw_shows_its_table_and_says_why():
    text = '{"widgets": [{"name": "t", "displaySpec": {"@type": "types.px.dev/px.vispb.VegaChart"}}]}'
    table = _table({"a": [1, 2]})
    (panel,) = vis_panels({"t": table}, VisSource(json.loads(text), text, "vis.json"))
    assert isinstance(panel, TablePanel) and panel.total_rows == 2
    at = text.index('"types.px.dev/px.vispb.VegaChart"') + 1
    assert panel.problem.render().startswith(f"vis.json:1:{at}: error: widgets[0].displaySpec.@type: pxq does not draw")


def test_mode_bar_time_series_are_stacked_bars():
    from pxq.render.html import timeseries_figure as figure

    table = _stats_table(np.random.default_rng(1), services=3, rows=40)
    spec = {"timeseries": [{"value": "requests", "series": "service", "stackBySeries": True, "mode": "MODE_BAR"}]}
    (panel,) = vis_panels(
        {"w": table},
        VisSource(
            {"widgets": [{"name": "w", "displaySpec": {"@type": "types.px.dev/px.vispb.TimeseriesChart", **spec}}]}
        ),
    )
    drawn = figure(panel)
    assert {t.type for t in drawn.data} == {"bar"} and drawn.layout.barmode == "stack"
    expected = table.to_pandas().groupby("service").requests.sum().to_dict()
    assert {t.name: float(np.sum(t.y)) for t in drawn.data} == expected


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


def _paths(value, prefix=()):
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


@given(doc=_JSON, indent=st.sampled_from([None, 0, 2]), ascii_only=st.booleans())
@example(doc={'a"b': [1, {"c:": "},"}], "": {"": None}}, indent=None, ascii_only=True)
def test_json_span_slices_out_the_value_at_every_path(doc, indent, ascii_only):
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only)
    for path, value in _paths(doc):
        span = json_span(text, path)
        assert span is not None, path
        assert json.loads(text[span.start_pos : span.end_pos]) == value
        line_start = text.rfind("\n", 0, span.start_pos) + 1
        assert (span.line, span.column) == (text.count("\n", 0, span.start_pos) + 1, span.start_pos - line_start + 1)


_KINDS = [
    "TimeseriesChart",
    "BarChart",
    "HistogramChart",
    "StatChart",
    "Graph",
    "RequestGraph",
    "StackTraceFlameGraph",
    "Table",
    "VegaChart",
]
_NAMES = st.sampled_from(["timestamp", "service", "requests", "latency_p50", "nope", "", 3, None])
_FIELD = st.one_of(_NAMES, _JSON)
_SPEC_PARTS = st.fixed_dictionaries(
    {},
    optional={
        "timeseries": st.lists(
            st.dictionaries(st.sampled_from(["value", "series", "mode", "stackBySeries"]), _FIELD), max_size=2
        )
        | _JSON,
        "bar": st.dictionaries(st.sampled_from(["value", "label", "stackBy", "groupBy", "horizontal"]), _FIELD) | _JSON,
        "histogram": st.dictionaries(st.sampled_from(["value", "prebinCount", "maxbins"]), _FIELD) | _JSON,
        "stat": st.dictionaries(st.just("value"), _FIELD) | _JSON,
        "adjacencyList": st.dictionaries(st.sampled_from(["fromColumn", "toColumn"]), _FIELD) | _JSON,
        "edgeWeightColumn": _FIELD,
        "edgeColorColumn": _FIELD,
        "edgeHoverInfo": st.lists(_NAMES, max_size=2) | _JSON,
        "edgeThresholds": st.dictionaries(st.sampled_from(["mediumThreshold", "highThreshold"]), _FIELD) | _JSON,
        "requestorServiceColumn": _FIELD,
        "responderServiceColumn": _FIELD,
        "stacktraceColumn": _FIELD,
        "countColumn": _FIELD,
        "title": _FIELD,
        "yAxis": _JSON,
    },
)


@given(kind=st.sampled_from(_KINDS), parts=_SPEC_PARTS, position=_JSON)
@example(kind="TimeseriesChart", parts={"timeseries": [{"value": "requests"}], "title": 3}, position=None)
def test_any_display_spec_becomes_a_panel_or_a_positioned_problem_never_an_exception(kind, parts, position):
    from pxq.render.html import report_html

    table = _stats_table(np.random.default_rng(0), services=3, rows=12)
    widget = {"name": "w", "position": position, "displaySpec": {"@type": f"types.px.dev/px.vispb.{kind}", **parts}}
    text = json.dumps({"widgets": [widget]}, indent=1)
    panels = vis_panels({"w": table}, VisSource(json.loads(text), text, "vis.json"))
    assert len(panels) == 1
    if isinstance(panels[0], ProblemPanel):
        assert panels[0].message.startswith("vis.json:")
    report_html(panels, "t")


def test_bars_of_durations_share_one_unit_across_series():
    """Regression: each series was scaled by its own largest value while the axis said "ns"."""
    from pxq.render.html import bar_figure

    table = _table(
        {
            "pod": ["a", "a", "b"],
            "method": ["GET", "PUT", "GET"],
            "latency": _marked("latency", [2_000_000, 3_000_000_000, 5_000], SemanticType.DURATION_NS),
        }
    )
    spec = {"bar": {"value": "latency", "label": "pod", "groupBy": "method"}}
    widget = {"name": "w", "displaySpec": {"@type": "types.px.dev/px.vispb.BarChart", **spec}}
    (panel,) = vis_panels({"w": table}, VisSource({"widgets": [widget]}))
    figure = bar_figure(panel)
    assert figure.layout.yaxis.ticksuffix == " s"  # the largest value, 3e9 ns, reads in seconds
    drawn = {(t.name, x): y for t in figure.data for x, y in zip(t.x, t.y, strict=True)}
    assert drawn == {("GET", "a"): 0.002, ("GET", "b"): 0.000005, ("PUT", "a"): 3.0}


@pytest.mark.parametrize(
    "lefts, counts, min_step, max_bins, expected",
    [
        # Fits: unchanged, the step the smallest gap.
        ([0, 10, 30], [1, 2, 3], 0, 10, ([0, 10, 30], [1, 2, 3], 10)),
        # 6 bins of 10 into at most 3: pairs merged, 20 wide.
        ([0, 10, 20, 30, 40, 50], [1, 1, 1, 1, 1, 5], 0, 3, ([0, 20, 40], [2, 2, 6], 20)),
        # One bin: minstep gives its width (the redis_stats histogram, all requests under 50 ms).
        ([0], [140], 50_000_000, 10, ([0], [140], 50_000_000)),
        # Nulls: a bin without an edge is dropped; a null count counts nothing.
        ([None, 5, 10], [9, None, 2], 0, 10, ([5, 10], [0, 2], 5)),
    ],
)
def test_prebinned_histograms_resample_to_at_most_maxbins(lefts, counts, min_step, max_bins, expected):
    from pxq.render.charts import resample_bins

    got = resample_bins(lefts, counts, min_step, max_bins)
    assert got == (list(map(float, expected[0])), list(map(float, expected[1])), float(expected[2]))


def test_stacked_series_beyond_the_limit_are_summed_so_the_stack_total_stays_true():
    table = _stats_table(np.random.default_rng(8), services=12, rows=400)
    spec = {"timeseries": [{"value": "requests", "series": "service", "stackBySeries": True, "mode": "MODE_BAR"}]}
    widget = {"name": "w", "displaySpec": {"@type": "types.px.dev/px.vispb.TimeseriesChart", **spec}}
    (panel,) = vis_panels({"w": table}, VisSource({"widgets": [widget]}))
    assert [s.name for s in panel.series][-1] == "other (4)" and len(panel.series) == 9
    frame = table.to_pandas()
    frame["ns"] = frame.timestamp.astype("int64")
    drawn = pd.DataFrame([(x, y) for s in panel.series for x, y in zip(s.x, s.y, strict=True)], columns=["ns", "y"])
    assert drawn.groupby("ns").y.sum().to_dict() == frame.groupby("ns").requests.sum().astype(float).to_dict()
