"""split: cut a Graph into agent fragments (per-row work next to the data: Source, Filter, Map,
Project) and a merge fragment (everything blocking: Agg, Join, Union, Limit, displays), plus the
ProbeManifest the agents collect for. In embedded mode both halves run in one process; in
cluster mode every agent runs the agent fragments and one merger runs the rest (Pixie's PEM /
Kelvin split)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pxq.plan.manifest import ProbeManifest, build_manifest
from pxq.plan.nodes import Filter, FragmentInput, Graph, Map, Project, Relation, Source
from pxq.plan.rewrite import with_inputs

_AGENT_NODES = (Source, Filter, Map, Project)


@dataclass(frozen=True)
class SplitPlan:
    agent_fragments: tuple[Relation, ...]
    merge: Graph
    manifest: ProbeManifest


def _agent_side(node: Relation, memo: dict[int, bool]) -> bool:
    if id(node) not in memo:
        memo[id(node)] = isinstance(node, _AGENT_NODES) and all(_agent_side(c, memo) for c in node.inputs)
    return memo[id(node)]


def split(graph: Graph) -> SplitPlan:
    memo: dict[int, bool] = {}
    fragments: list[Relation] = []
    index: dict[int, FragmentInput] = {}

    def cut(node: Relation) -> Relation:
        if id(node) not in index:
            index[id(node)] = FragmentInput(len(fragments), node.schema)
            fragments.append(node)
        return index[id(node)]

    # Walk from the displays; any maximal agent-side subtree becomes a fragment.
    done: dict[int, Relation] = {}

    def visit(node: Relation) -> Relation:
        if id(node) in done:
            return done[id(node)]
        if _agent_side(node, memo):
            result = cut(node)
        else:
            result = with_inputs(node, tuple(visit(c) for c in node.inputs))
        done[id(node)] = result
        return result

    displays = tuple(visit(d) for d in graph.displays)
    merge = dataclasses.replace(graph, displays=displays)
    return SplitPlan(tuple(fragments), merge, build_manifest(graph))
