"""Read only the columns a script uses: narrow every Source to the columns some reader needs,
and drop column assignments and aggregates nobody reads.

Two passes. ``required_columns`` walks readers before inputs and records, for every node, the
output columns some reader needs; it never asks for nothing, because even a reader that uses no
column of its input (``df.one = 1``, ``head``) still needs its input's rows, and rows travel
with at least one column. ``apply`` then rebuilds the graph inputs first, each node built once
from its already pruned inputs. A pruned node's columns are a subset of the original node's,
in the same order, and always include what its readers need; nodes whose output depends on
exactly which columns their inputs have (Join's suffixes, Union's alignment, Display) select
them explicitly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import cast

from pxq.plan.expr import Expr
from pxq.plan.nodes import (
    Agg,
    AggSpec,
    Display,
    Filter,
    Graph,
    Join,
    Limit,
    Map,
    Project,
    Relation,
    Source,
    Union,
    join_layout,
)

NAME = "prune_columns"
DOC = "scan only the columns that some display needs"


def kept_aggregates(node: Agg, wanted: set[str]) -> tuple[AggSpec, ...]:
    """The aggregates some reader needs; a key-less Agg keeps one so that it still has a column."""
    keep = tuple(a for a in node.aggregates if a.output in wanted)
    if not keep and not node.keys:
        keep = node.aggregates[:1]
    return keep


def kept_assignments(node: Map, wanted: set[str]) -> tuple[tuple[str, Expr], ...]:
    return tuple((name, expr) for name, expr in node.assignments if name in wanted)


def join_reads(node: Join, wanted: set[str]) -> tuple[set[str], set[str]]:
    """The left and right input columns a pruned ``node`` reads to give the ``wanted`` outputs.

    A wanted output named with a suffix keeps its namesake on the other side too: without it the
    name would no longer clash and the output would lose its suffix.
    """
    left, right = set(node.left_on), set(node.right_on)
    for out, side, name in join_layout(node.left.schema, node.right.schema, node.left_on, node.right_on, node.suffixes):
        if out in wanted:
            (left if side == "left" else right).add(name)
            if out != name:
                (right if side == "left" else left).add(name)
    return left, right


def required_columns(graph: Graph) -> dict[int, set[str]]:
    """id(node) -> the names of its output columns that some reader needs (never empty)."""
    required: dict[int, set[str]] = {}

    def need(node: Relation, names: Iterable[str]) -> None:
        required.setdefault(id(node), set()).update(names)

    for node in reversed(graph.nodes()):
        # Every reader has spoken by now; if none needs a column, rows still travel with one.
        wanted = required.setdefault(id(node), set())
        if not wanted and not isinstance(node, Display):
            wanted.add(_row_carrier(node))
        if isinstance(node, Display):
            need(node.input, node.schema.names)
        elif isinstance(node, Filter):
            need(node.input, wanted | node.predicate.columns())
        elif isinstance(node, Map):
            defined = {name for name, _ in node.assignments}
            reads: set[str] = set()
            for _, expr in kept_assignments(node, wanted):
                reads |= expr.columns()
            need(node.input, (wanted - defined) | reads)
        elif isinstance(node, (Project, Limit)):
            need(node.input, wanted)
        elif isinstance(node, Agg):
            need(node.input, set(node.keys) | {a.column for a in kept_aggregates(node, wanted)})
        elif isinstance(node, Join):
            left, right = join_reads(node, wanted)
            need(node.left, left)
            need(node.right, right)
        elif isinstance(node, Union):
            if "time_" in node.schema.names:
                wanted.add("time_")  # append orders its rows by time_: keep it to keep the order
            for part in node.parts:
                need(part, wanted)
    return required


def _row_carrier(node: Relation) -> str:
    """The column that carries a node's rows when its readers need none of its columns: one the
    node passes through rather than computes, and time_ (fixed width, always read) if it can."""
    computed = {name for name, _ in node.assignments} if isinstance(node, Map) else set()
    candidates = [c for c in node.schema.names if c not in computed] or list(node.schema.names)
    return "time_" if "time_" in candidates else candidates[0]


def _select(node: Relation, names: tuple[str, ...]) -> Relation:
    """``node`` with exactly ``names`` in this order (itself when it has them already)."""
    return node if node.schema.names == names else Project(node, names)


def _in_order(names: Iterable[str], wanted: set[str]) -> tuple[str, ...]:
    return tuple(c for c in names if c in wanted)


def apply(graph: Graph) -> Graph:
    required = required_columns(graph)
    pruned: dict[int, Relation] = {}

    def rebuilt(node: Relation) -> Relation:
        wanted = required.get(id(node), set(node.schema.names))
        if not node.inputs:  # a Source, or a merge fragment's FragmentInput
            if not isinstance(node, Source):
                return node
            keep = _in_order(node.columns, wanted)
            return node if keep == node.columns else dataclasses.replace(node, columns=keep)
        inputs = tuple(pruned[id(child)] for child in node.inputs)
        if isinstance(node, Display):
            return Display(_select(inputs[0], node.schema.names), node.name)
        if isinstance(node, Filter):
            return Filter(inputs[0], node.predicate)
        if isinstance(node, Map):
            assignments = kept_assignments(node, wanted)
            return Map(inputs[0], assignments) if assignments else inputs[0]
        if isinstance(node, Project):
            return Project(inputs[0], _in_order(node.columns, wanted))
        if isinstance(node, Limit):
            return Limit(inputs[0], node.n)
        if isinstance(node, Agg):
            return Agg(inputs[0], node.keys, kept_aggregates(node, wanted))
        if isinstance(node, Join):
            left, right = join_reads(node, wanted)
            return Join(
                _select(inputs[0], _in_order(node.left.schema.names, left)),
                _select(inputs[1], _in_order(node.right.schema.names, right)),
                node.how,
                node.left_on,
                node.right_on,
                node.suffixes,
            )
        if isinstance(node, Union):
            names = _in_order(node.schema.names, wanted)
            return Union(tuple(_select(part, names) for part in inputs))
        raise TypeError(f"prune_columns does not know {type(node).__name__}")

    # graph.nodes() lists inputs before their readers, so every input is pruned first.
    for node in graph.nodes():
        pruned[id(node)] = _unchanged_or(node, rebuilt(node))
    displays = tuple(pruned[id(d)] for d in graph.displays)
    if all(a is b for a, b in zip(displays, graph.displays)):
        return graph
    # Rewriting a Display gives a Display.
    return dataclasses.replace(graph, displays=cast(tuple[Display, ...], displays))


def _unchanged_or(old: Relation, new: Relation) -> Relation:
    """``old`` when ``new`` is the same operator over the same inputs (keeps nodes shared)."""
    if type(new) is not type(old):
        return new
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if isinstance(a, Relation) or (isinstance(a, tuple) and a and isinstance(a[0], Relation)):
            if a is not b and not (isinstance(a, tuple) and len(a) == len(b) and all(x is y for x, y in zip(a, b))):
                return new
        elif a != b:
            return new
    return old
