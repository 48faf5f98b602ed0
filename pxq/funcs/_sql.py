"""SQL normalization: ``px.normalize_pgsql`` and ``px.normalize_mysql``.

Both turn a query's literals into placeholders and return Pixie's JSON result: ``{"query":
<normalized text>, "params": [<literal or bound value>, ...]}``, or ``{"error": <why>}``. The
model is Pixie's ``src/carnot/funcs/builtins/sql_ops.cc`` (the UDFs, the ``query=[...]
params=[...]`` form of an executed statement) and ``sql_parsing/normalization.{h,cc}`` (placeholders
``$1, $2, ...`` for PostgreSQL, ``?`` for MySQL; an existing placeholder takes its bound value
from the parameters; a MySQL ``@variable`` is left alone); the expected values of
``tests/funcs/test_sql.py`` are the cases of Pixie's ``normalization_test.cc`` and ``sql_ops_test.cc``.

Pixie finds the literals with full ANTLR grammars of both dialects; pxq uses a tokenizer that knows
the same literal forms (numbers, quoted strings with their E/B/X/N prefixes, dollar-quoted strings,
TRUE/FALSE, and in MySQL NULL and a signed number, as the MySQL grammar's ``constant`` rule has
them) and the places where a number is not a value (a type's length ``varchar(20)``, MySQL's
``LIMIT``). Choices where the two can differ:
- A statement that does not parse is an error in Pixie whatever is wrong with it; pxq reports an
  error only for what a tokenizer sees (an unterminated string, quoted identifier or comment) and
  otherwise normalizes the literals it finds.
- Strings arrive here as valid UTF-8 (pxq's tables hold text), so Pixie's "Invalid UTF-8 byte
  sequence" error cannot happen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pyarrow as pa

from pxq.funcs._common import INT64, STRING, Value, column, length_of, param, udf
from pxq.funcs.registry import ExecContext

# Pixie's command codes (sql_ops.h): pgsql_events.req_cmd text, mysql_events.req_cmd byte.
PG_QUERY_CMD = "Query"
PG_EXECUTE_CMD = "Execute"
MYSQL_QUERY_CMD = 0x03
MYSQL_EXECUTE_CMD = 0x17


class SqlNormalizeError(ValueError):
    """Why a statement could not be normalized (the JSON result's "error")."""


# Type names whose parenthesised numbers are a length or precision, not a value.
_TYPE_NAMES = frozenset(
    (
        "varchar", "char", "character", "nchar", "nvarchar", "varying", "numeric", "decimal", "dec", "bit",
        "varbit", "timestamp", "timestamptz", "time", "timetz", "interval", "float", "double", "real", "int",
        "integer", "tinyint", "smallint", "mediumint", "bigint", "binary", "varbinary", "datetime", "year", "text",
        "blob",
    )
)  # fmt: skip

_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_PG_PARAM = re.compile(r"\$\d+")
_MYSQL_VARIABLE = re.compile(r"@@?(?:[A-Za-z0-9_.$]+|`[^`]*`|'[^']*'|\"[^\"]*\")")
_HEX_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|0[bB][01]+")

# Token kinds.
_CONST, _PARAM, _IDENTIFIER, _KEYWORD_CONST, _OP, _OPEN, _CLOSE, _OTHER = range(8)


def _quoted_end(sql: str, start: int, quote: str, backslash: bool) -> int:
    """The index after the closing ``quote`` of a quoted token opening at ``start`` (a doubled
    quote, or with ``backslash`` a backslash, escapes)."""
    i = start + 1
    n = len(sql)
    while i < n:
        ch = sql[i]
        if backslash and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise SqlNormalizeError(f"unterminated {'string' if quote != chr(34) else 'quoted identifier'} at offset {start}")


def _tokens(sql: str, mysql: bool) -> list[tuple[int, int, int]]:
    """(kind, start, end) of each token of ``sql``; comments and whitespace are left out."""
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
            continue
        if sql.startswith("--", i) or (mysql and ch == "#"):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if sql.startswith("/*", i):
            depth, j = 1, i + 2
            while depth and j < n:  # PostgreSQL nests block comments
                if sql.startswith("/*", j) and not mysql:
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise SqlNormalizeError(f"unterminated comment at offset {i}")
            i = j
            continue
        if ch == "'" or (mysql and ch == '"'):
            end = _quoted_end(sql, i, ch, backslash=mysql)
            out.append((_CONST, i, end))
            i = end
            continue
        if ch in "eEbBxXnN" and i + 1 < n and sql[i + 1] == "'":
            end = _quoted_end(sql, i + 1, "'", backslash=mysql or ch in "eE")
            out.append((_CONST, i, end))
            i = end
            continue
        if ch == '"' or (mysql and ch == "`"):
            end = _quoted_end(sql, i, ch, backslash=False)
            out.append((_IDENTIFIER, i, end))
            i = end
            continue
        if ch == "$" and not mysql:
            m = _PG_PARAM.match(sql, i)
            if m:
                out.append((_PARAM, i, m.end()))
                i = m.end()
                continue
            m = _DOLLAR_TAG.match(sql, i)
            if m:
                close = sql.find(m.group(), m.end())
                if close < 0:
                    raise SqlNormalizeError(f"unterminated dollar-quoted string at offset {i}")
                end = close + len(m.group())
                out.append((_CONST, i, end))
                i = end
                continue
        if ch == "?" and mysql:
            out.append((_PARAM, i, i + 1))
            i += 1
            continue
        if ch == "@" and mysql:
            m = _MYSQL_VARIABLE.match(sql, i)
            end = m.end() if m else i + 1
            out.append((_IDENTIFIER, i, end))  # a named variable: Pixie leaves it as it is
            i = end
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and sql[i + 1].isdigit()):
            m = (mysql and _HEX_NUMBER.match(sql, i)) or _NUMBER.match(sql, i)
            assert m is not None
            end = m.end()
            if end < n and (sql[end].isalpha() or sql[end] == "_"):  # 1abc: a MySQL identifier
                m2 = _IDENT.match(sql, end)
                end = m2.end() if m2 else end
                out.append((_IDENTIFIER, i, end))
            else:
                out.append((_CONST, i, end))
            i = end
            continue
        m = _IDENT.match(sql, i)
        if m:
            word = m.group().lower()
            kind = _KEYWORD_CONST if word in ("true", "false") or (mysql and word == "null") else _IDENTIFIER
            out.append((kind, i, m.end()))
            i = m.end()
            continue
        if ch == "(":
            out.append((_OPEN, i, i + 1))
        elif ch == ")":
            out.append((_CLOSE, i, i + 1))
        elif ch in "+-*/<>=!~^&|%,;:[]":
            out.append((_OP, i, i + 1))
        else:
            out.append((_OTHER, i, i + 1))
        i += 1
    return out


def _fragments(sql: str, mysql: bool) -> list[tuple[int, int, int]]:
    """(kind, start, end) of each literal (``_CONST``) and placeholder (``_PARAM``), in order."""
    tokens = _tokens(sql, mysql)
    found: list[tuple[int, int, int]] = []
    type_parens: list[bool] = []  # per open parenthesis: does it hold a type's length?
    for k, (kind, start, end) in enumerate(tokens):
        prev = tokens[k - 1] if k else None
        prev_word = sql[prev[1] : prev[2]].lower() if prev and prev[0] == _IDENTIFIER else ""
        if kind == _OPEN:
            type_parens.append(prev_word in _TYPE_NAMES)
        elif kind == _CLOSE:
            if type_parens:
                type_parens.pop()
        elif kind == _PARAM:
            found.append((_PARAM, start, end))
        elif kind == _KEYWORD_CONST:
            word = sql[start:end].lower()
            if word == "null" and prev_word in ("is", "not"):
                continue  # IS [NOT] NULL is a predicate, not a value
            found.append((_CONST, start, end))
        elif kind == _CONST:
            is_number = sql[start].isdigit() or sql[start] == "."
            if is_number and type_parens and type_parens[-1]:
                continue
            if is_number and mysql and prev_word in ("limit", "offset"):
                continue  # MySQL's LIMIT takes a number, not an expression
            if (
                mysql
                and is_number
                and prev is not None
                and prev[0] == _OP
                and sql[prev[1]] == "-"
                and prev[2] == start
                and (k < 2 or tokens[k - 2][0] in (_OP, _OPEN, _OTHER) or _is_keyword(sql, tokens[k - 2]))
            ):
                found.append((_CONST, prev[1], end))  # MySQL's constant rule takes the sign
                continue
            found.append((_CONST, start, end))
    return found


# Words after which a '-' is a sign rather than a subtraction.
_SIGN_AFTER = frozenset(
    ("select", "where", "and", "or", "not", "by", "set", "values", "when", "then", "else", "in", "like", "between",
     "return", "limit")
)  # fmt: skip


def _is_keyword(sql: str, token: tuple[int, int, int]) -> bool:
    return token[0] == _IDENTIFIER and sql[token[1] : token[2]].lower() in _SIGN_AFTER


def normalize(sql: str, param_values: list[str], mysql: bool) -> tuple[str, list[str]]:
    """(normalized query, params): Pixie's ``normalize_sql`` for one dialect."""
    fragments = _fragments(sql, mysql)
    pieces: list[str] = []
    params: list[str] = []
    last = 0
    placeholder_number = 1
    generic_count = 0
    for kind, start, end in fragments:
        text = sql[start:end]
        if kind == _PARAM:
            if mysql:
                index = generic_count
                generic_count += 1
            else:
                index = int(text[1:]) - 1
                if index < 0:
                    raise SqlNormalizeError(f"Placeholder {text} invalid")
            if index >= len(param_values):
                raise SqlNormalizeError(
                    "Query has more parameter placeholders in it than parameter values were passed in"
                )
            params.append(param_values[index])
        else:
            params.append(re.sub(r"\s+", "", text) if mysql and text.startswith("-") else text)
        pieces.append(sql[last:start])
        pieces.append("?" if mysql else f"${placeholder_number}")
        placeholder_number += 1
        last = end
    pieces.append(sql[last:])
    return "".join(pieces), params


def parse_execute(text: str) -> tuple[str, list[str]]:
    """The statement and bound values of an executed statement's ``query=[Q] params=[A, B]`` text,
    split as Pixie's ``ParseExecuteCommand`` does (the query ends at the first ``]``, the values
    are separated by ``", "``)."""
    rest = text.removeprefix("query=[")
    close = rest.find("]")
    query = rest if close < 0 else rest[:close]
    rest = rest[len(query) :].removeprefix("] params=[")
    close = rest.rfind("]")
    return query, (rest if close < 0 else rest[:close]).split(", ")


def _json(query: str | None, params: list[str], error: str | None) -> str:
    if error is not None:
        return json.dumps({"error": error}, ensure_ascii=False, separators=(",", ":"))
    return json.dumps({"query": query, "params": params}, ensure_ascii=False, separators=(",", ":"))


def normalize_pgsql(sql: str, cmd: str) -> str:
    """``px.normalize_pgsql``'s value for one row: Pixie's JSON result."""
    if cmd == PG_EXECUTE_CMD:
        query, values = parse_execute(sql)
    elif cmd == PG_QUERY_CMD:
        query, values = sql, []
    else:
        return _json(None, [], f"cmd_code must be one of '{PG_QUERY_CMD}' or '{PG_EXECUTE_CMD}'")
    try:
        normalized, params = normalize(query, values, mysql=False)
    except SqlNormalizeError as e:
        return _json(None, [], str(e))
    return _json(normalized, params, None)


def normalize_mysql(sql: str, cmd: int) -> str:
    """``px.normalize_mysql``'s value for one row: Pixie's JSON result."""
    if cmd == MYSQL_EXECUTE_CMD:
        query, values = parse_execute(sql)
    elif cmd == MYSQL_QUERY_CMD:
        query, values = sql, []
    else:
        return _json(None, [], f"cmd_code must be one of '{MYSQL_QUERY_CMD}' or '{MYSQL_EXECUTE_CMD}'")
    try:
        normalized, params = normalize(query, values, mysql=True)
    except SqlNormalizeError as e:
        return _json(None, [], str(e))
    return _json(normalized, params, None)


def _per_distinct_pair(fn: Callable[[str, object], str], sql: Value, cmd: Value) -> pa.Array:
    """``fn(sql, cmd)`` per row, computed once per distinct pair (queries repeat a lot)."""
    n = length_of(sql, cmd)
    assert n is not None
    cache: dict[tuple[str, object], str] = {}
    out: list[str | None] = []
    for s, c in zip(column(sql, n).to_pylist(), column(cmd, n).to_pylist(), strict=True):
        if s is None or c is None:
            out.append(None)
            continue
        key = (s, c)
        value = cache.get(key)
        if value is None:
            value = cache[key] = fn(s, c)
        out.append(value)
    return pa.array(out, pa.string())


@udf(
    "normalize_pgsql",
    (param("sql", STRING), param("cmd_code", STRING)),
    STRING,
    'A PostgreSQL query (req_cmd "Query" or "Execute") with literals as $n placeholders: JSON with query and '
    "params, or error.",
)
def _normalize_pgsql(ctx: ExecContext, sql: Value, cmd: Value) -> Value:
    return _per_distinct_pair(lambda s, c: normalize_pgsql(s, str(c)), sql, cmd)


@udf(
    "normalize_mysql",
    (param("sql", STRING), param("cmd_code", INT64)),
    STRING,
    "A MySQL query (req_cmd 3 COM_QUERY or 23 COM_STMT_EXECUTE) with literals as ? placeholders: JSON with "
    "query and params, or error.",
)
def _normalize_mysql(ctx: ExecContext, sql: Value, cmd: Value) -> Value:
    return _per_distinct_pair(lambda s, c: normalize_mysql(s, int(c)), sql, cmd)  # type: ignore[call-overload]
