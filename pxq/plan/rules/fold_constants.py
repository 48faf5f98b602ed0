"""Replace every column-free expression by its value, computed once at compile time."""

from __future__ import annotations

import dataclasses

from pxq.funcs.registry import ExecContext
from pxq.plan.constants import evaluate_constant
from pxq.plan.expr import Expr, FuncCall, Literal, postorder
from pxq.plan.nodes import Filter, Graph, Map, Relation, Source
from pxq.plan.rewrite import transform
from pxq.types import DataType

NAME = "fold_constants"
DOC = "evaluate constant sub-expressions (px.now() - px.minutes(5), 60 * 1000) once; drop always-true filters"


def _is_bool(expr: Expr, value: bool) -> bool:
    return isinstance(expr, Literal) and expr.type is DataType.BOOLEAN and expr.value is value


def _simplify_logic(expr: FuncCall) -> Expr:
    """`False or x` -> x, `True and x` -> x, `True or x` -> True, `False and x` -> False.

    Exact under Kleene logic too (True or null is True, False and null is False), so scripts may
    write `pid == 0 or df.pid == pid` and still get the pid filter pushed to the kernel.
    """
    absorbing, neutral = (True, False) if expr.name == "logicalOr" else (False, True)
    if any(_is_bool(a, absorbing) for a in expr.args):
        return Literal(absorbing, DataType.BOOLEAN)
    rest = [a for a in expr.args if not _is_bool(a, neutral)]
    # `x or False` is x only when x is a boolean: an INT64 operand (true when non-zero) would
    # turn the expression's type into INT64, and a filter on it would no longer be valid.
    if len(rest) == 1 and getattr(rest[0], "type", None) is DataType.BOOLEAN:
        return rest[0]
    return expr


def fold(expr: Expr, ctx: ExecContext) -> Expr:
    """``expr`` with every constant part replaced by its value.

    Bottom-up over the distinct nodes (see ``pxq.plan.expr.postorder``): a call whose arguments
    all folded to literals is computed from them, once, however often and however deep it is
    read. A part whose computation fails is left for the executor, which reports errors with
    their position.
    """
    done: dict[int, Expr] = {}
    for node in postorder(expr):
        if not isinstance(node, FuncCall):
            done[id(node)] = node
            continue
        args = tuple(done[id(a)] for a in node.args)
        folded = dataclasses.replace(node, args=args) if any(a is not b for a, b in zip(args, node.args)) else node
        if all(isinstance(a, Literal) for a in args):
            try:
                value = evaluate_constant(folded, ctx)
            except Exception:  # leave it for the executor, which reports errors with context
                pass
            else:
                done[id(node)] = Literal(value, node.type, node.semantic)
                continue
        done[id(node)] = _simplify_logic(folded) if folded.name in ("logicalAnd", "logicalOr") else folded
    return done[id(expr)]


def apply(graph: Graph) -> Graph:
    ctx = ExecContext(now_ns=graph.now_ns)

    def rewrite(node: Relation) -> Relation:
        if isinstance(node, Filter):
            predicate = fold(node.predicate, ctx)
            if _is_bool(predicate, True):
                return node.input  # keeps every row
            return node if predicate is node.predicate else dataclasses.replace(node, predicate=predicate)
        if isinstance(node, Map):
            assignments = tuple((name, fold(expr, ctx)) for name, expr in node.assignments)
            if all(a[1] is b[1] for a, b in zip(assignments, node.assignments)):
                return node
            return dataclasses.replace(node, assignments=assignments)
        if isinstance(node, Source) and node.predicates:
            predicates = tuple(fold(p, ctx) for p in node.predicates)
            return dataclasses.replace(node, predicates=predicates)
        return node

    return transform(graph, rewrite)
