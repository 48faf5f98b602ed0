"""Targeted parse tests: precedence, literals, docstrings, pragmas, spans, the parser itself."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lark import Lark, logger as lark_logger

from pxq.errors import PxqSyntaxError
from pxq.lang import ast, dump, parse
from pxq.lang.parse import MAX_DEPTH, PxlIndenter, parser
from pxq.resources import data_dir
from tests.lang.helpers import NO_SPAN, shape, without_spans

PRECEDENCE = [
    ("a or b and c", "(or a (and b c))"),
    ("a and b or c", "(or (and a b) c)"),
    ("not a and b", "(and (not a) b)"),
    ("not a == b", "(not (== a b))"),
    ("a == b + c", "(== a (+ b c))"),
    ("a + b * c", "(+ a (* b c))"),
    ("a * b + c", "(+ (* a b) c)"),
    ("a - b - c", "(- (- a b) c)"),
    ("a - (b - c)", "(- a (- b c))"),
    ("a / b % c * d", "(* (% (/ a b) c) d)"),
    ("-a * b", "(* (- a) b)"),
    ("a * -b", "(* a (- b))"),
    ("-a.b", "(- (. a b))"),
    ("~f(x)[0]", "(~ ([] (call f x) 0))"),
    ("- -a", "(- (- a))"),
    ("not not a", "(not (not a))"),
    ("-a < b", "(< (- a) b)"),
    ("a < b < c", "(and (< a b) (< b c))"),
    ("a < b == c != d", "(and (< a b) (== b c) (!= c d))"),
    ("(a < b) < c", "(< (< a b) c)"),
    ("a and b and c", "(and a b c)"),
    ("a or b or c and d", "(or a b (and c d))"),
    ("(a and b) and c", "(and (and a b) c)"),
    ("a and (b and c)", "(and a (and b c))"),
    ("not a < b and c", "(and (not (< a b)) c)"),
    ("f(a)(b).c[d]", "([] (. (call (call f a) b) c) d)"),
    ("f(a, k=b + 1)", "(call f a k=(+ b 1))"),
    ("df['a', 'b']", "([] df (tuple 'a' 'b'))"),
    ("df[['a', 'b']]", "([] df ['a' 'b'])"),
    ("df['a',]", "([] df (tuple 'a'))"),
    ("df[()]", "([] df (tuple ))"),
    ("(1,)", "(tuple 1)"),
    ("(1)", "1"),
    ("{'a': 1, 2: b}", "{'a':1 2:b}"),
    ("('latency', px.quantiles)", "(tuple 'latency' (. px quantiles))"),
]


@pytest.mark.parametrize("source, expected", PRECEDENCE)
def test_precedence_and_grouping_match_python(source, expected):
    assert shape(source) == expected


LITERALS = [
    ("0", 0),
    ("42", 42),
    ("1_000", 1000),
    ("0x1F", 31),
    ("0o17", 15),
    ("0b101", 5),
    ("1.5", 1.5),
    ("1e9", 1e9),
    (".5", 0.5),
    ("1.", 1.0),
    ("2.5e-3", 2.5e-3),
    ("True", True),
    ("False", False),
    ("None", None),
    ("'a'", "a"),
    ('"a"', "a"),
    ("'''a\nb'''", "a\nb"),
    ('"""a"""', "a"),
    ("r'\\d'", "\\d"),
    ("R'\\n'", "\\n"),
    ("'\\n\\t\\x41\\u00e9'", "\n\tAé"),
    ("'it''s'", "its"),
    ("'a' \"b\" '''c'''", "abc"),
    ("('a'\n 'b')", "ab"),
    ("u'x'", "x"),
    ("'\\d'", "\\d"),
    ("''", ""),
]


@pytest.mark.parametrize("source, value", LITERALS)
def test_literal_values(source, value):
    constant = parse(f"x = {source}\n").body[0].value
    assert isinstance(constant, ast.Constant)
    assert constant.value == value and type(constant.value) is type(value)


def test_docstrings_leave_the_body():
    module = parse("\"\"\"Module doc.\"\"\"\nimport px\n\n\ndef f(x):\n    '''F doc.'''\n    return x\n")
    assert module.docstring == "Module doc."
    assert [type(s).__name__ for s in module.body] == ["Import", "FunctionDef"]
    function = module.body[1]
    assert function.docstring == "F doc."
    assert [type(s).__name__ for s in function.body] == ["Return"]


def test_only_the_first_string_statement_is_a_docstring():
    module = parse("import px\n'not a docstring'\n")
    assert module.docstring is None
    assert isinstance(module.body[1], ast.ExprStmt)


def test_a_def_with_only_a_docstring_has_an_empty_body():
    function = parse("def f():\n    'Only this.'\n").body[0]
    assert function.docstring == "Only this." and function.body == ()


def test_parameters_annotations_defaults_and_return_annotation():
    source = "def f(plain, start_time: str = '-5m', n: int = 10, x=1) -> px.DataFrame:\n    return n\n"
    function = parse(source).body[0]
    assert [(p.name, p.annotation, p.default) for p in without_spans(function.params)] == [
        ("plain", None, None),
        ("start_time", ast.Name(NO_SPAN, "str"), ast.Constant(NO_SPAN, "-5m")),
        ("n", ast.Name(NO_SPAN, "int"), ast.Constant(NO_SPAN, 10)),
        ("x", None, ast.Constant(NO_SPAN, 1)),
    ]
    assert function.returns.attr == "DataFrame"


def test_pragmas_anywhere_at_line_start():
    module = parse(
        "#px:set max_output_rows_per_table=500\n"
        "import px\n"
        "x = 1  #px:set trailing=ignored\n"
        "#px:settings is a comment\n"
        "def f():\n"
        "    #px:set analyze=true\n"
        "    return (1,\n"
        "#px:set inside=brackets\n"
        "    )\n"
        "'''\n#px:set inside=string\n'''\n"
    )
    assert [(p.key, p.value, p.span.line, p.span.column) for p in module.pragmas] == [
        ("max_output_rows_per_table", "500", 1, 1),
        ("analyze", "true", 6, 5),
        ("inside", "brackets", 8, 1),
    ]


def test_spans_are_one_based_and_end_exclusive():
    module = parse("import px\ndf = px.DataFrame(table='t')\n")
    assign = module.body[1]
    call = assign.value
    assert (assign.span.line, assign.span.column, assign.span.end_line, assign.span.end_column) == (2, 1, 2, 29)
    assert (call.span.column, call.span.end_column) == (6, 29)
    attribute = call.func
    assert (attribute.attr_span.column, attribute.attr_span.end_column) == (9, 18)
    assert (call.keywords[0].span.column, call.keywords[0].span.end_column) == (19, 28)


def test_function_span_ends_with_its_last_statement_and_name_span_is_the_name():
    function = parse("\n\ndef stats(df):\n    x = 1\n    return x\n\n\ny = 2\n").body[0]
    assert (function.span.line, function.span.column, function.span.end_line, function.span.end_column) == (3, 1, 5, 13)
    assert (function.name_span.line, function.name_span.column, function.name_span.end_column) == (3, 5, 10)


def test_crlf_line_endings_parse_like_lf():
    text = "import px\n\ndef f(x):\n    '''Doc\n    string.'''\n    return x\n\ny = f(1)\n"
    crlf = parse(text.replace("\n", "\r\n"))
    assert dump(without_spans(crlf)) == dump(without_spans(parse(text)))
    assert crlf.body[1].docstring == "Doc\n    string."


def test_import_alias_is_the_bound_name():
    module = parse("import px\nimport px as p\nimport a.b\nfrom px import x, y as z\n")
    assert [(s.module, s.alias) for s in module.body[:3]] == [("px", "px"), ("px", "p"), ("a.b", "a")]
    assert module.body[3].names == (("x", "x"), ("y", "z"))


def test_empty_script():
    module = parse("")
    assert module.body == () and module.docstring is None and module.pragmas == ()


def test_error_carries_its_source_and_filename():
    with pytest.raises(PxqSyntaxError) as info:
        parse("x = (\n", "broken.pxl")
    assert info.value.source.text == "x = (\n"
    assert info.value.render().startswith("broken.pxl:1:5: error: '(' was never closed")


def test_nesting_up_to_the_limit_parses_and_beyond_it_is_refused():
    parse("x = " + "-" * (MAX_DEPTH - 10) + "a\n")
    parse("x = " + "(" * (MAX_DEPTH - 10) + "a" + ")" * (MAX_DEPTH - 10) + "\n")
    with pytest.raises(PxqSyntaxError, match="nested too deeply"):
        parse("x = " + "(" * (MAX_DEPTH + 10) + "a" + ")" * (MAX_DEPTH + 10) + "\n")
    with pytest.raises(PxqSyntaxError, match="nested too deeply"):
        parse("x = " + "-" * (MAX_DEPTH * 3) + "a\n")
    with pytest.raises(PxqSyntaxError, match="nested too deeply"):
        parse("x = " + " + ".join(["a"] * (MAX_DEPTH * 3)) + "\n")


def test_parser_is_built_once():
    assert parser() is parser()


def test_grammar_has_no_lalr_conflicts(caplog):
    grammar = (data_dir("grammar") / "pxl.lark").read_text(encoding="utf-8")
    lark_logger.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger="lark"):
            Lark(grammar, parser="lalr", lexer="basic", postlex=PxlIndenter(), maybe_placeholders=True, debug=True)
    finally:
        lark_logger.setLevel(logging.WARNING)
    assert not [r.getMessage() for r in caplog.records if "conflict" in r.getMessage().lower()]


def test_parses_in_parallel_threads_like_in_one():
    corpus = sorted((Path(__file__).parent / "corpus").glob("*.pxl"))
    texts = [path.read_text(encoding="utf-8") for path in corpus] * 4
    expected = [dump(parse(text)) for text in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(lambda text: dump(parse(text)), texts)) == expected


def test_byte_order_mark_is_skipped():
    module = parse("\ufeffimport px\nx = 1\n")
    assert module.body[0].span.column == 1 and module.body[0].module == "px"
