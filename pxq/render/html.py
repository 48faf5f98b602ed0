"""``-o html``: one self-contained page of charts, usable offline.

Displays become chart records (``pxq.render.charts``: laid out by the script's vis.json, or one
chart per metric by default); this module draws each record with plotly and puts them on Pixie's
12-column grid. plotly.js is inlined once, so the page needs no network; flamegraphs are pxq's own
SVG (``pxq.render.flamegraph_svg``) in an iframe, so their script runs as in the .svg files.

plotly rather than altair + vl-convert: plotly's Python package carries plotly.js (one file to
inline), and its figures cover every widget kind here, including the request graph's edges
(annotations with arrows) and the stat number (``Indicator``), without a separate JS runtime.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import sys
from collections import defaultdict, deque

import numpy as np
import pyarrow as pa

from pxq.errors import UsageError
from pxq.render import human
from pxq.render.base import open_output
from pxq.render.charts import (
    Axis,
    BarPanel,
    FlamegraphPanel,
    GraphPanel,
    HistogramPanel,
    Panel,
    ProblemPanel,
    StatPanel,
    TablePanel,
    TimeseriesPanel,
    VisSource,
    report_panels,
)

ROW_PX = 110  # height of one grid unit: a Pixie widget of h=3 is a 330 px panel
PALETTE = (
    "#3f6fd8",
    "#e0702a",
    "#2a9d6e",
    "#c2417a",
    "#8a5cc7",
    "#b59a1c",
    "#2f9fbf",
    "#d64545",
    "#6b7c2a",
    "#7a5230",
    "#5a6b8c",
    "#999999",
)
EDGE_COLOURS = {"low": "#2a9d6e", "medium": "#e0a02a", "high": "#d64545", None: "#8c96a8"}


# ---------------------------------------------------------------------------------- units


def _duration_scale(values) -> tuple[float, str]:
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    top = max(finite, default=0.0)
    for divisor, name in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
        if top >= divisor:
            return divisor, name
    return 1.0, "ns"


def scaled(values: list, axis: Axis, scale: tuple[float, str] | None = None) -> tuple[list, dict, str]:
    """Values in the unit they read best in, the plotly axis settings for it, and the unit's name."""
    if axis.unit == "duration":
        divisor, name = scale or _duration_scale(values)
        return [None if v is None else v / divisor for v in values], {"ticksuffix": f" {name}"}, name
    if axis.unit == "percent":
        return [None if v is None else v * 100 for v in values], {"ticksuffix": "%"}, "%"
    if axis.unit == "bytes":
        return values, {"tickformat": ".3~s", "ticksuffix": "B"}, "B"
    return values, {}, ""


def _with_unit(label: str, unit: str) -> str:
    return f"{label} ({unit})" if unit and label else label


def _datetimes(ns: list) -> np.ndarray:
    return np.array([np.datetime64(v, "ns") if v is not None else np.datetime64("NaT") for v in ns])


# ---------------------------------------------------------------------------------- figures


def _base_layout(**extra) -> dict:
    layout = {
        "template": "plotly_white",
        "margin": {"l": 60, "r": 20, "t": 10, "b": 40},
        "autosize": True,
        "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
        # Below the axis, clear of its two-line date labels.
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.2, "font": {"size": 11}},
        "hoverlabel": {"namelength": -1},
    }
    layout.update(extra)
    return layout


def _no_data(fig, text: str = "no rows") -> None:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font={"size": 16})


def timeseries_figure(panel: TimeseriesPanel):
    import plotly.graph_objects as go

    fig = go.Figure()
    everything = [v for s in panel.series for v in s.y]
    scale = _duration_scale(everything) if panel.y_axis.unit == "duration" else None
    yaxis: dict = {}
    unit = ""
    for i, series in enumerate(panel.series):
        ys, yaxis, unit = scaled(series.y, panel.y_axis, scale)
        colour = PALETTE[i % len(PALETTE)]
        x = _datetimes(series.x)
        name = series.name or panel.y_axis.label
        if panel.mode == "bar":
            fig.add_trace(go.Bar(x=x, y=ys, name=name, marker_color=colour))
            continue
        trace = {"x": x, "y": ys, "name": name, "line": {"color": colour, "width": 2}}
        if panel.mode == "point":
            trace.update(mode="markers", marker={"color": colour, "size": 6})
        else:
            trace.update(mode="lines+markers" if len(ys) < 40 else "lines", marker={"size": 4})
        if panel.mode == "area" or panel.stacked:
            trace.update(stackgroup="one" if panel.stacked else None, fill=None if panel.stacked else "tozeroy")
        fig.add_trace(go.Scatter(**trace))
    if not everything:
        _no_data(fig)
    fig.update_layout(
        **_base_layout(
            barmode="stack" if panel.stacked else "group",
            showlegend=len(panel.series) > 1,
            yaxis={"title": {"text": _with_unit(panel.y_axis.label, unit)}, "rangemode": "tozero", **yaxis},
            xaxis={"title": {"text": ""}},
        )
    )
    return fig


def bar_figure(panel: BarPanel):
    import plotly.graph_objects as go

    fig = go.Figure()
    # One scale for every series, so the axis' unit holds for all bars.
    everything = [v for s in panel.series for v in s.y]
    scale = _duration_scale(everything) if panel.value_axis.unit == "duration" else None
    _, value_axis, unit = scaled(everything, panel.value_axis, scale)
    for i, series in enumerate(panel.series):
        values = scaled(series.y, panel.value_axis, scale)[0]
        labels = [str(v) for v in series.x]
        xy = {"x": values, "y": labels} if panel.horizontal else {"x": labels, "y": values}
        fig.add_trace(
            go.Bar(
                **xy,
                name=series.name or panel.value_axis.label,
                orientation="h" if panel.horizontal else "v",
                marker_color=PALETTE[i % len(PALETTE)],
            )
        )
    value_settings = {"title": {"text": _with_unit(panel.value_axis.label, unit)}, **value_axis}
    label_settings = {"title": {"text": panel.label_axis.label}, "type": "category"}
    if panel.horizontal:  # the first row on top, in reading order
        label_settings["autorange"] = "reversed"
    fig.update_layout(
        **_base_layout(
            barmode="stack" if panel.stacked else "group",
            showlegend=len(panel.series) > 1,
            xaxis=value_settings if panel.horizontal else label_settings,
            yaxis=label_settings if panel.horizontal else value_settings,
        )
    )
    if not any(s.y for s in panel.series):
        _no_data(fig)
    return fig


def histogram_figure(panel: HistogramPanel):
    import plotly.graph_objects as go

    ends = panel.values + ([v + panel.bin_width for v in panel.values] if panel.bin_width else [])
    scale = _duration_scale(ends) if panel.value_axis.unit == "duration" else None
    values, axis, unit = scaled(panel.values, panel.value_axis, scale)
    fig = go.Figure()
    if panel.counts is None:
        fig.add_trace(go.Histogram(x=values, nbinsx=panel.max_bins, marker_color=PALETTE[0]))
    else:  # prebinned and resampled (charts.resample_bins): bars from each left edge, one bin wide
        width = scaled([panel.bin_width], panel.value_axis, scale)[0][0]
        fig.add_trace(
            go.Bar(
                x=values, y=panel.counts, width=width, offset=0, marker_color=PALETTE[0], name=panel.count_axis.label
            )
        )
    if not values:
        _no_data(fig)
    fig.update_layout(
        **_base_layout(
            showlegend=False,
            bargap=0.05,
            xaxis={"title": {"text": _with_unit(panel.value_axis.label, unit)}, **axis},
            yaxis={"title": {"text": panel.count_axis.label}},
        )
    )
    return fig


def stat_figure(panel: StatPanel):
    import plotly.graph_objects as go

    values, _, unit = scaled([panel.value], panel.axis)
    fig = go.Figure()
    if values[0] is None:
        _no_data(fig, "no value")
    else:
        suffix = {"": "", "%": "%", "B": " B"}.get(unit, f" {unit}")
        fig.add_trace(go.Indicator(mode="number", value=values[0], number={"suffix": suffix, "valueformat": ",.4~g"}))
    fig.update_layout(**_base_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10}))
    return fig


def graph_layout(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, tuple[float, float]]:
    """Node positions of a flow graph, left to right: a node's column is its distance from the
    nodes nothing calls (breadth first; nodes only on cycles start a column of their own)."""
    outgoing: dict[str, set[str]] = defaultdict(set)
    incoming: dict[str, int] = defaultdict(int)
    for s, t in set(edges):
        if s != t and t not in outgoing[s]:
            outgoing[s].add(t)
            incoming[t] += 1
    level: dict[str, int] = {}
    for start in [n for n in nodes if incoming[n] == 0] + nodes:
        if start in level:
            continue
        level[start] = 0
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for nxt in sorted(outgoing[node]):
                if nxt not in level:
                    level[nxt] = level[node] + 1
                    queue.append(nxt)
    columns: dict[int, list[str]] = defaultdict(list)
    for node in nodes:
        columns[level[node]].append(node)
    positions = {}
    for col, members in columns.items():
        for row, node in enumerate(sorted(members)):
            positions[node] = (float(col), -(row - (len(members) - 1) / 2))
    return positions


def _edge_class(value: float | None, thresholds: tuple[float, float] | None, top: float) -> str | None:
    if value is None or not math.isfinite(value):
        return None
    medium, high = thresholds if thresholds else (top / 3, 2 * top / 3)
    return "high" if value >= high else "medium" if value >= medium else "low"


def graph_figure(panel: GraphPanel):
    import plotly.graph_objects as go

    positions = graph_layout(panel.nodes, [(e.source, e.target) for e in panel.edges])
    weights = [e.weight for e in panel.edges if e.weight is not None and math.isfinite(e.weight)]
    top_weight = max(weights, default=0.0)
    colour_values = [e.colour_value for e in panel.edges if e.colour_value is not None]
    top_colour = max(colour_values, default=0.0)
    fig = go.Figure()
    mid_x, mid_y, tips = [], [], []
    for edge in panel.edges:
        (x0, y0), (x1, y1) = positions[edge.source], positions[edge.target]
        if edge.source == edge.target:
            continue
        width = 1 + 5 * (edge.weight / top_weight) if edge.weight and top_weight > 0 else 1.5
        colour = EDGE_COLOURS[_edge_class(edge.colour_value, panel.thresholds, top_colour)]
        fig.add_annotation(
            x=x1,
            y=y1,
            ax=x0,
            ay=y0,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=2,
            arrowsize=1,
            arrowwidth=width,
            arrowcolor=colour,
            opacity=0.7,
            standoff=9,
            startstandoff=9,
        )
        mid_x.append((x0 + x1) / 2)
        mid_y.append((y0 + y1) / 2)
        lines = [f"{html.escape(edge.source)} → {html.escape(edge.target)}"]
        lines += [f"{html.escape(name)}: {html.escape(text)}" for name, text in edge.hover]
        tips.append("<br>".join(lines))
    fig.add_trace(
        go.Scatter(
            x=mid_x,
            y=mid_y,
            mode="markers",
            marker={"size": 10, "opacity": 0},
            hovertext=tips,
            hoverinfo="text",
            showlegend=False,
        )
    )
    span_x = max((p[0] for p in positions.values()), default=0)
    # Labels away from the edges: left of the first column, right of the last, above the others.
    sides = {0.0: "middle left", span_x: "middle right"} if span_x else {}
    fig.add_trace(
        go.Scatter(
            x=[positions[n][0] for n in panel.nodes],
            y=[positions[n][1] for n in panel.nodes],
            mode="markers+text",
            text=panel.nodes,
            textposition=[sides.get(positions[n][0], "top center") for n in panel.nodes],
            hovertext=panel.nodes,
            hoverinfo="text",
            marker={"size": 13, "color": "#3f6fd8", "line": {"width": 2, "color": "white"}},
            showlegend=False,
        )
    )
    if not panel.nodes:
        _no_data(fig)
    hidden = {"visible": False, "showgrid": False, "zeroline": False}
    fig.update_layout(
        **_base_layout(
            xaxis={**hidden, "range": [-0.9, span_x + 0.9]},
            yaxis={**hidden},
            margin={"l": 10, "r": 10, "t": 20, "b": 10},
        )
    )
    return fig


def graph_note(panel: GraphPanel) -> str:
    """What an edge's width and colour stand for."""
    parts = [f"edge width: {panel.weight_label}"] if panel.weight_label else []
    if panel.colour_label:
        if panel.thresholds:
            show = human.duration if panel.colour_unit == "duration" else human.number
            medium, high = (show(t) for t in panel.thresholds)
            parts.append(f"colour: {panel.colour_label} (green < {medium} ≤ orange < {high} ≤ red)")
        else:
            parts.append(f"colour: {panel.colour_label} (green, orange, red: thirds of its largest value)")
    return "; ".join(parts)


FIGURES = {
    TimeseriesPanel: timeseries_figure,
    BarPanel: bar_figure,
    HistogramPanel: histogram_figure,
    StatPanel: stat_figure,
    GraphPanel: graph_figure,
}


# ---------------------------------------------------------------------------------- the page

_STYLE = """
:root { --row: %(row)dpx; }
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; background: #f3f5f9; color: #1d2433; }
header { padding: 14px 22px 6px; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header p { margin: 4px 0 0; color: #5b6478; font-size: 13px; }
main { display: grid; grid-template-columns: repeat(12, minmax(0, 1fr)); grid-auto-rows: var(--row);
       gap: 14px; padding: 12px 22px 28px; }
.panel { background: white; border-radius: 8px; box-shadow: 0 1px 3px rgba(20, 30, 60, .12);
         display: flex; flex-direction: column; min-width: 0; overflow: hidden; }
.panel h2 { margin: 0; padding: 9px 14px 3px; font-size: 14px; font-weight: 600; }
.panel .body { flex: 1; min-height: 0; position: relative; }
.panel .chart { position: absolute; inset: 0; }
.panel .note { padding: 0 14px 6px; color: #5b6478; font-size: 12px; }
.panel .body:has(pre.problem + .table) { display: flex; flex-direction: column; }
.table { overflow: auto; height: 100%%; flex: 1; }
table { border-collapse: collapse; font-size: 12px; width: 100%%; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e6e9f0; text-align: left; white-space: nowrap; }
th { position: sticky; top: 0; background: #f7f8fb; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre.problem { margin: 8px 14px; padding: 10px; background: #fff4f2; border-left: 4px solid #d64545;
              font-size: 12px; white-space: pre-wrap; overflow: auto; }
iframe.flamegraph { border: 0; width: 100%%; height: 100%%; }
"""


def _grid_style(panel: Panel) -> str:
    p = panel.position
    return f"grid-column: {p.x + 1} / span {p.w}; grid-row: {p.y + 1} / span {p.h}"


def _table_html(panel: TablePanel) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in panel.columns)
    body = []
    for row in panel.rows:
        cells = "".join(
            f'<td class="num">{html.escape(v)}</td>' if right else f"<td>{html.escape(v)}</td>"
            for v, right in zip(row, panel.right_aligned, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _panel_html(
    panel: Panel, index: int, *, id_prefix: str = "chart", include_plotlyjs: bool = False
) -> tuple[str, str]:
    """The panel's body HTML and a note under its title (``include_plotlyjs``: plotly.js inlined
    before the chart, as plotly does for an offline notebook's first figure)."""
    import plotly.io as pio

    note = ""
    if isinstance(panel, TablePanel):
        shown = len(panel.rows)
        note = f"{panel.total_rows:,} rows" + (f", first {shown:,} shown" if shown < panel.total_rows else "")
        problem = f'<pre class="problem">{html.escape(panel.problem.render())}</pre>' if panel.problem else ""
        return problem + _table_html(panel), note
    if isinstance(panel, ProblemPanel):
        return f'<pre class="problem">{html.escape(panel.message)}</pre>', ""
    if isinstance(panel, FlamegraphPanel):
        from pxq.render.flamegraph_svg import flamegraph_svg

        svg = flamegraph_svg(panel.record)
        return f'<iframe class="flamegraph" title="flamegraph" srcdoc="{html.escape(svg, quote=True)}"></iframe>', ""
    if isinstance(panel, GraphPanel):
        note = graph_note(panel)
    if isinstance(panel, TimeseriesPanel) and panel.hidden_series:
        if panel.stacked:
            note = f"the {len(panel.series) - 1} busiest series, the other {panel.hidden_series} stacked as one"
        else:
            note = f"the {len(panel.series)} busiest series shown, {panel.hidden_series} more not drawn"
    figure = FIGURES[type(panel)](panel)
    div = pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=include_plotlyjs,
        div_id=f"{id_prefix}-{index}",
        default_width="100%",
        default_height="100%",
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="chart">{div}</div>', note


def panel_sections(panels: list[Panel], *, id_prefix: str = "chart", include_plotlyjs: bool = False) -> str:
    """Each panel as a ``section.panel`` at its grid position; ``include_plotlyjs``: plotly.js once,
    with the first chart that needs it."""
    sections = []
    for index, panel in enumerate(panels):
        inline = include_plotlyjs and type(panel) in FIGURES
        body, note = _panel_html(panel, index, id_prefix=id_prefix, include_plotlyjs=inline)
        include_plotlyjs = include_plotlyjs and not inline
        note_html = f'<div class="note">{html.escape(note)}</div>' if note else ""
        sections.append(
            f'<section class="panel" style="{_grid_style(panel)}" data-kind="{type(panel).__name__}">'
            f'<h2>{html.escape(panel.title)}</h2>{note_html}<div class="body">{body}</div></section>'
        )
    return "".join(sections)


# The page's style for the grid inside a notebook output: scoped to it, not the notebook's own tables.
_NOTEBOOK_STYLE = """
.pxq-charts { display: grid; grid-template-columns: repeat(12, minmax(0, 1fr)); grid-auto-rows: %(row)dpx;
              gap: 12px; margin: 4px 0 12px; padding: 10px; background: #f3f5f9; border-radius: 8px;
              font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2433; }
.pxq-charts .panel { background: white; border-radius: 8px; box-shadow: 0 1px 3px rgba(20, 30, 60, .12);
                     display: flex; flex-direction: column; min-width: 0; overflow: hidden; }
.pxq-charts .panel h2 { margin: 0; padding: 9px 14px 3px; font-size: 14px; font-weight: 600; border: 0; }
.pxq-charts .panel .body { flex: 1; min-height: 0; position: relative; }
.pxq-charts .panel .chart { position: absolute; inset: 0; }
.pxq-charts .panel .note { padding: 0 14px 6px; color: #5b6478; font-size: 12px; }
.pxq-charts .table { overflow: auto; height: 100%%; flex: 1; }
.pxq-charts table { border-collapse: collapse; font-size: 12px; width: 100%%; }
.pxq-charts th, .pxq-charts td { padding: 4px 10px; border-bottom: 1px solid #e6e9f0; text-align: left;
                                 white-space: nowrap; }
.pxq-charts td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pxq-charts pre.problem { margin: 8px 14px; padding: 10px; background: #fff4f2; border-left: 4px solid #d64545;
                          font-size: 12px; white-space: pre-wrap; overflow: auto; }
.pxq-charts iframe.flamegraph { border: 0; width: 100%%; height: 100%%; }
"""


def notebook_html(panels: list[Panel], id_prefix: str) -> str:
    """Panels as one notebook output: the report's grid, styled for the output only, plotly.js
    inlined once (offline, as plotly's notebook renderer does); ``id_prefix`` keeps chart ids apart
    from other outputs'."""
    style = _NOTEBOOK_STYLE % {"row": ROW_PX}
    sections = panel_sections(panels, id_prefix=id_prefix, include_plotlyjs=True)
    return f'<style>{style}</style><div class="pxq-charts" id="{html.escape(id_prefix)}">{sections}</div>'


def report_html(panels: list[Panel], title: str, subtitle: str = "") -> str:
    """The whole page: plotly.js inlined, each panel at its grid position."""
    from plotly.offline import get_plotlyjs

    sections = panel_sections(panels)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        f"<style>{_STYLE % {'row': ROW_PX}}</style>"
        f"<script>{get_plotlyjs()}</script></head>\n<body><header><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(subtitle)}</p></header>\n<main>{sections}</main></body></html>\n"
    )


class HtmlWriter:
    """Every display of a run on one offline page of charts."""

    name = "html"
    needs_out = True
    out_hint = "give --out report.html (one self-contained page)"
    takes_vis = True

    def write(
        self,
        results: dict[str, pa.Table],
        out: str | None,
        *,
        console=None,
        max_rows: int | None = None,
        vis: VisSource | None = None,
        title: str = "pxq report",
    ) -> None:
        if out is None:
            raise UsageError(f"output format 'html' writes a file: {self.out_hint}")
        panels = report_panels(results, vis)
        for panel in panels:
            if isinstance(panel, ProblemPanel):
                print(f"pxq: {panel.message}", file=sys.stderr)
            elif isinstance(panel, TablePanel) and panel.problem:
                print(f"pxq: {panel.problem.render()}", file=sys.stderr)
        rows = sum(t.num_rows for t in results.values())
        made = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        subtitle = (
            f"{len(results)} display{'s' if len(results) != 1 else ''}, {rows:,} rows; times in UTC; made {made} by pxq"
        )
        page = report_html(panels, title, subtitle)
        stream, close = open_output(out)
        try:
            stream.write(page.encode("utf-8"))
        finally:
            if close:
                stream.close()
