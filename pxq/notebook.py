"""Jupyter/IPython integration: ``%load_ext pxq``, then a ``%%pxq`` cell runs PxL.

    %%pxq --from capture/ -- --num_head=20
    import px
    df = px.DataFrame(table='http_events', start_time='-5m')
    px.display(df[df.resp_status >= 500], 'errors')

A bundled script or file runs as a line magic: ``%pxq --from capture/ --script http_data``.
Without ``--from`` the cell collects live (as root) for ``--for`` (default 10s), as ``pxq.run``
and ``pxq run`` do without a source.

The cell's value is the pandas DataFrame of its only display, or a dict of them by name. Shown as
the cell's output (once: ``x = %pxq ...`` only assigns), each display has its name and row count as
a heading and its first rows formatted like the terminal table (``12.3 ms``, ``1.2 KiB``, times);
a stack table (a ``stack_trace`` and a count column) is shown as an interactive flamegraph.
"""

from __future__ import annotations

import argparse
import html
import shlex
import sys

import pandas as pd
import pyarrow as pa

from pxq.errors import PxqError, UsageError

# Rows of a display formatted for the notebook (the DataFrame holds them all), as the terminal
# table's default --max-rows.
SHOWN_ROWS = 100


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # a usage error is said as one line, not argparse's exit
        raise UsageError(f"%%pxq: {message}")


def _parser() -> argparse.ArgumentParser:
    from pxq.api import DEFAULT_LIVE_DURATION

    parser = _Parser(prog="%%pxq", add_help=False)
    parser.add_argument("--from", dest="source", help="capture directory to replay (default: collect live, as root)")
    parser.add_argument(
        "--for",
        dest="duration",
        default=DEFAULT_LIVE_DURATION,
        help="live capture window without --from, e.g. 10s, 1.5s, 2m",
    )
    parser.add_argument("--script", help="run this bundled script or file instead of the cell")
    return parser


def run_cell(line: str, cell: str) -> dict[str, pa.Table]:
    """The work of ``%%pxq``: {display name: Arrow table}."""
    from pxq.api import run_tables
    from pxq.cli.main import parse_script_args
    from pxq.library import Script, load_script

    words = shlex.split(line)
    own, script_words = (words[: words.index("--")], words[words.index("--") + 1 :]) if "--" in words else (words, [])
    opts = _parser().parse_args(own)
    args, _ = parse_script_args(script_words)
    on_progress = None
    if opts.source is None:
        from pxq.cli.progress import progress_printer
        from pxq.plan.times import parse_duration

        on_progress = progress_printer(parse_duration(opts.duration), sys.stderr)
    if opts.script is None and not cell.strip():
        raise UsageError("%pxq needs --script NAME (a bundled script or file), or use %%pxq with PxL in the cell")
    script = load_script(opts.script) if opts.script else Script("cell", cell, "<cell>")
    return run_tables(script, args, opts.source, duration=opts.duration, on_progress=on_progress).tables


class _Shown:
    """How one display looks in the notebook, and the rows it was made from (to tell when the
    frame has been changed since, and no longer matches it)."""

    def __init__(self, name: str, table: pa.Table, frame: pd.DataFrame):
        from pxq.render.flamegraph_svg import notebook_flamegraph

        self.name = name
        self.rows = table.num_rows
        self.head = frame.head(SHOWN_ROWS).copy()
        self.flamegraph = notebook_flamegraph(table, name)
        self.cells = None if self.flamegraph is not None else _terminal_cells(table.slice(0, SHOWN_ROWS))

    def heading(self) -> str:
        return f"{self.name} ({self.rows:,} row{'' if self.rows == 1 else 's'})"

    def more(self) -> str:
        hidden = self.rows - min(self.rows, SHOWN_ROWS)
        return f"… {hidden:,} more row{'' if hidden == 1 else 's'} (all are in the DataFrame)" if hidden else ""

    def html(self) -> str:
        body = self.flamegraph._repr_html_() if self.flamegraph is not None else self.cells.to_html(index=False)
        more = f"<p><em>{html.escape(self.more())}</em></p>" if self.more() else ""
        return f"<h4>{html.escape(self.heading())}</h4>\n{body}\n{more}"

    def text(self) -> str:
        body = "(flamegraph)" if self.cells is None else self.cells.to_string(index=False)
        return "\n".join(part for part in (self.heading(), body, self.more()) if part)


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
    """{display name: DisplayFrame}, shown as each display in turn."""

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundles = [frame._repr_mimebundle_() for frame in self.values()]
        return {
            "text/plain": "\n\n".join(b["text/plain"] for b in bundles),
            "text/html": "\n".join(b["text/html"] for b in bundles),
        }

    def _repr_pretty_(self, printer, cycle):  # IPython's text for dicts would win over the bundle's
        printer.text(self._repr_mimebundle_()["text/plain"])


def notebook_value(tables: dict[str, pa.Table]) -> DisplayFrame | Displays:
    """The cell's value: the only display's frame, or all of them by name."""
    frames = Displays()
    for name, table in tables.items():
        frame = DisplayFrame(table.to_pandas())
        frame._pxq_shown = _Shown(name, table, frame)
        frames[name] = frame
    return next(iter(frames.values())) if len(frames) == 1 else frames


def load_ipython_extension(ipython) -> None:
    def pxq(line: str, cell: str | None = None):
        try:
            tables = run_cell(line, cell or "")
        except PxqError as exc:  # show the diagnostic, not a traceback
            print(str(exc))
            return None
        # Shown by IPython as the cell's output, not display()ed here: `x = %pxq ...` then only assigns.
        return notebook_value(tables)

    ipython.register_magic_function(pxq, magic_kind="line_cell", magic_name="pxq")
