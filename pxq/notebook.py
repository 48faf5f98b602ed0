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
"""

from __future__ import annotations

import argparse
import html
import shlex
import sys
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from pxq.errors import PxqError, UsageError

if TYPE_CHECKING:
    from pxq.api import Session

# Rows of a display formatted for the notebook (the DataFrame holds them all), as the terminal
# table's default --max-rows.
SHOWN_ROWS = 100


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
    return parser


def run_cell(line: str, cell: str) -> dict[str, pa.Table]:
    """The work of ``%%pxq``: {display name: Arrow table}. Without ``--from``, the running live
    session (:func:`live_session`) is queried instead of collecting for ``--for``."""
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
    session = live_session()
    if opts.source is None and session is not None:
        if opts.duration is not None:
            raise UsageError(
                f"%%pxq: --for has no effect while the live session runs (it keeps the last "
                f"{session.window.window_s:g}s): leave --for out, or `%pxq_session stop` first"
            )
        return session.run_tables(script, args).tables
    duration = opts.duration or DEFAULT_LIVE_DURATION
    on_progress = None
    if opts.source is None:
        from pxq.cli.progress import progress_printer
        from pxq.plan.times import parse_duration

        on_progress = progress_printer(parse_duration(duration), sys.stderr)
    return run_tables(script, args, opts.source, duration=duration, on_progress=on_progress).tables


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


def load_ipython_extension(ipython) -> None:
    def pxq(line: str, cell: str | None = None):
        try:
            tables = run_cell(line, cell or "")
        except PxqError as exc:  # show the diagnostic, not a traceback
            print(str(exc))
            return None
        # Shown by IPython as the cell's output, not display()ed here: `x = %pxq ...` then only assigns.
        return notebook_value(tables)

    def pxq_session(line: str):
        try:
            session_command(line)
        except PxqError as exc:
            print(str(exc))

    ipython.register_magic_function(pxq, magic_kind="line_cell", magic_name="pxq")
    ipython.register_magic_function(pxq_session, magic_kind="line", magic_name="pxq_session")
    import atexit

    atexit.register(stop_live_session)  # the collectors must not outlive the kernel's Python
