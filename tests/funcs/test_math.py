"""Math, time and conditional functions against Python on generated data."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from hypothesis import example, given, strategies as st

from pxq.funcs.registry import resolve_semantic, resolve_type
from pxq.types import DataType, SemanticType
from tests.funcs.funcs_support import NOW_NS, SCALARS, SETTINGS, call, col, lit, values

B, I, F, S, T = DataType.BOOLEAN, DataType.INT64, DataType.FLOAT64, DataType.STRING, DataType.TIME64NS
SEM = SemanticType

any_floats = st.floats(width=64)  # NaN and infinities included
finite = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(-(2**63), 2**63 - 1)


def float_eq(x, y):
    if x is None or y is None:
        return x is y
    if math.isnan(x):
        return math.isnan(y)
    return x == y or math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-300)


def ieee_divide(a: float, b: float) -> float:
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1, b)
    return a / b


# ---------------------------------------------------------------- rounding


@SETTINGS
@given(st.lists(st.none() | any_floats, max_size=30))
@pytest.mark.parametrize(("name", "py"), [("floor", math.floor), ("ceil", math.ceil)])
def test_floor_and_ceil(name, py, xs):
    def expect(x):
        if x is None or not math.isfinite(x):
            return None
        r = py(x)
        return r if -(2**63) <= r < 2**63 else None

    assert values(call(name, col(xs, F))) == [expect(x) for x in xs]


def test_floor_of_int_is_identity():
    assert values(call("floor", col([3, None, -2], I))) == [3, None, -2]


@SETTINGS
@given(st.lists(st.none() | any_floats | finite.map(lambda x: round(x, 3)), max_size=30), st.integers(0, 12))
def test_round_formats_like_printf(xs, decimals):
    got = values(call("round", col(xs, F), lit(decimals, I)))
    assert got == [None if x is None else "%.*f" % (decimals, x) for x in xs]


def test_round_examples_and_errors():
    assert values(call("round", col([0.248, 2.5, 3.5, -0.001, 1e300], F), lit(0, I)))[:4] == ["0", "2", "4", "-0"]
    assert call("round", lit(0.248, F), lit(2, I)).as_py() == "0.25"
    assert values(call("round", col([1.0, 2], F), lit(35, I))) == ["%.35f" % 1.0, "%.35f" % 2.0]
    assert values(call("round", col([1, 2], I), lit(1, I))) == ["1.0", "2.0"]
    with pytest.raises(ValueError, match="decimals"):
        call("round", col([1.0], F), lit(-1, I))


# ---------------------------------------------------------------- math


@SETTINGS
@given(st.lists(st.none() | ints, max_size=30))
@example([-(2**63), 1])
@example([2**63 - 1, None])
def test_abs_of_integers(xs):
    if -(2**63) in xs:  # |INT64 min| does not fit: an error, never the wrapped INT64 min
        with pytest.raises(ValueError, match="px.abs: the result does not fit in INT64"):
            call("abs", col(xs, I))
    else:
        assert values(call("abs", col(xs, I))) == [None if x is None else abs(x) for x in xs]


@SETTINGS
@given(st.lists(st.none() | st.floats(min_value=-1e6, max_value=1e6), max_size=30))
@pytest.mark.parametrize(
    ("name", "py"),
    [
        ("sqrt", lambda x: math.sqrt(x) if x >= 0 else math.nan),
        ("ln", lambda x: math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)),
        ("log2", lambda x: math.log2(x) if x > 0 else (-math.inf if x == 0 else math.nan)),
        ("log10", lambda x: math.log10(x) if x > 0 else (-math.inf if x == 0 else math.nan)),
        ("exp", lambda x: math.exp(x) if x < 700 else math.inf),
        ("abs", abs),
    ],
)
def test_float_math(name, py, xs):
    got = values(call(name, col(xs, F)))
    assert all(float_eq(g, None if x is None else py(x)) for g, x in zip(got, xs))


@SETTINGS
@given(st.lists(st.tuples(st.none() | st.floats(0.01, 1e6), st.none() | st.floats(0.01, 1e6)), max_size=20))
def test_log_takes_the_base_first(rows):
    got = values(call("log", col([b for b, _ in rows], F), col([v for _, v in rows], F)))
    for (b, v), g in zip(rows, got):
        assert g is None if b is None or v is None else float_eq(g, ieee_divide(math.log(v), math.log(b)))


@SETTINGS
@given(st.lists(st.tuples(st.integers(-20, 20), st.integers(-5, 5)), max_size=20))
def test_pow_is_float(rows):
    got = values(call("pow", col([x for x, _ in rows], I), col([y for _, y in rows], I)))
    for (x, y), g in zip(rows, got):
        expect = math.inf if x == 0 and y < 0 else float(x) ** y
        assert float_eq(g, expect)


# ---------------------------------------------------------------- bin


@SETTINGS
@given(st.lists(st.none() | ints.filter(lambda v: v > -(2**63) + 10**12), max_size=30), st.integers(1, 10**12))
def test_bin_rounds_down_to_a_multiple(xs, size):
    got = values(call("bin", col(xs, I), lit(size, I)))
    assert got == [None if x is None else x // size * size for x in xs]


def test_bin_of_times_and_floats():
    second = 1_000_000_000
    assert values(call("bin", col([NOW_NS, None], T), lit(second, I))) == [NOW_NS // second * second, None]
    assert values(call("bin", col([17.9, -7.5, math.nan], F), lit(5, I))) == [15, -10, None]
    fn = SCALARS["bin"]
    assert resolve_type(fn.returns, (T, I)) is T and resolve_type(fn.returns, (F, I)) is I
    assert resolve_semantic(fn.semantic, (SEM.TIME, SEM.NONE)) is SEM.TIME
    with pytest.raises(ValueError, match="positive"):
        call("bin", col([1], I), lit(0, I))


# ---------------------------------------------------------------- select and equals_any


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from([True, False, None]), st.none() | ints, st.none() | ints), max_size=30))
def test_select_is_elementwise_if_else(rows):
    cond, a, b = ([r[i] for r in rows] for i in range(3))
    got = values(call("select", col(cond, B), col(a, I), col(b, I)))
    assert got == [None if c is None else (x if c else y) for c, x, y in rows]


def test_select_types_and_semantics():
    fn = SCALARS["select"]
    assert values(call("select", col([True, False], B), col([1, 2], I), lit(0.5, F))) == [1.0, 0.5]
    assert values(call("select", col([True, False], B), lit("yes", S), lit("no", S))) == ["yes", "no"]
    assert resolve_type(fn.returns, (B, I, F)) is F
    assert resolve_type(fn.returns, (B, T, I)) is T
    with pytest.raises(TypeError, match="one type"):
        resolve_type(fn.returns, (B, S, I))
    with pytest.raises(TypeError, match="BOOLEAN condition"):
        resolve_type(fn.returns, (I, I, I))
    assert resolve_semantic(fn.semantic, (SEM.NONE, SEM.DURATION_NS, SEM.NONE)) is SEM.DURATION_NS
    assert resolve_semantic(fn.semantic, (SEM.NONE, SEM.DURATION_NS, SEM.DURATION_NS)) is SEM.DURATION_NS
    assert resolve_semantic(fn.semantic, (SEM.NONE, SEM.DURATION_NS, SEM.BYTES)) is SEM.NONE


@SETTINGS
@given(st.lists(st.none() | st.integers(0, 20), max_size=30), st.lists(st.integers(0, 20), max_size=5))
def test_equals_any(xs, options):
    got = values(call("equals_any", col(xs, I), pa.scalar(options, pa.list_(pa.int64()))))
    assert got == [None if x is None else x in options for x in xs]


def test_equals_any_types():
    strings = pa.scalar(["GET", "PUT"], pa.list_(pa.string()))
    assert values(call("equals_any", col(["GET", "POST", None], S), strings)) == [True, False, None]
    floats = pa.scalar([1.5, 2.0], pa.list_(pa.float64()))
    assert values(call("equals_any", col([2, 1], I), floats)) == [True, False]
    assert values(call("equals_any", col([200], I), lit(200, I))) == [True]
    fn = SCALARS["equals_any"]
    with pytest.raises(TypeError, match="cannot compare STRING with a list of INT64"):
        resolve_type(fn.returns, (S, I))


# ---------------------------------------------------------------- time


@SETTINGS
@given(st.lists(st.none() | st.integers(-(10**5), 10**5), max_size=20))
@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("microseconds", 10**3),
        ("milliseconds", 10**6),
        ("seconds", 10**9),
        ("minutes", 60 * 10**9),
        ("hours", 3600 * 10**9),
        ("days", 86400 * 10**9),
    ],
)
def test_durations_are_nanoseconds(name, unit, ns):
    assert values(call(name, col(ns, I))) == [None if n is None else n * unit for n in ns]
    fn = SCALARS[name]
    assert resolve_type(fn.returns, (I,)) is I and resolve_semantic(fn.semantic, (SEM.NONE,)) is SEM.DURATION_NS


def test_fractional_durations_round_to_nanoseconds():
    assert values(call("seconds", col([1.5, 0.0000000016, math.nan, None], F))) == [1_500_000_000, 2, None, None]
    assert call("milliseconds", lit(0.25, F)).as_py() == 250_000


@pytest.mark.parametrize(("n", "data_type"), [(106_752, I), (1e6, F), (math.inf, F)])
def test_durations_beyond_int64_raise(n, data_type):
    with pytest.raises(ValueError, match="px.days"):
        call("days", lit(n, data_type))


@SETTINGS
@given(
    st.lists(
        st.none()
        | st.tuples(
            st.integers(-(10**4), 10**4),
            st.sampled_from(
                [
                    ("ns", 1),
                    ("us", 10**3),
                    ("µs", 10**3),
                    ("ms", 10**6),
                    ("s", 10**9),
                    ("m", 60 * 10**9),
                    ("h", 3600 * 10**9),
                    ("d", 86400 * 10**9),
                ]
            ),
        ),
        max_size=20,
    ),
    st.sampled_from(["", " "]),
)
def test_parse_duration(items, space):
    text = [None if i is None else f"{i[0]}{space}{i[1][0]}" for i in items]
    assert values(call("parse_duration", col(text, S))) == [None if i is None else i[0] * i[1][1] for i in items]


@pytest.mark.parametrize("text", ["5", "5x", "m", "1.5s", "5 s s", "99999999999d"])
def test_parse_duration_rejects_other_text(text):
    with pytest.raises(ValueError, match="px.parse_duration"):
        call("parse_duration", lit(text, S))


def test_now_and_time_conversions():
    assert call("now").as_py() == NOW_NS
    assert SCALARS["now"].semantic is SEM.TIME
    assert values(call("time_to_int64", col([NOW_NS, None], T))) == [NOW_NS, None]
    assert values(call("int64_to_time", col([5], I))) == [5]
    assert resolve_type(SCALARS["int64_to_time"].returns, (I,)) is T


@pytest.mark.parametrize(
    ("name", "semantic", "arg", "result"),
    [
        ("DurationNanos", SEM.DURATION_NS, F, F),
        ("DurationNanos", SEM.DURATION_NS, I, I),
        ("Bytes", SEM.BYTES, I, I),
        ("Percent", SEM.PERCENT, F, F),
        ("Time", SEM.TIME, I, T),
    ],
)
def test_semantic_casts_keep_values(name, semantic, arg, result):
    fn = SCALARS[name]
    assert resolve_type(fn.returns, (arg,)) is result
    assert resolve_semantic(fn.semantic, (SEM.NONE,)) is semantic
    data = [1, None, 3] if arg is not F else [1.5, None, 3.0]
    assert values(call(name, col(data, arg))) == data


def test_abs_and_negate_keep_quantities():
    assert resolve_semantic(SCALARS["abs"].semantic, (SEM.BYTES,)) is SEM.BYTES
    assert resolve_semantic(SCALARS["negate"].semantic, (SEM.DURATION_NS,)) is SEM.DURATION_NS
    assert resolve_semantic(SCALARS["negate"].semantic, (SEM.TIME,)) is SEM.NONE
