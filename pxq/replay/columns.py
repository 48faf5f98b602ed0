"""Which Arrow types a capture column may have for a catalog type, and the cast to the catalog type.

The rules (shared by the writer and the reader):

- INT64: any signed or unsigned integer (uint64 values must fit in int64).
- FLOAT64: any float or integer.
- STRING / UINT128 (upid): string, large_string, string_view, or dictionary-encoded strings.
- BOOLEAN: bool.
- TIME64NS: a timestamp of any unit, tz-naive (taken as UTC) or tz-aware (converted to UTC),
  or an integer of nanoseconds since the epoch. Always returned as tz-naive timestamp[ns].
- Any type: an all-null column (Arrow ``null`` type).

Anything else (a string column where INT64 is declared, say) is impossible and reported.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.types as pat

from pxq.types import DataType, arrow_type


def _is_string(t: pa.DataType) -> bool:
    if pat.is_dictionary(t):
        return _is_string(t.value_type)
    return pat.is_string(t) or pat.is_large_string(t) or pat.is_string_view(t)


_ACCEPTS = {
    DataType.INT64: pat.is_integer,
    DataType.FLOAT64: lambda t: pat.is_floating(t) or pat.is_integer(t),
    DataType.STRING: _is_string,
    DataType.UINT128: _is_string,
    DataType.BOOLEAN: pat.is_boolean,
    DataType.TIME64NS: lambda t: pat.is_timestamp(t) or pat.is_integer(t),
}


def compatible(declared: DataType, actual: pa.DataType) -> bool:
    """Whether a column stored as ``actual`` can be read as the catalog type ``declared``."""
    return pat.is_null(actual) or _ACCEPTS[declared](actual)


def describe_incompatible(declared: DataType, actual: pa.DataType) -> str:
    return f"stored as {actual}, which cannot be read as {declared.value} ({arrow_type(declared)})"


def to_catalog_type(column: pa.ChunkedArray | pa.Array, declared: DataType) -> pa.ChunkedArray | pa.Array:
    """Cast a compatible column to the catalog's Arrow type (raises pa.ArrowInvalid on overflow)."""
    target = arrow_type(declared)
    actual = column.type
    if actual == target:
        return column
    if declared is DataType.TIME64NS and pat.is_integer(actual):
        return column.cast(pa.int64()).cast(target)
    if pat.is_dictionary(actual):
        column = column.cast(actual.value_type)
    # A timestamp cast to tz-naive keeps its UTC instant; a unit change is checked for overflow.
    return column.cast(target)
