"""Evaluate column-free expressions at compile time, with the registry's own implementations, so
that folding and execution can never disagree."""

from __future__ import annotations

from typing import cast

import pyarrow as pa
import pyarrow.compute as pc

from pxq.funcs.registry import SCALARS, ExecContext
from pxq.plan.expr import Expr, FuncCall, Literal, postorder
from pxq.types import DataType, arrow_type

# Integer arithmetic wraps like Pixie's; where a result must be exact (a DataFrame's time
# bounds) these kernels raise instead.
_CHECKED = {
    "add": pc.add_checked,
    "subtract": pc.subtract_checked,
    "multiply": pc.multiply_checked,
    "negate": pc.negate_checked,
}


def _internal_type(data_type: DataType) -> pa.DataType:
    # Inside expressions times are int64 nanoseconds (see pxq.funcs.registry).
    return pa.int64() if data_type is DataType.TIME64NS else arrow_type(data_type)


def literal_scalar(lit: Literal) -> pa.Scalar:
    if lit.is_list:
        return pa.scalar(list(cast(tuple[object, ...], lit.value)), pa.list_(_internal_type(lit.type)))
    return pa.scalar(lit.value, _internal_type(lit.type))


def evaluate_constant(expr: Expr, ctx: ExecContext, *, checked: bool = False) -> object:
    """The Python value of a constant expression (raises ValueError if it reads a column).

    ``checked``: integer +, -, * and negation raise OverflowError instead of wrapping.
    Each distinct sub-expression is computed once, so an expression that repeats its parts
    (``x = x + x`` twenty times) costs its number of distinct nodes, without recursion.
    """
    if expr.columns():
        raise ValueError(f"{expr} is not constant")
    values: dict[int, pa.Scalar] = {}
    for node in postorder(expr):
        values[id(node)] = _evaluate_node(node, [values[id(a)] for a in getattr(node, "args", ())], ctx, checked)
    return values[id(expr)].as_py()


def _evaluate_node(expr: Expr, args: list[pa.Scalar], ctx: ExecContext, checked: bool) -> pa.Scalar:
    if isinstance(expr, Literal):
        return literal_scalar(expr)
    assert isinstance(expr, FuncCall)
    if checked and expr.name in _CHECKED and all(pa.types.is_integer(a.type) for a in args):
        try:
            result = _CHECKED[expr.name](*args)
        except pa.ArrowInvalid as exc:
            raise OverflowError(f"{expr.name}: {exc}") from None
    else:
        result = SCALARS[expr.name].impl(ctx, *args)
    if isinstance(result, (pa.Array, pa.ChunkedArray)):
        result = result[0]
    want = _internal_type(expr.type)
    return result if result.type == want else result.cast(want)
