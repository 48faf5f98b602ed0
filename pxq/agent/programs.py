"""The eBPF programs a manifest makes the agent load, as text (for `pxq explain --bpf`)."""

from __future__ import annotations

from pxq.plan.manifest import ProbeManifest


def generated_programs(manifest: ProbeManifest) -> list[tuple[str, str]]:
    """(collector name, program text with its -D flags) for each eBPF collector in ``manifest``."""
    programs = []
    for request in manifest.collectors:
        if request.name == "socket_tracer":
            from pxq.agent.socket_tracer import socket_tracer_program

            programs.append((request.name, socket_tracer_program(
                pids=set(request.pids) if request.pids is not None else None, protocols=request.protocols)))
        elif request.name == "perf_profiler":
            from pxq.agent.profiler import profiler_program

            programs.append((request.name, profiler_program(request)))
    return programs
