"""Predicates as Arrow expressions, so a data source can filter while it reads (inside the
Parquet scan for replays). Only what Arrow evaluates exactly like the executor is converted:
comparisons of a column with a constant of the same type, and/or/not, equals_any; everything else
stays with the executor. The expressions are pyarrow.compute's (pyarrow.dataset's are the same
objects): a run that reads no Parquet, as from an agent, does not load pyarrow.dataset (0.2 s)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pxq.plan.expr import ColumnRef, Expr, FuncCall, Literal, postorder
from pxq.types import DataType, arrow_type

_COMPARISONS = {
    "equal": lambda a, b: a == b,
    "notEqual": lambda a, b: a != b,
    "lessThan": lambda a, b: a < b,
    "lessThanEqual": lambda a, b: a <= b,
    "greaterThan": lambda a, b: a > b,
    "greaterThanEqual": lambda a, b: a >= b,
}


def _literal(lit: Literal, column_type: DataType) -> pa.Scalar | None:
    if lit.is_list or lit.value is None:
        return None
    if lit.type is column_type or (column_type is DataType.TIME64NS and lit.type is DataType.INT64):
        return pa.scalar(lit.value, arrow_type(column_type))
    return None


# Arrow expressions are trees, while a predicate may repeat its parts (c = c or c, forty
# times): past this many nodes as a tree it stays with the executor, which computes each part once.
MAX_PUSHED_NODES = 10_000


def _tree_size(expr: Expr, limit: int) -> int:
    """How many nodes ``expr`` has when its shared parts are counted each time (at most limit + 1)."""
    sizes: dict[int, int] = {}
    for node in postorder(expr):
        sizes[id(node)] = min(limit + 1, 1 + sum(sizes[id(a)] for a in getattr(node, "args", ())))
    return sizes[id(expr)]


def to_arrow_expression(expr: Expr) -> pc.Expression | None:
    """The same predicate as an Arrow expression, or None where it cannot be converted exactly."""
    if _tree_size(expr, MAX_PUSHED_NODES) > MAX_PUSHED_NODES:
        return None
    return _convert(expr)


def _convert(expr: Expr) -> pc.Expression | None:
    if not isinstance(expr, FuncCall):
        return None
    if expr.name in _COMPARISONS and len(expr.args) == 2:
        left, right = expr.args
        if isinstance(left, ColumnRef) and isinstance(right, Literal):
            value = _literal(right, left.type)
            return None if value is None else _COMPARISONS[expr.name](pc.field(left.name), value)
        if isinstance(right, ColumnRef) and isinstance(left, Literal):
            value = _literal(left, right.type)
            return None if value is None else _COMPARISONS[expr.name](value, pc.field(right.name))
        return None
    if expr.name in ("logicalAnd", "logicalOr"):
        parts = [_convert(a) for a in expr.args]
        if any(p is None for p in parts):
            return None
        return parts[0] & parts[1] if expr.name == "logicalAnd" else parts[0] | parts[1]
    if expr.name == "logicalNot":
        inner = _convert(expr.args[0])
        return None if inner is None else ~inner
    if expr.name == "equals_any":
        column, values = expr.args
        if (
            isinstance(column, ColumnRef)
            and isinstance(values, Literal)
            and values.is_list
            and values.type is column.type
            and None not in values.value
        ):
            # equals_any(null, ...) is null in the executor; is_in gives false: both drop the row.
            return pc.is_in(pc.field(column.name), value_set=pa.array(list(values.value), arrow_type(column.type)))
    return None


def split_pushable(predicates: tuple[Expr, ...]) -> tuple[pc.Expression | None, list[str], list[Expr]]:
    """(Arrow expression of the convertible predicates, the columns it reads, the rest)."""
    pushed, columns, rest = None, set(), []
    for predicate in predicates:
        converted = to_arrow_expression(predicate)
        if converted is None:
            rest.append(predicate)
        else:
            pushed = converted if pushed is None else pushed & converted
            columns |= predicate.columns()
    return pushed, sorted(columns), rest
