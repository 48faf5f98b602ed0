"""Write a capture directory: ``<table>.parquet`` per catalog table plus ``capture.json``.

Every data page carries a CRC-32 checksum (Parquet's ``crc`` page header field), which the reader
verifies, and ``capture.json`` records each table's smallest and largest ``time_``
(``time_range_ns``), which the reader checks the times it reads against: a file damaged on disk
is then an error, never silently different values.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pxq.errors import DataError
from pxq.replay.columns import compatible, describe_incompatible, to_catalog_type
from pxq.replay.meta import META_FILE, TIME_RANGE_KEY, MetaProblem, first_line, normalize_meta
from pxq.tables import CATALOG, TableSchema
from pxq.types import FIELD_SEMANTIC_KEY, FIELD_TYPE_KEY

PARQUET_SUFFIX = ".parquet"
# Small enough row groups that a time-window scan can skip most of a long capture.
ROW_GROUP_ROWS = 128 * 1024


def file_schema(table: TableSchema) -> pa.Schema:
    """The Arrow schema a capture file is written with: the catalog's, with pxq type metadata."""
    return pa.schema(
        [
            pa.field(
                c.name,
                c.arrow_type,
                metadata={FIELD_TYPE_KEY: c.type.value.encode(), FIELD_SEMANTIC_KEY: c.semantic.value.encode()},
            )
            for c in table.columns
        ]
    )


def conform(name: str, data: pa.Table) -> pa.Table:
    """``data`` cast to table ``name``'s full catalog schema (absent columns become nulls)."""
    table = CATALOG.get(name)
    if table is None:
        raise DataError(f"cannot write table {name!r}: not in the catalog")
    if not isinstance(data, pa.Table):
        raise DataError(f"cannot write table {name!r}: expected a pyarrow.Table, got {type(data).__name__}")
    unknown = [c for c in data.column_names if table.column(c) is None]
    if unknown:
        raise DataError(f"cannot write table {name!r}: columns not in the catalog: {', '.join(unknown)}")
    if len(set(data.column_names)) != len(data.column_names):
        raise DataError(f"cannot write table {name!r}: a column appears twice")
    arrays = []
    for col in table.columns:
        if col.name not in data.column_names:
            arrays.append(pa.nulls(data.num_rows, col.arrow_type))
            continue
        column = data.column(col.name)
        if not compatible(col.type, column.type):
            raise DataError(f"cannot write {name}.{col.name}: {describe_incompatible(col.type, column.type)}")
        try:
            arrays.append(to_catalog_type(column, col.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"cannot write {name}.{col.name}: {first_line(exc)}") from None
    return pa.Table.from_arrays(arrays, schema=file_schema(table))


def time_range(data: pa.Table) -> list[int] | None:
    """[smallest, largest] ``time_`` of a conformed table as ns since the epoch; None when it has
    no non-null time."""
    if "time_" not in data.column_names:
        return None
    bounds = pc.min_max(data.column("time_").cast(pa.int64()))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return None if low is None else [low, high]


def write_table_file(data: pa.Table, path) -> None:
    """One capture table as Parquet, every page with its checksum."""
    pq.write_table(data, path, compression="zstd", row_group_size=ROW_GROUP_ROWS, write_page_checksum=True)


def _replace_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_capture(
    directory: str | os.PathLike,
    tables: dict[str, pa.Table],
    *,
    host: str,
    start_time_ns: int,
    end_time_ns: int,
    processes: dict[str, dict],
    drops: dict[str, dict[str, int]] | None = None,
) -> None:
    """Write ``tables`` (catalog name → Arrow table) and the capture metadata into ``directory``.

    Everything is validated before anything is written. Each file goes to a temporary name and is
    renamed into place; ``capture.json`` is written last, so a reader never sees it describing
    files that are not there yet. Catalog table files of an earlier capture in the same directory
    that this capture does not contain are removed.
    """
    meta = {
        "host": host,
        "start_time_ns": start_time_ns,
        "end_time_ns": end_time_ns,
        "processes": processes,
        "drops": drops,
    }
    try:
        meta = normalize_meta(meta)
    except MetaProblem as exc:
        raise DataError(f"cannot write capture metadata: {exc}") from None
    meta["tables"] = sorted(tables)
    conformed = {name: conform(name, data) for name, data in tables.items()}
    ranges = {name: time_range(data) for name, data in conformed.items()}
    meta[TIME_RANGE_KEY] = {name: bounds for name, bounds in ranges.items() if bounds is not None}

    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for name, data in conformed.items():
            _replace_atomically(
                root / f"{name}{PARQUET_SUFFIX}",
                lambda tmp, data=data: write_table_file(data, tmp),
            )
        for name in CATALOG:
            stale = root / f"{name}{PARQUET_SUFFIX}"
            if name not in conformed and stale.exists():
                stale.unlink()
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        _replace_atomically(root / META_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{exc.filename or root}: cannot write capture: {exc.strerror or exc}") from None
