"""The collectors the agent can run, in one registry: per collector its name, the tables it fills,
how it is built from the manifest's request, and its eBPF program for ``pxq explain --bpf``.

Adding a collector: a class with the :class:`pxq.agent.collector.Collector` methods in its own
module, one :class:`CollectorSpec` below, and its tables in the catalog (``pxq/tables``) naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pxq.agent.collector import AgentError, AgentOptions, Collector
from pxq.agent.profiler import TABLE as PROFILER_TABLE, PerfProfilerCollector, profiler_program
from pxq.agent.socket_tracer_collector import SocketTracerCollector
from pxq.plan.manifest import CollectorRequest, ProbeManifest


@dataclass(frozen=True)
class CollectorSpec:
    name: str  # as the catalog's tables and the manifest's requests name it
    # The tables it fills live today. The catalog names a collector for tables it will fill later
    # too (the other protocols' tables): asking for one of those live must not run a
    # capture that silently writes zero rows.
    tables: tuple[str, ...]
    build: Callable[[CollectorRequest, AgentOptions], Collector]
    program: Callable[[CollectorRequest], str]  # the eBPF program it loads, with its -D flags


def _perf_profiler(request: CollectorRequest, options: AgentOptions) -> Collector:
    # Its settings come from the script (request.options) only; the agent's options say where warnings go.
    return PerfProfilerCollector(request, options.on_warning)


COLLECTORS: dict[str, CollectorSpec] = {
    spec.name: spec
    for spec in (
        CollectorSpec(
            "socket_tracer",
            (*SocketTracerCollector.protocols.values(), "conn_stats"),
            SocketTracerCollector,
            SocketTracerCollector.program,
        ),
        CollectorSpec("perf_profiler", (PROFILER_TABLE,), _perf_profiler, profiler_program),
    )
}


def check_collectable(manifest: ProbeManifest) -> None:
    """:class:`AgentError` when ``manifest`` asks for a collector or a table no collector here fills."""
    missing = [c for c in manifest.collectors if c.name not in COLLECTORS]
    if missing:
        tables = ", ".join(t for c in missing for t in c.tables)
        raise AgentError(
            f"this pxq cannot collect {tables} live yet (collector "
            f"{', '.join(c.name for c in missing)} is not implemented); "
            "replay a capture that holds it with --from DIR"
        )
    uncollected = [(t, c.name) for c in manifest.collectors for t in c.tables if t not in COLLECTORS[c.name].tables]
    if uncollected:
        tables = ", ".join(t for t, _ in uncollected)
        names = ", ".join(dict.fromkeys(name for _, name in uncollected))
        it = "it" if len(uncollected) == 1 else "them"
        raise AgentError(
            f"this pxq cannot collect {tables} live yet (collector {names} does not "
            f"produce {it}); replay a capture that holds {it} with --from DIR"
        )


def build_collector(request: CollectorRequest, options: AgentOptions) -> Collector:
    """The collector ``request`` names, not started yet (see :func:`check_collectable`)."""
    return COLLECTORS[request.name].build(request, options)
