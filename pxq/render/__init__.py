"""Render query results: ``render(results, fmt, out)`` with one ``Writer`` per output format.

``results`` maps display name → Arrow table. Columns may carry pxq types in their field metadata
(``pxq.types.FIELD_TYPE_KEY`` / ``FIELD_SEMANTIC_KEY``); without them values are formatted by
their Arrow type. New formats register a ``Writer`` in ``WRITERS`` (one module each).

Stack formats (folded, svg, icicle, speedscope, pprof) turn each display into the neutral
``pxq.render.stacks.StackSamples`` record first; each writer reads only that record.
"""

from __future__ import annotations

import pyarrow as pa

from pxq.errors import UsageError
from pxq.render.base import Writer
from pxq.render.csv import CsvWriter
from pxq.render.flamegraph_svg import IcicleWriter, SvgWriter
from pxq.render.folded import FoldedWriter
from pxq.render.html import HtmlWriter
from pxq.render.json import JsonWriter
from pxq.render.parquet import ParquetWriter
from pxq.render.pprof import PprofWriter
from pxq.render.speedscope import SpeedscopeWriter
from pxq.render.table import TableWriter

WRITERS: dict[str, Writer] = {
    w.name: w
    for w in (
        TableWriter(),
        JsonWriter(),
        CsvWriter(),
        ParquetWriter(),
        FoldedWriter(),
        SvgWriter(),
        IcicleWriter(),
        SpeedscopeWriter(),
        PprofWriter(),
        HtmlWriter(),
    )
}
FORMATS: tuple[str, ...] = tuple(WRITERS)


def render(
    results: dict[str, pa.Table],
    fmt: str,
    out: str | None = None,
    *,
    console=None,
    max_rows: int | None = None,
    zone=None,
    vis=None,
    title: str | None = None,
) -> dict[str, str]:
    """Write ``results`` in format ``fmt`` to stdout (or ``console``) or to ``out``.

    ``max_rows`` caps the rows shown by the terminal table; file formats always write every row.
    ``zone`` (a ``datetime.tzinfo``; None: the local zone) is the zone the terminal table shows
    times in; machine formats (CSV, JSON, Parquet) always hold UTC. ``vis`` (a
    ``pxq.render.charts.VisSource``) lays out the HTML report; ``title`` heads it.

    Returns display → the file it was written to (empty when writing to stdout or ``console``).
    """
    writer = WRITERS.get(fmt)
    if writer is None:
        raise UsageError(f"unknown output format {fmt!r}; choose one of: {', '.join(WRITERS)}")
    if writer.needs_out and out is None:
        hint = getattr(writer, "out_hint", "give an output directory")
        raise UsageError(f"output format {fmt!r} writes files: {hint}")
    extra = {"zone": zone} if getattr(writer, "shows_times", False) else {}
    if getattr(writer, "takes_vis", False):
        extra.update(vis=vis, title=title or "pxq report")
    paths = writer.write(results, None if out is None else str(out), console=console, max_rows=max_rows, **extra)
    if out is None:
        return {}
    # Writers that put every display in the one file ``out`` return nothing.
    return {display: str(path) for display, path in (paths or dict.fromkeys(results, out)).items()}


def written_lines(results: dict[str, pa.Table], paths: dict[str, str]) -> list[str]:
    """``pxq: wrote FILE: DISPLAY N rows, ...`` per file written, worded like ``pxq capture``'s line."""
    by_file: dict[str, list[str]] = {}
    for display, path in paths.items():
        by_file.setdefault(path, []).append(f"{display} {results[display].num_rows:,} rows")
    return [f"pxq: wrote {path}: {', '.join(parts)}" for path, parts in by_file.items()]


__all__ = ["FORMATS", "WRITERS", "Writer", "render", "written_lines"]
