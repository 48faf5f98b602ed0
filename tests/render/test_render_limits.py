"""Millions of rows: the terminal table lays out at most its row limit (and never more than
MAX_TERMINAL_ROWS) and says how many it left out; file formats still write every row."""

from __future__ import annotations

import csv
import io
import time
import tracemalloc

import numpy as np
import pyarrow as pa
from rich.console import Console

from pxq.render import render
from pxq.render.table import DEFAULT_MAX_ROWS, MAX_TERMINAL_ROWS

ROWS = 3_000_000


def big_table(n: int = ROWS) -> pa.Table:
    numbers = np.arange(n, dtype=np.int64)
    return pa.table({"i": numbers, "path": pa.array(np.char.add("/api/items/", numbers.astype(str)))})


def rendered(results, **kw) -> str:
    console = Console(width=120, file=io.StringIO(), record=True, color_system=None)
    render(results, "table", console=console, **kw)
    return console.export_text()


def test_millions_of_rows_show_the_first_hundred_and_a_count_of_the_rest():
    table = big_table()
    tracemalloc.start()
    started = time.perf_counter()
    text = rendered({"big": table})
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    lines = text.splitlines()
    assert lines[0] == f"big ({ROWS:,} rows)"
    assert lines[-1] == f"… {ROWS - DEFAULT_MAX_ROWS:,} more rows"
    assert "/api/items/99 " in text and "/api/items/100 " not in text
    # Only the rows shown are formatted: a few MB of Python objects and well under a second or
    # two, not the gigabytes and minutes laying out 3,000,000 rows would take.
    assert peak < 50 << 20
    assert elapsed < 10


def test_asking_for_millions_of_terminal_rows_stops_at_the_ceiling():
    n = MAX_TERMINAL_ROWS + 5
    text = rendered({"big": big_table(n)}, max_rows=10**9)
    assert f"/api/items/{MAX_TERMINAL_ROWS - 1} " in text and f"/api/items/{MAX_TERMINAL_ROWS} " not in text
    assert text.splitlines()[-1] == (
        f"… 5 more rows (the terminal table shows at most {MAX_TERMINAL_ROWS:,}; "
        "-o csv, json or parquet writes every row)"
    )


def test_file_formats_write_every_row(tmp_path):
    n = 200_000
    render({"big": big_table(n)}, "csv", str(tmp_path / "out"))
    (written,) = list((tmp_path / "out").iterdir()) if (tmp_path / "out").is_dir() else [tmp_path / "out"]
    with open(written, newline="") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == n + 1 and rows[-1] == [str(n - 1), f"/api/items/{n - 1}"]
