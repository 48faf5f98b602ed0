"""unparse: readable PxL text, parenthesised only where precedence needs it."""

from __future__ import annotations

import pytest

from pxq.errors import Span
from pxq.lang import ast, parse, unparse

S = Span(0, 0, 0, 0)


@pytest.mark.parametrize(
    "source",
    [
        "a + b * c",
        "(a + b) * c",
        "a - (b - c)",
        "a - b - c",
        "-a * b",
        "-(a + b)",
        "not a == b",
        "(not a) + b",
        "a and b or c",
        "a and (b or c)",
        "(a and b) and c",
        "a < b and b < c",
        "(a < b) < c",
        "f(a, k=1)",
        "df[df.latency > 100]",
        "df['a', 'b']",
        "df[['a', 'b']]",
        "df['a',]",
        "(1,)",
        "()",
        "{'a': [1, 2], 'b': (3, 4)}",
        "px.select(df.a > 0, 'pos', 'neg')",
    ],
)
def test_expressions_print_as_written(source):
    assert unparse(parse(f"x = {source}\n").body[0].value) == source


def test_statements_and_scripts():
    text = (
        "#px:set max_output_rows_per_table=10\n"
        '"""Doc."""\n'
        "import px\n"
        "import px as p\n"
        "from px import a, b as c\n"
        "\n"
        "def f(start_time: str = '-5m', n=10) -> px.DataFrame:\n"
        '    """F."""\n'
        "    df = px.DataFrame(table='http_events', start_time=start_time)\n"
        "    df.pod = df.ctx['pod']\n"
        "    return df.head(n)\n"
        "px.display(f(), 'out')\n"
    )
    assert unparse(parse(text)) == text
    assert unparse(parse(text).body[3].body[2]) == "return df.head(n)\n"


def test_constants_that_need_care():
    def show(value):
        return unparse(ast.Constant(S, value))

    assert show(float("inf")) == "1e999"
    assert show(1e16) == "1e+16"
    assert show('it\'s "q"\n') == repr('it\'s "q"\n')
    assert unparse(ast.Attribute(S, ast.Constant(S, 1), "real", S)) == "(1).real"
    assert unparse(ast.UnaryOp(S, "-", ast.Constant(S, -1))) == "-(-1)"
    assert unparse(ast.BinOp(S, "+", ast.Name(S, "a"), ast.Constant(S, -1.5))) == "a + -1.5"
    assert unparse(ast.BinOp(S, "*", ast.Name(S, "a"), ast.Constant(S, -1))) == "a * (-1)"
    with pytest.raises(ValueError):
        show(float("nan"))
