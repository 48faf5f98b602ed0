"""Math, time and conditional functions: floor, round, bin, select, equals_any, px.seconds, px.now,
the semantic casts (px.DurationNanos, ...).

Choices:
- ``floor``/``ceil`` return INT64 (Pixie's cast of std::floor); NaN, +-inf and values outside the
  int64 range give null (undefined behaviour in C++).
- ``bin(v, size)`` rounds down (towards -inf) to a multiple of ``size`` as Pixie's docs say; Pixie's
  code (v - v % size with C++ %) rounds towards zero, which differs only for negative values. A FLOAT64
  value is truncated to INT64 first, as in Pixie. ``size`` must be a positive constant; a value whose
  multiple below is not an INT64 (near the INT64 minimum) is an error, never a wrapped number.
- ``round(x, decimals)`` returns the C ``%.*f`` text (correct rounding of the binary value, ties to
  even), e.g. ``round(0.248, 2) == "0.25"`` and ``round(-0.001, 2) == "-0.00"``. ``decimals`` is 0 to
  1074 (every double is exact with 1074 decimals); outside that it is an error.
- ``log(b, v)`` is Pixie's: the base comes first, computed as ln(v) / ln(b).
- ``px.seconds(n)`` and friends take INT64 or FLOAT64 and return INT64 nanoseconds (a float is
  rounded to the nearest nanosecond, NaN gives null); beyond int64 (about 292 years) they raise
  ValueError rather than wrap.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from pxq.funcs._common import (
    BOOLEAN,
    EQUALITY_PAIRS,
    FLOAT64,
    INT64,
    NUMERIC_PAIRS,
    QUANTITIES,
    STRING,
    TIME64NS,
    Kernel,
    S,
    Value,
    as_float,
    inherit,
    is_int,
    keep,
    map_distinct,
    null_of,
    numeric_operands,
    param,
    same_type,
    udf,
)
from pxq.funcs._operators import checked, comparable
from pxq.funcs.registry import ExecContext
from pxq.types import TIME_UNITS_NS, DataType, SemanticType

X_NUM = (param("x", INT64, FLOAT64),)
_INT64_LIMIT = 2.0**63


def _float_to_int64(values: Value) -> Value:
    """FLOAT64 values (already integral) as INT64; NaN, +-inf and out-of-range values become null."""
    fits = pc.and_(pc.is_finite(values), pc.less(pc.abs(values), _INT64_LIMIT))
    return pc.cast(pc.if_else(fits, values, null_of(pa.float64())), pa.int64())


# ---------------------------------------------------------------- rounding


def _rounding(name: str, kernel: Kernel, doc: str) -> None:
    def impl(ctx: ExecContext, x: Value) -> Value:
        return x if is_int(x) else _float_to_int64(kernel(x))

    udf(name, X_NUM, INT64, doc)(impl)


_rounding("floor", pc.floor, "The largest integer <= x, as INT64 (null for NaN/inf).")
_rounding("ceil", pc.ceil, "The smallest integer >= x, as INT64 (null for NaN/inf).")


# Every double is exact with 1074 decimals (the smallest, 2**-1074, has that many); more would only
# pad zeros, and px.round(x, 1000000000) would build a gigabyte per value.
_MAX_DECIMALS = 1074


def _printf_fixed(decimals: int) -> Callable[[float], str]:
    return lambda v: f"{v:.{decimals}f}"


@udf(
    "round",
    (param("x", FLOAT64, INT64), param("decimals", INT64, literal=True, bounds=(0, _MAX_DECIMALS))),
    STRING,
    "x formatted with `decimals` digits after the point, as a STRING (C's %.*f).",
)
def _round(ctx: ExecContext, x: Value, decimals: Value) -> Value:
    digits = decimals.as_py()
    if digits is None:
        return pa.nulls(len(x), pa.string())
    if not 0 <= digits <= _MAX_DECIMALS:
        raise ValueError(f"px.round: decimals must be between 0 and {_MAX_DECIMALS}, got {digits}")
    x = as_float(x)
    if digits > 30:  # beyond what decimal128 can hold next to a sensible integer part
        return map_distinct(x, _printf_fixed(digits), pa.string())
    # Arrow's float -> decimal cast rounds the exact binary value with ties to even, like printf.
    fits = pc.and_(pc.is_finite(x), pc.less(pc.abs(x), 10.0 ** (37 - digits)))
    text = pc.cast(pc.cast(pc.if_else(fits, x, null_of(pa.float64())), pa.decimal128(38, digits)), pa.string())
    text = pc.if_else(pc.match_substring(text, "E"), null_of(pa.string()), text)  # "1E-7" for tiny values
    # printf keeps the sign of negative numbers that round to zero (and of -0.0).
    negative = pc.or_(pc.less(x, 0), pc.equal(pc.divide(1.0, x), -math.inf))
    text = pc.if_else(
        pc.and_(negative, pc.invert(pc.starts_with(text, "-"))), pc.binary_join_element_wise("-", text, ""), text
    )
    rest = pc.and_(pc.is_valid(x), pc.is_null(text))
    if pc.any(rest).as_py():  # NaN, inf, huge and tiny values: Python's formatting, per distinct value
        text = pc.coalesce(
            text, map_distinct(pc.if_else(rest, x, null_of(pa.float64())), _printf_fixed(digits), pa.string())
        )
    return text


# ---------------------------------------------------------------- math


@udf("abs", X_NUM, same_type(), "|x|, of the same type.", semantic=inherit(QUANTITIES))
def _abs(ctx: ExecContext, x: Value) -> Value:
    return checked("abs", pc.abs_checked, x)  # abs(INT64 min) does not fit


def _float_function(name: str, kernel: Kernel, doc: str) -> None:
    udf(name, X_NUM, FLOAT64, doc)(lambda ctx, x: kernel(as_float(x)))


_float_function("sqrt", pc.sqrt, "Square root, FLOAT64 (NaN for negative x).")
_float_function("ln", pc.ln, "Natural logarithm, FLOAT64 (-inf at 0, NaN below).")
_float_function("log2", pc.log2, "Base-2 logarithm, FLOAT64.")
_float_function("log10", pc.log10, "Base-10 logarithm, FLOAT64.")
_float_function("exp", pc.exp, "e to the power x, FLOAT64.")


@udf(
    "log",
    (param("b", INT64, FLOAT64), param("v", INT64, FLOAT64)),
    FLOAT64,
    "Logarithm of v in base b (Pixie's argument order), FLOAT64.",
)
def _log(ctx: ExecContext, b: Value, v: Value) -> Value:
    return pc.divide(pc.ln(as_float(v)), pc.ln(as_float(b)))


@udf("pow", (param("x", INT64, FLOAT64), param("y", INT64, FLOAT64)), FLOAT64, "x to the power y, FLOAT64.")
def _pow(ctx: ExecContext, x: Value, y: Value) -> Value:
    return pc.power(as_float(x), as_float(y))


@udf(
    "bin",
    (param("value", INT64, FLOAT64, TIME64NS), param("size", INT64, literal=True, bounds=(1, 2**63 - 1))),
    lambda types: INT64 if types[0] is FLOAT64 else types[0],
    "value rounded down to a multiple of size (time buckets: px.bin(df.time_, px.seconds(10))).",
    semantic=keep(0),
)
def _bin(ctx: ExecContext, value: Value, size: Value) -> Value:
    width = size.as_py()
    if width is None:
        return pa.nulls(len(value), pa.int64())
    if width <= 0:
        raise ValueError(f"px.bin: size must be positive, got {width}")
    if not is_int(value):
        value = _float_to_int64(pc.trunc(value))
    try:  # Arrow's modulo is floored: rounds down
        return pc.subtract_checked(value, pc.modulo(value, width))
    except pa.ArrowInvalid:  # e.g. bin(INT64 min, 10): the multiple below is not an INT64
        raise ValueError(f"px.bin: a value has no multiple of {width} at or below it within INT64") from None


# ---------------------------------------------------------------- conditionals


def _select_type(types: tuple[DataType, ...]) -> DataType:
    cond, a, b = types
    if cond is not BOOLEAN:
        raise TypeError(f"px.select needs a BOOLEAN condition, got {cond}")
    if a is b:
        return a
    mixed = {**NUMERIC_PAIRS, (TIME64NS, INT64): TIME64NS, (INT64, TIME64NS): TIME64NS}
    if (a, b) in mixed:
        return mixed[(a, b)]
    raise TypeError(f"px.select needs values of one type, got {a} and {b}")


def _select_semantic(sems: tuple[SemanticType, ...]) -> SemanticType:
    a, b = sems[1], sems[2]
    if a is b or b is S.NONE:
        return a
    return b if a is S.NONE else S.NONE


@udf(
    "select",
    (param("cond", BOOLEAN), param("a"), param("b")),
    _select_type,
    "Element-wise if/else: a where cond is true, else b (null where cond is null).",
    semantic=_select_semantic,
)
def _select(ctx: ExecContext, cond: Value, a: Value, b: Value) -> Value:
    return pc.if_else(cond, *numeric_operands(a, b))


def _equals_any_type(types: tuple[DataType, ...]) -> DataType:
    if (types[0], types[1]) not in EQUALITY_PAIRS:
        raise TypeError(f"px.equals_any cannot compare {types[0]} with a list of {types[1]}")
    return BOOLEAN


@udf(
    "equals_any",
    (param("value"), param("values", literal=True, accepts_list=True)),
    _equals_any_type,
    "Whether value equals any element of the constant list `values` (PxL has no `in`).",
)
def _equals_any(ctx: ExecContext, value: Value, values: Value) -> Value:
    # The compiler passes a list literal as a ListScalar (its type is the element type); a lone
    # constant is taken as a list of one.
    if isinstance(values, pa.ListScalar):
        options = values.values if values.is_valid else pa.array([], value.type)
    else:
        options = pa.array([values.as_py()], values.type)
    value, options = comparable(value, options)
    found = pc.is_in(value, value_set=options.cast(value.type))
    return pc.if_else(pc.is_valid(value), found, null_of(pa.bool_()))


# ---------------------------------------------------------------- time


@udf("now", (), TIME64NS, "The query's time, fixed once when the script compiles.", semantic=S.TIME)
def _now(ctx: ExecContext) -> Value:
    return pa.scalar(ctx.now_ns, pa.int64())


def _duration(name: str, unit_ns: int, doc: str) -> None:
    def impl(ctx: ExecContext, n: Value) -> Value:
        try:
            if is_int(n):
                return pc.multiply_checked(n, unit_ns)
            ns = pc.round(pc.multiply(n, float(unit_ns)))
            fits = pc.or_kleene(pc.is_nan(ns), pc.less(pc.abs(ns), _INT64_LIMIT))
            if not pc.all(fits).as_py():
                raise pa.ArrowInvalid("overflow")
            return _float_to_int64(ns)
        except pa.ArrowInvalid:
            raise ValueError(f"px.{name}: the duration does not fit in int64 nanoseconds (about 292 years)") from None

    udf(name, (param("n", INT64, FLOAT64),), INT64, doc, semantic=S.DURATION_NS)(impl)


_duration("microseconds", 1_000, "n microseconds, as INT64 nanoseconds.")
_duration("milliseconds", 1_000_000, "n milliseconds, as INT64 nanoseconds.")
_duration("seconds", 1_000_000_000, "n seconds, as INT64 nanoseconds.")
_duration("minutes", 60_000_000_000, "n minutes, as INT64 nanoseconds.")
_duration("hours", 3_600_000_000_000, "n hours, as INT64 nanoseconds.")
_duration("days", 86_400_000_000_000, "n days, as INT64 nanoseconds.")


_DURATION_TEXT = r"^\s*(?P<n>[+-]?\d{1,18})\s*(?P<unit>ns|us|µs|ms|s|m|h|d)\s*$"


@udf(
    "parse_duration",
    (param("text", STRING),),
    INT64,
    "A duration such as '30s', '-5m', '250ms' or '1h' (units ns, us, ms, s, m, h, d) in INT64 nanoseconds.",
    semantic=S.DURATION_NS,
)
def _parse_duration(ctx: ExecContext, text: Value) -> Value:
    parts = pc.extract_regex(text, _DURATION_TEXT)
    bad = pc.and_(pc.is_valid(text), pc.is_null(parts))
    if pc.any(bad).as_py():
        example = pc.filter(text, bad)[0].as_py()
        raise ValueError(f"px.parse_duration: cannot read {example!r} as a duration (write e.g. '30s', '-5m', '1h')")
    units = pa.array(list(TIME_UNITS_NS), pa.string())
    unit_ns = pc.take(
        pa.array(list(TIME_UNITS_NS.values()), pa.int64()), pc.index_in(pc.struct_field(parts, "unit"), value_set=units)
    )
    try:
        return pc.multiply_checked(pc.cast(pc.struct_field(parts, "n"), pa.int64()), unit_ns)
    except pa.ArrowInvalid:
        raise ValueError("px.parse_duration: the duration does not fit in int64 nanoseconds") from None


def _identity(ctx: ExecContext, x: Value) -> Value:
    return x  # inside expressions TIME64NS and INT64 are both int64 nanoseconds


udf("time_to_int64", (param("t", TIME64NS),), INT64, "A time as INT64 nanoseconds since the epoch.")(_identity)
udf("int64_to_time", (param("ns", INT64),), TIME64NS, "INT64 nanoseconds since the epoch as a time.", semantic=S.TIME)(
    _identity
)

# Semantic casts: the value is unchanged, its semantic type drives formatting.
udf(
    "DurationNanos",
    X_NUM,
    same_type(),
    "Marks x as a duration in nanoseconds (formatted as 1.2ms, ...).",
    semantic=S.DURATION_NS,
)(_identity)
udf("Bytes", X_NUM, same_type(), "Marks x as a number of bytes (formatted as 1.2 KiB, ...).", semantic=S.BYTES)(
    _identity
)
udf("Percent", X_NUM, same_type(), "Marks x as a percentage.", semantic=S.PERCENT)(_identity)
udf("Time", (param("x", INT64, TIME64NS),), TIME64NS, "Marks x (ns since the epoch) as a time.", semantic=S.TIME)(
    _identity
)
