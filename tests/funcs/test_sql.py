"""px.normalize_pgsql / px.normalize_mysql against Pixie's own test cases.

Expected values are copied from Pixie's ``src/carnot/funcs/builtins/sql_parsing/normalization_test.cc``
(``normalize_sql`` on a query and its bound values) and ``src/carnot/funcs/builtins/sql_ops_test.cc``
(the UDFs, with the ``query=[...] params=[...]`` form of executed statements); the JSON layout is
``NormalizeResult::ToJSON`` in ``normalization.cc`` (rapidjson's compact writer).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from pxq.funcs._sql import normalize, normalize_mysql, normalize_pgsql
from pxq.funcs.registry import SCALARS

INSERT = "INSERT INTO test (a, b, c, d, e) VALUES"

# normalization_test.cc, NormPGSQLVariants: (sql, bound values, normalized, params).
PG_NORMALIZE = [
    ("SELECT 1", [], "SELECT $1", ["1"]),
    ("SELECT * FROM test WHERE prop=1234 AND prop2='abcd'", [], "SELECT * FROM test WHERE prop=$1 AND prop2=$2",
     ["1234", "'abcd'"]),
    ("CREATE TABLE test (name varchar(20), address text, foo int, bar text)", [],
     "CREATE TABLE test (name varchar(20), address text, foo int, bar text)", []),
    ("UPDATE test SET age=10 where name='abcd'", [], "UPDATE test SET age=$1 where name=$2", ["10", "'abcd'"]),
    ("SELECT * from test where abcd >= 11", [], "SELECT * from test where abcd >= $1", ["11"]),
    ("SELECT 'abcd' as col1, 1234 as col2, 1.2345 as col3 into my_new_table", [],
     "SELECT $1 as col1, $2 as col2, $3 as col3 into my_new_table", ["'abcd'", "1234", "1.2345"]),
    ("SELECT length(abcd) + 1 from test", [], "SELECT length(abcd) + $1 from test", ["1"]),
    ("SELECT * from test WHERE name=$1 AND tag=1234 AND property=$2", ["'abcd'", "1.23"],
     "SELECT * from test WHERE name=$1 AND tag=$2 AND property=$3", ["'abcd'", "1234", "1.23"]),
    ("SELECT * from test WHERE name=$1 AND tag=1234 AND property=$1", ["'abcd'"],
     "SELECT * from test WHERE name=$1 AND tag=$2 AND property=$3", ["'abcd'", "1234", "'abcd'"]),
    (INSERT + r" (1, 'abcd', 1.23, true, E'\\xDEADBEEF')", [],
     INSERT + " ($1, $2, $3, $4, $5)", ["1", "'abcd'", "1.23", "true", r"E'\\xDEADBEEF'"]),
]  # fmt: skip

# normalization_test.cc, NormMySQLVariants.
MYSQL_NORMALIZE = [
    ("SELECT 1", [], "SELECT ?", ["1"]),
    ("SELECT * FROM test WHERE prop=1234 AND prop2='abcd'", [], "SELECT * FROM test WHERE prop=? AND prop2=?",
     ["1234", "'abcd'"]),
    ("CREATE TABLE test (name text, address text, foo int, bar text)", [],
     "CREATE TABLE test (name text, address text, foo int, bar text)", []),
    ("UPDATE test SET age=10 where name='abcd'", [], "UPDATE test SET age=? where name=?", ["10", "'abcd'"]),
    ("SELECT * from test where abcd >= 11", [], "SELECT * from test where abcd >= ?", ["11"]),
    ("INSERT INTO my_new_table SELECT 'abcd' as col1, 1234 as col2, 1.2345 as col3", [],
     "INSERT INTO my_new_table SELECT ? as col1, ? as col2, ? as col3", ["'abcd'", "1234", "1.2345"]),
    ("SELECT length(abcd) + 1 from test", [], "SELECT length(abcd) + ? from test", ["1"]),
    ("SELECT * from test WHERE name=? AND tag=1234 AND property=?", ["'abcd'", "1.23"],
     "SELECT * from test WHERE name=? AND tag=? AND property=?", ["'abcd'", "1234", "1.23"]),
    (INSERT + " (1, 'abcd', 1.23, true, X'DEADBEEF')", [],
     INSERT + " (?, ?, ?, ?, ?)", ["1", "'abcd'", "1.23", "true", "X'DEADBEEF'"]),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "values", "query", "params"), PG_NORMALIZE)
def test_pgsql_normalization_matches_pixie(sql: str, values: list[str], query: str, params: list[str]) -> None:
    assert normalize(sql, values, mysql=False) == (query, params)


@pytest.mark.parametrize(("sql", "values", "query", "params"), MYSQL_NORMALIZE)
def test_mysql_normalization_matches_pixie(sql: str, values: list[str], query: str, params: list[str]) -> None:
    assert normalize(sql, values, mysql=True) == (query, params)


def _result(query: str, params: list[str]) -> str:
    # NormalizeResult::ToJSON: rapidjson's Writer, no spaces.
    return '{"query":' + json.dumps(query) + ',"params":[' + ",".join(json.dumps(p) for p in params) + "]}"


# sql_ops_test.cc, NormPGSQLVariants (the UDF).
PG_UDF = [
    ("SELECT 1", "Query", _result("SELECT $1", ["1"])),
    ("query=[SELECT * FROM test WHERE prop=$1 AND prop2='abcd'] params=['1234']", "Execute",
     _result("SELECT * FROM test WHERE prop=$1 AND prop2=$2", ["'1234'", "'abcd'"])),
    (INSERT + r" (1, 'abcd', 1.23, true, E'\\xDEADBEEF')", "Query",
     _result(INSERT + " ($1, $2, $3, $4, $5)",
             ["1", "'abcd'", "1.23", "true", r"E'\\xDEADBEEF'"])),
    ("query=[" + INSERT + r" ($1, $2, $3, $4, $5)] params=[1, 'abcd', 1.23, true, E'\\xDEADBEEF']",
     "Execute", _result(INSERT + " ($1, $2, $3, $4, $5)",
                        ["1", "'abcd'", "1.23", "true", r"E'\\xDEADBEEF'"])),
    ("SELECT * FROM test WHERE prop='abcd'", "Query", _result("SELECT * FROM test WHERE prop=$1", ["'abcd'"])),
]  # fmt: skip

_SOCK_QUERY = (
    "SELECT sock.sock_id AS id, sock.name, sock.description, sock.price, sock.count, sock.image_url_1, "
    "sock.image_url_2, GROUP_CONCAT(tag.name) AS tag_name FROM sock JOIN sock_tag ON sock.sock_id=sock_tag.sock_id "
    "JOIN tag ON sock_tag.tag_id=tag.tag_id WHERE sock.sock_id =? GROUP BY sock.sock_id;"
)
# sql_ops_test.cc, NormMySQLTestVariants (the UDF).
MYSQL_UDF = [
    ("SELECT 1", 3, _result("SELECT ?", ["1"])),
    ("SELECT * FROM test WHERE prop=@a AND prop2='abcd'", 3,
     _result("SELECT * FROM test WHERE prop=@a AND prop2=?", ["'abcd'"])),
    ("query=[SELECT * FROM test WHERE prop=? AND prop2='abcd'] params=[1234]", 23,
     _result("SELECT * FROM test WHERE prop=? AND prop2=?", ["1234", "'abcd'"])),
    ("query=[" + INSERT + " (?, ?, 1.23, ?, ?)] params=[1, 'abcd', true, X'DEADBEEF']", 23,
     _result(INSERT + " (?, ?, ?, ?, ?)", ["1", "'abcd'", "1.23", "true", "X'DEADBEEF'"])),
    (f"query=[{_SOCK_QUERY}] params=[zzz4f044-b040-410d-8ead-4de0446aec7e]", 23,
     _result(_SOCK_QUERY, ["zzz4f044-b040-410d-8ead-4de0446aec7e"])),
    (INSERT + " (1, 'abcd', 1.23, true, X'DEADBEEF')", 3,
     _result(INSERT + " (?, ?, ?, ?, ?)", ["1", "'abcd'", "1.23", "true", "X'DEADBEEF'"])),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "cmd", "expected"), PG_UDF)
def test_normalize_pgsql_udf_matches_pixie(sql: str, cmd: str, expected: str) -> None:
    assert normalize_pgsql(sql, cmd) == expected


@pytest.mark.parametrize(("sql", "cmd", "expected"), MYSQL_UDF)
def test_normalize_mysql_udf_matches_pixie(sql: str, cmd: int, expected: str) -> None:
    assert normalize_mysql(sql, cmd) == expected


def test_errors_are_in_the_json_not_raised() -> None:
    # The messages of sql_ops.cc and normalization.h.
    assert normalize_pgsql("SELECT 1", "Parse") == "{\"error\":\"cmd_code must be one of 'Query' or 'Execute'\"}"
    assert normalize_mysql("SELECT 1", 22) == "{\"error\":\"cmd_code must be one of '3' or '23'\"}"
    too_many = '{"error":"Query has more parameter placeholders in it than parameter values were passed in"}'
    assert normalize_pgsql("query=[SELECT $1, $2] params=[1]", "Execute") == too_many
    assert normalize_mysql("query=[SELECT ?, ?] params=[1]", 23) == too_many
    assert normalize_pgsql("query=[SELECT $0] params=[1]", "Execute") == '{"error":"Placeholder $0 invalid"}'
    assert "error" in json.loads(normalize_pgsql("SELECT 'unterminated", "Query"))
    assert "error" in json.loads(normalize_mysql("SELECT /* open", 3))


@pytest.mark.parametrize(
    ("sql", "query", "params"),
    [
        # Literal forms the tokenizer must know: a quote inside a string, dollar quoting, a quoted
        # identifier, comments, a cast, a negative number (PostgreSQL's grammar takes the sign as
        # an operator), a numeric type's precision.
        ("SELECT 'it''s' || $$a 'b'$$ FROM \"t 1\" -- 5\nWHERE x = -2.5e3::numeric(10,2) /* 7 */",
         "SELECT $1 || $2 FROM \"t 1\" -- 5\nWHERE x = -$3::numeric(10,2) /* 7 */", ["'it''s'", "$$a 'b'$$", "2.5e3"]),
        ("SELECT * FROM t WHERE a IS NULL LIMIT 10", "SELECT * FROM t WHERE a IS NULL LIMIT $1", ["10"]),
    ],
)  # fmt: skip
def test_pgsql_literal_forms(sql: str, query: str, params: list[str]) -> None:
    assert normalize(sql, [], mysql=False) == (query, params)


@pytest.mark.parametrize(
    ("sql", "query", "params"),
    [
        # MySQL's constant rule (grammars-v4 MySqlParser.g4, which Pixie's mysql_parser is) takes
        # NULL and a signed number; LIMIT takes a bare number; "..." is a string, `...` a name.
        ("SELECT `a b`, \"x\\\"y\" FROM t WHERE c = -3 AND d IS NOT NULL AND e = NULL LIMIT 5 # 9",
         "SELECT `a b`, ? FROM t WHERE c = ? AND d IS NOT NULL AND e = ? LIMIT 5 # 9", ['"x\\"y"', "-3", "NULL"]),
        ("SELECT 0xFF, @@version, a-1 FROM t", "SELECT ?, @@version, a-? FROM t", ["0xFF", "1"]),
    ],
)  # fmt: skip
def test_mysql_literal_forms(sql: str, query: str, params: list[str]) -> None:
    assert normalize(sql, [], mysql=True) == (query, params)


def test_registered_functions_run_over_columns_with_nulls() -> None:
    sql = pa.array(["SELECT 1", None, "SELECT 1", "SELECT 'a'"])
    cmd = pa.array(["Query", "Query", "Query", "Query"])
    out = SCALARS["normalize_pgsql"].impl(None, sql, cmd).to_pylist()
    assert out == [_result("SELECT $1", ["1"]), None, _result("SELECT $1", ["1"]), _result("SELECT $1", ["'a'"])]
    out = SCALARS["normalize_mysql"].impl(None, pa.array(["SELECT 2"]), pa.array([3], pa.int64())).to_pylist()
    assert out == [_result("SELECT ?", ["2"])]
