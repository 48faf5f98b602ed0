"""String, regex, conversion and JSON functions against Python on generated data."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

from pxq.types import DataType
from tests.funcs.funcs_support import SCALARS, SETTINGS, call, col, lit, values

I, F, S = DataType.INT64, DataType.FLOAT64, DataType.STRING

# Mostly ASCII with some multi-byte characters, so character and byte positions differ.
texts = st.text(alphabet=st.sampled_from("abcAB -/é✓\t\n"), max_size=12)
opt_texts = st.lists(st.none() | texts, max_size=20)
ASCII_WS = " \t\n\v\f\r"


def per_row(fn, xs):
    return [None if x is None else fn(x) for x in xs]


def ascii_lower(s: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def ascii_upper(s: str) -> str:
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in s)


@SETTINGS
@given(opt_texts)
def test_one_argument_string_functions(xs):
    column = col(xs, S)
    assert values(call("length", column)) == per_row(len, xs)
    assert values(call("tolower", column)) == per_row(ascii_lower, xs)
    assert values(call("toupper", column)) == per_row(ascii_upper, xs)
    assert values(call("trim", column)) == per_row(lambda s: s.strip(ASCII_WS), xs)


def test_case_changes_are_ascii_only():
    assert values(call("toupper", col(["é straße", "Kelvin"], S))) == ["é STRAßE", "KELVIN"]
    assert values(call("trim", col(["\u00a0 x \r\n"], S))) == ["\u00a0 x"]


@SETTINGS
@given(opt_texts, texts)
def test_contains_and_find_with_a_constant(xs, sub):
    column = col(xs, S)
    assert values(call("contains", column, lit(sub, S))) == per_row(lambda s: sub in s, xs)
    assert values(call("find", column, lit(sub, S))) == per_row(lambda s: s.find(sub), xs)


@SETTINGS
@given(st.lists(st.tuples(st.none() | texts, st.none() | texts), max_size=20))
def test_contains_and_find_with_two_columns(rows):
    a, b = col([x for x, _ in rows], S), col([y for _, y in rows], S)
    both = [(x, y) for x, y in rows]
    assert values(call("contains", a, b)) == [None if x is None or y is None else y in x for x, y in both]
    assert values(call("find", a, b)) == [None if x is None or y is None else x.find(y) for x, y in both]


def test_find_examples():
    assert call("find", lit("pixie-labs", S), lit("-labs", S)).as_py() == 5
    assert values(call("find", col(["héllo wörld", "abc", ""], S), lit("w", S))) == [6, -1, -1]
    assert values(call("find", col(["abc", None], S), lit("", S))) == [0, None]


@SETTINGS
@given(opt_texts, st.integers(-3, 15), st.integers(-3, 15))
def test_substring(xs, pos, length):
    got = values(call("substring", col(xs, S), lit(pos, I), lit(length, I)))
    assert got == per_row(lambda s: "" if pos < 0 or length < 0 else s[pos : pos + length], xs)


def test_substring_example():
    assert call("substring", lit("checkout", S), lit(1, I), lit(5, I)).as_py() == "hecko"


@SETTINGS
@given(opt_texts, st.sampled_from(["", "a", "ab", "é", "/", "abc"]))
def test_strip_prefix_with_a_constant(xs, prefix):
    got = values(call("strip_prefix", lit(prefix, S), col(xs, S)))
    assert got == per_row(lambda s: s[len(prefix) :] if s.startswith(prefix) else s, xs)


@SETTINGS
@given(st.lists(st.tuples(texts, texts), max_size=20))
def test_strip_prefix_with_two_columns(rows):
    got = values(call("strip_prefix", col([p for p, _ in rows], S), col([s for _, s in rows], S)))
    assert got == [s[len(p) :] if s.startswith(p) else s for p, s in rows]


# ---------------------------------------------------------------- regular expressions

PATTERNS = ["abc*", ".*foo.*", "[a-c]+", "a|b", "(ab)+", r"\d{2,3}", "", "a.c", "(?i)ABC", "fo+"]
regex_texts = st.text(alphabet=st.sampled_from("abcfo12\n"), max_size=8)


@SETTINGS
@given(st.lists(st.none() | regex_texts, max_size=20), st.sampled_from(PATTERNS))
def test_regex_match_is_a_full_match_with_dot_matching_newline(xs, pattern):
    got = values(call("regex_match", lit(pattern, S), col(xs, S)))
    assert got == per_row(lambda s: re.fullmatch(pattern, s, re.S) is not None, xs)


@SETTINGS
@given(
    st.lists(st.none() | regex_texts, max_size=20),
    st.sampled_from([("[0-9]+", "#"), ("(a)(b)", r"\2\1"), ("o+", ""), ("c", "<\\0>")]),
)
def test_replace_replaces_every_match(xs, rule):
    pattern, replacement = rule
    python_replacement = replacement.replace("\\0", "\\g<0>")
    got = values(call("replace", lit(pattern, S), col(xs, S), lit(replacement, S)))
    assert got == per_row(lambda s: re.sub(pattern, python_replacement, s), xs)


def test_regex_match_examples():
    # Pixie's docs: 'abc' does not match 'abcd' but 'abc*' does (a full match); '.' crosses newlines.
    assert values(call("regex_match", lit("abc", S), col(["abcd", "abc"], S))) == [False, True]
    assert values(call("regex_match", lit("abc.*", S), col(["abcd", "xabc"], S))) == [True, False]
    assert values(call("regex_match", lit(".*kel.*", S), col(["line1\nkelvin\n", "kel"], S))) == [True, True]


def test_replace_example():
    out = call("replace", lit(r"10\.0\.0\.[0-9]+", S), lit("from 10.0.0.12 to 10.0.0.7", S), lit("IP_ADDR", S))
    assert out.as_py() == "from IP_ADDR to IP_ADDR"


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("regex_match", (lit("a(b", S), col(["x"], S))),
        ("replace", (lit("a(b", S), col(["x"], S), lit("y", S))),
        ("replace", (lit("ab", S), col(["x"], S), lit(r"\3", S))),
    ],
)
def test_invalid_patterns_raise_value_error(name, args):
    with pytest.raises(ValueError, match=f"px.{name}: invalid"):
        call(name, *args)


# ---------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("42", 42),
        (" 12 ", 12),
        ("+5", 5),
        ("-5", -5),
        ("\t7\n", 7),
        ("007", 7),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("9223372036854775808", -1),
        ("", -1),
        ("1e3", -1),
        ("0x10", -1),
        ("1_000", -1),
        ("1 2", -1),
        ("٣", -1),
        ("- 5", -1),
        ("5.0", -1),
    ],
)
def test_atoi_follows_simple_atoi(text, expect):
    assert call("atoi", lit(text, S), lit(-1, I)).as_py() == expect
    assert values(call("atoi", col([text, None], S), lit(-1, I))) == [expect, None]


@SETTINGS
@given(
    st.lists(st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(alphabet="+-0123456789 x", max_size=6), max_size=20)
)
def test_atoi_roundtrips_integers_and_defaults_the_rest(items):
    xs = [None if v is None else str(v) for v in items]
    defaults = list(range(len(xs)))

    def expect(v, d):
        if v is None:
            return None
        stripped = v.strip(ASCII_WS)
        if re.fullmatch(r"[+-]?[0-9]+", stripped) and -(2**63) <= int(stripped) < 2**63:
            return int(stripped)
        return d

    got = values(call("atoi", col(xs, S), col(defaults, I)))
    assert got == [expect(v, d) for v, d in zip(xs, defaults)]


def test_atoi_default_is_optional():
    param = SCALARS["atoi"].params[1]
    assert param.has_default and param.default == 0


@SETTINGS
@given(st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=20))
def test_itoa(xs):
    assert values(call("itoa", col(xs, I))) == per_row(str, xs)


# ---------------------------------------------------------------- JSON

KEYS = ["a", "b", "p50", "é"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=6,
)
documents = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4).map(json.dumps)
json_texts = st.lists(
    st.none() | documents | st.sampled_from(["not json", "[1, 2]", "7", "", '{"a": NaN}']), max_size=15
)
MISSING = object()


def member(text, key):
    try:
        doc = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError:
        return MISSING
    return doc.get(key, MISSING) if isinstance(doc, dict) else MISSING


def as_text(v):
    if v is MISSING:
        return ""
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def as_int(v):
    if v is None:
        return None
    ok = isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63
    return v if ok else 0


def as_float(v):
    if v is None:
        return None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


@SETTINGS
@given(json_texts, st.sampled_from(KEYS))
@pytest.mark.parametrize(
    ("name", "convert"), [("pluck", as_text), ("pluck_int64", as_int), ("pluck_float64", as_float)]
)
def test_pluck(name, convert, docs, key):
    got = values(call(name, col(docs, S), lit(key, S)))
    assert got == [None if d is None else convert(member(d, key)) for d in docs]


def test_pluck_examples():
    doc = lit('{"status_code": 200, "p50_latency": 5.1, "nested": {"x": [1, "two"]}, "gone": null}', S)
    assert call("pluck_int64", doc, lit("status_code", S)).as_py() == 200
    assert call("pluck_float64", doc, lit("p50_latency", S)).as_py() == 5.1
    assert call("pluck_float64", doc, lit("status_code", S)).as_py() == 200.0
    assert call("pluck_int64", doc, lit("p50_latency", S)).as_py() == 0
    assert call("pluck", doc, lit("nested", S)).as_py() == '{"x":[1,"two"]}'
    assert call("pluck", doc, lit("p50_latency", S)).as_py() == "5.1"
    assert call("pluck", doc, lit("missing", S)).as_py() == ""
    assert call("pluck", doc, lit("gone", S)).as_py() is None


@SETTINGS
@given(
    st.lists(st.none() | st.lists(json_values, max_size=4).map(json.dumps) | st.just("{}"), max_size=10),
    st.integers(-1, 4),
)
def test_pluck_array(docs, index):
    def expect(d):
        items = json.loads(d)
        return as_text(items[index] if isinstance(items, list) and 0 <= index < len(items) else MISSING)

    got = values(call("pluck_array", col(docs, S), lit(index, I)))
    assert got == [None if d is None else expect(d) for d in docs]


def test_pluck_parses_each_distinct_document_once(monkeypatch):
    import pxq.funcs._strings as strings

    seen = []
    real = strings._parse
    monkeypatch.setattr(strings, "_parse", lambda text: seen.append(text) or real(text))
    call("pluck", col(['{"a": 1}'] * 1000 + ['{"a": 2}'] * 1000, S), lit("a", S))
    assert sorted(seen) == ['{"a": 1}', '{"a": 2}']


def test_chunked_columns_work():
    chunked = pa.chunked_array([["pl/a", "b"], ["pl/c"]])
    assert call("strip_prefix", lit("pl/", S), chunked).to_pylist() == ["a", "b", "c"]
    assert call("pluck", pa.chunked_array([['{"a":1}'], [None]]), lit("a", S)).to_pylist() == ["1", None]
