"""The ProbeManifest: everything the agent needs to know to collect a plan's data, and nothing
else. It is the only thing an agent receives (bpftrace's RequiredResources, in spirit), so it is
plain data, serializable to JSON, and snapshotted in tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast, overload

from pxq.plan.nodes import Graph, Source
from pxq.tables import CATALOG

Default = TypeVar("Default")


@dataclass(frozen=True)
class TableRequest:
    table: str
    collector: str
    columns: tuple[str, ...]
    start_ns: int | None
    end_ns: int | None
    # Processes to collect from (None: every process).
    pids: tuple[int, ...] | None


@dataclass(frozen=True)
class CollectorRequest:
    name: str
    tables: tuple[str, ...]
    pids: tuple[int, ...] | None
    # Protocols the socket tracer must parse (the others are not even inferred).
    protocols: tuple[str, ...] = ()
    # Query settings meant for this collector: '#px:set <collector>.<key>=value' or
    # px.set('<collector>.<key>', value), e.g. perf_profiler.sample_hz=99.
    options: tuple[tuple[str, str], ...] = ()

    @overload
    def option(self, key: str) -> str | None: ...

    @overload
    def option(self, key: str, default: Default) -> str | Default: ...

    def option(self, key: str, default: object = None) -> object:
        return dict(self.options).get(key, default)


@dataclass(frozen=True)
class ProbeManifest:
    now_ns: int
    tables: tuple[TableRequest, ...]
    collectors: tuple[CollectorRequest, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ProbeManifest:
        data = json.loads(text)

        def tup(value: list[Any] | None) -> tuple[Any, ...] | None:
            return None if value is None else tuple(value)

        tables = tuple(
            TableRequest(t["table"], t["collector"], tuple(t["columns"]), t["start_ns"], t["end_ns"], tup(t["pids"]))
            for t in data["tables"]
        )
        collectors = tuple(
            CollectorRequest(
                c["name"],
                tuple(c["tables"]),
                tup(c["pids"]),
                tuple(c.get("protocols", ())),
                tuple(tuple(o) for o in c.get("options", ())),
            )
            for c in data["collectors"]
        )
        return cls(data["now_ns"], tables, collectors)

    def to_text(self) -> str:
        lines = ["collectors:"]
        for c in self.collectors:
            pids = "all processes" if c.pids is None else "pids " + ", ".join(map(str, c.pids))
            proto = f" protocols={','.join(c.protocols)}" if c.protocols else ""
            options = "".join(f" {k}={v}" for k, v in c.options)
            lines.append(f"  {c.name}: tables={','.join(c.tables)}{proto}{options} ({pids})")
        lines.append("tables:")
        for t in self.tables:
            window = f"[{'-' if t.start_ns is None else t.start_ns}, {'-' if t.end_ns is None else t.end_ns})"
            pids = "" if t.pids is None else f" pids={','.join(map(str, t.pids))}"
            lines.append(f"  {t.table} via {t.collector} window={window}{pids}")
            lines.append(f"    columns: {', '.join(t.columns)}")
        return "\n".join(lines)


def _union_pids(values: Sequence[tuple[int, ...] | None]) -> tuple[int, ...] | None:
    if any(v is None for v in values):
        return None
    return tuple(sorted({p for v in cast(Sequence[tuple[int, ...]], values) for p in v}))


def _min_or_none(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else min(cast(Sequence[int], values))


def _max_or_none(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else max(cast(Sequence[int], values))


def build_manifest(graph: Graph) -> ProbeManifest:
    """What to collect for ``graph``: per table the union of what its Sources read."""
    sources: dict[str, list[Source]] = {}
    for node in graph.nodes():
        if isinstance(node, Source):
            sources.setdefault(node.table, []).append(node)
    tables: list[TableRequest] = []
    for name in sorted(sources):
        group = sources[name]
        table = CATALOG[name]
        read: set[str] = set()
        for s in group:
            read |= set(s.columns)
            for p in s.predicates:
                read |= p.columns()
        columns = tuple(c for c in table.column_names if c in read)
        tables.append(
            TableRequest(
                name,
                table.collector,
                columns,
                _min_or_none([s.start_ns for s in group]),
                _max_or_none([s.end_ns for s in group]),
                _union_pids([s.pids for s in group]),
            )
        )
    collectors: dict[str, list[TableRequest]] = {}
    for t in tables:
        collectors.setdefault(t.collector, []).append(t)
    requests: list[CollectorRequest] = []
    for name in sorted(collectors):
        requested = collectors[name]
        protocols = tuple(sorted({protocol for t in requested if (protocol := CATALOG[t.table].protocol)}))
        prefix = name + "."
        options = tuple((k[len(prefix) :], v) for k, v in graph.settings if k.startswith(prefix))
        requests.append(
            CollectorRequest(
                name, tuple(t.table for t in requested), _union_pids([t.pids for t in requested]), protocols, options
            )
        )
    return ProbeManifest(graph.now_ns, tuple(tables), tuple(requests))


def manifest_for_tables(tables: list[str], *, now_ns: int, pids: tuple[int, ...] | None = None) -> ProbeManifest:
    """A manifest collecting whole tables (for `pxq capture`), as if a script read all of them."""
    from pxq.plan.compile import table_schema
    from pxq.plan.nodes import Display, Source

    displays = []
    for name in tables:
        schema = table_schema(CATALOG[name])
        displays.append(Display(Source(name, schema, schema.names, pids=pids), name))
    return build_manifest(Graph(tuple(displays), now_ns))
