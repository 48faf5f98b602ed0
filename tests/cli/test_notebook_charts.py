"""Charts inline in a notebook: a notebook built with nbformat and executed by nbclient in a real
ipykernel over the committed demo capture (notebooks/captures/demo). The plotly figures in the
outputs are read back from their HTML and compared with pandas over the capture's Parquet files;
a bad ``pxq.chart`` request shows its message (no traceback) and the cells after it run; the
outputs load in headless Chromium with no console error and their charts draw."""

from __future__ import annotations

import base64
import json
import os
import re
from collections import Counter
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from pxq.testing.chromium import chromium_binary, load_page

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "notebooks" / "captures" / "demo"


def execute(notebook, cwd: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    client = NotebookClient(notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)  # raises CellExecutionError when an untagged cell fails
    return notebook


PER_SECOND = """%%pxq --from {capture}
import px
df = px.DataFrame(table='http_events', start_time='-5m')
df.timestamp = px.bin(df.time_, px.parse_duration('1s'))
df = df.groupby(['timestamp', 'req_method']).agg(requests=('latency', px.count))
px.display(df, 'per_second')"""

BY_PATH = """%%pxq --from {capture}
import px
df = px.DataFrame(table='http_events', start_time='-5m')
df = df[df.trace_role == 2]
px.display(df.groupby('req_path').agg(requests=('latency', px.count)), 'by_path')"""

SCRIPT = """import px

def per_method(start_time: str):
    df = px.DataFrame(table='http_events', start_time=start_time)
    df.timestamp = px.bin(df.time_, px.parse_duration('2s'))
    return df.groupby(['timestamp', 'req_method']).agg(requests=('latency', px.count))

def statuses(start_time: str):
    df = px.DataFrame(table='http_events', start_time=start_time)
    df.status = px.itoa(df.resp_status)
    return df.groupby('status').agg(count=('latency', px.count))
"""


def _call(name: str) -> dict:
    return {"name": name, "args": [{"name": "start_time", "variable": "start_time"}]}


VIS = {
    "variables": [{"name": "start_time", "type": "PX_STRING", "defaultValue": "-5m"}],
    "widgets": [
        {
            "name": "Requests by method",
            "position": {"x": 0, "y": 0, "w": 6, "h": 3},
            "func": _call("per_method"),
            "displaySpec": {
                "@type": "types.px.dev/px.vispb.TimeseriesChart",
                "timeseries": [{"value": "requests", "series": "req_method", "mode": "MODE_LINE"}],
            },
        },
        {
            "name": "Status codes",
            "position": {"x": 6, "y": 0, "w": 6, "h": 3},
            "func": _call("statuses"),
            "displaySpec": {"@type": "types.px.dev/px.vispb.BarChart", "bar": {"value": "count", "label": "status"}},
        },
        {
            "name": "Broken",
            "position": {"x": 0, "y": 3, "w": 12, "h": 2},
            "func": _call("statuses"),
            "displaySpec": {"@type": "types.px.dev/px.vispb.BarChart", "bar": {"value": "cnt", "label": "status"}},
        },
        {
            "name": "Misnamed",
            "position": {"x": 0, "y": 5, "w": 12, "h": 2},
            "func": _call("per_methd"),
            "displaySpec": {"@type": "types.px.dev/px.vispb.Table"},
        },
    ],
}


def _cell(source: str, *tags: str):
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


@pytest.fixture(scope="module")
def script_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("charted") / "charted"
    folder.mkdir()
    (folder / "charted.pxl").write_text(SCRIPT)
    (folder / "vis.json").write_text(json.dumps(VIS, indent=2))
    return folder


@pytest.fixture(scope="module")
def notebook(tmp_path_factory, script_folder):
    cells = [
        _cell("%load_ext pxq\nimport pxq"),
        _cell(PER_SECOND.format(capture=DEMO)),  # 1: a time column: a time series per metric
        _cell(BY_PATH.format(capture=DEMO)),  # 2: a label and a metric: top bars
        _cell("by_path = _\npxq.chart(by_path, kind='bar', x='req_path', y='requests', title='requests per path')"),
        _cell("pxq.chart(by_path, kind='timeseries')", "raises-exception"),  # 4: no time column
        _cell("pxq.chart(by_path, kind='bar', x='req_paht', y='requests')", "raises-exception"),  # 5: a typo
        _cell(f"%pxq --from {DEMO} --script {script_folder}"),  # 6: the vis.json's widgets
        _cell(f"%pxq --from {DEMO} --no-charts --script {script_folder}"),  # 7: switched off
        _cell(BY_PATH.format(capture=DEMO).replace("%%pxq --from", "%%pxq --no-charts --from")),  # 8
        _cell("len(by_path)"),  # 9: the session goes on after the errors
    ]
    return execute(nbformat.v4.new_notebook(cells=cells), tmp_path_factory.mktemp("nb"))


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return pd.read_parquet(DEMO / "http_events.parquet")


_served = pd.read_parquet(DEMO / "http_events.parquet", columns=["trace_role", "req_path"])
SERVED_PATHS = set(_served[_served.trace_role == 2].req_path)


def html_of(cell) -> str:
    (output,) = [o for o in cell.outputs if o.output_type == "execute_result"]
    return output.data["text/html"]


def _decoded(value):
    """plotly writes numeric arrays as base64 typed arrays ({dtype, bdata}); lists stay lists."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return value


def figures(page: str) -> list[list[dict]]:
    """The data (traces) of every ``Plotly.newPlot`` call in an output, in order."""
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"Plotly\.newPlot\(\s*", page):
        _, end = decoder.raw_decode(page, match.end())  # the div id
        data, _ = decoder.raw_decode(page, re.compile(r",\s*").match(page, end).end())
        found.append([{k: _decoded(v) for k, v in trace.items()} for trace in data])
    return found


def plotlyjs_copies(page: str) -> int:
    from plotly.offline import get_plotlyjs

    return page.count(get_plotlyjs()[:300])


def test_a_time_column_draws_a_time_series_per_series_as_pandas_counts(notebook, events):
    page = html_of(notebook.cells[1])
    assert plotlyjs_copies(page) == 1
    (traces,) = figures(page)  # one metric (requests): one chart, a line per method
    second = pd.to_datetime(events.time_).dt.floor("1s")
    expected = events.groupby([events.req_method, second]).size()
    drawn = {t["name"]: Counter(t["y"]) for t in traces}
    assert drawn == {m: Counter(float(v) for v in expected[m]) for m in events.req_method.unique()}
    assert re.findall(r"<h4>(.*?)</h4>", page) == [f"per_second ({len(expected)} rows)"]  # the table follows


def test_a_label_and_a_metric_draw_top_bars(notebook, events):
    page = html_of(notebook.cells[2])
    (traces,) = figures(page)
    served = events[events.trace_role == 2].req_path.value_counts()
    (bars,) = traces
    assert bars["orientation"] == "h"
    assert dict(zip(bars["y"], bars["x"], strict=True)) == {p: float(n) for p, n in served.head(20).items()}


def test_pxq_chart_draws_what_it_is_asked_for(notebook, events):
    output = next(o for o in notebook.cells[3].outputs if o.output_type == "execute_result")
    assert output.data["text/plain"] == "bar chart: requests per path, 1 series"
    ((bars,),) = figures(output.data["text/html"])
    served = events[events.trace_role == 2].req_path.value_counts()
    assert dict(zip(bars["x"], bars["y"], strict=True)) == {p: float(n) for p, n in served.items()}
    assert plotlyjs_copies(output.data["text/html"]) == 1


def test_a_bad_chart_request_says_why_and_later_cells_run(notebook, events):
    (no_time,) = notebook.cells[4].outputs
    assert no_time.output_type == "error" and no_time.ename == "ChartError"
    assert no_time.traceback == [
        "pxq.chart: a time series needs a time column, and 'by_path' has none",
        "hint: columns: req_path, requests; a bar chart (kind='bar') shows a value per label",
    ]
    (typo,) = notebook.cells[5].outputs
    assert typo.ename == "ChartError"
    assert typo.traceback == [
        "pxq.chart: x='req_paht' is not a column of the display",
        "hint: did you mean 'req_path'? columns: req_path, requests",
    ]
    assert notebook.cells[9].outputs[0].data["text/plain"] == str(events[events.trace_role == 2].req_path.nunique())


def test_a_vis_json_lays_out_its_widgets_with_plotlyjs_once(notebook, events):
    page = html_of(notebook.cells[6])
    assert plotlyjs_copies(page) == 1
    kinds = re.findall(r'<section class="panel" [^>]*data-kind="(\w+)"><h2>([^<]*)</h2>', page)
    assert kinds == [
        ("TimeseriesPanel", "Requests by method"),
        ("BarPanel", "Status codes"),
        ("ProblemPanel", "Broken"),
        ("ProblemPanel", "Misnamed"),
    ]
    assert "column &#x27;cnt&#x27; is not in the display" in page
    assert "did you mean &#x27;count&#x27;?" in page
    assert "function &#x27;per_methd&#x27; is not defined in charted.pxl" in page
    assert "did you mean &#x27;per_method&#x27;?" in page
    by_method, by_status = figures(page)
    bins = pd.to_datetime(events.time_).dt.floor("2s")
    expected = events.groupby([events.req_method, bins]).size()
    assert {t["name"]: Counter(t["y"]) for t in by_method} == {
        m: Counter(float(v) for v in expected[m]) for m in events.req_method.unique()
    }
    statuses = events.resp_status.astype("int64").astype(str).value_counts()
    ((bars,),) = [by_status]
    assert dict(zip(bars["x"], bars["y"], strict=True)) == {s: float(n) for s, n in statuses.items()}
    assert "<details>" in page  # the tables, folded below the charts


def test_no_charts_leaves_them_out(notebook):
    page = html_of(notebook.cells[8])
    assert "Plotly.newPlot" not in page and plotlyjs_copies(page) == 0
    assert re.findall(r"<h4>(.*?)</h4>", page) == [f"by_path ({len(SERVED_PATHS)} rows)"]


def test_without_charts_a_vis_json_calling_a_missing_function_stops_the_run_as_in_the_terminal(notebook):
    # The widgets are not drawn, so none is left out: the compiler's message, as `pxq run` says it.
    (said,) = notebook.cells[7].outputs
    assert said.output_type == "stream"
    assert said.text == "vis.json calls 'per_methd', which the script does not define\n"


CHARTS_DRAWN = "Array.from(document.querySelectorAll('.js-plotly-plot')).every((d) => d.querySelector('.main-svg'))"
DRAWN = (
    "Array.from(document.querySelectorAll('.js-plotly-plot'), (d) => d.querySelectorAll('.point, path.js-line').length)"
)


@pytest.mark.skipif(chromium_binary() is None, reason="needs chromium (tools/setup.sh installs it)")
@pytest.mark.parametrize("index", [1, 6])
def test_the_saved_output_draws_in_chromium(notebook, tmp_path, index):
    # nbconvert is not in the venv: the output's HTML is saved as a page, as a notebook shows it.
    page = tmp_path / "output.html"
    page.write_text(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{html_of(notebook.cells[index])}</body></html>'
    )
    load = load_page(page, expression=DRAWN, ready_expression=CHARTS_DRAWN, screenshot=tmp_path / "output.png")
    assert load.ready, "the charts did not draw"
    assert load.console_errors == []
    assert load.external_requests == []  # offline: plotly.js is in the output
    assert load.value and all(marks > 0 for marks in load.value)


# -- pxq.chart without a kernel ------------------------------------------------------------------


def test_stat_is_the_latest_value_as_pandas_finds_it():
    import pxq

    frame = pd.DataFrame(
        {"time_": pd.to_datetime([3, 1, 2], unit="s"), "service": ["a", "b", "c"], "rate": [7.0, 1.5, None]}
    )
    stat = pxq.chart(frame, kind="stat", y="rate")
    expected = frame.dropna(subset=["rate"]).sort_values("time_").rate.iloc[-1]
    (indicator,) = stat.figure.data
    assert indicator.value == expected


def test_graph_edges_join_the_columns_asked_for():
    import pxq

    frame = pd.DataFrame({"client": ["a", "a", "b"], "server": ["b", "c", "c"], "requests": [3, 1, 2]})
    graph = pxq.chart(frame, kind="graph", x="client", y="server")
    assert graph.panel.nodes == sorted(set(frame.client) | set(frame.server))
    assert [(e.source, e.target, e.weight) for e in graph.panel.edges] == list(
        zip(frame.client, frame.server, frame.requests.astype(float), strict=True)
    )


def test_a_stack_table_draws_a_flamegraph():
    import pxq
    from pxq.render.charts import FlamegraphPanel

    frame = pd.DataFrame({"stack_trace": ["main;work", "main;idle"], "count": [3, 1]})
    flame = pxq.chart(frame, kind="flamegraph")
    assert isinstance(flame.panel, FlamegraphPanel) and flame.figure is None
    assert "<iframe" in flame._repr_html_() and "main" in flame._repr_html_()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            {"kind": "timeseries", "x": "service"},
            "pxq.chart: x='service' is not a time column, and a time series needs one\nhint: time columns: time_;",
        ),
        ({"kind": "stat", "y": "rate", "by": "service"}, "pxq.chart: by= has no meaning for a stat chart"),
        ({"kind": "pie"}, "pxq.chart: kind='pie' is not a chart pxq draws; kinds: timeseries, bar, stat, graph"),
        ({"kind": "timeseries", "y": "service"}, "pxq.chart: timeseries: column 'service' is "),
        ({"kind": "flamegraph"}, "pxq.chart: flamegraph: a flamegraph needs a stack column"),
        ({"kind": "graph"}, "pxq.chart: a graph needs the column its edges start from (x=) and end at (y=)"),
    ],
)
def test_a_chart_that_cannot_be_drawn_says_why(request_, message):
    import pxq
    from pxq.errors import UsageError
    from pxq.notebook import ChartError

    frame = pd.DataFrame({"time_": pd.to_datetime([1, 2], unit="s"), "service": ["a", "b"], "rate": [1.0, 2.0]})
    with pytest.raises(ChartError) as raised:
        pxq.chart(frame, **request_)
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, UsageError)  # pxq's error family
    assert raised.value._render_traceback_() == str(raised.value).splitlines()  # IPython shows only this


def test_several_displays_or_other_values_are_refused():
    import pyarrow as pa

    import pxq
    from pxq.notebook import ChartError, notebook_value

    both = notebook_value({"a": pa.table({"x": [1]}), "b": pa.table({"y": [2]})})
    with pytest.raises(ChartError, match=r"several displays \('a', 'b'\); chart one of them"):
        pxq.chart(both)
    with pytest.raises(ChartError, match="draws a DataFrame or an Arrow table, not list"):
        pxq.chart([1, 2])


def test_the_module_setting_switches_charts_off_and_the_magic_back_on(monkeypatch):
    import pxq.notebook as notebook

    cell = "import px\npx.display(px.DataFrame(table='http_events').groupby('req_method').agg(n=('latency', px.count)))"
    monkeypatch.setattr(notebook, "CHARTS", False)
    off = notebook.notebook_value(*notebook.run_cell_charted(f"--from {DEMO}", cell))
    on = notebook.notebook_value(*notebook.run_cell_charted(f"--from {DEMO} --charts", cell))
    assert "Plotly.newPlot" not in off._repr_mimebundle_()["text/html"]
    assert "Plotly.newPlot" in on._repr_mimebundle_()["text/html"]
