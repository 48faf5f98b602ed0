"""Evaluate column-free expressions at compile time, with the registry's own implementations, so
that folding and execution can never disagree."""

from __future__ import annotations

import pyarrow as pa

from pxq.funcs.registry import SCALARS, ExecContext, load_builtins
from pxq.plan.expr import Expr, FuncCall, Literal
from pxq.types import DataType, arrow_type


def _internal_type(data_type: DataType) -> pa.DataType:
    # Inside expressions times are int64 nanoseconds (see pxq.funcs.registry).
    return pa.int64() if data_type is DataType.TIME64NS else arrow_type(data_type)


def literal_scalar(lit: Literal) -> pa.Scalar:
    if lit.is_list:
        return pa.scalar(list(lit.value), pa.list_(_internal_type(lit.type)))
    return pa.scalar(lit.value, _internal_type(lit.type))


def evaluate_constant(expr: Expr, ctx: ExecContext) -> object:
    """The Python value of a constant expression (raises ValueError if it reads a column)."""
    if expr.columns():
        raise ValueError(f"{expr} is not constant")
    return _evaluate(expr, ctx).as_py()


def _evaluate(expr: Expr, ctx: ExecContext) -> pa.Scalar:
    if isinstance(expr, Literal):
        return literal_scalar(expr)
    assert isinstance(expr, FuncCall)
    load_builtins()
    result = SCALARS[expr.name].impl(ctx, *(_evaluate(a, ctx) for a in expr.args))
    if isinstance(result, (pa.Array, pa.ChunkedArray)):
        result = result[0]
    want = _internal_type(expr.type)
    return result if result.type == want else result.cast(want)
