"""Fuse a Map that reads another Map into one, when none of its expressions read a column the
inner Map defines (``df.a = ...; df.b = ...`` becomes one projection step)."""

from __future__ import annotations

from typing import cast

from pxq.plan.expr import Expr
from pxq.plan.nodes import Graph, Map, Relation
from pxq.plan.rewrite import reader_counts, transform

NAME = "merge_maps"
DOC = "fuse consecutive independent column assignments into one Map"


class _Group:
    """Maps fused into one: their assignments in order (a later one replaces an earlier of the
    same name, in its place) and the Map at the top, the only one that is built."""

    def __init__(self) -> None:
        self.assignments: dict[str, Expr] = {}
        self.top: Relation | None = None
        self.size = 0  # how many Maps
        self.base: Relation | None = None  # the (rewritten) input of the lowest Map


def apply(graph: Graph) -> Graph:
    # Only fuse into Maps read by one parent: a shared inner Map must stay as it is.
    readers = reader_counts(graph)

    # Decide the groups first, inputs before readers, each Map once: building the fused Map at
    # every step would make a script of n column assignments cost n^2 (n = 5,000 is a script).
    group_of: dict[int, _Group] = {}
    for node in graph.nodes():
        if not isinstance(node, Map):
            continue
        inner = node.input
        group = group_of.get(id(inner)) if isinstance(inner, Map) and readers.get(id(inner), 0) <= 1 else None
        if group is not None and any(expr.columns() & group.assignments.keys() for _, expr in node.assignments):
            group = None
        if group is None:
            group = _Group()
        group.assignments.update(dict(node.assignments))
        group.top = node
        group.size += 1
        group_of[id(node)] = group

    origins: dict[int, Relation] = {}

    def rewrite(node: Relation) -> Relation:
        original = origins.get(id(node), node)
        group = group_of.get(id(original))
        if group is None:
            return node
        if group.base is None:
            group.base = cast(Map, node).input  # the lowest Map of its group comes first
        if original is not group.top or group.size == 1:
            return node  # a Map fused into the one above it, or a Map alone
        return Map(group.base, tuple(group.assignments.items()))

    return transform(graph, rewrite, origins)
