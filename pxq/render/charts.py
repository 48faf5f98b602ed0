"""Displays as chart records: what each panel of an HTML report shows, independent of the plotting
library (``pxq.render.html`` draws them with plotly).

With a vis.json, each widget becomes a panel at its ``position`` on Pixie's 12-column grid, of the
kind its ``displaySpec`` names (Pixie's ``px.vispb`` messages: TimeseriesChart, BarChart,
HistogramChart, StatChart, Table, Graph, RequestGraph, StackTraceFlameGraph). Without one, each
display gets the chart its columns suggest (``default_panels``). A widget that names a column the
display lacks, or a time series over a display without a time column, becomes a ``ProblemPanel``
holding a positioned diagnostic into vis.json; the other widgets are drawn all the same.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from pxq.errors import Diagnostic, ScriptError, Source, Span, closest
from pxq.render.base import is_text, is_time, semantic_of, time_ns
from pxq.render.stacks import StackSamples, is_stack_table, stack_column
from pxq.types import SemanticType

GRID_COLUMNS = 12  # Pixie's live view grid
TABLE_ROW_LIMIT = 500  # rows a table panel shows; the page says how many more there are
BAR_LIMIT = 20  # bars in a default bar chart: the rows with the largest values
SERIES_LIMIT = 8  # series drawn per chart: the busiest ones, so lines and legend stay readable


@dataclass(frozen=True)
class Position:
    """Place on the 12-column grid, in grid units (Pixie's ``Widget.Position``)."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Axis:
    label: str = ""
    # How values read: "duration" (ns), "bytes", "percent" (a fraction), "time" (ns since the epoch) or "".
    unit: str = ""


def unit_of(field_: pa.Field) -> str:
    if is_time(field_):
        return "time"
    return {
        SemanticType.DURATION_NS: "duration",
        SemanticType.BYTES: "bytes",
        SemanticType.PERCENT: "percent",
    }.get(semantic_of(field_), "")


@dataclass
class Series:
    """One line, bar group or area: ``y[i]`` at ``x[i]``."""

    name: str
    x: list
    y: list


@dataclass
class Panel:
    title: str
    position: Position


@dataclass
class TimeseriesPanel(Panel):
    series: list[Series]
    y_axis: Axis
    mode: str = "line"  # line, point, area, bar
    stacked: bool = False
    hidden_series: int = 0


@dataclass
class BarPanel(Panel):
    series: list[Series]  # x: the labels; one series per stack/group value
    value_axis: Axis
    label_axis: Axis
    horizontal: bool = False
    stacked: bool = False


@dataclass
class HistogramPanel(Panel):
    value_axis: Axis
    count_axis: Axis
    values: list  # the raw values (binned by the chart), or the left edges of prebinned bins
    counts: list | None = None  # prebinned: the count of each bin
    max_bins: int = 10
    bin_width: float | None = None  # prebinned: the width of every bin, in the values' unit


def resample_bins(
    lefts: list, counts: list, min_step: float, max_bins: int
) -> tuple[list[float], list[float], float | None]:
    """Prebinned counts (bin left edge → count) as at most ``max_bins`` equal bins: the step is the
    smallest gap between the given edges (``min_step`` when there is only one edge), widened by a
    whole factor until the bins fit, as Pixie resamples a HistogramChart's prebinned data."""
    pairs = [(v, c or 0.0) for v, c in zip(lefts, counts, strict=True) if v is not None and math.isfinite(v)]
    if not pairs:
        return [], [], None
    edges = sorted({v for v, _ in pairs})
    gaps = [b - a for a, b in zip(edges, edges[1:], strict=False) if b > a]
    step = min(gaps) if gaps else (min_step if min_step > 0 else 1.0)
    low, high = edges[0], edges[-1]
    factor = max(1, math.ceil((round((high - low) / step) + 1) / max(max_bins, 1)))
    width = step * factor
    summed: dict[float, float] = {}
    for v, c in pairs:
        left = low + math.floor(round((v - low) / step) / factor) * width
        summed[left] = summed.get(left, 0.0) + c
    out = sorted(summed)
    return out, [summed[v] for v in out], width


@dataclass
class StatPanel(Panel):
    value: float | None
    axis: Axis


@dataclass
class TablePanel(Panel):
    columns: list[str]
    rows: list[list[str]]
    total_rows: int
    right_aligned: list[bool] = field(default_factory=list)
    # Why a widget asking for another kind of chart shows its table instead.
    problem: ScriptError | None = None


@dataclass
class Edge:
    source: str
    target: str
    weight: float | None
    colour_value: float | None
    hover: list[tuple[str, str]]


@dataclass
class GraphPanel(Panel):
    nodes: list[str]
    edges: list[Edge]
    weight_label: str = ""
    colour_label: str = ""
    colour_unit: str = ""
    thresholds: tuple[float, float] | None = None  # medium, high


@dataclass
class FlamegraphPanel(Panel):
    record: StackSamples


@dataclass
class ProblemPanel(Panel):
    error: ScriptError

    @property
    def message(self) -> str:
        return self.error.render()


# ---------------------------------------------------------------------------------- positions in JSON


def json_span(text: str, path: tuple[str | int, ...]) -> Span | None:
    """Where the value at ``path`` (object keys and list indexes) is written in JSON ``text``;
    None when the path is not there. Python's json module keeps no positions, so this walks the
    text, decoding each skipped value with ``raw_decode``."""
    decoder = json.JSONDecoder()
    blank = re.compile(r"[ \t\n\r]*")

    def skip(i: int) -> int:
        return blank.match(text, i).end()  # type: ignore[union-attr]

    def after_value(i: int) -> int:
        return skip(decoder.raw_decode(text, i)[1])

    try:
        i = skip(0)
        for step in path:
            if isinstance(step, str) and text[i] == "{":
                i = skip(i + 1)
                while text[i] != "}":
                    key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
                    i = skip(skip(i) + 1)  # past the colon
                    if key == step:
                        break
                    i = after_value(i)
                    if text[i] == ",":
                        i = skip(i + 1)
                else:
                    return None
            elif isinstance(step, int) and text[i] == "[":
                i = skip(i + 1)
                for _ in range(step):
                    if text[i] == "]":
                        return None
                    i = after_value(i)
                    if text[i] == ",":
                        i = skip(i + 1)
                if text[i] == "]":
                    return None
            else:
                return None
        end = decoder.raw_decode(text, i)[1]
    except (ValueError, IndexError):
        return None
    return _span(text, i, end)


def _span(text: str, start: int, end: int) -> Span:
    def line_col(pos: int) -> tuple[int, int]:
        return text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1

    (line, col), (end_line, end_col) = line_col(start), line_col(end)
    return Span(line, col, end_line, end_col, start, end)


@dataclass(frozen=True)
class VisSource:
    """A vis.json: its parsed content and, for positioned messages, its text and file name."""

    spec: dict[str, Any]
    text: str = ""
    filename: str = "vis.json"
    # Widget index → why it cannot run (its function is not in the script): drawn as that message.
    problems: dict[int, ScriptError] = field(default_factory=dict)

    @classmethod
    def beside(cls, spec: dict[str, Any], script_filename: str) -> VisSource:
        """The vis.json next to a script folder's .pxl (its text only positions the messages)."""
        path = Path(script_filename).parent / "vis.json"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return cls(spec)
        return cls(spec, text, str(path))

    def error(self, message: str, path: tuple[str | int, ...], hint: str | None = None) -> ScriptError:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        span = json_span(self.text, path) if self.text else None
        return ScriptError(Diagnostic(f"{where}: {message}", span, hint), Source(self.text, self.filename))


# ---------------------------------------------------------------------------------- column helpers


class _WidgetProblem(Exception):
    def __init__(self, message: str, path: tuple[str | int, ...], hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.path, self.hint = message, path, hint


def _numeric(field_: pa.Field) -> bool:
    return (pat.is_integer(field_.type) or pat.is_floating(field_.type)) and not is_time(field_)


def _floats(column) -> list:
    """A numeric column as floats (null: None, so a chart leaves a gap)."""
    return column.cast(pa.float64()).to_pylist()


def _labels(column) -> list[str]:
    if is_text(column.type) or pat.is_integer(column.type) or pat.is_boolean(column.type):
        return [("" if v is None else str(v)) for v in column.cast(pa.string()).to_pylist()]
    return ["" if v is None else str(v) for v in column.to_pylist()]


def _times(table: pa.Table, name: str) -> list:
    return time_ns(table[name]).to_pylist()


def time_column(table: pa.Table) -> str | None:
    """Pixie's time series use ``time_``; pxq's scripts often name the binned time ``timestamp``."""
    times = [f.name for f in table.schema if is_time(f)]
    if "time_" in times:
        return "time_"
    return times[0] if times else None


def _column(table: pa.Table, spec: dict, key: str, path: tuple, *, required: bool = True, numeric=False) -> str | None:
    name = spec.get(key)
    if name in (None, ""):
        if required:
            raise _WidgetProblem(f"needs {key!r} (a column name)", path)
        return None
    if not isinstance(name, str):
        raise _WidgetProblem(f"{key!r} must be a column name, got {name!r:.60}", path + (key,))
    if name not in table.column_names:
        near = closest(name, table.column_names)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise _WidgetProblem(
            f"column {name!r} is not in the display",
            path + (key,),
            f"{hint}columns: {', '.join(table.column_names)}",
        )
    if numeric and not _numeric(table.schema.field(name)):
        raise _WidgetProblem(f"column {name!r} is {table.schema.field(name).type}, not a number", path + (key,))
    return name


def _title(spec: dict, default: str) -> str:
    title = spec.get("title")
    return title if isinstance(title, str) and title else default


def _axis_label(spec: dict, key: str, default: str) -> str:
    axis = spec.get(key)
    label = axis.get("label") if isinstance(axis, dict) else None
    return label if isinstance(label, str) and label else default


def _split_series(
    table: pa.Table, series_col: str | None, x: list, y: list, *, sum_rest: bool = False
) -> tuple[list[Series], int]:
    """Rows split by ``series_col`` (all rows one series without it): the ``SERIES_LIMIT`` series
    with the most rows (then by name), in name order, and how many more there were. Ranking by
    rows, not by the value drawn, keeps the same series (and colours) in every chart of a display.
    ``sum_rest`` (stacked charts, whose total must stay true): the others summed per x as one more
    series, "other (N)"."""
    if series_col is None:
        return [Series("", x, y)], 0
    keys = _labels(table[series_col])
    by_key: dict[str, tuple[list, list]] = {}
    for key, xv, yv in zip(keys, x, y, strict=True):
        xs, ys = by_key.setdefault(key, ([], []))
        xs.append(xv)
        ys.append(yv)
    ranked = sorted(by_key, key=lambda k: (-len(by_key[k][0]), k))
    kept = sorted(ranked[:SERIES_LIMIT])
    series = [Series(k, *by_key[k]) for k in kept]
    rest = ranked[SERIES_LIMIT:]
    if sum_rest and rest:
        totals: dict = {}
        for key in rest:
            for xv, yv in zip(*by_key[key], strict=True):
                totals[xv] = totals.get(xv, 0.0) + (yv or 0.0)
        xs = sorted(totals, key=lambda v: (v is None, v))
        series.append(Series(f"other ({len(rest)})", xs, [totals[v] for v in xs]))
    return series, len(rest)


def _sorted_by_time(table: pa.Table, time_col: str) -> pa.Table:
    return table.take(pc.sort_indices(time_ns(table[time_col])))


# ---------------------------------------------------------------------------------- one widget


def timeseries_panel(table: pa.Table, spec: dict, title: str, position: Position, path=()) -> TimeseriesPanel:
    time_col = time_column(table)
    if time_col is None:
        raise _WidgetProblem(
            "a time series needs a time column, and the display has none",
            path + ("@type",),
            f"columns: {', '.join(table.column_names)}; use a BarChart or Table for it",
        )
    entries = spec.get("timeseries")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise _WidgetProblem("needs 'timeseries': a list of {value, series, mode}", path)
    table = _sorted_by_time(table, time_col)
    x = _times(table, time_col)
    series: list[Series] = []
    hidden = 0
    units = []
    mode, stacked = "line", False
    for i, entry in enumerate(entries):
        where = path + ("timeseries", i)
        value = _column(table, entry, "value", where, numeric=True)
        series_col = _column(table, entry, "series", where, required=False)
        stack = bool(entry.get("stackBySeries"))
        parts, more = _split_series(table, series_col, x, _floats(table[value]), sum_rest=stack)
        if len(entries) > 1 or series_col is None:
            for part in parts:
                part.name = f"{value} {part.name}".strip()
        series += parts
        hidden += more
        units.append(unit_of(table.schema.field(value)))
        mode = {"MODE_POINT": "point", "MODE_AREA": "area", "MODE_BAR": "bar"}.get(entry.get("mode"), "line")
        stacked = stack
    default_label = entries[0].get("value", "") if len(entries) == 1 else ""
    unit = units[0] if len(set(units)) == 1 else ""
    return TimeseriesPanel(
        _title(spec, title),
        position,
        series,
        Axis(_axis_label(spec, "yAxis", default_label), unit),
        mode,
        stacked,
        hidden,
    )


def bar_panel(table: pa.Table, spec: dict, title: str, position: Position, path=()) -> BarPanel:
    bar = spec.get("bar")
    if not isinstance(bar, dict):
        raise _WidgetProblem("needs 'bar': {value, label}", path)
    where = path + ("bar",)
    value = _column(table, bar, "value", where, numeric=True)
    label = _column(table, bar, "label", where)
    split = _column(table, bar, "stackBy", where, required=False) or _column(
        table, bar, "groupBy", where, required=False
    )
    parts, _ = _split_series(table, split, _labels(table[label]), _floats(table[value]))
    return BarPanel(
        _title(spec, title),
        position,
        parts,
        Axis(
            _axis_label(spec, "xAxis" if bar.get("horizontal") else "yAxis", value), unit_of(table.schema.field(value))
        ),
        Axis(_axis_label(spec, "yAxis" if bar.get("horizontal") else "xAxis", label)),
        bool(bar.get("horizontal")),
        bool(bar.get("stackBy")),
    )


def histogram_panel(table: pa.Table, spec: dict, title: str, position: Position, path=()) -> HistogramPanel:
    hist = spec.get("histogram")
    if not isinstance(hist, dict):
        raise _WidgetProblem("needs 'histogram': {value}", path)
    where = path + ("histogram",)
    value = _column(table, hist, "value", where, numeric=True)
    prebin = _column(table, hist, "prebinCount", where, required=False, numeric=True)
    raw_bins, raw_step = hist.get("maxbins"), hist.get("minstep")
    max_bins = int(raw_bins) if isinstance(raw_bins, (int, str)) and str(raw_bins).isdigit() else 10
    min_step = float(raw_step) if isinstance(raw_step, (int, float)) and math.isfinite(raw_step) else 0.0
    value_axis = Axis(_axis_label(spec, "xAxis", value), unit_of(table.schema.field(value)))
    count_axis = Axis(_axis_label(spec, "yAxis", "count"))
    if prebin is None:
        return HistogramPanel(
            _title(spec, title), position, value_axis, count_axis, _floats(table[value]), None, max_bins
        )
    lefts, counts, width = resample_bins(_floats(table[value]), _floats(table[prebin]), min_step, max(max_bins, 1))
    return HistogramPanel(_title(spec, title), position, value_axis, count_axis, lefts, counts, max_bins, width)


def stat_panel(table: pa.Table, spec: dict, title: str, position: Position, path=()) -> StatPanel:
    stat = spec.get("stat")
    if not isinstance(stat, dict):
        raise _WidgetProblem("needs 'stat': {value}", path)
    value = _column(table, stat, "value", path + ("stat",), numeric=True)
    time_col = time_column(table)
    ordered = _sorted_by_time(table, time_col) if time_col else table
    column = ordered[value].drop_null()  # Pixie shows the latest value
    latest = column[len(column) - 1].as_py() if len(column) else None
    return StatPanel(_title(spec, title), position, latest, Axis(value, unit_of(table.schema.field(value))))


def table_panel(table: pa.Table, title: str, position: Position) -> TablePanel:
    from pxq.render.table import column_values, value_formatter

    shown = table.slice(0, TABLE_ROW_LIMIT)
    columns, aligned = [], []
    for f in shown.schema:
        fmt, right = value_formatter(f, dt.UTC)  # the page's times are UTC, as the charts' axes
        values = column_values(f, shown[f.name])
        columns.append(["" if v is None else fmt(v) for v in values])
        aligned.append(right)
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else []
    return TablePanel(title, position, list(table.column_names), rows, table.num_rows, aligned)


def _text_of(value, field_: pa.Field) -> str:
    from pxq.render.table import value_formatter

    return "" if value is None else value_formatter(field_, dt.UTC)[0](value)


def graph_panel(table: pa.Table, spec: dict, title: str, position: Position, path=()) -> GraphPanel:
    adjacency = spec.get("adjacencyList")
    if not isinstance(adjacency, dict):
        raise _WidgetProblem("needs 'adjacencyList': {fromColumn, toColumn} (dotColumn graphs are not drawn)", path)
    where = path + ("adjacencyList",)
    source = _column(table, adjacency, "fromColumn", where)
    target = _column(table, adjacency, "toColumn", where)
    weight = _column(table, spec, "edgeWeightColumn", path, required=False, numeric=True)
    colour = _column(table, spec, "edgeColorColumn", path, required=False, numeric=True)
    hover_names = spec.get("edgeHoverInfo") or []
    for i, name in enumerate(hover_names):
        if name not in table.column_names:
            near = closest(str(name), table.column_names)
            raise _WidgetProblem(
                f"column {name!r} is not in the display",
                path + ("edgeHoverInfo", i),
                (f"did you mean {near[0]!r}? " if near else "") + f"columns: {', '.join(table.column_names)}",
            )
    thresholds = spec.get("edgeThresholds")
    limits = None
    if isinstance(thresholds, dict):
        try:
            limits = (float(thresholds.get("mediumThreshold", 0)), float(thresholds.get("highThreshold", 0)))
        except (TypeError, ValueError):
            raise _WidgetProblem(
                f"thresholds must be numbers, got {thresholds!r:.80}", path + ("edgeThresholds",)
            ) from None
    return _graph(table, title, position, source, target, weight, colour, list(hover_names), limits)


# RequestGraph: Pixie's service/pod/IP requestor-responder columns and the latency and rate columns.
_REQUEST_GRAPH_ENDS = (
    ("requestorServiceColumn", "responderServiceColumn"),
    ("requestorPodColumn", "responderPodColumn"),
    ("requestorIPColumn", "responderIPColumn"),
)
_REQUEST_GRAPH_STATS = (
    "requestsPerSecondColumn",
    "errorRateColumn",
    "p50Column",
    "p90Column",
    "p99Column",
    "inboundBytesPerSecondColumn",
    "outboundBytesPerSecondColumn",
    "totalRequestCountColumn",
)


def request_graph_panel(table: pa.Table, spec: dict, title: str, position: Position, path=()) -> GraphPanel:
    for from_key, to_key in _REQUEST_GRAPH_ENDS:
        if spec.get(from_key) and spec.get(to_key):
            source = _column(table, spec, from_key, path)
            target = _column(table, spec, to_key, path)
            break
    else:
        raise _WidgetProblem("needs a requestor and a responder column (service, pod or IP)", path)
    stats = [_column(table, spec, key, path, required=False, numeric=True) for key in _REQUEST_GRAPH_STATS]
    hover = [s for s in stats if s]
    rate, p90 = stats[0], stats[3]
    return _graph(table, title, position, source, target, rate, p90, hover, None)


def _graph(table, title, position, source, target, weight, colour, hover, limits) -> GraphPanel:
    sources, targets = _labels(table[source]), _labels(table[target])
    weights = _floats(table[weight]) if weight else [None] * table.num_rows
    colours = _floats(table[colour]) if colour else [None] * table.num_rows
    hover_values = {name: table[name].to_pylist() for name in hover}
    edges = []
    for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
        tips = [(name, _text_of(hover_values[name][i], table.schema.field(name))) for name in hover]
        edges.append(Edge(s, t, weights[i], colours[i], tips))
    nodes = sorted(set(sources) | set(targets))
    colour_unit = unit_of(table.schema.field(colour)) if colour else ""
    return GraphPanel(title, position, nodes, edges, weight or "", colour or "", colour_unit, limits)


def flamegraph_panel(table: pa.Table, spec: dict, title: str, position: Position, path=()) -> FlamegraphPanel:
    stacks = _column(table, spec, "stacktraceColumn", path, required=False)
    count = _column(table, spec, "countColumn", path, required=False, numeric=True)
    if stacks and stacks != stack_column(table):
        table = table.drop_columns([c for c in ("stack_trace",) if c in table.column_names])
        table = table.rename_columns(["stack_trace" if c == stacks else c for c in table.column_names])
    if count and count != "count":
        table = table.drop_columns([c for c in ("count",) if c in table.column_names])
        table = table.rename_columns(["count" if c == count else c for c in table.column_names])
    if stack_column(table) is None:
        raise _WidgetProblem("a flamegraph needs a stack column", path, f"columns: {', '.join(table.column_names)}")
    return FlamegraphPanel(title, position, StackSamples.from_table(table, title=title))


_WIDGETS = {
    "TimeseriesChart": timeseries_panel,
    "BarChart": bar_panel,
    "HistogramChart": histogram_panel,
    "StatChart": stat_panel,
    "Graph": graph_panel,
    "RequestGraph": request_graph_panel,
    "StackTraceFlameGraph": flamegraph_panel,
}


# ---------------------------------------------------------------------------------- whole reports


def _position(widget: dict, fallback_y: int) -> Position:
    pos = widget.get("position")
    if isinstance(pos, dict):
        try:
            x, y = int(pos.get("x", 0)), int(pos.get("y", fallback_y))
            w, h = int(pos.get("w", GRID_COLUMNS)), int(pos.get("h", 3))
        except (TypeError, ValueError):
            pass
        else:
            x = min(max(x, 0), GRID_COLUMNS - 1)
            return Position(x, max(y, 0), min(max(w, 1), GRID_COLUMNS - x), max(h, 1))
    return Position(0, fallback_y, GRID_COLUMNS, 3)


def vis_panels(results: dict[str, pa.Table], vis: VisSource) -> list[Panel]:
    """One panel per vis.json widget; each display a widget makes is named like the widget
    (``pxq.plan.script_args``). Displays no widget shows are appended below as default panels."""
    from pxq.plan.script_args import widget_display_names

    widgets = vis.spec.get("widgets") or []
    display_names = widget_display_names(widgets)
    panels: list[Panel] = []
    bottom = 0
    used: set[str] = set()
    for i, widget in enumerate(widgets):
        if not isinstance(widget, dict):
            continue
        name = widget.get("name") or f"output_{i}"
        shown = display_names.get(i, str(name))
        position = _position(widget, bottom)
        bottom = max(bottom, position.y + position.h)
        spec = widget.get("displaySpec") if isinstance(widget.get("displaySpec"), dict) else {}
        kind = str(spec.get("@type", "")).rsplit(".", 1)[-1]
        path: tuple[str | int, ...] = ("widgets", i, "displaySpec")
        table = results.get(shown)
        if i in vis.problems:
            panels.append(ProblemPanel(str(name), position, vis.problems[i]))
            continue
        if table is None:
            continue  # a widget without a function of its own draws nothing pxq ran
        used.add(shown)
        try:
            if kind in _WIDGETS:
                panels.append(_WIDGETS[kind](table, spec, str(name), position, path))
            elif kind in ("Table", ""):
                panels.append(table_panel(table, str(name), position))
            else:
                fallback = table_panel(table, str(name), position)
                kinds = ", ".join(["Table", *_WIDGETS])
                fallback.problem = vis.error(
                    f"pxq does not draw {kind} widgets; shown as a table", path + ("@type",), f"drawn kinds: {kinds}"
                )
                panels.append(fallback)
        except _WidgetProblem as problem:
            panels.append(ProblemPanel(str(name), position, vis.error(problem.message, problem.path, problem.hint)))
    rest = {d: t for d, t in results.items() if d not in used}
    if rest:
        panels += default_panels(rest, top=bottom)
    return panels


# Column pairs that make a flow graph: who talks to whom.
_GRAPH_ENDS = (
    ("requestor", "responder"),
    ("source", "destination"),
    ("from_entity", "to_entity"),
    ("src", "dest"),
    ("src", "dst"),
    ("client", "server"),
)
_NOT_METRICS = re.compile(r"(^|_)(id|pid|port|upid|status|code)$")


def _metric_columns(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if _numeric(f) and not _NOT_METRICS.search(f.name)]


# Public names for pxq.chart (pxq.notebook): the columns a chart plots by default, and why a
# requested chart cannot be drawn (a message, the spec path, a hint naming the columns).
metric_columns = _metric_columns
WidgetProblem = _WidgetProblem
GRAPH_ENDS = _GRAPH_ENDS


def _series_column(table: pa.Table) -> str | None:
    """The text column that names the series: the one with the fewest distinct values above one
    (a column unique to every row names no series)."""
    best = None
    for f in table.schema:
        if not is_text(f.type) or semantic_of(f) is SemanticType.JSON:
            continue
        distinct = len(pc.unique(table[f.name]))
        if distinct <= 1 or distinct >= table.num_rows:
            continue
        if best is None or distinct < best[1]:
            best = (f.name, distinct)
    return best[0] if best else None


def top_bars(table: pa.Table, display: str, metric: str, y: int) -> BarPanel | None:
    """The ``BAR_LIMIT`` rows with the largest ``metric`` as horizontal bars, each labelled by the
    row's text columns (the first three: e.g. destination, method, path); None without text columns."""
    keys = [f.name for f in table.schema if is_text(f.type) and semantic_of(f) is not SemanticType.JSON][:3]
    if not keys:
        return None
    # Nulls sort last by default, so rows without a value are the ones left out.
    top = table.take(pc.sort_indices(table, [(metric, "descending")])[:BAR_LIMIT])
    label = " / ".join(keys)
    parts = [pc.fill_null(top[k].cast(pa.string()), "") for k in keys]
    labelled = pa.table({label: pc.binary_join_element_wise(*parts, " "), metric: top[metric]})
    labelled = labelled.cast(pa.schema([labelled.schema.field(label), table.schema.field(metric)]))
    spec = {"bar": {"value": metric, "label": label, "horizontal": True}}
    shown = f"top {top.num_rows} of {table.num_rows}" if top.num_rows < table.num_rows else "all rows"
    height = 3 if top.num_rows <= 10 else 5
    return bar_panel(labelled, spec, f"{display}: {metric} by {label} ({shown})", Position(0, y, GRID_COLUMNS, height))


def default_panels(results: dict[str, pa.Table], top: int = 0) -> list[Panel]:
    """The charts a display's columns suggest: stacks → flamegraph; a time column → one time series
    per metric, split by the text column naming the series; two endpoint columns → a flow graph;
    a label and a metric → a bar chart; and every display's table below its charts."""
    panels: list[Panel] = []
    y = top
    for display, table in results.items():
        if is_stack_table(table):
            panels.append(flamegraph_panel(table, {}, display, Position(0, y, GRID_COLUMNS, 6)))
            y += 6
            continue
        metrics = _metric_columns(table)
        time_col = time_column(table)
        ends = next((pair for pair in _GRAPH_ENDS if set(pair) <= set(table.column_names)), None)
        if table.num_rows and time_col and metrics:
            series = _series_column(table)
            for i, metric in enumerate(metrics):
                entry = {"value": metric, "series": series} if series else {"value": metric}
                position = Position(0 if i % 2 == 0 else 6, y + 4 * (i // 2), 6, 4)
                panels.append(timeseries_panel(table, {"timeseries": [entry]}, f"{display}: {metric}", position))
            y += 4 * ((len(metrics) + 1) // 2)
        elif table.num_rows and ends:
            weight = metrics[0] if metrics else None
            panels.append(
                _graph(table, display, Position(0, y, GRID_COLUMNS, 4), ends[0], ends[1], weight, None, metrics, None)
            )
            y += 4
        elif table.num_rows and metrics and (bars := top_bars(table, display, metrics[0], y)) is not None:
            panels.append(bars)
            y += bars.position.h
        height = int(min(6, max(2, 1 + np.ceil(min(table.num_rows, 20) / 5))))
        panels.append(table_panel(table, display, Position(0, y, GRID_COLUMNS, height)))
        y += height
    return panels


def checked_script(script):
    """``script`` (a ``pxq.library.Script``) without the vis.json widgets whose function the script
    does not define (or whose globalFuncOutputName names no global function), so that the others
    still run, and its ``VisSource`` recording why each was left out (None without a vis.json).
    A script that does not parse, or a vis.json whose lists are not lists, is left to the compiler
    and its usage errors."""
    from dataclasses import replace

    from pxq.errors import PxqError
    from pxq.lang import ast, parse

    if not script.vis:
        return script, None
    vis = VisSource.beside(script.vis, script.filename)
    try:
        module = parse(script.text, script.filename)
    except PxqError:
        return script, vis
    defined = sorted(s.name for s in module.body if isinstance(s, ast.FunctionDef))
    if not all(isinstance(script.vis.get(key) or [], list) for key in ("globalFuncs", "widgets")):
        return script, vis
    global_funcs = {}
    for j, entry in enumerate(script.vis.get("globalFuncs") or []):
        if isinstance(entry, dict) and isinstance(entry.get("func"), dict):
            global_funcs[entry.get("outputName")] = (entry["func"], ("globalFuncs", j, "func", "name"))
    widgets = list(script.vis.get("widgets") or [])
    for i, widget in enumerate(widgets):
        if not isinstance(widget, dict):
            continue
        if isinstance(widget.get("func"), dict):
            func, path = widget["func"], ("widgets", i, "func", "name")
        elif widget.get("func") is None and widget.get("globalFuncOutputName") in global_funcs:
            func, path = global_funcs[widget["globalFuncOutputName"]]
        elif widget.get("func") is None and isinstance(widget.get("globalFuncOutputName"), str):
            output = widget["globalFuncOutputName"]
            outputs = sorted(k for k in global_funcs if isinstance(k, str))
            near = closest(output, outputs)
            vis.problems[i] = vis.error(
                f"globalFuncOutputName {output!r} names no globalFuncs entry",
                ("widgets", i, "globalFuncOutputName"),
                (f"did you mean {near[0]!r}? " if near else "") + f"outputs: {', '.join(outputs) or 'none'}",
            )
            widgets[i] = {k: v for k, v in widget.items() if k != "globalFuncOutputName"}
            continue
        else:
            continue
        name = func.get("name")
        if not isinstance(name, str) or name in defined:
            continue
        near = closest(name, defined)
        hint = (
            f"did you mean {near[0]!r}? " if near else ""
        ) + f"the script defines: {', '.join(defined) or 'nothing'}"
        vis.problems[i] = vis.error(f"function {name!r} is not defined in {Path(script.filename).name}", path, hint)
        # Kept without its function (not removed), so the other widgets keep their display names.
        widgets[i] = {k: v for k, v in widget.items() if k not in ("func", "globalFuncOutputName")}
    if not vis.problems:
        return script, vis
    return replace(script, vis=dict(script.vis, widgets=widgets)), vis


def report_panels(results: dict[str, pa.Table], vis: VisSource | None = None) -> list[Panel]:
    """The panels of a report: laid out by the vis.json when there is one, else by default."""
    return vis_panels(results, vis) if vis is not None else default_panels(results)


__all__ = [
    "BarPanel",
    "GRAPH_ENDS",
    "FlamegraphPanel",
    "GraphPanel",
    "HistogramPanel",
    "Panel",
    "Position",
    "ProblemPanel",
    "StatPanel",
    "TablePanel",
    "TimeseriesPanel",
    "VisSource",
    "WidgetProblem",
    "checked_script",
    "default_panels",
    "json_span",
    "metric_columns",
    "report_panels",
    "time_column",
]
