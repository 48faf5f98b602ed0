"""Read only the columns a script uses: narrow every Source to the columns some reader needs,
and drop column assignments and aggregates nobody reads."""

from __future__ import annotations

import dataclasses

from pxq.plan.nodes import (Agg, Display, Filter, Graph, Join, Limit, Map, Project, Relation, Source, Union,
                            join_layout)
from pxq.plan.rewrite import transform

NAME = "prune_columns"
DOC = "scan only the columns that some display needs"


def required_columns(graph: Graph) -> dict[int, set[str]]:
    """id(node) -> the names of its output columns that some reader needs."""
    required: dict[int, set[str]] = {}

    def need(node: Relation, names) -> None:
        required.setdefault(id(node), set()).update(names)

    for node in reversed(graph.nodes()):
        wanted = required.get(id(node), set())
        if isinstance(node, Display):
            need(node.input, node.schema.names)
        elif isinstance(node, Filter):
            need(node.input, wanted | node.predicate.columns())
        elif isinstance(node, Map):
            defined = {name for name, _ in node.assignments}
            reads = set()
            for name, expr in node.assignments:
                if name in wanted:
                    reads |= expr.columns()
            need(node.input, (wanted - defined) | reads)
        elif isinstance(node, (Project, Limit)):
            need(node.input, wanted)
        elif isinstance(node, Agg):
            need(node.input, set(node.keys) | {a.column for a in node.aggregates if a.output in wanted})
        elif isinstance(node, Join):
            left, right = set(node.left_on), set(node.right_on)
            layout = join_layout(node.left.schema, node.right.schema, node.left_on, node.right_on,
                                 node.suffixes)
            for out, side, name in layout:
                if out in wanted:
                    (left if side == "left" else right).add(name)
            need(node.left, left)
            need(node.right, right)
        elif isinstance(node, Union):
            for part in node.parts:
                need(part, wanted)
    return required


def apply(graph: Graph) -> Graph:
    required = required_columns(graph)
    origins: dict[int, Relation] = {}

    def wanted(node: Relation) -> set[str]:
        return required.get(id(origins.get(id(node), node)), set())

    def rewrite(node: Relation) -> Relation:
        if isinstance(node, Source):
            keep = tuple(c for c in node.columns if c in wanted(node)) or node.columns[:1]
            return node if keep == node.columns else dataclasses.replace(node, columns=keep)
        if isinstance(node, Map):
            keep = tuple((name, expr) for name, expr in node.assignments if name in wanted(node))
            if not keep:
                return node.input
            return node if len(keep) == len(node.assignments) else Map(node.input, keep)
        if isinstance(node, Agg) and node.aggregates:
            keep = tuple(a for a in node.aggregates if a.output in wanted(node))
            if not keep and not node.keys:
                keep = node.aggregates[:1]
            return node if len(keep) == len(node.aggregates) else dataclasses.replace(node, aggregates=keep)
        if isinstance(node, Project):
            keep = tuple(c for c in node.columns if c in wanted(node)) or node.columns[:1]
            return node if keep == node.columns else Project(node.input, keep)
        if isinstance(node, Union):
            # Parts may keep different extra columns (read by their own maps): align them.
            names = tuple(c for c in node.parts[0].schema.names if c in wanted(node)) or node.parts[0].schema.names
            parts = tuple(p if p.schema.names == names else Project(p, names) for p in node.parts)
            return node if all(a is b for a, b in zip(parts, node.parts)) else Union(parts)
        return node

    return transform(graph, rewrite, origins)
