"""What every output format shares: the ``Writer`` protocol, reading pxq's types back from Arrow
field metadata, per-display output file names, and vectorized column conversions."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from pxq.errors import UsageError
from pxq.types import FIELD_SEMANTIC_KEY, FIELD_TYPE_KEY, DataType, SemanticType

# A partial result (a query over many agents some of which did not answer, pxq.broker.fleet)
# carries the missing agents in its tables' schema metadata: JSON [{"agent": .., "reason": ..}].
PARTIAL_KEY = b"pxq.partial"


def missing_agents(table: pa.Table) -> list[dict[str, str]]:
    """The agents a partial result lacks (empty for a whole result)."""
    import json

    raw = (table.schema.metadata or {}).get(PARTIAL_KEY)
    return json.loads(raw) if raw else []


def partial_line(table: pa.Table) -> str | None:
    missing = missing_agents(table)
    if not missing:
        return None
    names = ", ".join(f"{m['agent']} ({m['reason']})" for m in missing)
    return f"PARTIAL result: without agent{'s' if len(missing) > 1 else ''} {names}"


# Conversions run over batches of this many rows, so memory stays bounded on big results.
BATCH_ROWS = 64 * 1024


class Writer(Protocol):
    """One output format. ``results`` maps display name → table, in display order."""

    name: str
    # True when the format writes files and cannot go to stdout.
    needs_out: bool

    def write(
        self, results: dict[str, pa.Table], out: str | None, *, console=None, max_rows: int | None = None
    ) -> None: ...


def semantic_of(field: pa.Field) -> SemanticType:
    """The field's pxq semantic type from its metadata; NONE when absent or unknown."""
    raw = (field.metadata or {}).get(FIELD_SEMANTIC_KEY)
    try:
        return SemanticType(raw.decode()) if raw else SemanticType.NONE
    except (ValueError, UnicodeDecodeError):
        return SemanticType.NONE


def data_type_of(field: pa.Field) -> DataType | None:
    """The field's pxq data type from its metadata; None when absent or unknown."""
    raw = (field.metadata or {}).get(FIELD_TYPE_KEY)
    try:
        return DataType(raw.decode()) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


def is_text(t: pa.DataType) -> bool:
    """String-like Arrow types, including dictionary-encoded strings."""
    if pat.is_dictionary(t):
        return is_text(t.value_type)
    return pat.is_string(t) or pat.is_large_string(t) or pat.is_string_view(t)


def is_time(field: pa.Field) -> bool:
    """Timestamps, and integers marked TIME/TIME64NS (nanoseconds since the epoch)."""
    if pat.is_timestamp(field.type):
        return True
    marked = semantic_of(field) is SemanticType.TIME or data_type_of(field) is DataType.TIME64NS
    return marked and pat.is_integer(field.type)


def time_ns(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A time column (timestamp of any unit or integer ns) as int64 nanoseconds since the epoch (UTC)."""
    if pat.is_timestamp(column.type):
        factor = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[column.type.unit]
        ints = column.cast(pa.int64())
        return ints if factor == 1 else pc.multiply(ints, factor)
    return column.cast(pa.int64())


def rfc3339(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A time column as RFC 3339 UTC strings with nanosecond precision: 2025-11-26T04:31:02.123456789Z."""
    # Arrow's timestamp[ns] → string cast ("2025-11-26 04:31:02.123456789") is ~20x faster than strftime.
    text = time_ns(column).cast(pa.timestamp("ns")).cast(pa.string())
    return pc.binary_join_element_wise(pc.replace_substring(text, " ", "T"), "Z", "")


def batches(table: pa.Table) -> Iterator[pa.RecordBatch]:
    yield from table.to_batches(max_chunksize=BATCH_ROWS)


_UNSAFE = re.compile(r"[\x00-\x1f/\\:*?\"<>|]+")


def output_paths(results: dict[str, pa.Table], out: str | None, extension: str, fmt: str) -> dict[str, Path]:
    """``<out>/<display>.<extension>`` per display; ``out`` is created, unsafe characters replaced.

    Two displays whose cleaned names collide get ``-2``, ``-3``... suffixes.
    """
    if out is None:
        raise UsageError(f"output format {fmt!r} writes one .{extension} file per display: give an output directory")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root}: exists and is not a directory (output format {fmt!r} writes one file per display)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{root}: cannot create output directory: {exc.strerror or exc}") from None
    paths: dict[str, Path] = {}
    used: set[str] = set()
    for display in results:
        stem = _UNSAFE.sub("_", display).strip(" .") or "output"
        candidate, n = stem, 1
        while candidate.lower() in used:
            n += 1
            candidate = f"{stem}-{n}"
        used.add(candidate.lower())
        paths[display] = root / f"{candidate}.{extension}"
    return paths


class _TextSink:
    """Binary writes onto a text stream that has no ``.buffer`` (e.g. a notebook's stdout)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, data: bytes) -> int:
        self._stream.write(bytes(data).decode("utf-8"))
        return len(data)

    def flush(self) -> None:
        self._stream.flush()


def open_output(out: str | os.PathLike | None) -> tuple[BinaryIO, bool]:
    """A binary stream for ``out`` (a file path) or stdout, and whether the caller must close it."""
    if out is None:
        sys.stdout.flush()
        buffer = getattr(sys.stdout, "buffer", None)
        return (buffer if buffer is not None else _TextSink(sys.stdout)), False
    try:
        return open(out, "wb"), True
    except OSError as exc:
        raise UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None
