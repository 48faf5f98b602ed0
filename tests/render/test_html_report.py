"""``-o html``: the report page loaded in a real headless Chromium (Debian's ``chromium``).

Each page must load from file:// with no console error and no request off the machine, and its
charts must draw (plotly's divs hold SVG marks after load). The charts' data is compared with pandas
computations over the same capture's parquet file; screenshots go to the test's tmp directory.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pxq.testing.chromium import chromium_binary, load_page
from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import run_pxq

pytestmark = pytest.mark.skipif(chromium_binary() is None, reason="needs chromium (tools/setup.sh installs it)")

TEN_S = 10_000_000_000

# Every panel: its kind, grid rectangle, plotly traces (arrays as plain lists), drawn SVG marks,
# table rows, problem text and, for flamegraphs, what the embedded SVG holds.
PAGE_STATE = r"""
(() => {
  const out = {};
  for (const s of document.querySelectorAll('section.panel')) {
    const r = s.getBoundingClientRect();
    const info = {kind: s.dataset.kind, rect: [r.left, r.top, r.width, r.height],
                  rows: s.querySelectorAll('tbody tr').length};
    const gd = s.querySelector('.js-plotly-plot');
    if (gd) {
      const plain = (v) => (v == null || typeof v === 'number' ? v : String(v));
      const list = (a) => (a == null ? null : Array.from(a, plain));
      info.traces = gd.data.map((t) => ({type: t.type, name: t.name, x: list(t.x), y: list(t.y),
                                         value: t.value, hovertext: list(t.hovertext)}));
      info.annotations = (gd.layout.annotations || []).length;
      info.marks = gd.querySelectorAll(
        '.main-svg .trace path, .main-svg .point, .main-svg .annotation-arrow-g path, .main-svg .numbers').length;
    }
    const pre = s.querySelector('pre.problem');
    if (pre) info.problem = pre.textContent;
    const frame = s.querySelector('iframe');
    if (frame) {
      info.srcdoc = frame.getAttribute('srcdoc');
      // The flamegraph's own script ran inside the frame (it exposes its frame nodes).
      const api = frame.contentWindow.pxqFlamegraph;
      info.frame_nodes = api ? api.nodes.length : null;
    }
    out[s.querySelector('h2').textContent] = info;
  }
  return out;
})()
"""
# Every plotly div has drawn its SVG (plotly adds .main-svg when a plot is done).
CHARTS_DRAWN = "Array.from(document.querySelectorAll('.js-plotly-plot')).every((d) => d.querySelector('.main-svg'))"

SCRIPT = """
import px

def requests_over_time(start_time: str):
    df = px.DataFrame(table='http_events', start_time=start_time)
    df.timestamp = px.bin(df.time_, px.parse_duration('10s'))
    df = df.groupby(['req_method', 'timestamp']).agg(requests=('time_', px.count), latency_max=('latency', px.max))
    df.latency_max = px.DurationNanos(df.latency_max)
    return df

def status_codes(start_time: str):
    df = px.DataFrame(table='http_events', start_time=start_time)
    df.status = px.itoa(df.resp_status)
    return df.groupby('status').agg(count=('time_', px.count))

def latency_bins(start_time: str):
    df = px.DataFrame(table='http_events', start_time=start_time)
    df = df[df.latency >= 0]
    df.latency_bin = px.DurationNanos(px.bin(df.latency, 5000000))
    return df.groupby('latency_bin').agg(count=('time_', px.count))

def edges(start_time: str):
    df = px.DataFrame(table='http_events', start_time=start_time)
    df.requestor = df.remote_addr
    df.responder = df.req_method + ' ' + df.req_path
    df = df.groupby(['requestor', 'responder']).agg(requests=('time_', px.count), latency_max=('latency', px.max))
    df.latency_max = px.DurationNanos(df.latency_max)
    return df

def stacks(start_time: str):
    df = px.DataFrame(table='http_events', start_time=start_time)
    df.stack_trace = df.req_method + ';' + df.req_path
    return df.groupby('stack_trace').agg(count=('time_', px.count))
"""


def _call(name: str) -> dict:
    return {"name": name, "args": [{"name": "start_time", "variable": "start_time"}]}


def _widget(name, position, spec, func=None, global_output=None) -> dict:
    widget = {"name": name, "position": dict(zip("xywh", position, strict=True)), "displaySpec": spec}
    if global_output:
        widget["globalFuncOutputName"] = global_output
    else:
        widget["func"] = _call(func)
    return widget


def _vis(widgets: list[dict]) -> dict:
    return {
        "variables": [{"name": "start_time", "type": "PX_STRING", "defaultValue": "-5m"}],
        "globalFuncs": [{"outputName": "edges", "func": _call("edges")}],
        "widgets": widgets,
    }


GOOD_WIDGETS = [
    _widget(
        "Requests",
        (0, 0, 6, 3),
        {
            "@type": "types.px.dev/px.vispb.TimeseriesChart",
            "timeseries": [{"value": "requests", "series": "req_method", "mode": "MODE_LINE"}],
            "yAxis": {"label": "requests per bin"},
        },
        "requests_over_time",
    ),
    _widget(
        "Status codes",
        (6, 0, 6, 3),
        {"@type": "types.px.dev/px.vispb.BarChart", "bar": {"value": "count", "label": "status", "horizontal": True}},
        "status_codes",
    ),
    _widget(
        "Latency",
        (0, 3, 4, 3),
        {
            "@type": "types.px.dev/px.vispb.HistogramChart",
            "histogram": {"value": "latency_bin", "prebinCount": "count", "maxbins": 10},
        },
        "latency_bins",
    ),
    _widget(
        "Latest bin",
        (4, 3, 4, 3),
        {"@type": "types.px.dev/px.vispb.StatChart", "stat": {"value": "requests"}},
        "requests_over_time",
    ),
    _widget("Edges table", (8, 3, 4, 3), {"@type": "types.px.dev/px.vispb.Table"}, global_output="edges"),
    _widget(
        "Flow",
        (0, 6, 12, 4),
        {
            "@type": "types.px.dev/px.vispb.Graph",
            "adjacencyList": {"fromColumn": "requestor", "toColumn": "responder"},
            "edgeWeightColumn": "requests",
            "edgeColorColumn": "latency_max",
            "edgeThresholds": {"mediumThreshold": 10000000, "highThreshold": 20000000},
            "edgeHoverInfo": ["requests", "latency_max"],
        },
        global_output="edges",
    ),
    _widget(
        "Requests graph",
        (0, 10, 12, 4),
        {
            "@type": "types.px.dev/px.vispb.RequestGraph",
            "requestorServiceColumn": "requestor",
            "responderServiceColumn": "responder",
            "p90Column": "latency_max",
            "totalRequestCountColumn": "requests",
        },
        global_output="edges",
    ),
    _widget(
        "Stacks",
        (0, 14, 12, 5),
        {
            "@type": "types.px.dev/px.vispb.StackTraceFlameGraph",
            "stacktraceColumn": "stack_trace",
            "countColumn": "count",
        },
        "stacks",
    ),
]


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cap") / "capture"
    write_synthetic_capture(str(path), 300, seed=7, null_fraction=0.0)
    return path


@pytest.fixture(scope="module")
def events(capture) -> pd.DataFrame:
    return pd.read_parquet(capture / "http_events.parquet")


def _script_folder(root: Path, vis: dict | str) -> Path:
    folder = root / "charted"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "charted.pxl").write_text(SCRIPT)
    (folder / "vis.json").write_text(vis if isinstance(vis, str) else json.dumps(vis, indent=2))
    return folder


def _run_html(script: str | Path, capture: Path, out: Path) -> subprocess.CompletedProcess:
    return run_pxq("run", str(script), "--from", str(capture), "-o", "html", "--out", str(out))


def _load(page: Path, shot: Path) -> tuple[dict, object]:
    load = load_page(page, expression=PAGE_STATE, ready_expression=CHARTS_DRAWN, screenshot=shot)
    assert load.ready, "the charts did not draw"
    assert load.console_errors == []
    assert load.external_requests == []  # offline: plotly.js is inlined
    assert shot.stat().st_size > 10_000
    return load.value, load


def test_vis_widgets_draw_with_the_data_pandas_computes(tmp_path, capture, events):
    folder = _script_folder(tmp_path, _vis(GOOD_WIDGETS))
    page = tmp_path / "report.html"
    done = _run_html(folder, capture, page)
    assert done.returncode == 0, done.stderr
    panels, _ = _load(page, tmp_path / "report.png")
    assert list(panels) == [w["name"] for w in GOOD_WIDGETS]
    for name in ("Requests", "Status codes", "Latency", "Latest bin", "Flow", "Requests graph"):
        assert panels[name]["marks"] > 0, f"{name}: no SVG marks drawn"

    # Time series: one line per method, each summing to the method's number of requests.
    series = {t["name"]: sum(t["y"]) for t in panels["Requests"]["traces"]}
    assert series == events.req_method.value_counts().to_dict()

    # Bar chart: requests per status code.
    (bars,) = panels["Status codes"]["traces"]
    expected_status = events.resp_status.astype("int64").astype(str).value_counts().to_dict()
    assert dict(zip(bars["y"], bars["x"], strict=True)) == expected_status  # horizontal: labels on y

    # Histogram: the prebinned 5 ms bins, merged k at a time (k the least making at most maxbins=10
    # bins, as Pixie resamples), drawn as bars from their left edges; x in ms, the axis' unit.
    (hist,) = panels["Latency"]["traces"]
    lefts = events.latency.dropna() // 5_000_000 * 5_000_000
    k = -(-(int((lefts.max() - lefts.min()) // 5_000_000) + 1) // 10)
    merged = (lefts.min() + (lefts - lefts.min()) // (k * 5_000_000) * (k * 5_000_000)).value_counts()
    assert lefts.max() >= 1e6 > lefts.max() / 1e3  # the synthetic latencies read in ms
    assert dict(zip(hist["x"], hist["y"], strict=True)) == {b / 1e6: float(c) for b, c in merged.items()}
    # Stat: Pixie shows the latest row's value: a method's requests in the last 10 s bin.
    times = events.time_.astype("int64")
    last_bin = (times // TEN_S).max()
    in_last = events[times // TEN_S == last_bin].req_method.value_counts()
    (indicator,) = panels["Latest bin"]["traces"]
    assert indicator["value"] in set(in_last.tolist())

    # Table: one row per requestor → responder pair.
    pairs = events.groupby(["remote_addr", events.req_method + " " + events.req_path]).size()
    assert panels["Edges table"]["rows"] == len(pairs)

    # Graph: one hover point per edge, one arrow per edge, every endpoint a node.
    for name in ("Flow", "Requests graph"):
        traces = panels[name]["traces"]
        assert len(traces[0]["hovertext"]) == len(pairs)
        assert panels[name]["annotations"] == len(pairs)
        ends = set(pairs.index.get_level_values(0)) | set(pairs.index.get_level_values(1))
        assert set(traces[1]["hovertext"]) == ends

    # Flamegraph: pxq's SVG, holding every request as a sample.
    svg = panels["Stacks"]["srcdoc"]
    assert svg.startswith("<?xml") or "<svg" in svg[:300]
    assert f"{len(events):,} samples" in svg
    # Its frames: the root, one per method, one per method and path.
    assert panels["Stacks"]["frame_nodes"] == 1 + events.req_method.nunique() + len(
        events.groupby(["req_method", "req_path"])
    )

    # Layout: Pixie's grid. x=6 starts half way; y=3 below y=0; w=12 spans both halves.
    left, right = panels["Requests"]["rect"], panels["Status codes"]["rect"]
    assert right[0] > left[0] + left[2] * 0.9
    assert abs(left[2] - right[2]) < 2
    assert panels["Latency"]["rect"][1] >= left[1] + left[3]
    assert panels["Flow"]["rect"][2] > left[2] * 1.9


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_bad_widgets_are_positioned_messages_and_the_others_still_draw(tmp_path, capture, events):
    widgets = [
        GOOD_WIDGETS[1],  # status codes: fine
        _widget(
            "Misspelt",
            (0, 3, 6, 3),
            {"@type": "types.px.dev/px.vispb.TimeseriesChart", "timeseries": [{"value": "requestz"}]},
            "requests_over_time",
        ),
        _widget(
            "No time",
            (6, 3, 6, 3),
            {"@type": "types.px.dev/px.vispb.TimeseriesChart", "timeseries": [{"value": "count"}]},
            "status_codes",
        ),
        _widget("Undefined", (0, 6, 12, 3), {"@type": "types.px.dev/px.vispb.Table"}, "no_such_function"),
        GOOD_WIDGETS[0],  # a time series: fine, after the bad ones
    ]
    folder = _script_folder(tmp_path, _vis(widgets))
    text = (folder / "vis.json").read_text()
    page = tmp_path / "report.html"
    done = _run_html(folder, capture, page)
    assert done.returncode == 0, done.stderr
    panels, _ = _load(page, tmp_path / "bad.png")

    vis_path = str(folder / "vis.json")
    misspelt = panels["Misspelt"]["problem"]
    line = _line_of(text, '"requestz"')
    col = text.splitlines()[line - 1].index('"requestz"') + 1
    assert misspelt.startswith(f"{vis_path}:{line}:{col}: error: ")
    assert "column 'requestz' is not in the display" in misspelt
    assert "did you mean 'requests'?" in misspelt
    assert "^^^^^^^^^^" in misspelt  # the caret under the name

    no_time = panels["No time"]["problem"]
    # Points at the widget's @type: the chart kind that needs a time column.
    type_lines = [i for i, ln in enumerate(text.splitlines(), 1) if "TimeseriesChart" in ln]
    assert no_time.startswith(f"{vis_path}:{type_lines[1]}:")
    assert "needs a time column" in no_time and "columns: status, count" in no_time

    undefined = panels["Undefined"]["problem"]
    assert undefined.startswith(f"{vis_path}:{_line_of(text, 'no_such_function')}:")
    assert "function 'no_such_function' is not defined in charted.pxl" in undefined

    # The messages go to stderr too, once each.
    for message in (misspelt, no_time, undefined):
        assert done.stderr.count(message.splitlines()[0]) == 1

    # The good widgets still draw, with their data.
    (bars,) = panels["Status codes"]["traces"]
    assert sum(bars["x"]) == len(events)
    assert {t["name"]: sum(t["y"]) for t in panels["Requests"]["traces"]} == events.req_method.value_counts().to_dict()


def test_service_stats_report_draws_every_metric(tmp_path):
    capture = tmp_path / "cap"
    write_synthetic_capture(str(capture), 400, seed=3, null_fraction=0.05)
    page = tmp_path / "service_stats.html"
    done = _run_html("service_stats", capture, page)
    assert done.returncode == 0, done.stderr
    assert f"wrote {page}" in done.stderr
    panels, _ = _load(page, tmp_path / "service_stats.png")

    from pxq.api import run_script

    _, results = run_script("service_stats", source=str(capture))
    table = results.tables["service_stats"].to_pandas()
    metrics = [c for c in table.columns if c not in ("service", "timestamp")]
    charts = {name.split(": ", 1)[1]: info for name, info in panels.items() if info["kind"] == "TimeseriesPanel"}
    assert sorted(charts) == sorted(metrics)
    for metric, info in charts.items():
        assert info["marks"] > 0, metric
    # requests: per service, the chart's points sum to the table's (for the series drawn).
    busiest = table.groupby("service").size().sort_values(ascending=False)
    drawn = {t["name"]: sum(t["y"]) for t in charts["requests"]["traces"]}
    assert len(drawn) == min(8, len(busiest))
    for service, total in drawn.items():
        assert total == table.loc[table.service == service, "requests"].sum()
    # The series drawn are among the busiest (by rows), and every chart draws the same ones.
    assert set(drawn) <= set(busiest.index[: len(drawn) + (busiest == busiest.iloc[len(drawn) - 1]).sum()])
    assert {t["name"] for t in charts["latency_p99"]["traces"]} == set(drawn)
    # latency in ms on the axis: the chart's values are the table's nanoseconds / 1e6.
    p50 = {t["name"]: np.nansum(np.array(t["y"], dtype=float)) for t in charts["latency_p50"]["traces"]}
    for service, total in p50.items():
        expected = table.loc[table.service == service, "latency_p50"].astype("float64").sum() / 1e6
        assert total == pytest.approx(expected, rel=1e-9)
    assert panels["service_stats"]["rows"] == len(table)
