"""Helpers shared by the builtin function modules: registration with constant folding, type and
semantic rules, broadcasting, and the per-distinct-value fallback for functions without an Arrow
kernel."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from pxq.funcs.registry import ExecContext, Param, SemanticRule, TypeRule, scalar
from pxq.types import DataType, SemanticType

BOOLEAN, INT64, FLOAT64, STRING, TIME64NS, UINT128 = (
    DataType.BOOLEAN,
    DataType.INT64,
    DataType.FLOAT64,
    DataType.STRING,
    DataType.TIME64NS,
    DataType.UINT128,
)
S = SemanticType

# What a function's implementation receives and returns (pyarrow ships no types: Any to mypy).
Value: TypeAlias = pa.Array | pa.ChunkedArray | pa.Scalar


def param(
    name: str,
    *types: DataType,
    literal: bool = False,
    default: Any = None,
    has_default: bool = False,
    accepts_list: bool = False,
    bounds: tuple[int, int] | None = None,
) -> Param:
    """A parameter accepting ``types`` (every type when none are given; for a list, its elements')."""
    return Param(name, frozenset(types) if types else None, literal, default, has_default, accepts_list, bounds)


def udf(
    name: str,
    params: tuple[Param, ...],
    returns: TypeRule,
    doc: str,
    *,
    semantic: SemanticRule = SemanticType.NONE,
    foldable: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``impl(ctx, *args)`` as ``px.<name>``.

    When every non-literal argument is a Scalar (constant folding), they are turned into length-1
    arrays before ``impl`` runs and the result is turned back into a Scalar, so each implementation
    only has to handle columns (with Scalars broadcast by the compute kernels) plus Scalar literals.
    """
    value_positions = [i for i, p in enumerate(params) if not p.literal]

    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(impl)
        def run(ctx: ExecContext, *args: Value) -> Value:
            if value_positions and all(isinstance(args[i], pa.Scalar) for i in value_positions):
                arrays = [column(a, 1) if i in value_positions else a for i, a in enumerate(args)]
                result = impl(ctx, *arrays)
                return result[0] if isinstance(result, (pa.Array, pa.ChunkedArray)) else result
            return impl(ctx, *args)

        scalar(name, params, returns, doc, semantic=semantic, foldable=foldable)(run)
        return impl

    return register


# ---------------------------------------------------------------- type rules


# Result types of an operation by its argument types.
PairTable: TypeAlias = Mapping[tuple[DataType, ...], DataType]
# A kernel from pyarrow.compute (or one built on them): Values in, a Value out.
Kernel: TypeAlias = Callable[..., Value]


def pair_rule(verb: str, table: PairTable) -> TypeRule:
    """Result type of a binary operation looked up by its argument types, else a TypeError."""

    def rule(types: tuple[DataType, ...]) -> DataType:
        try:
            return table[types]
        except KeyError:
            raise TypeError(f"cannot {verb} {' and '.join(str(t) for t in types)}") from None

    return rule


def unary_rule(verb: str, table: Mapping[DataType, DataType]) -> TypeRule:
    def rule(types: tuple[DataType, ...]) -> DataType:
        try:
            return table[types[0]]
        except KeyError:
            raise TypeError(f"cannot {verb} {types[0]}") from None

    return rule


def same_type(index: int = 0) -> TypeRule:
    """The result has the type of argument ``index``."""
    return lambda types: types[index]


NUMERIC_PAIRS: dict[tuple[DataType, ...], DataType] = {
    (INT64, INT64): INT64,
    (FLOAT64, FLOAT64): FLOAT64,
    (INT64, FLOAT64): FLOAT64,
    (FLOAT64, INT64): FLOAT64,
}
# Argument types that can be ordered (<, >=, ...) and compared for equality (==, equals_any).
ORDERED_PAIRS = frozenset(
    {*NUMERIC_PAIRS, (STRING, STRING), (TIME64NS, TIME64NS), (TIME64NS, INT64), (INT64, TIME64NS)}
)
EQUALITY_PAIRS = ORDERED_PAIRS | {
    (BOOLEAN, BOOLEAN),
    (BOOLEAN, INT64),
    (INT64, BOOLEAN),
    (UINT128, UINT128),
    (UINT128, STRING),
    (STRING, UINT128),
}


# ---------------------------------------------------------------- semantic rules


def keep(index: int = 0) -> SemanticRule:
    """The result has the semantic type of argument ``index``."""
    return lambda sems: sems[index]


def inherit(allowed: Iterable[SemanticType]) -> Callable[[tuple[SemanticType, ...]], SemanticType]:
    """The semantic type the arguments share, if it is in ``allowed``; arguments without one
    (NONE, e.g. plain literals) do not count. Otherwise NONE."""
    allowed_set = frozenset(allowed)

    def rule(sems: tuple[SemanticType, ...]) -> SemanticType:
        present = {s for s in sems if s is not S.NONE}
        if len(present) == 1:
            (only,) = present
            if only in allowed_set:
                return only
        return S.NONE

    return rule


QUANTITIES = (S.DURATION_NS, S.BYTES, S.PERCENT)


# ---------------------------------------------------------------- values


def length_of(*args: Value) -> int | None:
    for a in args:
        if not isinstance(a, pa.Scalar):
            return len(a)
    return None


def column(value: Value, length: int) -> pa.Array:
    """``value`` as an Array of ``length`` (a Scalar is repeated)."""
    if isinstance(value, pa.Scalar):
        return pa.repeat(value, length)
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    return value


def null_of(type_: pa.DataType) -> pa.Scalar:
    return pa.scalar(None, type_)


def is_int(value: Value) -> bool:
    return bool(pa.types.is_integer(value.type))


def as_float(value: Value) -> Value:
    """FLOAT64 values; integers beyond 2**53 round to the nearest double, as in C++ (Arrow's implicit
    cast would raise instead)."""
    return value if pa.types.is_floating(value.type) else pc.cast(value, pa.float64(), safe=False)


def numeric_operands(a: Value, b: Value) -> tuple[Value, Value]:
    """a and b with an INT64 side turned into FLOAT64 when the other side is FLOAT64."""
    if pa.types.is_floating(a.type) != pa.types.is_floating(b.type):
        return as_float(a), as_float(b)
    return a, b


def map_distinct(values: Value, fn: Callable[[Any], Any], out_type: pa.DataType) -> Value:
    """``fn`` applied to each distinct non-null value, then spread back over the rows (nulls stay
    null). For functions with no Arrow kernel: Python runs once per distinct value, not per row."""
    if isinstance(values, pa.Scalar):
        return pa.scalar(fn(values.as_py()) if values.is_valid else None, out_type)
    distinct = pc.unique(values)
    mapped = pa.array([None if v is None else fn(v) for v in distinct.to_pylist()], out_type)
    return pc.take(mapped, pc.index_in(values, value_set=distinct))


def rowwise(fn: Callable[..., Any], out_type: pa.DataType, *args: Value) -> pa.Array:
    """``fn`` applied row by row (null if any argument is null). Only for the rare case where a
    function that normally takes a constant gets two columns and Arrow has no kernel for it."""
    n = length_of(*args)
    assert n is not None, "rowwise needs at least one column"  # callers pass two columns
    rows = zip(*(column(a, n).to_pylist() for a in args))
    return pa.array([None if any(v is None for v in row) else fn(*row) for row in rows], out_type)
