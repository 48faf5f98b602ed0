"""Diagnostics: every file in errors/ fails to parse with the snapshotted, rendered message; the
message names what PxL does not support, underlines it and suggests what to write instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxq.errors import PxqSyntaxError
from pxq.lang import parse
from pxq.lang.parse import MAX_DEPTH
from tests.snapshot import assert_snapshot

HERE = Path(__file__).parent
ERRORS = sorted((HERE / "errors").glob("*.pxl"))


def syntax_error(text: str, filename: str = "<script>") -> PxqSyntaxError:
    with pytest.raises(PxqSyntaxError) as info:
        parse(text, filename)
    return info.value


@pytest.mark.parametrize("path", ERRORS, ids=lambda p: p.stem)
def test_error_snapshot(path):
    error = syntax_error(path.read_text(encoding="utf-8"), path.name)
    [diagnostic] = error.diagnostics
    assert diagnostic.span is not None and diagnostic.hint
    assert error.source is not None and error.source.filename == path.name
    assert_snapshot(path.with_suffix(".err.txt"), error.render())


# (source, the text the caret underlines, part of the message, part of the hint)
UNSUPPORTED = [
    ("for x in y:\n    z = x\n", "for", "'for' loops", "df.groupby"),
    ("while x:\n    y = 1\n", "while", "'while' loops", "dataframes"),
    ("if x:\n    y = 1\n", "if", "'if' statements", "px.select(condition, value_if_true, value_if_false)"),
    ("x = 1\nelse:\n    y = 1\n", "else", "'else'", "px.select"),
    ("y = a if c else b\n", "if", "conditional expressions", "px.select(condition, value_if_true, value_if_false)"),
    ("f = lambda v: v\n", "lambda", "lambda", "def"),
    ("x = [a for a in b]\n", "for", "list comprehensions", ""),
    ("x = {a: 1 for a in b}\n", "for", "dict and set comprehensions", ""),
    ("x = (a for a in b)\n", "for", "generator expressions", ""),
    ("x = f(a for a in b)\n", "for", "generator expressions", ""),
    ("class A:\n    x = 1\n", "class", "class definitions", ""),
    ("try:\n    x = 1\nexcept E:\n    x = 2\n", "try", "'try' statements", ""),
    ("with f() as g:\n    x = 1\n", "with", "'with' statements", ""),
    ("x += 1\n", "+=", "augmented assignment ('+=')", "name = name + value"),
    ("x //= 2\n", "//=", "augmented assignment ('//=')", "name = name // value"),
    ("del x\n", "del", "'del' statements", "df.drop"),
    ("def f():\n    global x\n    return x\n", "global", "'global' declarations", ""),
    ("def f():\n    nonlocal x\n    return x\n", "nonlocal", "'nonlocal' declarations", ""),
    ("def f():\n    yield 1\n", "yield", "'yield'", ""),
    ("async def f():\n    return 1\n", "async", "'async'", ""),
    ("def f():\n    return await g()\n", "await", "'await'", ""),
    ("x = a ** 2\n", "**", "the power operator '**'", "px.pow"),
    ("x = a // 2\n", "//", "floor division", "px.floor"),
    ("x = a in b\n", "in", "the 'in' operator", "px.equals_any(value, [...])"),
    ("x = a not in b\n", "not in", "the 'not in' operator", "px.equals_any"),
    ("x = a is None\n", "is", "the 'is' operator", "=="),
    ("x = f'{a}'\n", "f'{a}'", "f-strings", "+"),
    ("x = b'a'\n", "b'a'", "bytes literals", ""),
    ("@dec\ndef f():\n    return 1\n", "@", "decorators", ""),
    ("def f(*args):\n    return 1\n", "*", "'*args' parameters", ""),
    ("def f(**kw):\n    return 1\n", "**", "'**kwargs' parameters", ""),
    ("f(*a)\n", "*", "'*' unpacking", ""),
    ("f(**a)\n", "**", "'**' unpacking", ""),
    ("a = b = c\n", "=", "chained assignment", ""),
    ("a, b = c\n", "a, b", "several targets", ""),
    ("[a, b] = c\n", "[a, b]", "several targets", ""),
    ("y = (x := 1)\n", ":=", "assignment expressions", ""),
    ("x = a & b\n", "&", "'&'", "'and'"),
    ("x = a | b\n", "|", "'|'", "'or'"),
    ("x = s[1:2]\n", ":", "slices", "df.head(n)"),
    ("x = {1, 2}\n", ",", "set literals", ""),
    ("x: int = 1\n", ":", "variable annotations", ""),
    ("from px import *\n", "*", "wildcard imports", ""),
    ("def f():\n    pass\n", "pass", "'pass' statements", ""),
]


@pytest.mark.parametrize("source, underlined, message, hint", UNSUPPORTED, ids=[case[2] for case in UNSUPPORTED])
def test_unsupported_python_is_named_and_underlined(source, underlined, message, hint):
    [diagnostic] = syntax_error(source).diagnostics
    span = diagnostic.span
    assert source[span.start_pos : span.end_pos] == underlined
    assert message in diagnostic.message
    assert hint in diagnostic.hint


@pytest.mark.parametrize(
    "source, message",
    [
        ("x = 'abc\n", "unterminated string"),
        ('x = """abc\n', "unterminated triple-quoted string"),
        ("x = f(a\n", "'(' was never closed"),
        ("x = [a,\n b\ny = 1\n", "'[' was never closed"),
        ("x = f(a]\n", "unexpected ']'; expected ')'"),
        ("x = a)\n", "unmatched ')'"),
        ("x = f(a b)\n", "unexpected name 'b'; expected ')' or ','"),
        ("x = a +\n", "unexpected end of line; expected an expression"),
        ("def f()\n    return 1\n", "unexpected end of line; expected ':'"),
        ("def f():\nreturn 1\n", "expected an indented block after the def on line 1"),
        ("def f():\n", "expected an indented block after the def on line 1"),
        ("x = 1\n  y = 2\n", "unexpected indent"),
        ("  x = 1\n", "unexpected indent"),
        ("def f():\n    x = 1\n  return x\n", "unindent does not match any outer indentation level"),
        ("x = a $ b\n", "invalid character '$'"),
        ("x = a\x00\n", "invalid character '\\x00'"),
        ("x = 0x\n", "invalid number literal '0x'"),
        ("x = '\\N{no such name}'\n", "invalid string literal"),
        ("return x\n", "'return' outside a function"),
        ("f(a=1, b)\n", "positional argument follows a keyword argument"),
        ("f(a=1, a=2)\n", "keyword argument 'a' given twice"),
        ("def f(a, a):\n    return a\n", "duplicate parameter 'a'"),
        ("def f(a=1, b):\n    return a\n", "parameter 'b' without a default follows 'a'"),
        ("f() = 1\n", "cannot assign to a function call"),
        ("1 = x\n", "cannot assign to a literal"),
        ("#px:set nonsense\n", "malformed pragma"),
        ("#px:set a=b c\n", "malformed pragma"),
        ("x = " + "-" * (MAX_DEPTH + 1) + "a\n", "expression is nested too deeply"),
    ],
)
def test_syntax_errors_say_what_is_wrong(source, message):
    [diagnostic] = syntax_error(source).diagnostics
    assert diagnostic.message.startswith(message)
    assert diagnostic.span is not None and diagnostic.hint


def test_rendered_error_shows_file_line_column_source_and_caret():
    rendered = syntax_error("import px\ndf = df[df.pod in pods]\n", "pods.pxl").render()
    assert rendered.splitlines() == [
        "pods.pxl:2:16: error: PxL does not support the 'in' operator",
        "    df = df[df.pod in pods]",
        "                   ^^",
        "hint: test membership with px.equals_any(value, [...])",
    ]


def test_error_position_is_the_same_without_a_final_newline():
    with_newline = syntax_error("x = 1\ny = a ** 2\n").diagnostics[0].span
    without = syntax_error("x = 1\ny = a ** 2").diagnostics[0].span
    assert with_newline == without
