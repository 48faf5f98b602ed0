"""The terminal table: one rich table per display, titled with its name and row count.

Cells are formatted by semantic type (durations ``12.3 ms``, bytes ``1.2 KiB``, percent, UTC times,
HTTP status colours), long strings and JSON are cut with an ellipsis (stack traces keep their leaf
end), nulls are a dim ``null``, numbers are right-aligned. Only the rows shown are formatted: a
display longer than ``max_rows`` (default ``DEFAULT_MAX_ROWS``, never more than ``MAX_TERMINAL_ROWS``
whatever is asked: laying out millions of rows would take minutes and gigabytes) ends with a
``… N more rows`` line.
"""

from __future__ import annotations

import json as _json
import shutil
import sys
from collections.abc import Callable

import pyarrow as pa
import pyarrow.types as pat
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

from pxq.errors import UsageError
from pxq.render import human
from pxq.render.base import is_text, is_time, semantic_of, time_ns
from pxq.types import SemanticType as S

DEFAULT_MAX_ROWS = 100
# The most rows a terminal table lays out, even when asked for more; file formats write them all.
MAX_TERMINAL_ROWS = 10_000
# Width used when stdout is not a terminal (pipes, files, CI logs).
PLAIN_WIDTH = 160
# Longest text shown in a cell before it is cut with an ellipsis.
MAX_TEXT = 60
# Narrowest a text column is squeezed to when the table is wider than the console.
MIN_TEXT = 12

NULL = Text("null", style="dim")


def _status_style(code: int) -> str:
    return {2: "green", 3: "cyan", 4: "yellow", 5: "red"}.get(code // 100, "")


def _formatter(field: pa.Field) -> tuple[Callable[[object], Text | str], bool]:
    """How to show one value of ``field``, and whether the column is right-aligned."""
    t = field.type
    semantic = semantic_of(field)
    if is_time(field):
        return human.timestamp, False
    numeric = pat.is_integer(t) or pat.is_floating(t)
    if numeric and semantic is S.DURATION_NS:
        return human.duration, True
    if numeric and semantic is S.BYTES:
        return human.size, True
    if numeric and semantic is S.PERCENT:
        return human.percent, True
    if pat.is_integer(t) and semantic is S.HTTP_STATUS:
        return (lambda v: Text(str(v), style=_status_style(v))), True
    if numeric:
        return human.number, True
    if pat.is_boolean(t):
        return human.number, False
    keep_end = semantic is S.STACK_TRACE
    if is_text(t):
        return (lambda v: human.cut(human.one_line(str(v)), MAX_TEXT, keep_end=keep_end)), False
    return (lambda v: human.cut(human.one_line(_json.dumps(v, default=str)), MAX_TEXT)), False


def _values(field: pa.Field, column: pa.ChunkedArray) -> list:
    if is_time(field):
        return time_ns(column).to_pylist()
    if pat.is_dictionary(column.type):
        return column.cast(column.type.value_type).to_pylist()
    return column.to_pylist()


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def fit_widths(naturals: list[int], floors: list[int], available: int) -> list[int]:
    """Column widths that fit ``available`` cells: shrink the widest columns first, never below
    their floor. When even the floors do not fit, the floors (the table will be wider)."""
    if sum(naturals) <= available:
        return list(naturals)
    if sum(floors) >= available:
        return list(floors)
    # Largest cap such that sum(max(floor, min(natural, cap))) <= available (binary search).
    low, high = 0, max(naturals)
    while low < high:
        cap = (low + high + 1) // 2
        if sum(max(f, min(n, cap)) for n, f in zip(naturals, floors)) <= available:
            low = cap
        else:
            high = cap - 1
    widths = [max(f, min(n, low)) for n, f in zip(naturals, floors)]
    # Hand the cells left over to the columns still cut, left to right.
    spare = available - sum(widths)
    for i, natural in enumerate(naturals):
        if spare and widths[i] < natural:
            widths[i] += 1
            spare -= 1
    return widths


def title(display: str, rows: int) -> Text:
    return Text(f"{display} ({_plural(rows, 'row')})", style="bold")


def build_table(table: pa.Table, max_rows: int, width: int) -> tuple[Table, int, int]:
    """The rich table for one display's rows, at most ``width`` cells wide if it can be; its width;
    and how many rows it leaves out.

    Columns never collapse: text columns shrink (with an ellipsis) widest first, down to the
    larger of their header and ``MIN_TEXT`` characters; every other column keeps its full width.
    When that is still too wide the table is wider than ``width``.
    """
    shown = table.slice(0, max_rows)
    grid = Table(box=box.SIMPLE_HEAD, header_style="bold")
    columns, naturals, floors = [], [], []
    for field, column in zip(shown.schema, shown.columns):
        fmt, right = _formatter(field)
        cells = [NULL if v is None else fmt(v) for v in _values(field, column)]
        natural = max([cell_len(field.name), *(cell_len(c.plain if isinstance(c, Text) else c) for c in cells)])
        shrinkable = is_text(field.type) or not (right or is_time(field))
        naturals.append(natural)
        floors.append(min(natural, max(cell_len(field.name), MIN_TEXT)) if shrinkable else natural)
        grid.add_column(field.name, justify="right" if right else "left", no_wrap=True, overflow="ellipsis")
        columns.append(cells)
    # Box edges, one divider between columns, one cell of padding on each side of every column.
    overhead = 3 * len(columns) + 1
    widths = fit_widths(naturals, floors, width - overhead)
    for col, fitted in zip(grid.columns, widths):
        col.width = fitted
    for row in zip(*columns):
        grid.add_row(*row)
    return grid, sum(widths) + overhead, table.num_rows - shown.num_rows


def print_table(console: Console, grid: Table, width: int) -> None:
    """Print ``grid`` (``width`` cells wide), beyond the console's width when it must."""
    if width <= console.width:
        console.print(grid)
        return
    # console.print never renders wider than the console: render at our width, print the segments.
    segments = list(console.render(grid, console.options.update_width(width)))
    console.print(Segments(segments), crop=False, soft_wrap=True)


def _console(out: str | None) -> Console:
    if out is not None:
        try:
            handle = open(out, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None
        return Console(file=handle, width=PLAIN_WIDTH, color_system=None, highlight=False, soft_wrap=False)
    tty = sys.stdout.isatty()
    width = shutil.get_terminal_size((PLAIN_WIDTH, 24)).columns if tty else PLAIN_WIDTH
    return Console(width=width, highlight=False, soft_wrap=False)


class TableWriter:
    name = "table"
    needs_out = False

    def write(self, results, out, *, console=None, max_rows=None) -> None:
        limit = DEFAULT_MAX_ROWS if max_rows is None else max_rows
        if limit < 0:
            raise UsageError(f"max rows must be 0 or more, not {limit}")
        ceiling = limit > MAX_TERMINAL_ROWS
        limit = min(limit, MAX_TERMINAL_ROWS)
        target = console if console is not None else _console(out)
        try:
            for display, table in results.items():
                grid, width, hidden = build_table(table, limit, target.width)
                target.print(title(display, table.num_rows), crop=False, soft_wrap=True)
                print_table(target, grid, width)
                if hidden:
                    more = f"… {_plural(hidden, 'more row')}"
                    if ceiling:
                        more += (f" (the terminal table shows at most {MAX_TERMINAL_ROWS:,}; "
                                 "-o csv, json or parquet writes every row)")
                    target.print(Text(more, style="dim"))
        finally:
            if console is None and out is not None:
                target.file.close()
