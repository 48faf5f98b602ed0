"""CSV: one file per display, ``<out>/<display>.csv``, header row first (pyarrow's CSV writer).

Without ``out`` the CSV goes to stdout, plain (no comment lines, so any CSV reader takes it). A
script with several displays writes them one after the other, each with its header row and
separated by an empty line; stderr names them in that order (``--out DIR`` gives a file each).
Times are RFC 3339 UTC strings with nanoseconds (as in JSON); durations and bytes are raw integers;
nulls are empty fields; nested Arrow values are written as JSON text.
"""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.types as pat

from pxq.render.base import batches, is_time, open_output, output_paths, rfc3339
from pxq.render.json import encode_column


def _csv_column(field: pa.Field, column: pa.Array) -> pa.Array:
    if is_time(field):
        return rfc3339(column)
    t = column.type
    if pat.is_dictionary(t):
        return column.cast(t.value_type)
    if pat.is_nested(t):
        return pa.array([None if v == "null" else v for v in encode_column(field, column).to_pylist()], pa.string())
    return column


def _csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    columns = [_csv_column(f, c) for f, c in zip(batch.schema, batch.columns)]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    empty = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
    return _csv_batch(empty).schema


def write_csv_table(table: pa.Table, sink) -> None:
    """Write ``table`` as CSV (with a header) to a binary file-like ``sink``."""
    schema = _csv_schema(table.schema)
    with pacsv.CSVWriter(sink, schema) as writer:
        for batch in batches(table):
            writer.write_batch(_csv_batch(batch))


class CsvWriter:
    name = "csv"
    needs_out = False

    def write(self, results, out, *, console=None, max_rows=None):
        """Returns display → file written (nothing when writing to stdout)."""
        if out is None:
            stream, _ = open_output(None)
            if len(results) > 1:
                order = ", ".join(
                    f"{display} ({table.num_rows:,} row{'' if table.num_rows == 1 else 's'})"
                    for display, table in results.items()
                )
                print(
                    f"pxq: csv: {len(results)} displays on stdout, in this order, separated by an empty line: "
                    f"{order}; --out DIR writes one file each",
                    file=sys.stderr,
                )
            for i, table in enumerate(results.values()):
                if i:
                    stream.write(b"\n")
                write_csv_table(table, stream)
            stream.flush()
            return None
        paths = output_paths(results, out, "csv", self.name)
        for display, path in paths.items():
            stream, _ = open_output(path)
            with stream:
                write_csv_table(results[display], stream)
        return paths
