"""Vectorized evaluation of plan expressions over an Arrow table.

Inside expressions TIME64NS values are int64 nanoseconds (the registry's convention); columns are
converted on the way in and out here, and nowhere else.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pxq.errors import ExecutionError
from pxq.funcs.registry import SCALARS, ExecContext
from pxq.plan.constants import literal_scalar
from pxq.plan.expr import ColumnRef, Expr, FuncCall, Literal, postorder
from pxq.types import DataType, arrow_type

Value = pa.Array | pa.Scalar


def column_values(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(array.type):  # sources may keep strings dictionary-encoded
        array = array.dictionary_decode()
    if pa.types.is_timestamp(array.type):
        array = array.cast(pa.int64())
    return array


def evaluate(expr: Expr, table: pa.Table, ctx: ExecContext) -> Value:
    """``expr`` over ``table``: an array with one value per row, or a scalar for a constant.

    Each distinct node is computed once, arguments first, without recursion (see
    ``pxq.plan.expr.postorder``): a part read many times (``x = x + x``) is not recomputed, and
    a part's result is dropped once its last reader has used it.
    """
    if isinstance(expr, ColumnRef):
        return column_values(table, expr.name)
    if isinstance(expr, Literal):
        return literal_scalar(expr)
    order = list(postorder(expr))
    pending: dict[int, int] = {}  # id(node) -> readers not yet computed
    for node in order:
        for arg in getattr(node, "args", ()):
            pending[id(arg)] = pending.get(id(arg), 0) + 1
    values: dict[int, Value] = {}
    for node in order:
        if isinstance(node, ColumnRef):
            values[id(node)] = column_values(table, node.name)
        elif isinstance(node, Literal):
            values[id(node)] = literal_scalar(node)
        elif isinstance(node, FuncCall):
            args = [values[id(a)] for a in node.args]
            for arg in node.args:
                pending[id(arg)] -= 1
                if not pending[id(arg)]:
                    del values[id(arg)]
            values[id(node)] = _call(node, args, ctx)
        else:
            raise TypeError(f"cannot evaluate {node!r}")
    return values[id(expr)]


def _call(expr: FuncCall, args: list[Value], ctx: ExecContext) -> Value:
    try:
        return SCALARS[expr.name].impl(ctx, *args)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        where = f" (line {expr.span.line})" if expr.span else ""
        raise ExecutionError(f"px.{expr.name} failed{where}: {exc}") from None


def to_column(value: Value, data_type: DataType, length: int) -> pa.Array:
    """An expression result as a table column of ``length`` rows with the plan's Arrow type."""
    target = arrow_type(data_type)
    internal = pa.int64() if data_type is DataType.TIME64NS else target
    if isinstance(value, pa.Scalar):
        scalar = value if value.type == internal else value.cast(internal)
        array = pa.repeat(scalar, length) if scalar.is_valid else pa.nulls(length, internal)
    else:
        array = value.combine_chunks() if isinstance(value, pa.ChunkedArray) else value
        if array.type != internal:
            array = array.cast(internal)
    return array.cast(target) if target != internal else array


def mask(value: Value, length: int) -> pa.Array | bool:
    """A filter mask; a constant predicate gives True (keep all) or False (keep none)."""
    if isinstance(value, pa.Scalar):
        return bool(value.is_valid and value.as_py())
    return value if value.type == pa.bool_() else pc.cast(value, pa.bool_())


def decode_dictionaries(table: pa.Table, columns=None) -> pa.Table:
    """``table`` with its dictionary-encoded columns (all, or those in ``columns``) decoded."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type) and (columns is None or field.name in columns):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table
