"""PxL's operators, under Pixie's UDF names (the compiler maps ``+`` to ``add``, ``<`` to
``lessThan``, ``and`` to ``logicalAnd``, ...).

Parameters accept every type; the ``returns`` rule checks the combination, so that a bad one is
reported as e.g. ``cannot subtract STRING and INT64`` rather than as a complaint about one argument.

Choices (Pixie runs C++ on non-null values; pxq has nulls and picks these):
- Integer arithmetic (``+ - *``, negation, ``px.abs``) that overflows INT64 is an error naming the
  function, never a wrapped number (Pixie's C++ int64 overflow is undefined and wraps in practice:
  ``df.time_ + px.days(90000)`` became a time in 1677).
- ``divide`` always returns FLOAT64 (Pixie casts both sides to double): IEEE semantics, so x/0 is
  +inf or -inf and 0/0 is NaN (never null, never an error).
- ``modulo`` follows C++ ``%`` (Pixie's implementation): the result takes the sign of the dividend,
  ``-7 % 5 == -2``. Modulo by zero, undefined in C++, gives null.
- ``equal`` compares floats exactly (Pixie's float==float is |a-b| < DBL_EPSILON, which differs
  only for values within 2.2e-16 of each other).
- Comparisons with a null give null; ``logicalAnd``/``logicalOr`` use Kleene logic
  (``False and null`` is False, ``True or null`` is True).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pxq.funcs._common import (
    BOOLEAN,
    EQUALITY_PAIRS,
    FLOAT64,
    INT64,
    NUMERIC_PAIRS,
    ORDERED_PAIRS,
    QUANTITIES,
    STRING,
    TIME64NS,
    Kernel,
    PairTable,
    S,
    Value,
    as_float,
    inherit,
    null_of,
    numeric_operands,
    pair_rule,
    param,
    udf,
    unary_rule,
)
from pxq.funcs.registry import ExecContext
from pxq.types import DataType, SemanticType

AB = (param("a"), param("b"))
X = (param("x"),)


def checked(name: str, kernel: Kernel, *args: Value) -> Value:
    """``kernel`` (an Arrow ``*_checked`` function: floats follow IEEE, integers raise on overflow),
    with an overflow reported as px.<name>'s."""
    try:
        return kernel(*args)
    except pa.ArrowInvalid as exc:
        if "overflow" not in str(exc):
            raise
        raise ValueError(
            f"px.{name}: the result does not fit in INT64; hint: compute in FLOAT64 (e.g. multiply by 1.0 first)"
        ) from None


# ---------------------------------------------------------------- arithmetic


def _add_semantic(sems: tuple[SemanticType, ...]) -> SemanticType:
    # time + duration stays a time; otherwise a quantity shared by the arguments is kept.
    if S.TIME in sems:
        other = sems[1] if sems[0] is S.TIME else sems[0]
        return S.TIME if other in (S.DURATION_NS, S.NONE) else S.NONE
    return inherit(QUANTITIES)(sems)


def _subtract_semantic(sems: tuple[SemanticType, ...]) -> SemanticType:
    a, b = sems
    if a is S.TIME and b is S.TIME:
        return S.DURATION_NS
    if a is S.TIME and b in (S.DURATION_NS, S.NONE):
        return S.TIME
    if S.TIME in sems:
        return S.NONE
    return inherit(QUANTITIES)(sems)


@udf(
    "add",
    AB,
    pair_rule(
        "add", {**NUMERIC_PAIRS, (TIME64NS, INT64): TIME64NS, (INT64, TIME64NS): TIME64NS, (STRING, STRING): STRING}
    ),
    "a + b: numeric addition (INT64 if both are INT64, else FLOAT64), time plus nanoseconds, or string concatenation.",
    semantic=_add_semantic,
)
def _add(ctx: ExecContext, a: Value, b: Value) -> Value:
    if pa.types.is_string(a.type):
        return pc.binary_join_element_wise(a, b, "")
    return checked("add", pc.add_checked, *numeric_operands(a, b))


@udf(
    "subtract",
    AB,
    pair_rule(
        "subtract",
        {**NUMERIC_PAIRS, (TIME64NS, INT64): TIME64NS, (TIME64NS, TIME64NS): INT64, (INT64, TIME64NS): INT64},
    ),
    "a - b: numeric subtraction; time minus nanoseconds is a time, time minus time is INT64 ns.",
    semantic=_subtract_semantic,
)
def _subtract(ctx: ExecContext, a: Value, b: Value) -> Value:
    return checked("subtract", pc.subtract_checked, *numeric_operands(a, b))


@udf("multiply", AB, pair_rule("multiply", NUMERIC_PAIRS), "a * b: INT64 if both are INT64, else FLOAT64.")
def _multiply(ctx: ExecContext, a: Value, b: Value) -> Value:
    return checked("multiply", pc.multiply_checked, *numeric_operands(a, b))


@udf(
    "divide",
    AB,
    pair_rule("divide", {pair: FLOAT64 for pair in NUMERIC_PAIRS}),
    "a / b, always FLOAT64 (IEEE: x/0 is +-inf, 0/0 is NaN).",
)
def _divide(ctx: ExecContext, a: Value, b: Value) -> Value:
    return pc.divide(as_float(a), as_float(b))


@udf(
    "modulo",
    AB,
    pair_rule(
        "compute the modulo of",
        {(INT64, INT64): INT64, (TIME64NS, INT64): INT64, (TIME64NS, TIME64NS): INT64, (INT64, TIME64NS): INT64},
    ),
    "a % b on integers with C++ semantics (the sign of a; -7 % 5 == -2); null when b is 0.",
)
def _modulo(ctx: ExecContext, a: Value, b: Value) -> Value:
    zero = pc.equal(b, 0)
    safe_b = pc.if_else(zero, 1, b)
    floored = pc.modulo(a, safe_b)  # Arrow's modulo takes the sign of the divisor (Python's %)
    differ = pc.and_(pc.not_equal(floored, 0), pc.not_equal(pc.less(a, 0), pc.less(safe_b, 0)))
    truncated = pc.if_else(differ, pc.subtract(floored, safe_b), floored)
    return pc.if_else(zero, null_of(pa.int64()), truncated)


@udf("negate", X, unary_rule("negate", {INT64: INT64, FLOAT64: FLOAT64}), "-x.", semantic=inherit(QUANTITIES))
def _negate(ctx: ExecContext, x: Value) -> Value:
    return checked("negate", pc.negate_checked, x)


@udf(
    "invert",
    X,
    unary_rule("invert", {INT64: INT64, BOOLEAN: BOOLEAN}),
    "~x: bitwise not of an INT64, logical not of a BOOLEAN.",
)
def _invert(ctx: ExecContext, x: Value) -> Value:
    return pc.invert(x) if pa.types.is_boolean(x.type) else pc.bit_wise_not(x)


# ---------------------------------------------------------------- comparisons

_ORDERED: dict[tuple[DataType, ...], DataType] = {pair: BOOLEAN for pair in ORDERED_PAIRS}
_EQUALITY: dict[tuple[DataType, ...], DataType] = {pair: BOOLEAN for pair in EQUALITY_PAIRS}


def comparable(a: Value, b: Value) -> tuple[Value, Value]:
    """a and b in types a compute kernel compares: BOOLEAN against INT64 compares as integers, INT64
    against FLOAT64 as doubles (like C++)."""
    if pa.types.is_boolean(a.type) != pa.types.is_boolean(b.type):
        return pc.cast(a, pa.int64()), pc.cast(b, pa.int64())
    return numeric_operands(a, b)


def _comparison(name: str, kernel: Kernel, table: PairTable, doc: str) -> None:
    def compare(ctx: ExecContext, a: Value, b: Value) -> Value:
        return kernel(*comparable(a, b))

    udf(name, AB, pair_rule("compare", table), doc)(compare)


_comparison("equal", pc.equal, _EQUALITY, "a == b (numbers of either type, strings, booleans, times, upids).")
_comparison("notEqual", pc.not_equal, _EQUALITY, "a != b.")
_comparison("lessThan", pc.less, _ORDERED, "a < b (numbers, strings byte-wise, times).")
_comparison("lessThanEqual", pc.less_equal, _ORDERED, "a <= b.")
_comparison("greaterThan", pc.greater, _ORDERED, "a > b.")
_comparison("greaterThanEqual", pc.greater_equal, _ORDERED, "a >= b.")

# ---------------------------------------------------------------- logic

_LOGICAL: dict[tuple[DataType, ...], DataType] = {
    (BOOLEAN, BOOLEAN): BOOLEAN,
    (INT64, INT64): BOOLEAN,
    (BOOLEAN, INT64): BOOLEAN,
    (INT64, BOOLEAN): BOOLEAN,
}


def _truth(x: Value) -> Value:
    """Booleans as they are; integers are true when non-zero (C++ truthiness)."""
    return pc.not_equal(x, 0) if pa.types.is_integer(x.type) else x


@udf(
    "logicalAnd", AB, pair_rule("apply 'and' to", _LOGICAL), "a and b, element-wise (Kleene: False and null is False)."
)
def _logical_and(ctx: ExecContext, a: Value, b: Value) -> Value:
    return pc.and_kleene(_truth(a), _truth(b))


@udf("logicalOr", AB, pair_rule("apply 'or' to", _LOGICAL), "a or b, element-wise (Kleene: True or null is True).")
def _logical_or(ctx: ExecContext, a: Value, b: Value) -> Value:
    return pc.or_kleene(_truth(a), _truth(b))


@udf(
    "logicalNot",
    X,
    unary_rule("apply 'not' to", {BOOLEAN: BOOLEAN, INT64: BOOLEAN}),
    "not x, element-wise (an INT64 is true when non-zero).",
)
def _logical_not(ctx: ExecContext, x: Value) -> Value:
    return pc.invert(_truth(x))
