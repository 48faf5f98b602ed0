"""Render query results: ``render(results, fmt, out)`` with one ``Writer`` per output format.

``results`` maps display name → Arrow table. Columns may carry pxq types in their field metadata
(``pxq.types.FIELD_TYPE_KEY`` / ``FIELD_SEMANTIC_KEY``); without them values are formatted by
their Arrow type. New formats register a ``Writer`` in ``WRITERS`` (one module each).

Stack formats (folded, svg, icicle, speedscope, pprof) turn each display into the neutral
``pxq.render.stacks.StackSamples`` record first; each writer reads only that record.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import TYPE_CHECKING

from pxq.errors import UsageError

if TYPE_CHECKING:
    import pyarrow as pa

    from pxq.render.base import Writer

# format -> (module, class), in the order `pxq run -o` lists them. A writer's module is imported
# when its format is first used: `-o json` need not load the stack formats (whose module-level
# pyarrow scalars import pandas through pyarrow's pandas shim, half a second), rich, or the HTML
# report's charts. tests/render check that each class's ``name`` is its key here.
_WRITER_CLASSES: dict[str, tuple[str, str]] = {
    "table": ("pxq.render.table", "TableWriter"),
    "json": ("pxq.render.json", "JsonWriter"),
    "csv": ("pxq.render.csv", "CsvWriter"),
    "parquet": ("pxq.render.parquet", "ParquetWriter"),
    "folded": ("pxq.render.folded", "FoldedWriter"),
    "svg": ("pxq.render.flamegraph_svg", "SvgWriter"),
    "icicle": ("pxq.render.flamegraph_svg", "IcicleWriter"),
    "speedscope": ("pxq.render.speedscope", "SpeedscopeWriter"),
    "pprof": ("pxq.render.pprof", "PprofWriter"),
    "html": ("pxq.render.html", "HtmlWriter"),
}


class _Writers(Mapping[str, "Writer"]):
    """format -> its Writer, each imported and made on first use (see ``_WRITER_CLASSES``)."""

    def __init__(self) -> None:
        self._made: dict[str, Writer] = {}

    def __getitem__(self, fmt: str) -> Writer:
        writer = self._made.get(fmt)
        if writer is None:
            module, cls = _WRITER_CLASSES[fmt]  # KeyError for an unknown format, as a dict
            writer = self._made[fmt] = getattr(import_module(module), cls)()
        return writer

    def __iter__(self) -> Iterator[str]:
        return iter(_WRITER_CLASSES)

    def __len__(self) -> int:
        return len(_WRITER_CLASSES)


WRITERS: Mapping[str, Writer] = _Writers()
FORMATS: tuple[str, ...] = tuple(_WRITER_CLASSES)


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
    if fmt not in WRITERS:
        raise UsageError(f"unknown output format {fmt!r}; choose one of: {', '.join(WRITERS)}")
    writer = WRITERS[fmt]
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


def __getattr__(name: str) -> object:
    """``pxq.render.Writer`` on use: importing pxq.render for FORMATS (``pxq --help``) loads no pyarrow."""
    if name == "Writer":
        from pxq.render.base import Writer

        return Writer
    raise AttributeError(f"module 'pxq.render' has no attribute {name!r}")


__all__ = ["FORMATS", "WRITERS", "Writer", "render", "written_lines"]
