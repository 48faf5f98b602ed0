"""Read a capture directory written by ``write_capture`` (or by anything else that follows the format).

Damaged files are errors, never different values: page checksums are verified where the file has
them (captures written before they were added still read), and when ``capture.json`` records a
table's ``time_`` range every time read must lie in it. Either failure names the file, the row
group and the column.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pyarrow.types as pat

from pxq.errors import DataError
from pxq.replay.columns import compatible, describe_incompatible, to_catalog_type
from pxq.replay.meta import META_FILE, TIME_RANGE_KEY, MetaProblem, first_line, normalize_meta, normalize_process
from pxq.replay.writer import PARQUET_SUFFIX
from pxq.tables import CATALOG, TableSchema

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
TIME_COLUMN = "time_"
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class _TableFile:
    path: Path
    schema: pa.Schema  # physical (as stored)
    # [smallest, largest] time_ in ns as capture.json records it; None when it does not.
    time_range: list[int] | None = None
    # A node agent's spill directory holds a table as many files (path is then their folder).
    paths: list[Path] | None = None


@dataclass
class Capture:
    """An opened capture directory. Every file's footer and column types were checked on open."""

    directory: Path
    host: str
    start_time_ns: int
    end_time_ns: int
    processes: dict[str, dict]
    drops: dict[str, dict[str, int]]
    meta: dict
    unknown_files: list[str] = field(default_factory=list)
    _files: dict[str, _TableFile] = field(default_factory=dict, repr=False)

    # The executor may ask scan() for dictionary-encoded strings (see scan).
    supports_dictionary_strings = True

    def table_names(self) -> list[str]:
        """The catalog tables this capture holds, in catalog order."""
        return [name for name in CATALOG if name in self._files]

    def has_table(self, name: str) -> bool:
        return name in self._files

    def scan(
        self,
        table: str,
        columns: Sequence[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        filter: ds.Expression | None = None,
        filter_columns: Sequence[str] = (),
        dictionary_strings: bool = False,
    ) -> pa.Table:
        """Rows with ``start_ns <= time_ < end_ns`` (either bound optional) of ``columns`` (None = all).

        ``filter`` (an Arrow expression over catalog-typed ``filter_columns``, which need not be
        among ``columns``) keeps only the rows where it is true; it runs inside the Parquet scan
        when the file stores those columns with the catalog's types, after the casts otherwise.

        ``dictionary_strings`` keeps string columns dictionary-encoded as Parquet stores them
        (one dictionary for the whole table): much cheaper to read, filter and group by; the
        executor decodes them where a function needs the values.

        The result has exactly the catalog's Arrow types for the requested columns, in the
        requested order; columns the file lacks are nulls; a table the capture lacks is empty.
        The time window is pushed into the Parquet scan (row groups outside it are skipped).
        """
        schema = CATALOG.get(table)
        if schema is None:
            raise DataError(f"no table named {table!r} in the catalog")
        names = list(schema.column_names if columns is None else columns)
        missing = [n for n in names if schema.column(n) is None]
        if missing:
            raise DataError(f"table {table!r} has no column {', '.join(repr(n) for n in missing)}")
        out_schema = schema.arrow_schema(tuple(names))
        entry = self._files.get(table)
        if entry is None:
            return out_schema.empty_table()
        if filter is not None:
            unknown = [n for n in filter_columns if schema.column(n) is None]
            if unknown:
                raise DataError(f"table {table!r} has no column {', '.join(repr(n) for n in unknown)}")
            native = all(
                n in entry.schema.names and entry.schema.field(n).type == schema.column(n).arrow_type
                for n in filter_columns
            )
            if not native:  # filter after the stored columns were cast to the catalog's types
                extra = [n for n in filter_columns if n not in names]
                wide = _scan_file(
                    entry,
                    schema,
                    names + extra,
                    schema.arrow_schema(tuple(names + extra)),
                    start_ns,
                    end_ns,
                    None,
                    dictionary_strings,
                )
                return wide.filter(filter).select(names)
        return _scan_file(entry, schema, names, out_schema, start_ns, end_ns, filter, dictionary_strings)


# Verify the CRC of every page that has one (pages written without a checksum are read as before).
_VERIFY_PAGES = ds.ParquetFragmentScanOptions(page_checksum_verification=True)


def _outside_filter(time_type: pa.DataType, low_ns: int, high_ns: int) -> ds.Expression:
    """Rows whose stored time_ lies outside [low_ns, high_ns]. In a coarser unit u (``t_ns = t_u * k``):
    ``t_ns < low`` iff ``t_u < ceil(low/k)`` and ``t_ns > high`` iff ``t_u > floor(high/k)``."""
    k = _UNIT_NS[time_type.unit] if pat.is_timestamp(time_type) else 1
    stored = time_type if pat.is_timestamp(time_type) else pa.int64()
    low = pa.scalar(max(_ceil_div(low_ns, k), INT64_MIN), type=pa.int64()).cast(stored)
    high = pa.scalar(min(high_ns // k, INT64_MAX), type=pa.int64()).cast(stored)
    time_field = ds.field(TIME_COLUMN)
    return (time_field < low) | (time_field > high)


def _check_times(entry: _TableFile, times: pa.ChunkedArray) -> None:
    """Every time read lies in the range capture.json records for the table, else the file is damaged."""
    low, high = entry.time_range
    ns = times.cast(pa.timestamp("ns")).cast(pa.int64()) if pat.is_timestamp(times.type) else times.cast(pa.int64())
    bounds = pc.min_max(ns)
    if bounds["min"].as_py() is None or (low <= bounds["min"].as_py() and bounds["max"].as_py() <= high):
        return
    raise DataError(
        _locate_bad_time(entry.path, low, high)
        or f"{entry.path}: damaged file: column {TIME_COLUMN!r} holds times outside the range "
        f"capture.json records ({low}..{high} ns)"
    )


def _locate_bad_time(path: Path, low: int, high: int) -> str | None:
    """Which row group holds the first time outside [low, high], said as a one-line error."""
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
        for group in range(parquet.metadata.num_row_groups):
            column = parquet.read_row_group(group, columns=[TIME_COLUMN]).column(TIME_COLUMN)
            ns = column.cast(pa.timestamp("ns")).cast(pa.int64()) if pat.is_timestamp(column.type) else column
            bad = pc.or_(pc.less(ns, low), pc.greater(ns, high))
            index = pc.index(bad, True).as_py()
            if index >= 0:
                value = ns[index].as_py()
                return (
                    f"{path}: damaged file: row group {group}, column {TIME_COLUMN!r}, row {index}: time "
                    f"{value} ns is outside the range capture.json records for the table ({low}..{high} ns)"
                )
    except (pa.ArrowException, OSError):
        return None
    return None


def _locate_damage(path: Path, columns: list[str]) -> str | None:
    """After a failed read: the first row group and column that cannot be read with page checksums
    verified, said as a one-line error (None when each reads alone: the failure was elsewhere)."""
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
        groups = parquet.metadata.num_row_groups
    except (pa.ArrowException, OSError):
        return None
    for group in range(groups):
        for column in columns:
            try:
                parquet.read_row_group(group, columns=[column])
            except (pa.ArrowException, OSError) as exc:
                reason = first_line(exc)
                if "CRC" in reason or "checksum" in reason:
                    reason = "page checksum mismatch (the data on disk is not what was written)"
                return f"{path}: damaged file: row group {group}, column {column!r}: {reason}"
    return None


def _window_filter(time_type: pa.DataType, start_ns: int | None, end_ns: int | None) -> ds.Expression | None:
    """start_ns <= time_ < end_ns expressed in the stored type of time_, exactly.

    For a coarser unit u (``t_ns = t_u * k``): ``t_ns >= s`` iff ``t_u >= ceil(s/k)`` and
    ``t_ns < e`` iff ``t_u < ceil(e/k)``.
    """
    if pat.is_timestamp(time_type):
        k = _UNIT_NS[time_type.unit]
    else:
        k, time_type = 1, pa.int64()
    # Bounds come as Python ints and may lie outside int64 (a caller's arithmetic): they are
    # clamped to it, so that they never overflow and rows whose time_ is null stay out.
    expr = None
    time_field = ds.field(TIME_COLUMN)
    if start_ns is not None:
        lower = _ceil_div(start_ns, k)
        if lower > INT64_MAX:
            return ds.scalar(False)
        expr = time_field >= pa.scalar(max(lower, INT64_MIN), type=pa.int64()).cast(time_type)
    if end_ns is not None:
        upper_value = _ceil_div(end_ns, k)
        if upper_value <= INT64_MIN:
            return ds.scalar(False)
        if upper_value <= INT64_MAX:
            upper = time_field < pa.scalar(upper_value, type=pa.int64()).cast(time_type)
        else:  # every time is below it
            upper = time_field.is_valid()
        expr = upper if expr is None else expr & upper
    return expr


def _scan_file(
    entry: _TableFile,
    schema: TableSchema,
    names: list[str],
    out_schema: pa.Schema,
    start_ns: int | None,
    end_ns: int | None,
    row_filter: ds.Expression | None = None,
    dictionary_strings: bool = False,
) -> pa.Table:
    stored = entry.schema
    windowed = start_ns is not None or end_ns is not None
    if windowed and (TIME_COLUMN not in stored.names or pat.is_null(stored.field(TIME_COLUMN).type)):
        # Every row's time_ is null, so no row is inside any window.
        return out_schema.empty_table()
    present = [n for n in dict.fromkeys(names) if n in stored.names]
    time_type = stored.field(TIME_COLUMN).type if TIME_COLUMN in stored.names else None
    flt = _window_filter(time_type, start_ns, end_ns) if windowed else None
    if row_filter is not None:
        flt = row_filter if flt is None else flt & row_filter
    # Times outside the recorded range are read whatever the window and filter, so that they are
    # seen (and said) rather than silently left out; row groups whose statistics lie inside the
    # range and outside the window are still skipped.
    # (Times that neither reach the result nor decide which rows do are not read just to check them.)
    checked = (
        entry.time_range is not None
        and time_type is not None
        and not pat.is_null(time_type)
        and (TIME_COLUMN in present or flt is not None)
    )
    if checked:
        outside = _outside_filter(time_type, *entry.time_range)
        flt = None if flt is None else flt | outside
    read_columns = present + ([TIME_COLUMN] if checked and TIME_COLUMN not in present else [])
    try:
        keep_dictionary = []
        read_options = None
        if dictionary_strings:
            keep_dictionary = [
                n
                for n in present
                if schema.column(n).arrow_type == pa.string()
                and (pat.is_string(stored.field(n).type) or pat.is_large_string(stored.field(n).type))
            ]
            if keep_dictionary:
                read_options = ds.ParquetReadOptions(dictionary_columns=keep_dictionary)
        file_format = ds.ParquetFileFormat(read_options=read_options, default_fragment_scan_options=_VERIFY_PAGES)
        dataset = ds.dataset([str(p) for p in entry.paths] if entry.paths else entry.path, format=file_format)
        data = dataset.to_table(columns=read_columns, filter=flt)
        if keep_dictionary:
            data = data.unify_dictionaries()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            _locate_damage(entry.path, read_columns) or f"{entry.path}: cannot read Parquet data: {first_line(exc)}"
        ) from None
    if checked:
        _check_times(entry, data.column(TIME_COLUMN))
        data = data.select(present)
    arrays = []
    for name in names:
        col = schema.column(name)
        if name not in stored.names:
            arrays.append(pa.nulls(data.num_rows, col.arrow_type))
            continue
        if name in keep_dictionary:
            arrays.append(data.column(name))
            continue
        try:
            arrays.append(to_catalog_type(data.column(name), col.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"{entry.path}: column {name!r}: {first_line(exc)}") from None
    if not names:
        return data  # no columns, but the right number of rows
    if keep_dictionary:
        return pa.Table.from_arrays(arrays, names=names)
    return pa.Table.from_arrays(arrays, schema=out_schema)


def _read_meta(root: Path) -> dict:
    path = root / META_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: missing: not a pxq capture directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {first_line(exc)}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        meta = normalize_meta(raw)
    except MetaProblem as exc:
        raise DataError(f"{path}: {exc}") from None
    listed = meta.get("tables")
    if listed is not None and not (isinstance(listed, list) and all(isinstance(t, str) for t in listed)):
        raise DataError(f"{path}: 'tables' must be a list of table names")
    return meta


def _open_table_file(path: Path, table: TableSchema) -> _TableFile:
    try:
        stored = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: corrupt or truncated Parquet file: {first_line(exc)}") from None
    for col in table.columns:
        if col.name in stored.names:
            if stored.get_field_index(col.name) < 0:
                raise DataError(f"{path}: column {col.name!r} appears more than once")
            actual = stored.field(col.name).type
            if not compatible(col.type, actual):
                raise DataError(f"{path}: column {col.name!r} {describe_incompatible(col.type, actual)}")
    return _TableFile(path=path, schema=stored)


def open_capture(directory: str | os.PathLike) -> Capture:
    """Open and check a capture directory; every problem is a one-line ``DataError``."""
    root = Path(directory)
    if not root.exists():
        raise DataError(f"{root}: no such capture directory")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (a capture is a directory of Parquet files)")
    if not (root / META_FILE).exists() and (root / SPILL_META).exists():
        return _open_spill(root)
    meta = _read_meta(root)
    files: dict[str, _TableFile] = {}
    unknown: list[str] = []
    try:
        entries = sorted(p for p in root.iterdir() if p.is_file())
    except OSError as exc:
        raise DataError(f"{root}: cannot list: {exc.strerror or exc}") from None
    for path in entries:
        if path.name == META_FILE:
            continue
        name = path.name[: -len(PARQUET_SUFFIX)] if path.name.endswith(PARQUET_SUFFIX) else None
        table = CATALOG.get(name) if name else None
        if table is None:
            unknown.append(path.name)
            continue
        files[table.name] = _open_table_file(path, table)
        files[table.name].time_range = meta[TIME_RANGE_KEY].get(table.name)
    for name in meta.get("tables") or ():
        if name in CATALOG and name not in files:
            raise DataError(f"{root / (name + PARQUET_SUFFIX)}: missing (capture.json lists table {name!r})")
    return Capture(
        directory=root,
        host=meta["host"],
        start_time_ns=meta["start_time_ns"],
        end_time_ns=meta["end_time_ns"],
        processes=meta["processes"],
        drops=meta["drops"],
        meta=meta,
        unknown_files=unknown,
        _files=files,
    )


# A node agent's spill directory (pxq/agent/spill.py documents the layout).
SPILL_META = "spill.json"


def _open_spill(root: Path) -> Capture:
    """A spill directory as a capture: each table's window files together, the time range from
    the oldest window's start to the newest row, processes and host from spill.json."""
    path = root / SPILL_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("top level must be an object")
        processes = {upid: normalize_process(upid, e) for upid, e in dict(meta.get("processes") or {}).items()}
        host = str(meta.get("host", ""))
    except (OSError, ValueError, MetaProblem) as exc:
        raise DataError(f"{path}: not a readable pxq spill description: {first_line(exc)}") from None
    files: dict[str, _TableFile] = {}
    start_ns: int | None = None
    end_ns: int | None = None
    for name, table in CATALOG.items():
        folder = root / name
        # Sorted by name: by window, then by flush; hidden temporary files are never matched.
        paths = (
            sorted(p for p in folder.glob("*" + PARQUET_SUFFIX) if not p.name.startswith("."))
            if folder.is_dir()
            else []
        )
        if not paths:
            continue
        first = _open_table_file(paths[0], table)
        for other in paths[1:]:
            if _open_table_file(other, table).schema != first.schema:
                raise DataError(f"{other}: its columns differ from {paths[0].name}'s (not written by one pxq)")
        files[name] = _TableFile(path=folder, schema=first.schema, paths=paths)
        try:
            oldest = _stamp_ns(paths[0].name)
            newest_stamp = paths[-1].name.split("Z-")[0]
            newest = [p for p in paths if p.name.startswith(newest_stamp)]
            times = ds.dataset([str(p) for p in newest], format="parquet").to_table(columns=[TIME_COLUMN])
            latest = pc.max(times.column(TIME_COLUMN).cast(pa.int64())).as_py()
        except (ValueError, pa.ArrowException, OSError) as exc:
            raise DataError(f"{folder}: cannot read the spilled windows: {first_line(exc)}") from None
        start_ns = oldest if start_ns is None else min(start_ns, oldest)
        if latest is not None:
            end_ns = latest if end_ns is None else max(end_ns, latest)
    if start_ns is None:
        raise DataError(f"{root}: a pxq spill directory with no table files yet (the agent writes them every flush)")
    end_ns = max(end_ns if end_ns is not None else start_ns, start_ns)
    return Capture(
        directory=root,
        host=host,
        start_time_ns=start_ns,
        end_time_ns=end_ns,
        processes=processes,
        drops={},
        meta={"host": host, "processes": processes, "spill": True},
        _files=files,
    )


def _stamp_ns(name: str) -> int:
    """The window start a spill file's name says (``yyyymmddThhmmssZ-<seq>.parquet``)."""
    from datetime import UTC, datetime

    stamp = name.split("Z-")[0]
    return int(datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp()) * 1_000_000_000
