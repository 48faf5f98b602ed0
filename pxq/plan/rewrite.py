"""Bottom-up rewriting of a plan graph that keeps shared nodes shared."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import cast

from pxq.lang.deep import deep
from pxq.plan.nodes import Display, Graph, Relation, relations_postorder

Rewriter = Callable[[Relation], Relation]


def with_inputs(node: Relation, inputs: tuple[Relation, ...]) -> Relation:
    """A copy of ``node`` reading ``inputs`` (the node itself when nothing changed)."""
    if all(a is b for a, b in zip(node.inputs, inputs)):
        return node
    names = {
        1: ("input",),
        2: ("left", "right"),
    }
    if hasattr(node, "parts"):
        return dataclasses.replace(node, parts=tuple(inputs))
    return dataclasses.replace(node, **dict(zip(names[len(inputs)], inputs)))


@deep  # a rule's rewrite may recurse (pxq.lang.deep)
def transform(graph: Graph, rewrite: Rewriter, origins: dict[int, Relation] | None = None) -> Graph:
    """Apply ``rewrite`` to every node after its inputs were rewritten; each node once.

    When ``origins`` is given it maps id(new node) -> the original node, for rules that need to
    ask questions of the original graph (e.g. how many nodes read this one).
    """
    done: dict[int, Relation] = {}
    keep_alive: list[Relation] = []  # so that ids recorded in origins are never reused

    # Inputs before readers, without recursion: a plan is as deep as its script is long.
    for node in relations_postorder(graph.displays):
        rebuilt = with_inputs(node, tuple(done[id(child)] for child in node.inputs))
        if origins is not None:
            origins[id(rebuilt)] = node
            keep_alive.append(rebuilt)
        done[id(node)] = rewrite(rebuilt)
        if origins is not None:
            origins[id(done[id(node)])] = node

    displays = tuple(done[id(d)] for d in graph.displays)
    if all(a is b for a, b in zip(displays, graph.displays)):
        return graph
    # Rewriting a Display gives a Display.
    return dataclasses.replace(graph, displays=cast(tuple[Display, ...], displays))


def reader_counts(graph: Graph) -> dict[int, int]:
    """id(node) -> how many nodes read it (a node read twice must not be changed for one reader)."""
    readers: dict[int, int] = {}
    for node in graph.nodes():
        for child in node.inputs:
            readers[id(child)] = readers.get(id(child), 0) + 1
    return readers
