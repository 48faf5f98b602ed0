"""Partial aggregation: an agent reduces its rows of a group-by to per-group states
(:func:`partial_aggregate`), the broker merges the states of every agent into the aggregate's
result (:func:`merge_partials`). The states of each aggregate function are its
``pxq.funcs.aggregates.PARTIAL_FORMS`` entry; this module does the grouping (Acero hash
aggregates, groups in order of first appearance, as ``pxq.exec.aggregate``).

A state table has the group keys (decoded from dictionaries), then per aggregate ``i`` its state
columns ``__state{i}_{j}``. Merging every agent's state gives the same values as aggregating the
agents' rows concatenated, exactly for count, sum, min, max, any (some value) and mean (exact
integer sums, one division), within t-digest error for quantiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pxq.funcs.aggregates import PARTIAL_FORMS, PartialForm
from pxq.funcs.registry import AGGREGATES
from pxq.plan.nodes import Agg


def _decoded(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return values.cast(values.type.value_type) if pa.types.is_dictionary(values.type) else values


_DECIMAL_SUM = pa.decimal128(38, 0)  # Acero's sum of the decimal128(19, 0) an exact int sum casts to
_INT64_MAX = 2**63 - 1


def _int64_sums_fit(column: pa.ChunkedArray, state_input: pa.DataType) -> bool:
    """Whether the exact (decimal) sums of an int64 column can be summed as int64 instead: when
    no sum of its values can leave int64 (largest magnitude x values < 2**63) the int64 sums are
    the same numbers, without casting every value to decimal (most of the cost at a million rows)."""
    if not (pa.types.is_int64(column.type) and pa.types.is_decimal(state_input)):
        return False
    bounds = pc.min_max(column)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None:  # no values: nothing to sum
        return True
    return max(abs(low), abs(high)) * (len(column) - column.null_count) <= _INT64_MAX


def _form(function: str) -> PartialForm:
    form = PARTIAL_FORMS.get(function)
    if form is None:
        raise ValueError(f"px.{function} has no partial form (it cannot be split across agents)")
    return form


def splittable(node: Agg) -> bool:
    """Whether every aggregate of ``node`` has a partial form."""
    return all(spec.function in PARTIAL_FORMS for spec in node.aggregates)


def state_name(i: int, j: int) -> str:
    return f"__state{i}_{j}"


def _grouped(
    columns: list[pa.ChunkedArray], names: list[str], keys: list[str], plan: list[tuple], ordered: bool
) -> pa.Table:
    """Acero's hash aggregate of ``plan`` by ``keys`` (none: one group), groups in order of their
    first row; the key columns first (named ``keys``), then ``<input>_<function>`` outputs."""
    rows = columns[0].length() if columns else 0
    columns = [*columns, pa.chunked_array([pa.array(np.arange(rows, dtype=np.int64))])]
    names = [*names, "first_row"]
    plan = [*plan, ("first_row", "min", None)]
    key_names = list(keys)
    if not keys:
        key_names = ["__whole"]
        columns.append(pa.chunked_array([pa.array(np.zeros(rows, dtype=np.int8))]))
        names.append("__whole")
    table = pa.Table.from_arrays(columns, names=names)
    grouped = table.group_by(key_names, use_threads=not ordered).aggregate(plan)
    return grouped.take(pc.sort_indices(grouped.column("first_row_min")))


def partial_aggregate(table: pa.Table, node: Agg) -> pa.Table:
    """This agent's state per group of ``node`` over ``table`` (the rows of the Agg's input)."""
    # Keys grouped as they come (Acero hashes dictionary keys by index); decoded once per group.
    key_columns = [table.column(k) for k in node.keys]
    columns, names, plan, shapes = list(key_columns), list(node.keys), [], []
    as_decimal: dict[str, pa.DataType] = {}  # outputs summed as int64, cast to the state's type after
    for i, spec in enumerate(node.aggregates):
        form = _form(spec.function)
        column = _decoded(table.column(spec.column))
        values, functions = form.partial(column.slice(0, 0))  # the state's input type, from no rows
        if _int64_sums_fit(column, values.type):
            values = column
            as_decimal.update({f"v{i}_{function}": _DECIMAL_SUM for function, _ in functions if function == "sum"})
        else:
            values, functions = form.partial(column)
        columns.append(values)
        names.append(f"v{i}")
        plan += [(f"v{i}", function, options) for function, options in functions]
        shapes.append(([f"v{i}_{function}" for function, _ in functions], form))
    ordered = any(AGGREGATES[spec.function].ordered for spec in node.aggregates)
    grouped = _grouped(columns, names, list(node.keys), plan, ordered)
    for name, decimal in as_decimal.items():
        position = grouped.schema.get_field_index(name)
        grouped = grouped.set_column(position, name, grouped.column(name).cast(decimal))
    if table.num_rows == 0 and not node.keys:
        # No rows, no keys: still one group (of nothing), so that the merge yields its one row.
        grouped = _one_empty_group(grouped)
    out_columns = [_decoded(grouped.column(k)) for k in node.keys]
    out_names = list(node.keys)
    for i, (outputs, form) in enumerate(shapes):
        states = [grouped.column(name) for name in outputs]
        if form.state is not None:
            states = form.state(states)
        for j, state in enumerate(states):
            out_columns.append(state)
            out_names.append(state_name(i, j))
    return pa.Table.from_arrays(out_columns, names=out_names)


def _one_empty_group(empty: pa.Table) -> pa.Table:
    """The state of a group that saw no row: count 0, every other state null (a digest without
    centroids)."""
    arrays = []
    for field in empty.schema:
        if field.name.endswith("_count"):
            arrays.append(pa.array([0], field.type))
        elif pa.types.is_list(field.type):
            arrays.append(pa.array([[]], field.type))
        else:
            arrays.append(pa.array([None], field.type))
    return pa.Table.from_arrays(arrays, schema=empty.schema)


def merge_partials(states: Sequence[pa.Table], node: Agg) -> pa.Table:
    """The result of ``node`` from the state tables of every agent (at least one)."""
    from pxq.exec.execute import conform

    parts = [s.cast(states[0].schema) if s.schema != states[0].schema else s for s in states]
    table = pa.concat_tables(parts)
    columns = [table.column(k) for k in node.keys]
    names = list(node.keys)
    plan, finishing = [], []
    for i, spec in enumerate(node.aggregates):
        form = _form(spec.function)
        if form.merge == ("rows",):  # merged in Python from each group's state rows
            if "__row" not in names:
                columns.append(pa.chunked_array([pa.array(np.arange(table.num_rows, dtype=np.int64))]))
                names.append("__row")
                plan.append(("__row", "list", None))
            count = sum(1 for name in table.column_names if name.startswith(f"{state_name(i, 0)[:-1]}"))
            raw = [table.column(state_name(i, j)) for j in range(count)]
            finishing.append((["__row_list"], form, spec.column, raw))
            continue
        outputs = []
        for j, function in enumerate(form.merge):
            name = state_name(i, j)
            columns.append(table.column(name))
            names.append(name)
            plan.append((name, function, None))
            outputs.append(f"{name}_{function}")
        finishing.append((outputs, form, spec.column, []))
    ordered = any(AGGREGATES[spec.function].ordered for spec in node.aggregates)
    grouped = _grouped(columns, names, list(node.keys), plan, ordered)
    results = [grouped.column(k) for k in node.keys]
    for outputs, form, column, raw in finishing:
        results.append(form.finish([*(grouped.column(name) for name in outputs), *raw], column))
    return conform(pa.Table.from_arrays(results, names=[*node.keys, *(a.output for a in node.aggregates)]), node.schema)
