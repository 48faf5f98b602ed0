"""The PxL corpus: every file parses to its snapshotted AST, unparses back to itself, and its
spans point at the text they came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxq.lang import ast, dump, parse, unparse
from tests.lang.helpers import walk, without_spans
from tests.snapshot import assert_snapshot

HERE = Path(__file__).parent
CORPUS = sorted((HERE / "corpus").glob("*.pxl"))


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_corpus_covers_enough_scripts():
    assert len(CORPUS) >= 25


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_ast_snapshot(path):
    assert_snapshot(HERE / "snapshots" / f"{path.stem}.ast.txt", dump(parse(read(path), path.name)))


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_unparse_reads_back_as_the_same_tree(path):
    module = parse(read(path), path.name)
    again = parse(unparse(module), "unparsed.pxl")
    assert dump(without_spans(again)) == dump(without_spans(module))


def offset(text: str, line: int, column: int) -> int:
    lines = text.splitlines(keepends=True)
    return sum(len(previous) for previous in lines[: line - 1]) + column - 1


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_spans_point_at_their_text(path):
    text = read(path)
    module = parse(text, path.name)
    spans = [(node, node.span) for node in walk(module)]
    spans += [(node, node.attr_span) for node in walk(module) if isinstance(node, ast.Attribute)]
    spans += [(node, node.name_span) for node in walk(module) if isinstance(node, ast.FunctionDef)]
    for node, span in spans:
        assert offset(text, span.line, span.column) == span.start_pos, node
        assert offset(text, span.end_line, span.end_column) == span.end_pos, node
        assert span.start_pos < span.end_pos or isinstance(node, ast.Module), node
    for node in walk(module):
        source = text[node.span.start_pos : node.span.end_pos]
        if isinstance(node, ast.Name):
            assert source == node.id
        elif isinstance(node, ast.Attribute):
            assert text[node.attr_span.start_pos : node.attr_span.end_pos] == node.attr
            assert source.endswith(node.attr)
        elif isinstance(node, ast.FunctionDef):
            assert text[node.name_span.start_pos : node.name_span.end_pos] == node.name
            assert source.startswith("def ")
        elif isinstance(node, ast.Call):
            assert source.endswith(")")
        elif isinstance(node, ast.Pragma):
            assert source == f"#px:set {node.key}={node.value}"
