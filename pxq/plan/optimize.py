"""optimize: apply the ordered rules of ``pxq.plan.rules`` to a Graph."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

from pxq.plan.nodes import Graph
from pxq.plan.rules import RULES


def optimize(graph: Graph, rules: Sequence[ModuleType] = RULES, trace: list[tuple[str, Graph]] | None = None) -> Graph:
    """The graph after every rule in order; ``trace`` (if given) receives (rule name, graph)."""
    for rule in rules:
        graph = rule.apply(graph)
        if trace is not None:
            trace.append((rule.NAME, graph))
    return graph
