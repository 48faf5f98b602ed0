"""Move filters down to the tables they read, through Maps, Projects and other Filters, and
into the Source itself, where time comparisons narrow the scanned window and pid comparisons
become the pid filter the agent applies in the kernel.

A filter is never pushed into a node that another part of the plan also reads (that would
change the other reader's rows), nor through Limit, Agg, Join or Union.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from pxq.plan.expr import ColumnRef, Expr, FuncCall, Literal, conjunction, conjuncts, rename_columns
from pxq.plan.nodes import Filter, Graph, Map, Project, Relation, Source
from pxq.plan.rewrite import reader_counts, transform
from pxq.types import DataType

NAME = "push_filters"
DOC = "push filters into the source: time bounds narrow the window, pid equality filters in the kernel"

# Map expressions cheap and exact enough to be substituted into a pushed predicate.
_SUBSTITUTABLE_CALLS = {"upid_to_pid"}


def _substitutable(expr: Expr) -> bool:
    if isinstance(expr, ColumnRef):
        return True
    return (
        isinstance(expr, FuncCall)
        and expr.name in _SUBSTITUTABLE_CALLS
        and all(isinstance(a, ColumnRef) for a in expr.args)
    )


def _constant_int(expr: Expr) -> int | None:
    if (
        isinstance(expr, Literal)
        and not expr.is_list
        and expr.type in (DataType.INT64, DataType.TIME64NS)
        and isinstance(expr.value, int)
        and not isinstance(expr.value, bool)
    ):
        return expr.value
    return None


_FLIPPED = {
    "lessThan": "greaterThan",
    "lessThanEqual": "greaterThanEqual",
    "greaterThan": "lessThan",
    "greaterThanEqual": "lessThanEqual",
    "equal": "equal",
}


def _comparison(expr: Expr) -> tuple[str, Expr, int] | None:
    """(op, non-constant side, constant) for `x OP c` or `c OP x`, op seen from x."""
    if not (isinstance(expr, FuncCall) and expr.name in _FLIPPED and len(expr.args) == 2):
        return None
    left, right = expr.args
    if (value := _constant_int(right)) is not None:
        return expr.name, left, value
    if (value := _constant_int(left)) is not None:
        return _FLIPPED[expr.name], right, value
    return None


def _conjunction(parts: list[Expr]) -> Expr:
    """``conjunction`` of parts that are never empty here (so never None)."""
    return cast(Expr, conjunction(parts))


def _is_pid_of_upid(expr: Expr) -> bool:
    return (
        isinstance(expr, FuncCall)
        and expr.name == "upid_to_pid"
        and len(expr.args) == 1
        and isinstance(expr.args[0], ColumnRef)
        and expr.args[0].name == "upid"
    )


def absorb(source: Source, parts: list[Expr]) -> Source:
    """A Source with ``parts`` added to its predicates and its window/pids narrowed by them."""
    start, end, pids = source.start_ns, source.end_ns, source.pids
    for part in parts:
        comparison = _comparison(part)
        if comparison is not None:
            op, side, value = comparison
            if isinstance(side, ColumnRef) and side.name == "time_":
                if op in ("greaterThan", "greaterThanEqual"):
                    bound = value + (1 if op == "greaterThan" else 0)
                    start = bound if start is None else max(start, bound)
                elif op in ("lessThan", "lessThanEqual"):
                    bound = value + (1 if op == "lessThanEqual" else 0)
                    end = bound if end is None else min(end, bound)
            elif op == "equal" and _is_pid_of_upid(side):
                pids = (value,) if pids is None else tuple(p for p in pids if p == value)
        elif (
            isinstance(part, FuncCall)
            and part.name == "equals_any"
            and _is_pid_of_upid(part.args[0])
            and isinstance(part.args[1], Literal)
            and part.args[1].is_list
        ):
            values = tuple(sorted({int(v) for v in cast(tuple[Any, ...], part.args[1].value)}))
            pids = values if pids is None else tuple(p for p in pids if p in values)
    if start is not None and end is not None and start > end:
        end = start  # contradictory bounds select nothing
    return dataclasses.replace(
        source, predicates=source.predicates + tuple(parts), start_ns=start, end_ns=end, pids=pids
    )


def apply(graph: Graph) -> Graph:
    readers = reader_counts(graph)
    origins: dict[int, Relation] = {}

    def shared(node: Relation) -> bool:
        return readers.get(id(origins.get(id(node), node)), 0) > 1

    def push(node: Relation, parts: list[Expr]) -> Relation:
        """``node`` filtered by ``parts``, with as much of the filtering as low as possible."""
        if not parts:
            return node
        if shared(node):
            return Filter(node, _conjunction(parts))
        if isinstance(node, Source):
            return absorb(node, parts)
        if isinstance(node, Filter):
            return push(node.input, conjuncts(node.predicate) + parts)
        if isinstance(node, Project):
            return Project(push(node.input, parts), node.columns)
        if isinstance(node, Map):
            defined = dict(node.assignments)
            below, above = [], []
            for part in parts:
                used = part.columns() & defined.keys()
                if all(_substitutable(defined[c]) for c in used):
                    below.append(rename_columns(part, {c: defined[c] for c in used}))
                else:
                    above.append(part)
            if not below:
                return Filter(node, _conjunction(parts))
            mapped = Map(push(node.input, below), node.assignments)
            return Filter(mapped, _conjunction(above)) if above else mapped
        return Filter(node, _conjunction(parts))

    def rewrite(node: Relation) -> Relation:
        if isinstance(node, Filter):
            return push(node.input, conjuncts(node.predicate))
        return node

    return transform(graph, rewrite, origins)
