"""Helpers for the language tests: walking an AST, forgetting its spans, a compact s-expression."""

from __future__ import annotations

from dataclasses import fields, replace

from pxq.errors import Span
from pxq.lang import ast

NO_SPAN = Span(0, 0, 0, 0)


def children(node: ast.Node):
    """The nodes directly inside ``node``."""
    for field in fields(node):
        value = getattr(node, field.name)
        if isinstance(value, ast.Node):
            yield value
        elif isinstance(value, tuple):
            yield from (item for item in value if isinstance(item, ast.Node))


def walk(node: ast.Node):
    """``node`` and every node below it, parents first."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(list(children(current))))


def without_spans(node):
    """A copy of ``node`` with every span (and attr_span/name_span) replaced by NO_SPAN."""
    if isinstance(node, tuple):
        return tuple(without_spans(item) for item in node)
    if not isinstance(node, ast.Node):
        return node
    changes = {}
    for field in fields(node):
        value = getattr(node, field.name)
        changes[field.name] = NO_SPAN if isinstance(value, Span) else without_spans(value)
    return replace(node, **changes)


def shape(text: str) -> str:
    """The expression assigned in ``x = <text>``, as an s-expression: '(+ a (* b c))'."""
    from pxq.lang import parse

    statement = parse(f"x = {text}\n").body[0]
    return sexpr(statement.value)


def sexpr(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant):
        return repr(node.value)
    if isinstance(node, (ast.BinOp, ast.Compare)):
        return f"({node.op} {sexpr(node.left)} {sexpr(node.right)})"
    if isinstance(node, ast.BoolOp):
        return f"({node.op} " + " ".join(sexpr(value) for value in node.values) + ")"
    if isinstance(node, ast.UnaryOp):
        return f"({node.op} {sexpr(node.operand)})"
    if isinstance(node, ast.Attribute):
        return f"(. {sexpr(node.value)} {node.attr})"
    if isinstance(node, ast.Subscript):
        return f"([] {sexpr(node.value)} {sexpr(node.index)})"
    if isinstance(node, ast.Call):
        parts = [sexpr(node.func), *map(sexpr, node.args), *(f"{k.name}={sexpr(k.value)}" for k in node.keywords)]
        return "(call " + " ".join(parts) + ")"
    if isinstance(node, ast.List):
        return "[" + " ".join(map(sexpr, node.elts)) + "]"
    if isinstance(node, ast.Tuple):
        return "(tuple " + " ".join(map(sexpr, node.elts)) + ")"
    if isinstance(node, ast.Dict):
        return "{" + " ".join(f"{sexpr(k)}:{sexpr(v)}" for k, v in zip(node.keys, node.values)) + "}"
    raise TypeError(node)
