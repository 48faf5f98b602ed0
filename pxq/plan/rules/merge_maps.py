"""Fuse a Map that reads another Map into one, when none of its expressions read a column the
inner Map defines (``df.a = ...; df.b = ...`` becomes one projection step)."""

from __future__ import annotations

from pxq.plan.nodes import Graph, Map, Relation
from pxq.plan.rewrite import reader_counts, transform

NAME = "merge_maps"
DOC = "fuse consecutive independent column assignments into one Map"


def apply(graph: Graph) -> Graph:
    # Only fuse into Maps read by one parent: a shared inner Map must stay as it is.
    readers = reader_counts(graph)

    origins: dict[int, Relation] = {}

    def rewrite(node: Relation) -> Relation:
        inner = getattr(node, "input", None)
        if not (isinstance(node, Map) and isinstance(inner, Map)):
            return node
        if readers.get(id(origins.get(id(inner), inner)), 0) > 1:
            return node
        defined = {name for name, _ in inner.assignments}
        if any(expr.columns() & defined for _, expr in node.assignments):
            return node
        merged = dict(inner.assignments)
        merged.update(dict(node.assignments))
        return Map(inner.input, tuple(merged.items()))

    return transform(graph, rewrite, origins)
