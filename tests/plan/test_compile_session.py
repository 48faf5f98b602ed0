"""CompileSession: a script compiled one top-level statement at a time, each statement parsed on its
own as a REPL would read it, gives the plan the whole script gives: the golden plans of the plan
corpus and the bundled scripts, and the plan (or the error) of compiling each lang corpus file whole.
Plans are compared as text (``format_graph``): plan nodes compare by identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxq.errors import PxqError
from pxq.lang import parse
from pxq.library import bundled_scripts
from pxq.plan.compile import CompileSession, compile
from pxq.plan.format import format_graph

TESTS = Path(__file__).parent.parent
NOW_NS = 1_764_115_500_000_000_000  # the golden plans' now (tests/plan/test_plan_corpus.py)
PLAN_CORPUS = sorted((TESTS / "plan" / "corpus").glob("*.pxl"))
LANG_CORPUS = sorted((TESTS / "lang" / "corpus").glob("*.pxl"))


def statement_texts(text: str) -> list[str]:
    """``text`` cut before each line where a top-level statement starts (the first piece also holds
    what precedes the first statement: docstring, comments, pragmas). Each piece is preceded by
    empty lines, so that it parses alone with the line numbers it has in the whole text, as a REPL
    counting its input lines would parse it."""
    starts = sorted({stmt.span.line for stmt in parse(text).body})[1:]
    lines = text.splitlines(keepends=True)
    bounds = [0, *(line - 1 for line in starts), len(lines)]
    return ["\n" * a + "".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]


def compile_by_statement(text: str, name: str, vis=None):
    session = CompileSession(now_ns=NOW_NS)
    for i, piece in enumerate(statement_texts(text)):
        module = parse(piece)
        body = list(module.body)
        if module.docstring is not None and i > 0:
            # a bare string statement read alone parses as a docstring; as a statement it is a
            # constant expression, which changes nothing
            assert not body
        for pragma in module.pragmas:
            session.add_pragma(pragma)
        for stmt in body:
            session.add_statement(stmt)
    return session.finish(name=name, vis=vis)


def golden_compiled(path: Path) -> str:
    """The '== compiled ==' section of a golden plan file."""
    text = path.read_text()
    return text.split("== compiled ==\n", 1)[1].split("\n== optimized ==", 1)[0]


@pytest.mark.parametrize("path", PLAN_CORPUS, ids=lambda p: p.stem)
def test_plan_corpus_by_statement(path: Path) -> None:
    graph = compile_by_statement(path.read_text(), path.stem)
    assert format_graph(graph) == golden_compiled(TESTS / "plan" / "snapshots" / f"{path.stem}.plan.txt")
    assert format_graph(graph) == format_graph(compile(parse(path.read_text()), now_ns=NOW_NS, name=path.stem))


@pytest.mark.parametrize("script", bundled_scripts(), ids=lambda s: s.name)
def test_bundled_script_by_statement(script) -> None:
    graph = compile_by_statement(script.text, script.name, script.vis)
    assert format_graph(graph) == golden_compiled(TESTS / "plan" / "snapshots" / f"bundled_{script.name}.plan.txt")
    whole = compile(parse(script.text), now_ns=NOW_NS, name=script.name, vis=script.vis)
    assert format_graph(graph) == format_graph(whole)


@pytest.mark.parametrize("path", LANG_CORPUS, ids=lambda p: p.stem)
def test_lang_corpus_by_statement(path: Path) -> None:
    text = path.read_text()
    try:
        whole = compile(parse(text), now_ns=NOW_NS, name=path.stem)
    except PxqError as exc:  # most of the lang corpus exercises syntax, not tables: the same error
        with pytest.raises(type(exc)) as caught:
            compile_by_statement(text, path.stem)
        assert str(caught.value) == str(exc)
        return
    graph = compile_by_statement(text, path.stem)
    assert format_graph(graph) == format_graph(whole)


FAILING_CALL = """\
import px
df = px.DataFrame(table='http_events', start_time='-5m')
def show_then_fail():
    df.latency_ms = df.latency / 1000000
    px.display(df, 'out')
    px.set('max_output_rows_per_table', 7)
    return df.no_such_column
"""


def test_failed_statement_leaves_the_session_as_it_was() -> None:
    """The failing call had rebound the global df, displayed 'out' and set a setting before it
    failed; afterwards the session compiles on as if it had never been typed."""
    session = CompileSession(now_ns=NOW_NS)
    for stmt in parse(FAILING_CALL).body:
        session.add_statement(stmt)
    with pytest.raises(PxqError, match="no_such_column"):
        session.add_statement(parse("show_then_fail()").body[0])
    session.add_statement(parse("px.display(df, 'out')").body[0])
    expected = compile(parse(FAILING_CALL + "px.display(df, 'out')\n"), now_ns=NOW_NS)
    assert format_graph(session.graph()) == format_graph(expected)
    assert "latency_ms" not in session.graph().displays[0].schema.names
