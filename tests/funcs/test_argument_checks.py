"""Values the compiler must refuse before anything runs: lists where one value per row is expected,
and constant arguments out of the range a function can use. Each is a positioned CompileError."""

from __future__ import annotations

import pytest

from pxq.errors import CompileError, Source
from pxq.lang import parse
from pxq.plan.compile import compile

NOW_NS = 1_764_115_500_000_000_000
HEAD = 'import px\ndf = px.DataFrame("http_events")\n'


def compile_error(line: str) -> tuple[str, int, int]:
    """(rendered diagnostic, line, column) of compiling HEAD + line."""
    text = HEAD + line + "\npx.display(df)\n"
    with pytest.raises(CompileError) as caught:
        compile(parse(text, "t.pxl"), now_ns=NOW_NS)
    (diagnostic,) = caught.value.diagnostics
    rendered = caught.value.with_source(Source(text, "t.pxl")).render()
    assert "Traceback" not in rendered
    return rendered, diagnostic.span.line, diagnostic.span.column


def compiles(line: str) -> None:
    compile(parse(HEAD + line + "\npx.display(df)\n", "t.pxl"), now_ns=NOW_NS)


@pytest.mark.parametrize(
    "line,column,message",
    [
        ("df.x = [1, 2]", 8, "the value of a column must be a column or a single value, not a list"),
        ("df.x = (1, 'a')", 8, "the value of a column must be a column or a single value, not a tuple"),
        ("df.x = []", 8, "not a list"),
        (
            "df.x = px.contains(df.req_path, ['a'])",
            33,
            "argument 'sub' of px.contains must be a column or a single value, not a list",
        ),
        ("df.x = px.pluck(df.req_headers, [])", 33, "argument 'key' of px.pluck must be a column or a single value"),
        ("df.x = px.substring(df.req_path, [0], 2)", 34, "argument 'pos' of px.substring"),
        ("df.x = df.req_path == ['a']", 23, "argument 'b' of px.equal must be a column or a single value, not a list"),
        ("df.x = df.latency + [1]", 21, "argument 'b' of px.add"),
        ("df.x = px.select(df.latency > 1, [1], 2)", 34, "argument 'a' of px.select"),
        ("df = df[[1, 2] == df.latency]", 9, "argument 'a' of px.equal"),
        ("df.x = px.equals_any(df.req_method, [['GET']])", 38, "argument 'values' of px.equals_any"),
    ],
)
def test_a_list_where_one_value_is_expected(line, column, message):
    rendered, at_line, at_column = compile_error(line)
    assert message in rendered
    assert (at_line, at_column) == (3, column)


def test_equals_any_takes_a_list():
    compiles("df = df[px.equals_any(df.req_method, ['GET', 'PUT'])]")
    compiles("df = df[px.equals_any(df.resp_status, [200, 404])]")


@pytest.mark.parametrize(
    "line,column,message",
    [
        (
            "df.x = px.round(df.latency, 1000000000)",
            29,
            "argument 'decimals' of px.round must be between 0 and 1,074, not 1,000,000,000",
        ),
        ("df.x = px.round(df.latency, -1)", 29, "must be between 0 and 1,074, not -1"),
        ("df.x = px.round(df.latency, 9223372036854775807)", 29, "not 9,223,372,036,854,775,807"),
        ("df.x = px.bin(df.time_, 0)", 25, "argument 'size' of px.bin must be between 1 and"),
        ("df.x = px.bin(df.time_, -px.seconds(1))", 25, "not -1,000,000,000"),
        ("df.x = px.bin(df.latency, -9223372036854775807)", 27, "argument 'size' of px.bin"),
    ],
)
def test_constant_arguments_out_of_range(line, column, message):
    rendered, at_line, at_column = compile_error(line)
    assert message in rendered
    assert (at_line, at_column) == (3, column)
    assert "hint: signature: px." in rendered


def test_constant_arguments_in_range():
    compiles("df.x = px.round(df.latency, 1074)")
    compiles("df.x = px.bin(df.time_, 9223372036854775807)")
    compiles("df.x = px.bin(df.time_, px.seconds(10))")
