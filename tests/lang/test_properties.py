"""Properties: random ASTs survive unparse then parse; random text only ever fails as PxqSyntaxError."""

from __future__ import annotations

import keyword
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from pxq.errors import PxqSyntaxError, Span
from pxq.lang import ast, dump, parse, unparse
from tests.lang.helpers import NO_SPAN, without_spans

S = NO_SPAN

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(lambda n: not keyword.iskeyword(n))
floats = st.floats(min_value=0.0, allow_nan=False).filter(lambda x: math.copysign(1.0, x) > 0)
constants = st.builds(
    lambda value: ast.Constant(S, value),
    # 2**63 is the largest integer literal PxL reads (as the operand of '-': int64's least value)
    st.one_of(st.text(max_size=12), st.integers(min_value=0, max_value=2**63), floats, st.booleans(), st.none()),
)
atoms = st.one_of(st.builds(lambda n: ast.Name(S, n), names), constants)


def _unique_keywords(pairs):
    seen = {}
    for name, value in pairs:
        seen.setdefault(name, ast.Keyword(S, name, value))
    return tuple(seen.values())


def _compound(inner):
    some = st.lists(inner, max_size=3).map(tuple)
    return st.one_of(
        st.builds(lambda op, left, right: ast.BinOp(S, op, left, right), st.sampled_from("+-*/%"), inner, inner),
        st.builds(
            lambda op, left, right: ast.Compare(S, op, left, right),
            st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
            inner,
            inner,
        ),
        st.builds(
            lambda op, values: ast.BoolOp(S, op, tuple(values)),
            st.sampled_from(["and", "or"]),
            st.lists(inner, min_size=2, max_size=4),
        ),
        st.builds(lambda op, operand: ast.UnaryOp(S, op, operand), st.sampled_from(["not", "-", "+", "~"]), inner),
        st.builds(lambda value, attr: ast.Attribute(S, value, attr, S), inner, names),
        st.builds(lambda value, index: ast.Subscript(S, value, index), inner, inner),
        st.builds(
            lambda func, args, kws: ast.Call(S, func, args, _unique_keywords(kws)),
            inner,
            some,
            st.lists(st.tuples(names, inner), max_size=3),
        ),
        st.builds(lambda elts: ast.List(S, elts), some),
        st.builds(lambda elts: ast.Tuple(S, elts), some),
        st.builds(
            lambda items: ast.Dict(S, tuple(k for k, _ in items), tuple(v for _, v in items)),
            st.lists(st.tuples(inner, inner), max_size=3),
        ),  # fmt: skip
    )


expressions = st.recursive(atoms, _compound, max_leaves=12)
targets = st.one_of(
    st.builds(lambda n: ast.Name(S, n), names),
    st.builds(lambda value, attr: ast.Attribute(S, value, attr, S), expressions, names),
    st.builds(lambda value, index: ast.Subscript(S, value, index), expressions, expressions),
)
dotted = st.lists(names, min_size=1, max_size=3).map(".".join)
simple_statements = st.one_of(
    st.builds(lambda target, value: ast.Assign(S, target, value), targets, expressions),
    st.builds(lambda value: ast.ExprStmt(S, value), expressions),
    st.builds(lambda module, alias: ast.Import(S, module, alias or module.split(".")[0]), dotted, st.none() | names),
    st.builds(
        lambda module, pairs: ast.ImportFrom(S, module, tuple((n, a or n) for n, a in pairs)),
        dotted,
        st.lists(st.tuples(names, st.none() | names), min_size=1, max_size=3),
    ),
)
docstrings = st.none() | st.text(max_size=20)


def _is_docstring_like(statement) -> bool:
    return (
        isinstance(statement, ast.ExprStmt)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _canonical_body(docstring, body):
    """A leading string statement reads back as the docstring: generate it that way round."""
    if docstring is None and body and _is_docstring_like(body[0]):
        return body[0].value.value, tuple(body[1:])
    return docstring, tuple(body)


@st.composite
def params(draw):
    chosen = draw(st.lists(names, unique=True, max_size=4))
    first_default = draw(st.integers(min_value=0, max_value=len(chosen)))
    return tuple(
        ast.Param(
            S,
            name,
            draw(st.none() | expressions),
            draw(expressions) if i >= first_default else None,
        )
        for i, name in enumerate(chosen)
    )


@st.composite
def function_defs(draw, depth=0):
    body = list(draw(st.lists(simple_statements, max_size=3)))
    if depth < 1 and draw(st.booleans()):
        body.append(draw(function_defs(depth + 1)))
    if draw(st.booleans()):
        body.append(ast.Return(S, draw(st.none() | expressions)))
    docstring, body = _canonical_body(draw(docstrings), body)
    if not body and docstring is None:
        body = (ast.Return(S, None),)
    return ast.FunctionDef(S, draw(names), draw(params()), draw(st.none() | expressions), body, docstring, S)


pragmas = st.builds(
    lambda key, value: ast.Pragma(S, key, value),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,10}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_.:/-]{1,10}", fullmatch=True),
)


@st.composite
def modules(draw):
    body = draw(st.lists(st.one_of(simple_statements, function_defs()), max_size=6))
    docstring, body = _canonical_body(draw(docstrings), body)
    return ast.Module(S, body, docstring, tuple(draw(st.lists(pragmas, max_size=2))))


def assert_reads_back(module: ast.Module) -> None:
    text = unparse(module)
    assert dump(without_spans(parse(text))) == dump(without_spans(module)), text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions)
def test_expressions_read_back_after_unparse(expression):
    assert_reads_back(ast.Module(S, (ast.Assign(S, ast.Name(S, "x"), expression),), None, ()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modules())
def test_scripts_read_back_after_unparse(module):
    assert_reads_back(module)


# ---------------------------------------------------------------- garbage in, diagnostics out

PXL_PIECES = [
    "import", "px", "from", "as", "def", "return", "and", "or", "not", "True", "None", "for", "in",
    "if", "else", "lambda", "while", "is", "df", "x", "'s'", '"t"', "'''u", '"""', "'", '"', "r'\\d'",
    "f'x'", "1", "0x", "1.5e", ".5", "1_0", "(", ")", "[", "]", "{", "}", ",", ":", ";", ".", "=",
    "==", "!=", "<", ">=", "+", "-", "*", "**", "/", "//", "%", "~", "&", "|", "^", "@", ":=", "->",
    "+=", "#px:set a=b", "#px:set", "# c", "\\", "\n", "\n    ", "\n  ", "\n\t", " ", "$", "?", "!",
    "\x00", "é", "“",
]  # fmt: skip


def assert_parses_or_reports(text: str) -> None:
    try:
        module = parse(text, "garbage.pxl")
    except PxqSyntaxError as error:
        [diagnostic] = error.diagnostics
        span: Span = diagnostic.span
        assert diagnostic.hint
        assert 1 <= span.line <= text.count("\n") + 2 and span.column >= 1
        assert error.render().startswith(f"garbage.pxl:{span.line}:{span.column}: error: ")
    else:
        assert isinstance(module, ast.Module)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PXL_PIECES), max_size=30).map(" ".join))
def test_token_soup_only_fails_as_syntax_error(text):
    assert_parses_or_reports(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PXL_PIECES), max_size=30).map("".join))
def test_glued_token_soup_only_fails_as_syntax_error(text):
    assert_parses_or_reports(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_random_text_only_fails_as_syntax_error(text):
    assert_parses_or_reports(text)


CORPUS_TEXTS = [path.read_text(encoding="utf-8") for path in sorted((Path(__file__).parent / "corpus").glob("*.pxl"))]


@st.composite
def mutated_scripts(draw):
    """A corpus script with a few random cuts and insertions: broken in realistic places."""
    text = draw(st.sampled_from(CORPUS_TEXTS))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        cut = draw(st.integers(min_value=0, max_value=8))
        text = text[:at] + draw(st.sampled_from(["", *PXL_PIECES])) + text[at + cut :]
    return text


@settings(max_examples=500, deadline=None)
@given(mutated_scripts())
def test_mutated_scripts_only_fail_as_syntax_error(text):
    assert_parses_or_reports(text)
