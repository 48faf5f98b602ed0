"""Jupyter/IPython integration: ``%load_ext pxq``, then a ``%%pxq`` cell runs PxL.

    %%pxq --from capture/ -- --num_head=20
    import px
    df = px.DataFrame(table='http_events', start_time='-5m')
    px.display(df[df.resp_status >= 500], 'errors')

A bundled script or file runs as a line magic: ``%pxq --from capture/ --script http_data``.
Without ``--from`` the cell collects live (as root) for ``--for`` (default 10s), as ``pxq.run``
and ``pxq run`` do without a source; unless a live session runs: then it queries the session's
rolling window at once (:mod:`pxq.agent.live_window`)::

    %pxq_session start --for-window 5m --tables http_events,stack_traces.beta [--pid PID]
    %pxq_session            (what it collects, and since when)
    %pxq_session stop

An error in a cell (a syntax error, an unknown table or column) is printed as the positioned
diagnostic, counting lines as the cell shows them (the ``%%pxq`` line is line 1); the session
and the other cells go on.

The cell's value is the pandas DataFrame of its only display, or a dict of them by name. Shown as
the cell's output (once: ``x = %pxq ...`` only assigns), each display has its name and row count as
a heading and its first rows formatted like the terminal table (``12.3 ms``, ``1.2 KiB``, times);
a stack table (a ``stack_trace`` and a count column) is shown as an interactive flamegraph.

Charts come above the tables, drawn with plotly (plotly.js inlined once per output, so the notebook
works offline): a script whose folder has a vis.json shows its widgets laid out as ``pxq run -o html``
does (the tables below it, folded); any other display gets the charts its columns suggest (a time
series per metric for a time column, top bars for a label and a metric, a flow graph). ``--no-charts``
on the magic leaves them out for a cell, ``pxq.notebook.CHARTS = False`` for every cell (then
``--charts`` asks for them). ``pxq.chart(frame, kind=...)`` draws one chart of a DataFrame by hand.
"""

from __future__ import annotations

import argparse
import html
import shlex
import sys
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from pxq.errors import PxqError, UsageError

if TYPE_CHECKING:
    from pxq.api import Session

# Rows of a display formatted for the notebook (the DataFrame holds them all), as the terminal
# table's default --max-rows.
SHOWN_ROWS = 100

# Whether cells draw charts above their tables unless the magic says --charts or --no-charts.
CHARTS = True


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # a usage error is said as one line, not argparse's exit
        raise UsageError(f"{self.prog}: {message}")


def _session_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%pxq_session", add_help=False)
    parser.add_argument("action", nargs="?", choices=("start", "stop", "status"), default="status")
    parser.add_argument("--for-window", dest="window", default="5m", help="how much to keep, e.g. 5m, 90s")
    parser.add_argument("--tables", default="http_events", help="tables to collect, comma-separated")
    parser.add_argument("--pid", type=int, action="append", help="collect only these processes (repeatable)")
    return parser


# The live session of this Python process (a kernel has one shell; two sessions would run every
# probe twice): set by %pxq_session, queried by %%pxq cells without --from.
_live_session: Session | None = None


def live_session() -> Session | None:
    """The running ``%pxq_session``, if any."""
    return _live_session if _live_session is not None and _live_session.running else None


def session_command(line: str) -> None:
    """The work of ``%pxq_session``; what happened is said on stdout."""
    global _live_session
    _live_session = _session_command(line, _live_session)


def stop_live_session() -> None:
    if _live_session is not None:
        _live_session.stop()


def _session_command(line: str, session: Session | None) -> Session | None:
    from pxq.api import Session

    opts = _session_parser().parse_args(shlex.split(line))
    if opts.action == "start":
        if session is not None and session.running:
            raise UsageError(f"a live session runs already ({', '.join(session.tables)}): `%pxq_session stop` it first")
        tables = [t.strip() for t in opts.tables.split(",") if t.strip()]
        session = Session(tables, window=opts.window, pids=opts.pid).start()
        print(f"pxq: live session collecting {', '.join(session.tables)}, keeping the last {opts.window}")
        return session
    if session is None or not session.running:
        print("pxq: no live session runs (start one with `%pxq_session start`)")
        return None
    if opts.action == "stop":
        session.stop()
        print("pxq: live session stopped")
        return None
    held = session.window.snapshot()
    seconds = ((held.end_time_ns or 0) - (held.start_time_ns or 0)) / 1e9
    rows = ", ".join(f"{t} {held.rows(t):,} rows" for t in session.tables)
    print(f"pxq: live session: {rows} over the last {seconds:.1f}s (keeps {session.window.window_s:g}s)")
    return session


def _parser() -> argparse.ArgumentParser:
    from pxq.api import DEFAULT_LIVE_DURATION

    parser = _Parser(prog="%%pxq", add_help=False)
    parser.add_argument("--from", dest="source", help="capture directory to replay (default: collect live, as root)")
    parser.add_argument(
        "--for",
        dest="duration",
        default=None,
        help=f"live capture window without --from, e.g. 10s, 1.5s, 2m (default {DEFAULT_LIVE_DURATION})",
    )
    parser.add_argument("--script", help="run this bundled script or file instead of the cell")
    parser.add_argument(
        "--charts", action=argparse.BooleanOptionalAction, default=None, help="draw charts above the tables"
    )
    return parser


def run_cell(line: str, cell: str) -> dict[str, pa.Table]:
    """The work of ``%%pxq``: {display name: Arrow table}. Without ``--from``, the running live
    session (:func:`live_session`) is queried instead of collecting for ``--for``."""
    return run_cell_charted(line, cell)[0]


def run_cell_charted(line: str, cell: str) -> tuple[dict[str, pa.Table], Any, bool]:
    """:func:`run_cell`, with the script's vis.json (a ``pxq.render.charts.VisSource``, or None)
    and whether the cell asks for charts (``--charts``/``--no-charts``, else :data:`CHARTS`)."""
    from pxq.api import DEFAULT_LIVE_DURATION, run_tables
    from pxq.cli.main import parse_script_args
    from pxq.library import Script, load_script

    words = shlex.split(line)
    own, script_words = (words[: words.index("--")], words[words.index("--") + 1 :]) if "--" in words else (words, [])
    opts = _parser().parse_args(own)
    args, _ = parse_script_args(script_words)
    if opts.script is None and not cell.strip():
        raise UsageError("%pxq needs --script NAME (a bundled script or file), or use %%pxq with PxL in the cell")
    # A blank first line stands for the %%pxq line: diagnostics then give the lines the cell shows.
    script = load_script(opts.script) if opts.script else Script("cell", "\n" + cell, "<cell>")
    charts = CHARTS if opts.charts is None else opts.charts
    vis = None
    if charts and script.vis:  # widgets calling undefined functions become messages; the rest still run
        from pxq.render.charts import checked_script

        script, vis = checked_script(script)
    session = live_session()
    if opts.source is None and session is not None:
        if opts.duration is not None:
            raise UsageError(
                f"%%pxq: --for has no effect while the live session runs (it keeps the last "
                f"{session.window.window_s:g}s): leave --for out, or `%pxq_session stop` first"
            )
        return session.run_tables(script, args).tables, vis, charts
    duration = opts.duration or DEFAULT_LIVE_DURATION
    on_progress = None
    if opts.source is None:
        from pxq.cli.progress import progress_printer
        from pxq.plan.times import parse_duration

        on_progress = progress_printer(parse_duration(duration), sys.stderr)
    tables = run_tables(script, args, opts.source, duration=duration, on_progress=on_progress).tables
    return tables, vis, charts


class _Shown:
    """How one display looks in the notebook, and the rows it was made from (to tell when the
    frame has been changed since, and no longer matches it). ``charts``: HTML drawn above the table;
    ``folded``: the table under a fold (a vis.json's charts, above, show the display already)."""

    def __init__(self, name: str, table: pa.Table, frame: pd.DataFrame, charts: str = "", folded: bool = False):
        from pxq.render.flamegraph_svg import notebook_flamegraph

        self.name = name
        self.rows = table.num_rows
        self.head = frame.head(SHOWN_ROWS).copy()
        self.table = table  # with its semantic types (units), for pxq.chart
        self.flamegraph = notebook_flamegraph(table, name)
        self.cells = None if self.flamegraph is not None else _terminal_cells(table.slice(0, SHOWN_ROWS))
        self.charts = charts
        self.folded = folded

    def heading(self) -> str:
        return f"{self.name} ({self.rows:,} row{'' if self.rows == 1 else 's'})"

    def more(self) -> str:
        hidden = self.rows - min(self.rows, SHOWN_ROWS)
        return f"… {hidden:,} more row{'' if hidden == 1 else 's'} (all are in the DataFrame)" if hidden else ""

    def table_html(self) -> str:
        body = self.flamegraph._repr_html_() if self.flamegraph is not None else self.cells.to_html(index=False)
        more = f"<p><em>{html.escape(self.more())}</em></p>" if self.more() else ""
        return f"<h4>{html.escape(self.heading())}</h4>\n{body}\n{more}"

    def html(self) -> str:
        table = _folded(self.table_html()) if self.folded else self.table_html()
        return self.charts + table

    def text(self) -> str:
        body = "(flamegraph)" if self.cells is None else self.cells.to_string(index=False)
        return "\n".join(part for part in (self.heading(), body, self.more()) if part)


def _folded(tables_html: str) -> str:
    return f"<details><summary>tables</summary>\n{tables_html}\n</details>"


def _charts_html(panels: list) -> str:
    """Panels as one notebook output (empty without panels), chart ids unique in the notebook."""
    if not panels:
        return ""
    import uuid

    from pxq.render.html import notebook_html

    return notebook_html(panels, f"pxq-{uuid.uuid4().hex[:12]}")


def _default_charts(name: str, table: pa.Table) -> str:
    """The charts ``pxq run -o html`` draws for a display without a vis.json, less its table and
    flamegraph (the notebook shows those itself)."""
    from pxq.render.charts import FlamegraphPanel, TablePanel, default_panels

    panels = default_panels({name: table})
    return _charts_html([p for p in panels if not isinstance(p, (TablePanel, FlamegraphPanel))])


def _terminal_cells(table: pa.Table) -> pd.DataFrame:
    """``table``'s values as the terminal table writes them (units by semantic type), as text."""
    from pxq.render.table import NULL, column_values, value_formatter

    columns = {}
    for field, column in zip(table.schema, table.columns):
        fmt, _ = value_formatter(field, None)  # None: the local zone, as the terminal shows by default
        cells = [NULL if v is None else fmt(v) for v in column_values(field, column)]
        columns[field.name] = [getattr(c, "plain", c) for c in cells]  # rich Text (status colours) as plain text
    return pd.DataFrame(columns, columns=table.column_names, dtype=object)


class DisplayFrame(pd.DataFrame):
    """A display's rows: a pandas DataFrame that Jupyter shows like the terminal table (see the
    module doc). Frames computed from it (``x.head()``, ``x[...]``) are plain DataFrames; once it is
    changed in place it is shown as one too, since its units may no longer hold."""

    _metadata = ["_pxq_shown"]

    def _pxq_current(self) -> _Shown | None:
        shown = getattr(self, "_pxq_shown", None)
        if shown is None or len(self) != shown.rows or not self.head(SHOWN_ROWS).equals(shown.head):
            return None
        return shown

    def _repr_mimebundle_(self, include=None, exclude=None):
        shown = self._pxq_current()
        if shown is None:
            return {"text/plain": pd.DataFrame.__repr__(self), "text/html": pd.DataFrame._repr_html_(self)}
        return {"text/plain": shown.text(), "text/html": shown.html()}


class Displays(dict):
    """{display name: DisplayFrame}, shown as each display in turn (below the vis.json's charts,
    folded, when the script has one)."""

    charts = ""  # the vis.json's charts of every display

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundles = [frame._repr_mimebundle_() for frame in self.values()]
        tables = "\n".join(b["text/html"] for b in bundles)
        return {
            "text/plain": "\n\n".join(b["text/plain"] for b in bundles),
            "text/html": self.charts + _folded(tables) if self.charts else tables,
        }

    def _repr_pretty_(self, printer, cycle):  # IPython's text for dicts would win over the bundle's
        printer.text(self._repr_mimebundle_()["text/plain"])


def notebook_value(tables: dict[str, pa.Table], vis=None, charts: bool = False) -> DisplayFrame | Displays:
    """The cell's value: the only display's frame, or all of them by name; with ``charts``, shown
    below the vis.json's charts (``vis``: a ``pxq.render.charts.VisSource``) or each display's
    default charts."""
    frames = Displays()
    grid = ""
    if charts and vis is not None:
        from pxq.render.charts import report_panels

        grid = _charts_html(report_panels(tables, vis))
    for name, table in tables.items():
        frame = DisplayFrame(table.to_pandas())
        own = _default_charts(name, table) if charts and vis is None else ""
        frame._pxq_shown = _Shown(name, table, frame, own, folded=bool(grid) and len(tables) == 1)
        frames[name] = frame
    if len(frames) == 1:
        only = next(iter(frames.values()))
        only._pxq_shown.charts = only._pxq_shown.charts or grid
        return only
    frames.charts = grid
    return frames


def _stack_table(frame) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pd.DataFrame):
        return pa.Table.from_pandas(frame, preserve_index=False)
    raise UsageError(f"a differential flamegraph compares two stack tables, not {type(frame).__name__}")


def function_of(frame_name: str) -> str:
    """The function a flamegraph frame belongs to: a Python frame ``f (file.py:12)`` without its
    line (the line moves within a function from sample to sample), any other frame as it is."""
    from pxq.render.stacks import python_frame

    parts = python_frame(frame_name)
    return frame_name if parts is None else f"{parts[0]} ({parts[1]})"


class DifferentialFlamegraph:
    """Two stack tables compared: shown in a notebook as the interactive differential flamegraph
    (frames sized by ``after``, red where their share of samples grew, blue where it shrank);
    :attr:`changes` is the same comparison per function, biggest growth first."""

    def __init__(self, before, after, title: str = "") -> None:
        from pxq.render.flamegraph_svg import diff_flamegraph_svg
        from pxq.render.stacks import StackSamples

        before_table, after_table = _stack_table(before), _stack_table(after)
        # Merged (no per-process roots): the two sides are usually different processes (pids).
        self.svg = diff_flamegraph_svg(
            StackSamples.from_table(before_table, group_by=(), title=title),
            StackSamples.from_table(after_table, group_by=(), title=title),
            title=title or None,
        )
        self.changes = _function_changes(before_table, after_table)

    def __repr__(self) -> str:  # the text form (a console, nbconvert to text)
        top = self.changes.iloc[0] if len(self.changes) else None
        grew = "" if top is None else f"; grew most: {top.function} ({top.change_points:+.1f} points)"
        return f"differential flamegraph ({len(self.changes):,} functions{grew})"

    def _repr_html_(self) -> str:
        import re

        height = int(re.search(r'height="(\d+)"', self.svg).group(1)) + 8
        return (
            f'<iframe srcdoc="{html.escape(self.svg, quote=True)}" width="100%" height="{height}" '
            'style="border:0" title="differential flamegraph"></iframe>'
        )


def _function_changes(before: pa.Table, after: pa.Table) -> pd.DataFrame:
    """Per function: the share of samples whose stack passes through it (once per stack, however
    often it recurs) before and after, and the change in percentage points, largest first."""
    from pxq.render.stacks import count_column, stack_column

    shares = []
    for table in (before, after):
        stacks, counts = stack_column(table), count_column(table, exclude=(stack_column(table) or "",))
        frame = table.select([stacks, counts]).to_pandas()
        total = frame[counts].sum()
        per_function: dict[str, int] = {}
        for stack, count in zip(frame[stacks], frame[counts]):
            for function in {function_of(name) for name in (stack or "").split(";") if name}:
                per_function[function] = per_function.get(function, 0) + int(count)
        shares.append(pd.Series(per_function, dtype="float64") * (100.0 / total if total else 0.0))
    changes = pd.DataFrame({"before_percent": shares[0], "after_percent": shares[1]}).fillna(0.0)
    changes["change_points"] = changes.after_percent - changes.before_percent
    changes = changes.sort_values("change_points", ascending=False, kind="stable")
    return changes.rename_axis("function").reset_index()


def differential_flamegraph(before, after, title: str = "") -> DifferentialFlamegraph:
    """``before`` and ``after`` (stack tables: DataFrames from ``%%pxq`` cells or Arrow tables)
    as a differential flamegraph, with the per-function changes in ``.changes``."""
    return DifferentialFlamegraph(before, after, title)


CHART_KINDS = ("timeseries", "bar", "stat", "graph", "flamegraph")


class ChartError(UsageError):
    """A chart that cannot be drawn from the data given (shown in a notebook as its message alone)."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return str(self).splitlines()


class Chart:
    """One chart of a display, as ``pxq.chart`` makes it: shown in a notebook like a panel of
    ``pxq run -o html``; :attr:`figure` is the plotly figure (None for a flamegraph)."""

    def __init__(self, panel) -> None:
        from pxq.render.html import FIGURES

        self.panel = panel
        figure = FIGURES.get(type(panel))
        self.figure = figure(panel) if figure is not None else None

    @property
    def title(self) -> str:
        return self.panel.title

    def __repr__(self) -> str:
        series = getattr(self.panel, "series", None)
        count = "" if series is None else f", {len(series)} series"
        return f"{type(self.panel).__name__.removesuffix('Panel').lower()} chart: {self.title}{count}"

    def _repr_html_(self) -> str:
        return _charts_html([self.panel])


def _chart_table(data) -> tuple[pa.Table, str]:
    """The Arrow table to chart and its name: a %%pxq display keeps its units (durations, bytes)."""
    if isinstance(data, Displays):
        names = ", ".join(repr(n) for n in data)
        raise ChartError(f"pxq.chart: the cell made several displays ({names}); chart one of them, e.g. x[name]")
    if isinstance(data, pa.Table):
        return data, "chart"
    if isinstance(data, DisplayFrame) and (shown := data._pxq_current()) is not None:
        return shown.table, shown.name
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False), "chart"
    raise ChartError(f"pxq.chart draws a DataFrame or an Arrow table, not {type(data).__name__}")


def _named(table: pa.Table, role: str, name) -> str:
    from pxq.errors import closest

    if not isinstance(name, str):
        raise ChartError(f"pxq.chart: {role}= must be a column name, got {name!r:.60}")
    if name not in table.column_names:
        near = closest(name, table.column_names)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ChartError(
            f"pxq.chart: {role}={name!r} is not a column of the display\n"
            f"hint: {hint}columns: {', '.join(table.column_names)}"
        )
    return name


def chart(data, kind: str = "timeseries", x=None, y=None, by=None, title: str | None = None) -> Chart:
    """One chart of a display (a DataFrame from a ``%%pxq`` cell, any DataFrame, or an Arrow table).

    ``kind``: ``"timeseries"`` (``x`` the time column, default the display's; ``y`` a column or a
    list, default every metric; ``by`` the column naming the series), ``"bar"`` (``x`` the labels,
    ``y`` the value, ``by`` a column grouping the bars), ``"stat"`` (``y``'s latest value),
    ``"graph"`` (edges from column ``x`` to column ``y``, as wide as the first metric) or
    ``"flamegraph"`` (a stack table; ``x`` the stack column, ``y`` the count column). A chart that
    cannot be drawn raises :class:`ChartError` saying why, and which columns there are."""
    from pxq.render import charts as c

    table, name = _chart_table(data)
    if kind not in CHART_KINDS:
        raise ChartError(f"pxq.chart: kind={kind!r} is not a chart pxq draws; kinds: {', '.join(CHART_KINDS)}")
    for role, column in (("x", x), ("by", by)):
        if column is not None:
            _named(table, role, column)
    values = [y] if isinstance(y, str) or y is None else list(y)
    values = [_named(table, "y", v) for v in values if v is not None]
    if by is not None and kind in ("stat", "graph", "flamegraph"):
        raise ChartError(f"pxq.chart: by= has no meaning for a {kind} chart (it splits time series and bars)")
    metrics = c.metric_columns(table)
    columns = ", ".join(table.column_names)
    position = c.Position(0, 0, c.GRID_COLUMNS, 6 if kind == "flamegraph" else 2 if kind == "stat" else 4)
    label = title or name
    try:
        if kind == "timeseries":
            if x is not None:
                times = [f.name for f in table.schema if c.is_time(f)]
                if x not in times:
                    raise ChartError(
                        f"pxq.chart: x={x!r} is not a time column, and a time series needs one\n"
                        f"hint: time columns: {', '.join(times) or 'none'}; columns: {columns}"
                    )
                # The time column time_series_panel finds: x, with the display's other times left out.
                table = table.drop_columns([t for t in times if t != x])
            elif c.time_column(table) is None:
                raise ChartError(
                    f"pxq.chart: a time series needs a time column, and {name!r} has none\n"
                    f"hint: columns: {columns}; a bar chart (kind='bar') shows a value per label"
                )
            entries = [{"value": v, "series": by} for v in (values or metrics)]
            if not entries:
                raise ChartError(f"pxq.chart: {name!r} has no numeric column to plot\nhint: columns: {columns}")
            return Chart(c.timeseries_panel(table, {"timeseries": entries}, label, position))
        if kind == "bar":
            texts = [f.name for f in table.schema if c.is_text(f.type)]
            label_column = x or (texts[0] if texts else None)
            value = values[0] if values else (metrics[0] if metrics else None)
            if label_column is None or value is None:
                raise ChartError(
                    "pxq.chart: a bar chart needs a label column (x=) and a value column (y=)\n"
                    f"hint: columns: {columns}"
                )
            spec = {"bar": {"label": label_column, "value": value, "groupBy": by}}
            return Chart(c.bar_panel(table, spec, label, position))
        if kind == "stat":
            value = values[0] if values else (metrics[0] if metrics else None)
            spec = {"stat": {"value": value}}
            return Chart(c.stat_panel(table, spec, label, position))
        if kind == "graph":
            ends = (x, values[0] if values else None)
            if None in ends:
                found = next((pair for pair in c.GRAPH_ENDS if set(pair) <= set(table.column_names)), None)
                if found is None:
                    raise ChartError(
                        f"pxq.chart: a graph needs the column its edges start from (x=) and end at (y=)\n"
                        f"hint: columns: {columns}"
                    )
                ends = found
            spec = {"adjacencyList": {"fromColumn": ends[0], "toColumn": ends[1]}}
            weights = [m for m in metrics if m not in ends]
            if weights:
                spec["edgeWeightColumn"] = weights[0]
                spec["edgeHoverInfo"] = weights
            return Chart(c.graph_panel(table, spec, label, position))
        spec = {"stacktraceColumn": x, "countColumn": values[0] if values else None}
        return Chart(c.flamegraph_panel(table, spec, label, position))
    except c.WidgetProblem as problem:
        hint = f"\nhint: {problem.hint}" if problem.hint else ""
        raise ChartError(f"pxq.chart: {kind}: {problem.message}{hint}") from None


def load_ipython_extension(ipython) -> None:
    def pxq(line: str, cell: str | None = None):
        try:
            tables, vis, charts = run_cell_charted(line, cell or "")
            # Shown by IPython as the cell's output, not display()ed here: `x = %pxq ...` then only assigns.
            return notebook_value(tables, vis, charts)
        except PxqError as exc:  # show the diagnostic, not a traceback
            print(str(exc))
            return None

    def pxq_session(line: str):
        try:
            session_command(line)
        except PxqError as exc:
            print(str(exc))

    ipython.register_magic_function(pxq, magic_kind="line_cell", magic_name="pxq")
    ipython.register_magic_function(pxq_session, magic_kind="line", magic_name="pxq_session")
    import atexit

    atexit.register(stop_live_session)  # the collectors must not outlive the kernel's Python
