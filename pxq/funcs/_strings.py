"""String, regex, integer/string conversion and JSON functions.

Choices:
- Positions and lengths count characters (Unicode code points), like Python; Pixie counts bytes.
  The two agree on ASCII text. ``find`` returns -1 when the substring is absent (Pixie's npos).
- ``substring(s, pos, length)``: a negative ``pos`` or ``length`` gives "" (Pixie's rule for
  "erroneous" arguments); a ``pos`` past the end gives "". ``pos`` and ``length`` may be columns,
  as in Pixie's ``SubstringUDF`` (``src/carnot/funcs/builtins/string_ops.h``).
- ``tolower``/``toupper``/``trim`` act on ASCII only, as Pixie's ::tolower and
  absl::StripAsciiWhitespace do.
- ``regex_match(pattern, s)`` is a full match (RE2, ``.`` matches newline, as Pixie sets dot_nl);
  ``replace(pattern, s, replacement)`` replaces every match, ``\\1`` in the replacement refers to a
  group. An invalid pattern or replacement raises ValueError naming the function (Pixie quietly
  returns false or an error text in every row). ``replace`` whose output could pass the query's
  memory limit (an empty pattern repeats the replacement before every character) is a
  ResourceLimitError before RE2 runs out of memory.
- ``atoi(s, default=0)``: absl::SimpleAtoi's rules (optional surrounding ASCII whitespace, optional
  sign, decimal digits, within int64); anything else gives ``default``. Pixie requires the default;
  pxq lets it be omitted.
- ``pluck*`` (Pixie's rules): invalid JSON, a non-object, or a missing key gives "" / 0 / 0.0.
  Two departures: a JSON ``null`` value gives null (Pixie's own TODO asks for this, and pxq's
  quantiles use null for "no data"), and ``pluck_float64`` also reads integers (Pixie's rapidjson
  IsDouble() check turns ``{"p50": 10}`` into 0.0). A document nested deeper than Python's parser
  goes (about 1,000 levels) gives null: its members are unknown (Pixie's recursive rapidjson parse
  has no limit and would overflow its stack).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pxq.exec.limits import too_big
from pxq.funcs._common import BOOLEAN, FLOAT64, INT64, STRING, Value, map_distinct, null_of, param, rowwise, udf
from pxq.funcs.registry import ExecContext
from pxq.types import DataType, arrow_type

S_ = (param("s", STRING),)

# ---------------------------------------------------------------- searching


@udf("contains", (param("s", STRING), param("sub", STRING)), BOOLEAN, "Whether s contains sub.")
def _contains(ctx: ExecContext, s: Value, sub: Value) -> Value:
    if isinstance(sub, pa.Scalar):
        return pc.match_substring(s, sub.as_py()) if sub.is_valid else pa.nulls(len(s), pa.bool_())
    return rowwise(lambda a, b: b in a, pa.bool_(), s, sub)  # two columns: no Arrow kernel


@udf(
    "find",
    (param("s", STRING), param("sub", STRING)),
    INT64,
    "Index (in characters) of the first occurrence of sub in s, or -1.",
)
def _find(ctx: ExecContext, s: Value, sub: Value) -> Value:
    if not isinstance(sub, pa.Scalar):
        return rowwise(lambda a, b: a.find(b), pa.int64(), s, sub)  # two columns: no Arrow kernel
    needle = sub.as_py()
    if needle is None:
        return pa.nulls(len(s), pa.int64())
    if needle == "":
        return pc.if_else(pc.is_valid(s), 0, null_of(pa.int64()))
    # Arrow's find_substring counts bytes: split once and count the characters before the match.
    parts = pc.split_pattern(s, needle, max_splits=1)
    before = pc.cast(pc.utf8_length(pc.list_element(parts, 0)), pa.int64())
    return pc.if_else(pc.equal(pc.list_value_length(parts), 2), before, -1)


def _substring_of(text: str, start: int, count: int) -> str:
    """Pixie's SubstringUDF for one row: "erroneous" arguments (a negative pos or length, a pos past
    the end) give ""."""
    if start < 0 or count < 0 or start > len(text):
        return ""
    return text[start : start + count]


@udf(
    "substring",
    (param("s", STRING), param("pos", INT64), param("length", INT64)),
    STRING,
    'The `length` characters of s starting at `pos` (0-based; "" if pos is out of range).',
)
def _substring(ctx: ExecContext, s: Value, pos: Value, length: Value) -> Value:
    if not (isinstance(pos, pa.Scalar) and isinstance(length, pa.Scalar)):
        # pos or length from a column (Pixie's UDF takes columns: px.substring(s, 0, df.idx)).
        return rowwise(_substring_of, pa.string(), s, pos, length)  # per-row bounds: no Arrow kernel
    start, count = pos.as_py(), length.as_py()
    if start is None or count is None:
        return pa.nulls(len(s), pa.string())
    if start < 0 or count < 0:
        start = count = 0
    # pos + length may pass INT64 (px.substring(s, 1, 9223372036854775807)): the end is "the end".
    return pc.utf8_slice_codeunits(s, start, min(start + count, _INT64_MAX))


@udf("length", S_, INT64, "The number of characters in s.")
def _length(ctx: ExecContext, s: Value) -> Value:
    return pc.cast(pc.utf8_length(s), pa.int64())


@udf("tolower", S_, STRING, "s with ASCII letters in lower case.")
def _tolower(ctx: ExecContext, s: Value) -> Value:
    return pc.ascii_lower(s)


@udf("toupper", S_, STRING, "s with ASCII letters in upper case.")
def _toupper(ctx: ExecContext, s: Value) -> Value:
    return pc.ascii_upper(s)


@udf("trim", S_, STRING, "s without leading and trailing ASCII whitespace.")
def _trim(ctx: ExecContext, s: Value) -> Value:
    return pc.ascii_trim_whitespace(s)


@udf(
    "strip_prefix",
    (param("prefix", STRING), param("s", STRING)),
    STRING,
    "s without `prefix` at its start, if it is there (Pixie's order: prefix first).",
)
def _strip_prefix(ctx: ExecContext, prefix: Value, s: Value) -> Value:
    if not isinstance(prefix, pa.Scalar):  # two columns: no Arrow kernel
        return rowwise(lambda p, v: v[len(p) :] if v.startswith(p) else v, pa.string(), prefix, s)
    head = prefix.as_py()
    if head is None:
        return pa.nulls(len(s), pa.string())
    return pc.if_else(pc.starts_with(s, head), pc.utf8_slice_codeunits(s, len(head)), s)


# ---------------------------------------------------------------- regular expressions

_PROBE = pa.array([""], pa.string())


def _checked(fn_name: str, what: str, run: Callable[[], Value]) -> Value:
    try:
        return run()
    except pa.ArrowInvalid as exc:
        raise ValueError(f"px.{fn_name}: invalid {what}: {exc}") from None


@udf(
    "regex_match",
    (param("pattern", STRING, literal=True), param("s", STRING)),
    BOOLEAN,
    "Whether the RE2 pattern matches the whole of s.",
)
def _regex_match(ctx: ExecContext, pattern: Value, s: Value) -> Value:
    text = pattern.as_py()
    if text is None:
        return pa.nulls(len(s), pa.bool_())
    _checked("regex_match", f"regular expression {text!r}", lambda: pc.match_substring_regex(_PROBE, text))
    return pc.match_substring_regex(s, rf"(?s)\A(?:{text})\z")


@udf(
    "replace",
    (param("pattern", STRING, literal=True), param("s", STRING), param("replacement", STRING, literal=True)),
    STRING,
    "s with every match of the RE2 pattern replaced (\\1... refer to groups).",
)
def _replace(ctx: ExecContext, pattern: Value, s: Value, replacement: Value) -> Value:
    text, sub = pattern.as_py(), replacement.as_py()
    if text is None or sub is None:
        return pa.nulls(len(s), pa.string())
    _checked("replace", f"regular expression {text!r}", lambda: pc.match_substring_regex(_PROBE, text))
    _checked("replace", f"replacement {sub!r}", lambda: pc.replace_substring_regex(_PROBE, text, sub))
    if ctx.memory_limit_bytes is None:
        return pc.replace_substring_regex(s, text, sub)
    return _replace_within(s, text, sub, ctx.memory_limit_bytes)


_GROUP_REFERENCE = re.compile(r"\\[0-9]")


def _short(text: str) -> str:
    return repr(text) if len(text) <= 20 else repr(text[:17] + "...")


def replaced_size_bounds(s: Value, replacement: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Per row, an upper bound of the bytes px.replace can make of it: at most one match per byte
    plus one (an empty pattern matches before every character and at the end), each adding the
    replacement's text, and group references copying every byte of the row at most once each
    (matches do not overlap)."""
    lengths: np.ndarray[Any, np.dtype[np.float64]] = (
        pc.fill_null(pc.binary_length(s), 0).to_numpy(zero_copy_only=False).astype(np.float64)
    )
    references = len(_GROUP_REFERENCE.findall(replacement))
    return lengths * (1 + references) + (lengths + 1) * len(replacement.encode())


def _replace_within(s: Value, pattern: str, replacement: str, limit: int) -> Value:
    """px.replace, refused before its output outgrows ``limit`` bytes. The output can dwarf the input
    (px.replace('', body, long_text) multiplies the body by long_text) and RE2 dies on
    std::bad_alloc, which takes the process with it; so rows whose bound fits run in pieces of about
    a quarter of the limit, and the bytes actually produced are counted."""
    what = f"px.replace({pattern!r}, ..., {_short(replacement)})"
    bounds = replaced_size_bounds(s, replacement)
    if bounds.sum() <= limit:
        return pc.replace_substring_regex(s, pattern, replacement)
    if bounds.max() > limit:  # one row alone could outgrow the limit
        raise too_big(what, bounds.max(), limit)
    piece_bytes = max(limit // 4, 1)
    ends = np.searchsorted(
        np.cumsum(bounds), np.arange(piece_bytes, bounds.sum() + piece_bytes, piece_bytes), side="right"
    )
    pieces, produced, start = [], 0, 0
    for end in [*ends.tolist(), len(s)]:
        end = max(end, start + 1)
        if start >= len(s):
            break
        piece = pc.replace_substring_regex(s.slice(start, end - start), pattern, replacement)
        produced += pc.sum(pc.binary_length(piece)).as_py() or 0
        if produced > limit:
            raise too_big(what, produced, limit)
        pieces.append(piece)
        start = end
    return pa.concat_arrays(pieces)


# ---------------------------------------------------------------- conversions

_SIMPLE_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*", re.ASCII)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _atoi(text: str) -> int | None:
    match = _SIMPLE_ATOI.fullmatch(text)
    if match is None:
        return None
    value = int(match.group(1))
    return value if _INT64_MIN <= value <= _INT64_MAX else None


@udf(
    "atoi",
    (param("s", STRING), param("default", INT64, default=0, has_default=True)),
    INT64,
    "s parsed as a decimal INT64, or `default` (0 if omitted) when it is not one.",
)
def _atoi_impl(ctx: ExecContext, s: Value, default: Value) -> Value:
    # Arrow's string->int cast fails the whole array on one bad value and has no "null on error"
    # mode, so parsing runs in Python, once per distinct string.
    parsed = map_distinct(s, _atoi, pa.int64())
    failed = pc.and_(pc.is_valid(s), pc.is_null(parsed))
    return pc.if_else(failed, default, parsed)


@udf("itoa", (param("i", INT64),), STRING, "The decimal text of an INT64.")
def _itoa(ctx: ExecContext, i: Value) -> Value:
    return pc.cast(i, pa.string())


# ---------------------------------------------------------------- JSON
# JSON has no Arrow kernel: each distinct document is parsed once with Python's json and the
# results are spread back over the rows (map_distinct).

_ABSENT = object()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity: rapidjson refuses them too


# A document nested too deeply for Python's recursive parser (a captured body can be
# '[[[[...' 100,000 levels deep); its members are unknown, so they pluck as null.
_TOO_DEEP = object()


def _parse(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return _ABSENT
    except RecursionError:
        return _TOO_DEEP


def _member(text: str, key: str) -> Any:
    doc = _parse(text)
    if doc is _TOO_DEEP:
        return None
    return doc.get(key, _ABSENT) if isinstance(doc, dict) else _ABSENT


def _as_text(value: Any) -> str | None:
    if value is _ABSENT:
        return ""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _as_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return 0


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _pluck(name: str, convert: Callable[[Any], Any], out_type: DataType, doc: str) -> None:
    out = arrow_type(out_type)

    def impl(ctx: ExecContext, json_text: Value, key: Value) -> Value:
        member = key.as_py()
        if member is None:
            return pa.nulls(len(json_text), out)
        return map_distinct(json_text, lambda text: convert(_member(text, member)), out)

    udf(name, (param("json", STRING), param("key", STRING, literal=True)), out_type, doc)(impl)


_pluck(
    "pluck",
    _as_text,
    STRING,
    'The value of a top-level key of a JSON object, as text (objects and lists as JSON; "" if absent).',
)
_pluck(
    "pluck_int64",
    _as_int,
    INT64,
    "The integer value of a top-level key of a JSON object (0 if absent or not an integer).",
)
_pluck(
    "pluck_float64",
    _as_float,
    FLOAT64,
    "The numeric value of a top-level key of a JSON object as FLOAT64 (0.0 if absent or not a number).",
)


def _element(text: str, index: int) -> Any:
    doc = _parse(text)
    if doc is _TOO_DEEP:
        return None
    return doc[index] if isinstance(doc, list) and 0 <= index < len(doc) else _ABSENT


@udf(
    "pluck_array",
    (param("json", STRING), param("index", INT64, literal=True)),
    STRING,
    'Element `index` of a JSON array, as text ("" if out of range or not an array).',
)
def _pluck_array(ctx: ExecContext, json_text: Value, index: Value) -> Value:
    position = index.as_py()
    if position is None:
        return pa.nulls(len(json_text), pa.string())
    return map_distinct(json_text, lambda text: _as_text(_element(text, position)), pa.string())
