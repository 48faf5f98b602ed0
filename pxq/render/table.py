"""The terminal table: one rich table per display, titled with its name and row count.

Cells are formatted by semantic type (durations ``12.3 ms``, bytes ``1.2 KiB``, percent, times
with their zone, HTTP status colours); nulls are a dim ``null``, numbers are right-aligned. Only
the rows shown are formatted: a display longer than ``max_rows`` (default ``DEFAULT_MAX_ROWS``,
never more than ``MAX_TERMINAL_ROWS`` whatever is asked: laying out millions of rows would take
minutes and gigabytes) ends with a ``… N more rows`` line.

Width. On a terminal the table fits the terminal's width (``COLUMNS`` when set, else the
terminal's size); piped to a file or another program with ``COLUMNS`` unset, nothing is cut: every
value is shown in full, however wide the table gets. To fit, columns are ranked by what a reader
needs first (``column_rank``): time, then identity (upid, pod, service, process), then the key
request fields and numbers (method, path, status, latency, sizes), addresses and ports, other
text, and last bodies, headers and other JSON. Text cells longer than ``MAX_TEXT`` are cut with an
ellipsis (a stack trace keeps its leaf end); shrinkable text columns (paths, bodies, JSON...) are
then narrowed widest first, down to a floor; values that mean nothing when cut (times, numbers,
addresses, ids, process names) are never cut. When even the floors do not fit, whole columns are
hidden, least needed first, and a footer names them.
"""

from __future__ import annotations

import datetime as dt
import json as _json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

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
from pxq.render.base import is_text, is_time, partial_line, semantic_of, time_ns
from pxq.types import SemanticType as S

DEFAULT_MAX_ROWS = 100
# The most rows a terminal table lays out, even when asked for more; file formats write them all.
MAX_TERMINAL_ROWS = 10_000
# Width of a console given no width at all (an unbounded table is printed past it, uncut).
PLAIN_WIDTH = 160
# A console width no line reaches: for rich output that must not wrap (piped, COLUMNS unset).
UNBOUNDED_WIDTH = 1_000_000
# Longest text shown in a cell of a width-bounded table before it is cut with an ellipsis.
MAX_TEXT = 60
# Narrowest a shrinkable text column is squeezed to (or its header, when longer).
MIN_TEXT = 12
# Paths are squeezed less: their first dozen characters rarely tell one endpoint from another.
MIN_KEY_TEXT = 20

NULL = Text("null", style="dim")

# Column ranks (lower is shown first, hidden last).
RANK_TIME, RANK_IDENTITY, RANK_KEY, RANK_SIZE, RANK_ADDRESS, RANK_NUMBER, RANK_TEXT, RANK_BULK = range(8)
_IDENTITY_SEMANTICS = {S.UPID, S.POD, S.SERVICE, S.NAMESPACE, S.NODE, S.CONTAINER}
_IDENTITY_NAMES = {
    "upid",
    "pod",
    "service",
    "namespace",
    "node",
    "container",
    "container_id",
    "pid",
    "tid",
    "comm",
    "process",
    "process_name",
    "cmd",
    "exe",
    "hostname",
    "host",
    # Who talked to whom: a pod, a service, `comm[pid]` or `address:port` (bundled scripts).
    "source",
    "destination",
    "src",
    "dst",
    "requestor",
    "responder",
    "client",
    "server",
}
# What a request was and how it went: method, path, status, latency, sizes.
_KEY_NAMES = {"req_method", "method", "req_path", "path", "endpoint", "resp_status", "status", "req_cmd", "query"}
_KEY_SEMANTICS = {S.HTTP_STATUS, S.DURATION_NS}
_SIZE_SEMANTICS = {S.BYTES, S.PERCENT}
# Columns a reader can do without first: message bodies, header maps and other JSON.
_BULK_MARKERS = ("body", "headers", "payload")
# Text columns whose cut prefix still tells the reader something; other text (names, ids,
# addresses) is shown whole or hidden whole.
_SHRINKABLE_SEMANTICS = {S.NONE, S.JSON, S.STACK_TRACE}
_UNCUT_NAMES = _IDENTITY_NAMES | {"req_method", "method", "remote_addr", "local_addr", "addr", "address", "ip"}


def column_rank(field: pa.Field) -> int:
    """How much a reader needs ``field`` (``RANK_*``): the fitting hides the highest rank first
    (and, within a rank, the rightmost column first)."""
    name = field.name.lower()
    semantic = semantic_of(field)
    numeric = pat.is_integer(field.type) or pat.is_floating(field.type)
    if is_time(field):
        return RANK_TIME
    if semantic in _IDENTITY_SEMANTICS or name in _IDENTITY_NAMES:
        return RANK_IDENTITY
    if name in _KEY_NAMES or (numeric and semantic in _KEY_SEMANTICS):
        return RANK_KEY
    if numeric and semantic in _SIZE_SEMANTICS:
        return RANK_SIZE  # resp_body_size too: a size is a key number, not bulk
    if semantic in (S.IP_ADDRESS, S.PORT) or name.endswith(("_addr", "_port", "_ip")):
        return RANK_ADDRESS
    if numeric or pat.is_boolean(field.type):
        return RANK_NUMBER
    if semantic is S.JSON or any(marker in name for marker in _BULK_MARKERS):
        return RANK_BULK
    return RANK_TEXT


def _shrinkable(field: pa.Field) -> bool:
    """Whether cutting this column's text with an ellipsis still leaves something meaningful."""
    name = field.name.lower()
    if is_time(field) or name in _UNCUT_NAMES or name.endswith(("_addr", "_ip", "address", "_port")):
        return False
    if is_text(field.type):
        return semantic_of(field) in _SHRINKABLE_SEMANTICS
    t = field.type
    return not (pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t))  # nested values (JSON text)


def _status_style(code: int) -> str:
    return {2: "green", 3: "cyan", 4: "yellow", 5: "red"}.get(code // 100, "")


def value_formatter(field: pa.Field, zone: dt.tzinfo | None) -> tuple[Callable[[object], str], bool]:
    """How to show one value of ``field`` as plain text, and whether the column is right-aligned."""
    t = field.type
    semantic = semantic_of(field)
    if is_time(field):
        return (lambda v: human.timestamp(v, zone)), False
    numeric = pat.is_integer(t) or pat.is_floating(t)
    if numeric and semantic is S.DURATION_NS:
        return human.duration, True
    if numeric and semantic is S.BYTES:
        return human.size, True
    if numeric and semantic is S.PERCENT:
        return human.percent, True
    if numeric or pat.is_boolean(t):
        return human.number, numeric
    if is_text(t):
        return (lambda v: human.one_line(str(v))), False
    return (lambda v: human.one_line(_json.dumps(v, default=str))), False


def column_values(field: pa.Field, column: pa.ChunkedArray) -> list:
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


@dataclass
class _Column:
    field: pa.Field
    cells: list[str | None]  # plain text, None for null
    right: bool
    rank: int
    shrinkable: bool
    natural: int  # cells wanted: header or longest cell (capped at MAX_TEXT when bounded and shrinkable)
    floor: int  # fewest cells it may be narrowed to

    @property
    def name(self) -> str:
        return self.field.name


def _column(field: pa.Field, column: pa.ChunkedArray, zone: dt.tzinfo | None, bounded: bool) -> _Column:
    fmt, right = value_formatter(field, zone)
    cells = [None if v is None else fmt(v) for v in column_values(field, column)]
    shrinkable = _shrinkable(field)
    header = cell_len(field.name)
    longest = max([cell_len("null") if None in cells else 0, *(cell_len(c) for c in cells if c is not None)], default=0)
    if bounded and shrinkable:
        longest = min(longest, MAX_TEXT)
    natural = max(header, longest)
    least = MIN_KEY_TEXT if column_rank(field) == RANK_KEY else MIN_TEXT
    floor = min(natural, max(header, least)) if shrinkable else natural
    return _Column(field, cells, right, column_rank(field), shrinkable, natural, floor)


def _overhead(n_columns: int) -> int:
    # SIMPLE_HEAD: an edge cell each side, one divider between columns, one cell of padding on
    # each side of every column.
    return 3 * n_columns + 1


def choose_columns(columns: list, width: int) -> tuple[list, list]:
    """(shown, hidden): the least needed columns (highest rank, rightmost first) are hidden until
    the floors of the rest fit ``width``; one column always stays (wider than ``width`` if it must)."""
    shown = list(columns)
    hidden = []
    while len(shown) > 1 and sum(c.floor for c in shown) + _overhead(len(shown)) > width:
        drop = max(range(len(shown)), key=lambda i: (shown[i].rank, i))
        hidden.append(shown.pop(drop))
    return shown, [c for c in columns if any(c is h for h in hidden)]


def build_table(
    table: pa.Table, max_rows: int, width: int | None, zone: dt.tzinfo | None = None
) -> tuple[Table, int, int, list[str]]:
    """The rich table for one display's rows; its width in cells; how many rows it leaves out;
    and the names of the columns it hides to fit ``width`` (None: no limit, nothing cut)."""
    shown_rows = table.slice(0, max_rows)
    bounded = width is not None
    columns = [_column(f, c, zone, bounded) for f, c in zip(shown_rows.schema, shown_rows.columns)]
    hidden: list = []
    if bounded and columns:
        columns, hidden = choose_columns(columns, width)
        widths = fit_widths([c.natural for c in columns], [c.floor for c in columns], width - _overhead(len(columns)))
    else:
        widths = [c.natural for c in columns]
    grid = Table(box=box.SIMPLE_HEAD, header_style="bold")
    styled = []
    for col, fitted in zip(columns, widths):
        keep_end = semantic_of(col.field) is S.STACK_TRACE
        header = col.name if cell_len(col.name) <= fitted else human.cut(col.name, fitted)
        grid.add_column(
            header, justify="right" if col.right else "left", no_wrap=True, overflow="ellipsis", width=fitted
        )
        status = semantic_of(col.field) is S.HTTP_STATUS and pat.is_integer(col.field.type)
        styled.append(
            [
                NULL
                if c is None
                else Text(human.cut(c, fitted, keep_end=keep_end), style=_status_style(int(c)) if status else "")
                for c in col.cells
            ]
        )
    for row in zip(*styled):
        grid.add_row(*row)
    return grid, sum(widths) + _overhead(len(columns)), table.num_rows - shown_rows.num_rows, [c.name for c in hidden]


def hidden_note(hidden: list[str]) -> str:
    """The footer under a table that hid columns to fit the terminal."""
    count = f"{len(hidden)} column{'' if len(hidden) == 1 else 's'}"
    return f"pxq: {count} hidden ({', '.join(hidden)}): widen the terminal or use -o json"


def print_table(console: Console, grid: Table, width: int) -> None:
    """Print ``grid`` (``width`` cells wide), beyond the console's width when it must."""
    if width <= console.width:
        console.print(grid)
        return
    # console.print never renders wider than the console: render at our width, print the segments.
    segments = list(console.render(grid, console.options.update_width(width)))
    console.print(Segments(segments), crop=False, soft_wrap=True)


def _columns_env() -> int | None:
    """``COLUMNS`` as a width, when it is set to a positive number."""
    try:
        value = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def terminal_width(stream=None) -> int | None:
    """The width a table on ``stream`` (stdout) must fit: ``COLUMNS`` when set, else the
    terminal's width; None (no limit) when the stream is not a terminal and ``COLUMNS`` is unset."""
    stream = sys.stdout if stream is None else stream
    configured = _columns_env()
    if configured is not None:
        return configured
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return None
    try:
        return os.get_terminal_size(stream.fileno()).columns or shutil.get_terminal_size().columns
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size().columns


def _console(out: str | None) -> tuple[Console, int | None]:
    """The console to print on and the width tables must fit (None: no limit)."""
    if out is not None:
        try:
            handle = open(out, "w", encoding="utf-8")  # noqa: SIM115 (the console writes to it until exit)
        except OSError as exc:
            raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None
        return Console(file=handle, width=PLAIN_WIDTH, color_system=None, highlight=False, soft_wrap=False), None
    width = terminal_width()
    return Console(width=width or PLAIN_WIDTH, highlight=False, soft_wrap=False), width


class TableWriter:
    name = "table"
    needs_out = False
    # render() passes the zone times are shown in (None: the local zone).
    shows_times = True

    def write(self, results, out, *, console=None, max_rows=None, zone: dt.tzinfo | None = None) -> None:
        limit = DEFAULT_MAX_ROWS if max_rows is None else max_rows
        if limit < 0:
            raise UsageError(f"max rows must be 0 or more, not {limit}")
        ceiling = limit > MAX_TERMINAL_ROWS
        limit = min(limit, MAX_TERMINAL_ROWS)
        if console is not None:
            target, width = console, console.width
        else:
            target, width = _console(out)
        try:
            for display, table in results.items():
                grid, grid_width, hidden_rows, hidden_columns = build_table(table, limit, width, zone)
                target.print(title(display, table.num_rows), crop=False, soft_wrap=True)
                if (partial := partial_line(table)) is not None:
                    target.print(Text(partial, style="bold yellow"), crop=False, soft_wrap=True)
                print_table(target, grid, grid_width)
                if hidden_rows:
                    more = f"… {_plural(hidden_rows, 'more row')}"
                    if ceiling:
                        more += (
                            f" (the terminal table shows at most {MAX_TERMINAL_ROWS:,}; "
                            "-o csv, json or parquet writes every row)"
                        )
                    target.print(Text(more, style="dim"), crop=False, soft_wrap=True)
                if hidden_columns:
                    target.print(Text(hidden_note(hidden_columns), style="dim"), crop=False, soft_wrap=True)
        finally:
            if console is None and out is not None:
                target.file.close()
