"""Every registered function on the extremes a query can hand it: INT64 min/max, huge and non-finite
floats, empty strings, zero divisors, JSON nested 100,000 deep. The result is the right value or an
error the executor reports in one line (ExecutionError), never a traceback, hang or memory blow-up.

References are Python computations of the documented semantics (Pixie's UDFs where pxq follows
them: src/carnot/funcs/builtins/string_ops.h SubstringUDF, math_ops.h ModuloUDF/BinUDF/RoundUDF,
json_ops.h PluckUDF, in github.com/pixie-io/pixie).
"""

from __future__ import annotations

import itertools
import math

import pyarrow as pa
import pytest
from hypothesis import example, given, strategies as st

from pxq.errors import ExecutionError, ResourceLimitError
from pxq.exec.expressions import evaluate
from pxq.funcs.registry import ExecContext
from pxq.plan.expr import ColumnRef, FuncCall, Literal
from pxq.types import DataType, SemanticType
from tests.funcs.funcs_support import CTX, SCALARS, SETTINGS, call, col, internal, lit, values

I, F, S, B, T, U = (
    DataType.INT64,
    DataType.FLOAT64,
    DataType.STRING,
    DataType.BOOLEAN,
    DataType.TIME64NS,
    DataType.UINT128,
)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
int64s = st.integers(INT64_MIN, INT64_MAX)
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000


def fits_int64(n: int) -> bool:
    return INT64_MIN <= n <= INT64_MAX


# ---------------------------------------------------------------- substring (string_ops.h SubstringUDF)


def pixie_substring(s: str, pos: int, length: int) -> str:
    # "If the pos is 'erroneous' then just return empty string"; substr clamps the length.
    if pos < 0 or pos > len(s) or length < 0:
        return ""
    return s[pos : pos + length]


@SETTINGS
@given(st.lists(st.none() | st.text(alphabet="ab✓", max_size=6), max_size=5), int64s, int64s)
@example(["checkout"], 1, 5)
@example(["abc", None], 0, INT64_MAX)
@example(["abc"], 1, INT64_MAX)
@example(["abc"], INT64_MAX, INT64_MAX)
@example(["abc"], INT64_MIN, 1)
@example(["abc"], 3, 1)
def test_substring_with_any_int64_arguments(texts, pos, length):
    got = values(call("substring", col(texts, S), lit(pos, I), lit(length, I)))
    assert got == [None if t is None else pixie_substring(t, pos, length) for t in texts]


@SETTINGS
@given(st.lists(st.tuples(st.none() | st.text(alphabet="ab✓:", max_size=6), st.none() | int64s, st.none() | int64s),
                max_size=6))  # fmt: skip
@example([("10.0.0.1:53", 0, 8), ("a", 2, 1), ("abc", -1, 1), ("abc", 1, -1), ("abc", 3, 1), (None, 0, 1)])
@example([("abc", None, 1), ("abc", 0, None), ("abc", 1, INT64_MAX)])
def test_substring_with_positions_and_lengths_from_columns(rows):
    """Pixie's SubstringUDF takes columns for pos and length (dns_flow_graph cuts each row at its
    own ':' with px.substring(df.to_entity, 0, df.idx1)); null in any argument gives null."""
    texts, positions, lengths = ([r[i] for r in rows] for i in range(3))
    for pos, length in (
        (col(positions, I), col(lengths, I)),
        (lit(1, I), col(lengths, I)),
        (col(positions, I), lit(2, I)),
    ):
        got = values(call("substring", col(texts, S), pos, length))
        pos_values = positions if isinstance(pos, pa.Array) else [1] * len(rows)
        length_values = lengths if isinstance(length, pa.Array) else [2] * len(rows)
        assert got == [
            None if None in (t, p, n) else pixie_substring(t, p, n)
            for t, p, n in zip(texts, pos_values, length_values, strict=True)
        ]


# ---------------------------------------------------------------- bin (math_ops.h BinUDF, rounded down)


@SETTINGS
@given(st.lists(st.none() | int64s, min_size=1, max_size=5), st.integers(1, INT64_MAX))
@example([INT64_MIN], 10)
@example([INT64_MIN], INT64_MAX)
@example([INT64_MAX, -5, 5], INT64_MAX)
@example([INT64_MIN], 1)
@example([INT64_MIN + 5], 2)
def test_bin_is_the_multiple_at_or_below_or_an_error(xs, size):
    expected = [None if x is None else (x // size) * size for x in xs]
    if all(v is None or fits_int64(v) for v in expected):
        assert values(call("bin", col(xs, I), lit(size, I))) == expected
    else:  # the multiple below is not an INT64: never a wrapped number
        with pytest.raises(ValueError, match="px.bin: a value has no multiple of"):
            call("bin", col(xs, I), lit(size, I))


@pytest.mark.parametrize("size", [0, -1, INT64_MIN])
def test_bin_rejects_sizes_below_one(size):
    with pytest.raises(ValueError, match="size must be positive"):
        call("bin", col([1], I), lit(size, I))


def test_bin_of_floats_out_of_int64_is_null():
    assert values(call("bin", col([1e300, -1e300, math.inf, math.nan, 25.7], F), lit(10, I))) == [
        None,
        None,
        None,
        None,
        20,
    ]


# ---------------------------------------------------------------- modulo (math_ops.h ModuloUDF: C++ %)


def c_modulo(a: int, b: int) -> int | None:
    if b == 0:
        return None  # undefined in C++; pxq's choice is null
    remainder = abs(a) % abs(b)
    return -remainder if a < 0 else remainder


@SETTINGS
@given(st.lists(st.tuples(int64s, int64s), min_size=1, max_size=5))
@example([(INT64_MIN, -1)])
@example([(INT64_MIN, 1), (INT64_MAX, -1), (INT64_MIN, INT64_MIN), (INT64_MIN, INT64_MAX), (-7, 5), (7, 0)])
def test_modulo_with_extreme_integers(pairs):
    a, b = zip(*pairs)
    assert values(call("modulo", col(list(a), I), col(list(b), I))) == [c_modulo(x, y) for x, y in pairs]


# ---------------------------------------------------------------- round (math_ops.h RoundUDF: "%.*f")


@pytest.mark.parametrize("x", [5e-324, -5e-324, 1.7976931348623157e308, 0.1, -0.0, math.inf, -math.inf])
@pytest.mark.parametrize("decimals", [0, 31, 330, 1074])
def test_round_with_many_decimals_matches_printf(x, decimals):
    assert values(call("round", col([x], F), lit(decimals, I))) == [f"{x:.{decimals}f}"]


@pytest.mark.parametrize("decimals", [1075, 1_000_000_000, INT64_MAX, -1, INT64_MIN])
def test_round_refuses_decimals_outside_0_to_1074(decimals):
    with pytest.raises(ValueError, match="decimals must be between 0 and 1074"):
        call("round", col([1.5], F), lit(decimals, I))


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    "name,unit",
    [
        ("microseconds", 10**3),
        ("milliseconds", 10**6),
        ("seconds", 10**9),
        ("minutes", 60 * 10**9),
        ("hours", 3600 * 10**9),
        ("days", 86400 * 10**9),
    ],
)
@SETTINGS
@given(n=int64s)
@example(n=10**12)
@example(n=INT64_MAX)
@example(n=INT64_MIN)
@example(n=106_751)
def test_durations_never_wrap(name, unit, n):
    if fits_int64(n * unit):
        assert values(call(name, col([n], I))) == [n * unit]
    else:
        with pytest.raises(ValueError, match="does not fit in int64 nanoseconds"):
            call(name, col([n], I))


@pytest.mark.parametrize("n", [math.inf, -math.inf, 1e300, 9.3e18])
def test_float_durations_beyond_int64_are_errors(n):
    with pytest.raises(ValueError, match="does not fit"):
        call("seconds", col([n], F))


# ---------------------------------------------------------------- JSON nested deeper than the parser goes


@pytest.mark.parametrize(
    "name,key,shallow_doc,shallow_value",
    [
        ("pluck", lit("a", S), '{"a": "x"}', "x"),
        ("pluck_int64", lit("a", S), '{"a": 7}', 7),
        ("pluck_float64", lit("a", S), '{"a": 2.5}', 2.5),
        ("pluck_array", lit(0, I), '["x"]', "x"),
    ],
)
def test_json_nested_100000_deep_plucks_as_null(name, key, shallow_doc, shallow_value):
    docs = [DEEP_ARRAY, shallow_doc, DEEP_OBJECT, None, '{"a": ' + DEEP_ARRAY + "}"]
    got = values(call(name, col(docs, S), key))
    assert got == [None, shallow_value, None, None, None]


# ---------------------------------------------------------------- px.replace output size


def test_replace_that_would_outgrow_the_memory_limit_is_refused():
    body = "x" * 200_000  # '' matches before every character: 200,001 copies of the replacement
    limited = ExecContext(now_ns=0, memory_limit_bytes=64 << 20)
    one_row = (200_000 + 1) * 1000 + 200_000  # bytes: every match adds the replacement, the body stays
    with pytest.raises(
        ResourceLimitError,
        match=rf"px.replace\('', \.\.\., '01234567890123456\.\.\.'\) needs "
        rf"about {one_row / 2**20:.1f} MiB, more than the 64 MiB limit",
    ):
        call("replace", lit("", S), col([body, body], S), lit("0123456789" * 100, S), ctx=limited)
    # The same call on a short text fits, and gives what Python's re gives.
    short = values(call("replace", lit("", S), col(["ab"], S), lit("-", S), ctx=limited))
    assert short == ["-a-b-"]


@SETTINGS
@given(
    st.sampled_from(["", "a*", "a", "x?", r"\b", "(a)(b)?", ".", "é", "^", "$"]),
    st.lists(st.none() | st.text(alphabet="abé ", max_size=8), min_size=1, max_size=5),
    st.sampled_from(["", "-", r"\1\1", r"<\0>", "long replacement"]),
)
@example(r"\b", ["a"], "-")  # Arrow's count_substring_regex finds 1 match here, RE2's replace 2
def test_replace_size_bounds_are_upper_bounds(pattern, texts, replacement):
    from pxq.funcs._strings import replaced_size_bounds

    column = col(texts, S)
    try:
        produced = values(call("replace", lit(pattern, S), column, lit(replacement, S)))
    except ValueError:  # \1 in a pattern without that group
        return
    bounds = replaced_size_bounds(column, replacement)
    for text, bound in zip(produced, bounds):
        assert len((text or "").encode()) <= bound


@SETTINGS
@given(st.lists(st.text(alphabet="ab", max_size=30), min_size=1, max_size=40), st.integers(200, 2000))
@example(["ab" * 15] * 40, 200)
def test_replace_in_pieces_under_a_limit_matches_python(texts, limit):
    # A limit small enough that the rows run in several pieces, yet the whole output fits.
    limited = ExecContext(now_ns=0, memory_limit_bytes=limit)
    expected = [t.replace("a", "<A>") for t in texts]
    if sum(len(t) for t in expected) > limit:
        return
    assert values(call("replace", lit("a", S), col(texts, S), lit("<A>", S), ctx=limited)) == expected


# ---------------------------------------------------------------- every function, every extreme

EXTREMES = {
    I: [0, 1, -1, INT64_MAX, INT64_MIN, None],
    T: [0, INT64_MAX, INT64_MIN, None],
    F: [0.0, -0.0, 1e308, -1e308, math.inf, -math.inf, math.nan, 5e-324, None],
    S: ["", "é", DEEP_ARRAY, DEEP_OBJECT, "9223372036854775808", None],
    B: [True, False, None],
    U: ["1:2:3", "", "x", None],
}
SKIPPED = {"now", "_exec_hostname", "_exec_host_num_cpus"}  # no arguments
# Constant arguments come from the script's text, not from captured data: no 200 KB regex patterns
# (RE2 matching a 600,000-character pattern against a 200 KB body runs for minutes).
LITERAL_EXTREMES = {**EXTREMES, S: ["", "é", "[", "(a)", "9223372036854775808", None]}


def _cases():
    for name, fn in sorted(SCALARS.items()):
        if name in SKIPPED:
            continue
        choices = [sorted(p.types, key=str) if p.types else list(EXTREMES) for p in fn.params]
        for types in itertools.product(*choices):
            try:
                result_type = fn.returns(types) if callable(fn.returns) else fn.returns
            except TypeError:
                continue  # the compiler refuses this combination
            yield name, types, result_type


@pytest.mark.parametrize("name,types,result_type", list(_cases()), ids=lambda v: str(v) if isinstance(v, str) else None)
def test_every_function_on_extreme_values_gives_a_value_or_an_execution_error(name, types, result_type):
    fn = SCALARS[name]
    columns = {f"c{i}": EXTREMES[t] for i, t in enumerate(types) if not fn.params[min(i, len(fn.params) - 1)].literal}
    # Every combination of the extremes, row by row, for the column arguments.
    rows = list(itertools.product(*columns.values()))
    table = pa.table(
        {
            c: pa.array([r[j] for r in rows], internal(t))
            for j, (c, t) in enumerate((c, types[int(c[1:])]) for c in columns)
        }
    )
    literal_choices = [
        LITERAL_EXTREMES[t] if fn.params[min(i, len(fn.params) - 1)].literal else [None] for i, t in enumerate(types)
    ]
    for literals in itertools.product(*literal_choices):
        args = tuple(
            Literal(literals[i], t) if fn.params[min(i, len(fn.params) - 1)].literal else ColumnRef(f"c{i}", t)
            for i, t in enumerate(types)
        )
        expr = FuncCall(name, args, result_type, SemanticType.NONE)
        try:
            result = evaluate(expr, table, CTX)
        except ExecutionError:
            continue
        if isinstance(result, pa.Scalar):
            continue
        assert len(result) == table.num_rows
