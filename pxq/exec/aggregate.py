"""Grouped aggregation (``df.groupby(keys).agg(out=('col', px.fn), ...)``) on Acero's hash
aggregates; each aggregate's own computation is its registry entry (``pxq.funcs.aggregates``).

Groups come out in the order their first row appears, so results are deterministic. Null keys form
a group of their own. With no keys the whole table is one group: one row even for an empty table
(count 0, quantiles without data, every other aggregate null).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pxq.funcs.registry import AGGREGATES, AggregateFunction


def _decoded(values: pa.ChunkedArray) -> pa.ChunkedArray:
    # Scans keep strings dictionary-encoded; Acero groups on dictionaries but has no hash_min_max
    # or hash_first_last kernel for them (a column may be a group key and a value at once).
    return values.cast(values.type.value_type) if pa.types.is_dictionary(values.type) else values


def _registered(name: str) -> AggregateFunction:
    fn = AGGREGATES.get(name)
    if fn is None:
        raise ValueError(f"unknown aggregate {name!r}")
    return fn


def aggregate(table: pa.Table, keys: Sequence[str], specs: Sequence[tuple[str, str, str]]) -> pa.Table:
    """Group ``table`` by ``keys`` and compute each spec ``(output_name, aggregate_name, input_column)``.

    The result has the key columns (in order) then the outputs (in order).
    """
    # Private names: Acero needs distinct input columns and names outputs "<input>_<function>".
    key_names = [f"k{j}" for j in range(len(keys))]
    columns = [table.column(k) for k in keys]
    names = list(key_names)
    plan, finishing = [], []
    registered = [_registered(fn) for _, fn, _ in specs]
    for i, (_, _, col) in enumerate(specs):
        values, functions, finish = registered[i].plan(_decoded(table.column(col)), col)
        columns.append(values)
        names.append(f"v{i}")
        plan += [(f"v{i}", function, options) for function, options in functions]
        finishing.append(([f"v{i}_{function}" for function, _ in functions], finish))
    # Each group's first row, to return groups in order of appearance (Acero's own order is not,
    # e.g. when a key is null).
    columns.append(pa.array(np.arange(table.num_rows, dtype=np.int64)))
    names.append("first_row")
    plan.append(("first_row", "min", None))
    whole = not keys
    if whole:  # one group: a constant key, dropped below
        key_names = ["k"]
        columns.append(pa.array(np.zeros(table.num_rows, dtype=np.int8)))
        names.append("k")
    # Acero's "first" needs ordered (single-threaded) input; everything else is order-free.
    ordered = any(fn.ordered for fn in registered)
    grouped = pa.Table.from_arrays(columns, names=names).group_by(key_names, use_threads=not ordered).aggregate(plan)
    grouped = grouped.take(pc.sort_indices(grouped.column("first_row_min")))
    outputs = [grouped.column(k) for k in ([] if whole else key_names)]
    for output_names, finish in finishing:
        outputs.append(finish([grouped.column(name) for name in output_names]))
    result = pa.Table.from_arrays(outputs, names=list(keys) + [out for out, _, _ in specs])
    if whole and table.num_rows == 0:
        return _empty_group(result, registered)
    return result


def _empty_group(empty: pa.Table, functions: Sequence[AggregateFunction]) -> pa.Table:
    """The one row that aggregating no rows at all gives: each aggregate's ``empty`` value (count 0,
    quantiles without data), everything else null."""
    arrays = [pa.array([fn.empty], empty.schema.field(i).type) for i, fn in enumerate(functions)]
    return pa.Table.from_arrays(arrays, schema=empty.schema)
