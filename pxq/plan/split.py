"""split: cut a Graph into agent fragments (per-row work next to the data: Source, Filter, Map,
Project) and a merge fragment (everything blocking: Agg, Join, Union, Limit, displays), plus the
ProbeManifest the agents collect for. In embedded mode both halves run in one process; in
cluster mode every agent runs the agent fragments and one merger runs the rest (Pixie's PEM /
Kelvin split).

With ``partial_aggs=True`` (a query over many agents, :mod:`pxq.broker`) a group-by whose input
runs on the agents is an agent fragment too: each agent reduces its rows to per-group states, and
the broker merges them (:mod:`pxq.broker.partial`) into what the merge fragment reads. A fragment
whose root is an ``Agg`` is always such a partial aggregation. A group-by written above a join
gets here only when the optimizer moved it below the join (:mod:`pxq.plan.rules.eager_aggregation`:
N:1 joins, as service_stats' join with a one-row aggregate); the join then runs on the broker
over the merged groups."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import cast

from pxq.plan.manifest import ProbeManifest, build_manifest
from pxq.plan.nodes import (
    Agg,
    Display,
    Filter,
    FragmentInput,
    Graph,
    Map,
    Project,
    Relation,
    Source,
    relations_postorder,
)
from pxq.plan.rewrite import with_inputs

_AGENT_NODES = (Source, Filter, Map, Project)


@dataclass(frozen=True)
class SplitPlan:
    agent_fragments: tuple[Relation, ...]
    merge: Graph
    manifest: ProbeManifest


def split(graph: Graph, *, partial_aggs: bool = False) -> SplitPlan:
    fragments: list[Relation] = []
    index: dict[int, FragmentInput] = {}

    def cut(node: Relation) -> Relation:
        if id(node) not in index:
            index[id(node)] = FragmentInput(len(fragments), node.schema)
            fragments.append(node)
        return index[id(node)]

    # Iterative walks (a plan is as deep as its script is long): first which nodes can run on
    # an agent, inputs first; then from the displays, where any maximal agent-side subtree
    # becomes a fragment and the merge-side nodes above it are rebuilt to read its output.
    agent_side: dict[int, bool] = {}
    for node in graph.nodes():
        agent_side[id(node)] = isinstance(node, _AGENT_NODES) and all(agent_side[id(c)] for c in node.inputs)
    if partial_aggs:
        from pxq.broker.partial import splittable

        for node in graph.nodes():
            if isinstance(node, Agg) and agent_side[id(node.input)] and splittable(node):
                agent_side[id(node)] = True  # a fragment root: nothing above it runs on the agents
    done: dict[int, Relation] = {}
    for node in relations_postorder(graph.displays, inputs_of=lambda n: () if agent_side[id(n)] else n.inputs):
        if agent_side[id(node)]:
            done[id(node)] = cut(node)
        else:
            done[id(node)] = with_inputs(node, tuple(done[id(c)] for c in node.inputs))
    displays = tuple(done[id(d)] for d in graph.displays)
    # Rewriting a Display gives a Display.
    merge = dataclasses.replace(graph, displays=cast(tuple[Display, ...], displays))
    if partial_aggs:
        fragments = [_pruned_alone(f, graph.now_ns) for f in fragments]
    return SplitPlan(tuple(fragments), merge, build_manifest(graph))


def _pruned_alone(fragment: Relation, now_ns: int) -> Relation:
    """``fragment`` computing only what its own root needs. Over many agents each fragment is its
    own query (one ticket), so a node two fragments share (service_stats' column assignments,
    read by its per-service group-by and its one-row first_seen aggregate) is not computed once
    for both: each computes the part of it that it reads. Its output columns do not change."""
    from pxq.plan.rules import prune_columns

    alone = Graph((Display(fragment, "fragment"),), now_ns)
    pruned = prune_columns.apply(alone).displays[0].input
    return pruned if pruned.schema == fragment.schema else fragment
