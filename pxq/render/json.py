"""Newline-delimited JSON: one object per row, ``{"_table": "<display>", "<column>": value, ...}``.

Value choices (documented for users in the module, stable for tools reading the output):

- times (timestamp columns, or integers marked TIME) are RFC 3339 UTC strings with nanosecond
  precision, ``"2025-11-26T04:31:02.123456789Z"``: readable, sortable and lossless;
- durations, byte counts and every other integer are raw JSON integers (``latency`` in ns);
- floats are JSON numbers, NaN and infinities are ``null``; booleans are ``true``/``false``;
- strings are JSON strings, including JSON-valued columns (headers): a JSON string, not an object,
  so the output never changes shape with the data;
- nulls are ``null``; other Arrow types (lists, structs...) are converted per value.

All displays go to one stream (stdout, or the file ``out``), in display order. A partial result
(agents missing from a query over many, ``pxq run --cluster``) has one more line before a display's
rows, without ``_table``: ``{"_partial": {"table": "<display>", "missing_agents": [{"agent": ..,
"reason": ..}]}}``.

Rows are encoded column by column with Arrow compute kernels into one string array per batch whose
value buffer is exactly the output bytes, so no Python code runs per cell except for strings with
control characters and for exotic types.
"""

from __future__ import annotations

import json as _json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from pxq.render.base import batches, is_text, is_time, missing_agents, open_output, rfc3339

# Control characters need \\uXXXX escapes; rows holding them go through Python's json module.
_CONTROL = r"[\x00-\x1f]"


def _quote_strings(column: pa.Array) -> pa.Array:
    """String values as JSON string literals (nulls stay null)."""
    if pat.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    column = column.cast(pa.string())
    escaped = pc.replace_substring(pc.replace_substring(column, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    controls = pc.fill_null(pc.match_substring_regex(column, _CONTROL), False)
    if not pc.any(controls).as_py():
        return quoted
    fixed = pa.array([_json.dumps(v, ensure_ascii=False) for v in column.filter(controls).to_pylist()], pa.string())
    return pc.replace_with_mask(quoted, controls, fixed)


def _generic(column: pa.Array) -> pa.Array:
    return pa.array(
        [None if v is None else _json.dumps(v, ensure_ascii=False, default=str) for v in column.to_pylist()],
        pa.string(),
    )


def encode_column(field: pa.Field, column: pa.Array) -> pa.Array:
    """JSON text of each value of ``column`` (a string array, with "null" for nulls)."""
    t = column.type
    if is_time(field):
        encoded = pc.binary_join_element_wise('"', rfc3339(column), '"', "")
    elif pat.is_boolean(t):
        encoded = pc.if_else(column, "true", "false")
    elif pat.is_integer(t):
        encoded = column.cast(pa.string())
    elif pat.is_floating(t):
        finite = pc.is_finite(column)
        encoded = pc.if_else(finite, column.cast(pa.string()), pa.scalar(None, pa.string()))
    elif is_text(t):
        encoded = _quote_strings(column)
    elif pat.is_null(t):
        encoded = pa.nulls(len(column), pa.string())
    else:
        encoded = _generic(column)
    return pc.fill_null(encoded, "null")


def _string_bytes(lines: pa.Array) -> memoryview:
    """The value bytes of a null-free string array: all its strings back to back."""
    lines = lines.cast(pa.large_string()) if not pat.is_large_string(lines.type) else lines
    _, offsets_buf, data_buf = lines.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return memoryview(data_buf)[start:end]


def encode_batch(display: str, batch: pa.RecordBatch) -> memoryview:
    """The NDJSON bytes of one batch, every line ending with a newline."""
    parts: list = []
    prefix = "{" + _json.dumps("_table") + ":" + _json.dumps(display, ensure_ascii=False)
    for field, column in zip(batch.schema, batch.columns):
        parts.append(prefix + "," + _json.dumps(field.name, ensure_ascii=False) + ":")
        parts.append(encode_column(field, column))
        prefix = ""
    if not parts:
        lines = pa.array([prefix + "}\n"] * batch.num_rows, pa.string())
    else:
        lines = pc.binary_join_element_wise(*parts, "}\n", "")
    return _string_bytes(lines)


class JsonWriter:
    name = "json"
    needs_out = False

    def write(self, results, out, *, console=None, max_rows=None) -> None:
        stream, close = open_output(out)
        try:
            for display, table in results.items():
                if missing := missing_agents(table):  # before the rows: a reader knows at once
                    marker = {"_partial": {"table": display, "missing_agents": missing}}
                    stream.write((_json.dumps(marker, ensure_ascii=False) + "\n").encode())
                for batch in batches(table):
                    stream.write(encode_batch(display, batch))
            stream.flush()
        finally:
            if close:
                stream.close()
