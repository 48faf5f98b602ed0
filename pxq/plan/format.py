"""The plan's own text form, with intermediates named like ibis (``r0 := Source[...]``).

Stable: it is what the snapshot tests and ``pxq explain`` show.
"""

from __future__ import annotations

from collections.abc import Callable

from pxq.plan.expr import Expr
from pxq.plan.limits import format_time_ns
from pxq.plan.nodes import (
    Agg,
    AggSpec,
    Display,
    Field,
    Filter,
    FragmentInput,
    Graph,
    Join,
    Limit,
    Map,
    Project,
    Relation,
    Source,
    Union,
)


def _time(ns: int | None) -> str:
    if ns is None:
        return "-"
    return format_time_ns(ns)


def _type(typed: Field | AggSpec | Expr) -> str:
    """TYPE, or TYPE[semantic] when the value carries a semantic type."""
    semantic = typed.semantic.value
    return str(typed.type) if semantic == "none" else f"{typed.type}[{semantic}]"


def _describe(node: Relation, name: dict[int, str]) -> str:
    ref: Callable[[Relation], str] = lambda n: name[id(n)]  # noqa: E731
    if isinstance(node, Source):
        lines = [
            f"Source[{node.table}] window=[{_time(node.start_ns)}, {_time(node.end_ns)})",
            f"  columns: {', '.join(node.columns)}"
            if len(node.columns) < len(node.table_schema.fields)
            else "  columns: all",
        ]
        for pred in node.predicates:
            lines.append(f"  pushed: {pred}")
        if node.pids is not None:
            lines.append(f"  pids: {', '.join(map(str, node.pids))}")
        return "\n".join(lines)
    if isinstance(node, Filter):
        return f"Filter[{ref(node.input)}]\n  {node.predicate}"
    if isinstance(node, Map):
        body = "\n".join(f"  {col} := {expr}  :{_type(expr)}" for col, expr in node.assignments)
        return f"Map[{ref(node.input)}]\n{body}"
    if isinstance(node, Project):
        return f"Project[{ref(node.input)}]\n  {', '.join(node.columns)}"
    if isinstance(node, Agg):
        lines = [f"Agg[{ref(node.input)}] by {', '.join(node.keys) or '(all rows)'}"]
        lines += [f"  {a.output} := {a.function}({a.column})  :{_type(a)}" for a in node.aggregates]
        return "\n".join(lines)
    if isinstance(node, Join):
        on = ", ".join(f"{left}={right}" for left, right in zip(node.left_on, node.right_on)) or "(no keys: all pairs)"
        return (
            f"Join[{ref(node.left)}, {ref(node.right)}] how={node.how} on {on} suffixes={list(node.suffixes)}\n"
            f"  -> {', '.join(node.schema.names)}"
        )
    if isinstance(node, Union):
        return f"Union[{', '.join(ref(p) for p in node.parts)}]"
    if isinstance(node, Limit):
        return f"Limit[{ref(node.input)}] n={node.n}"
    if isinstance(node, Display):
        return f"Display[{ref(node.input)}] name={node.name!r}"
    if isinstance(node, FragmentInput):
        return f"FragmentInput[{node.index}]"
    raise TypeError(f"no text form for {type(node).__name__}")


def format_graph(graph: Graph) -> str:
    names: dict[int, str] = {}
    lines = []
    for node in graph.nodes():
        if isinstance(node, Display):
            lines.append(_describe(node, names))
            continue
        label = f"r{len(names)}"
        names[id(node)] = label
        lines.append(f"{label} := {_describe(node, names)}")
    settings = ", ".join(f"{k}={v}" for k, v in graph.settings)
    header = f"now = {_time(graph.now_ns)}" + (f"; settings: {settings}" if settings else "")
    return "\n".join([header, *lines])
