"""Operators against Python computed row by row on generated data."""

from __future__ import annotations

import math
import operator

import pytest
from hypothesis import example, given, strategies as st

from pxq.funcs.registry import resolve_semantic, resolve_type
from pxq.types import DataType, SemanticType
from tests.funcs.funcs_support import SCALARS, SETTINGS, call, col, lit, values

B, I, F, S, T, U = (
    DataType.BOOLEAN,
    DataType.INT64,
    DataType.FLOAT64,
    DataType.STRING,
    DataType.TIME64NS,
    DataType.UINT128,
)
SEM = SemanticType
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

ints = st.integers(INT64_MIN, INT64_MAX)
small_ints = st.integers(-(10**6), 10**6)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


def c_mod(a: int, b: int) -> int:
    """C++'s %: the remainder of truncating division, with the sign of the dividend."""
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def pairs(strategy):
    return st.lists(st.tuples(st.none() | strategy, st.none() | strategy), max_size=30)


def run_pairs(name, rows, type_a, type_b):
    a = col([x for x, _ in rows], type_a)
    b = col([y for _, y in rows], type_b)
    return values(call(name, a, b))


def same_float(x, y):
    if x is None or y is None:
        return x is y
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y or math.isclose(x, y, rel_tol=1e-12)


# ---------------------------------------------------------------- arithmetic


@SETTINGS
@given(pairs(ints))
@pytest.mark.parametrize(
    ("name", "op"), [("add", operator.add), ("subtract", operator.sub), ("multiply", operator.mul)]
)
@example(rows=[(INT64_MAX, 1)])
@example(rows=[(INT64_MIN, -1)])
@example(rows=[(INT64_MIN, INT64_MIN), (1, 2)])
def test_integer_arithmetic_is_exact_or_an_error(name, op, rows):
    exact = [None if x is None or y is None else op(x, y) for x, y in rows]
    if all(v is None or INT64_MIN <= v <= INT64_MAX for v in exact):
        assert run_pairs(name, rows, I, I) == exact
    else:  # never a wrapped number
        with pytest.raises(ValueError, match=f"px.{name}: the result does not fit in INT64"):
            run_pairs(name, rows, I, I)


def test_time_plus_a_duration_beyond_int64_is_an_error():
    # 2023-11-14 plus 90,000 days (about 246 years) wrapped to a time in 1677.
    with pytest.raises(ValueError, match="px.add: the result does not fit in INT64"):
        call("add", col([1_700_000_000_000_000_000], T), col([90_000 * 86_400 * 10**9], I))


@SETTINGS
@given(st.lists(st.tuples(st.none() | ints, st.none() | floats), max_size=30))
@pytest.mark.parametrize(
    ("name", "op"), [("add", operator.add), ("subtract", operator.sub), ("multiply", operator.mul)]
)
def test_mixed_arithmetic_is_float(name, op, rows):
    got = run_pairs(name, rows, I, F)
    expect = [None if x is None or y is None else op(float(x), y) for x, y in rows]
    assert all(same_float(g, e) for g, e in zip(got, expect))
    assert resolve_type(SCALARS[name].returns, (I, F)) is F


@SETTINGS
@given(pairs(small_ints))
def test_divide_is_float_and_ieee_on_zero(rows):
    got = run_pairs("divide", rows, I, I)
    for (x, y), g in zip(rows, got):
        if x is None or y is None:
            assert g is None
        elif y == 0:
            assert math.isnan(g) if x == 0 else g == math.copysign(math.inf, x)
        else:
            assert same_float(g, x / y)


@SETTINGS
@given(pairs(ints))
def test_modulo_has_cpp_sign_semantics(rows):
    got = run_pairs("modulo", rows, I, I)
    assert got == [None if x is None or y is None or y == 0 else c_mod(x, y) for x, y in rows]


def test_modulo_examples():
    assert values(call("modulo", col([-7, 7, -7, 7, INT64_MIN, 5], I), col([5, 5, -5, -5, -1, 0], I))) == [
        -2,
        2,
        -2,
        2,
        0,
        None,
    ]
    assert values(call("modulo", col([17, -17], T), lit(5, I))) == [2, -2]


def test_string_concatenation():
    assert values(call("add", col(["ab", None, ""], S), lit("cd", S))) == ["abcd", None, "cd"]


def test_time_arithmetic_types_and_semantics():
    add, sub = SCALARS["add"], SCALARS["subtract"]
    assert resolve_type(add.returns, (T, I)) is T and resolve_type(add.returns, (I, T)) is T
    assert resolve_type(sub.returns, (T, T)) is I and resolve_type(sub.returns, (T, I)) is T
    assert resolve_semantic(add.semantic, (SEM.TIME, SEM.DURATION_NS)) is SEM.TIME
    assert resolve_semantic(add.semantic, (SEM.DURATION_NS, SEM.DURATION_NS)) is SEM.DURATION_NS
    assert resolve_semantic(add.semantic, (SEM.BYTES, SEM.DURATION_NS)) is SEM.NONE
    assert resolve_semantic(add.semantic, (SEM.BYTES, SEM.NONE)) is SEM.BYTES
    assert resolve_semantic(sub.semantic, (SEM.TIME, SEM.TIME)) is SEM.DURATION_NS
    assert resolve_semantic(sub.semantic, (SEM.TIME, SEM.NONE)) is SEM.TIME
    assert resolve_semantic(sub.semantic, (SEM.NONE, SEM.TIME)) is SEM.NONE
    assert resolve_semantic(SCALARS["divide"].semantic, (SEM.DURATION_NS, SEM.NONE)) is SEM.NONE
    assert values(call("subtract", col([100, None], T), col([40, 1], T))) == [60, None]


@SETTINGS
@given(st.lists(st.none() | ints, max_size=30))
@example([-(2**63), 1])
@example([2**63 - 1, None])
def test_negate_and_invert(xs):
    if INT64_MIN in xs:
        with pytest.raises(ValueError, match="px.negate: the result does not fit in INT64"):
            call("negate", col(xs, I))
    else:
        assert values(call("negate", col(xs, I))) == [None if x is None else -x for x in xs]
    assert values(call("invert", col(xs, I))) == [None if x is None else ~x for x in xs]


def test_invert_boolean_and_negate_float():
    assert values(call("invert", col([True, False, None], B))) == [False, True, None]
    assert values(call("negate", col([1.5, -0.0, None], F))) == [-1.5, 0.0, None]


@pytest.mark.parametrize(
    ("name", "types", "message"),
    [
        ("subtract", (S, I), "cannot subtract STRING and INT64"),
        ("add", (S, I), "cannot add STRING and INT64"),
        ("add", (T, T), "cannot add TIME64NS and TIME64NS"),
        ("add", (B, I), "cannot add BOOLEAN and INT64"),
        ("multiply", (T, I), "cannot multiply TIME64NS and INT64"),
        ("divide", (S, S), "cannot divide STRING and STRING"),
        ("modulo", (F, I), "cannot compute the modulo of FLOAT64 and INT64"),
        ("lessThan", (S, I), "cannot compare STRING and INT64"),
        ("lessThan", (B, B), "cannot compare BOOLEAN and BOOLEAN"),
        ("equal", (S, F), "cannot compare STRING and FLOAT64"),
        ("logicalAnd", (S, B), "cannot apply 'and' to STRING and BOOLEAN"),
        ("logicalNot", (F,), "cannot apply 'not' to FLOAT64"),
        ("negate", (S,), "cannot negate STRING"),
        ("invert", (F,), "cannot invert FLOAT64"),
    ],
)
def test_type_rules_reject_bad_combinations(name, types, message):
    with pytest.raises(TypeError) as info:
        resolve_type(SCALARS[name].returns, types)
    assert str(info.value) == message


# ---------------------------------------------------------------- comparisons

COMPARISONS = [
    ("equal", operator.eq),
    ("notEqual", operator.ne),
    ("lessThan", operator.lt),
    ("lessThanEqual", operator.le),
    ("greaterThan", operator.gt),
    ("greaterThanEqual", operator.ge),
]


@st.composite
def int_float_pair(draw):
    x = draw(ints)
    near = [float(x), float(x) + 1.0, float(x) - 0.5]
    return x, draw(st.sampled_from(near) | floats)


@SETTINGS
@given(st.lists(st.tuples(st.none() | ints, st.none() | floats) | int_float_pair(), max_size=30))
@pytest.mark.parametrize(("name", "op"), COMPARISONS)
def test_numeric_comparisons(name, op, rows):
    # As in C++, the INT64 is converted to double before comparing.
    got = run_pairs(name, rows, I, F)
    assert got == [None if x is None or y is None else op(float(x), y) for x, y in rows]
    assert resolve_type(SCALARS[name].returns, (I, F)) is B


@SETTINGS
@given(pairs(ints))
@pytest.mark.parametrize(("name", "op"), COMPARISONS)
def test_integer_comparisons_are_exact(name, op, rows):
    assert run_pairs(name, rows, I, I) == [None if x is None or y is None else op(x, y) for x, y in rows]


@SETTINGS
@given(pairs(st.text(max_size=6)))
@pytest.mark.parametrize(("name", "op"), COMPARISONS)
def test_string_comparisons_are_bytewise(name, op, rows):
    got = run_pairs(name, rows, S, S)
    assert got == [None if x is None or y is None else op(x.encode(), y.encode()) for x, y in rows]


@SETTINGS
@given(pairs(ints))
@pytest.mark.parametrize(("name", "op"), COMPARISONS)
def test_time_against_int_comparisons(name, op, rows):
    assert run_pairs(name, rows, T, I) == [None if x is None or y is None else op(x, y) for x, y in rows]


def test_boolean_and_upid_equality():
    assert values(call("equal", col([True, False, True], B), col([1, 0, 2], I))) == [True, True, False]
    assert values(call("notEqual", col([True, None], B), lit(False, B))) == [True, None]
    assert values(call("equal", col(["1:2:3", "1:2:4"], U), lit("1:2:3", S))) == [True, False]


# ---------------------------------------------------------------- logic

kleene = st.sampled_from([True, False, None])


def k_and(x, y):
    if x is False or y is False:
        return False
    return None if x is None or y is None else True


def k_or(x, y):
    if x is True or y is True:
        return True
    return None if x is None or y is None else False


@SETTINGS
@given(st.lists(st.tuples(kleene, kleene), max_size=20))
def test_logical_operators_are_kleene(rows):
    assert run_pairs("logicalAnd", rows, B, B) == [k_and(x, y) for x, y in rows]
    assert run_pairs("logicalOr", rows, B, B) == [k_or(x, y) for x, y in rows]
    xs = [x for x, _ in rows]
    assert values(call("logicalNot", col(xs, B))) == [None if x is None else not x for x in xs]


def test_logical_operators_on_integers_use_truthiness():
    a, b = col([0, 3, 0, -1, None], I), col([0, 0, 5, 2, 0], I)
    assert values(call("logicalAnd", a, b)) == [False, False, False, True, False]
    assert values(call("logicalOr", a, b)) == [False, True, True, True, None]
    assert values(call("logicalNot", a)) == [True, False, True, False, None]


def test_scalar_and_column_mix():
    assert values(call("add", col([1, 2], I), lit(10, I))) == [11, 12]
    assert values(call("lessThan", lit(1, I), col([0, 5], I))) == [False, True]
    assert call("add", lit(1, I), lit(2.5, F)).as_py() == 3.5
    assert call("modulo", lit(-7, I), lit(5, I)).as_py() == -2
    assert call("modulo", lit(7, I), lit(0, I)).as_py() is None
    assert call("logicalAnd", lit(False, B), lit(None, B)).as_py() is False
