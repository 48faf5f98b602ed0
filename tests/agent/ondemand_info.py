"""What the on-demand tests without the kernel (test_agent_ondemand.py, test_agent_ondemand_wait.py)
hand the client's decisions: a one-collector manifest and an agent's ``info`` reply."""

from __future__ import annotations

from typing import Any

from pxq.plan.manifest import CollectorRequest, ProbeManifest, TableRequest

NOW = 1_764_115_200_000_000_000
# The tables an agent with the socket tracer running (and no on-demand collector yet) holds.
HELD = {"http_events": "socket_tracer", "agent_status": "agent"}


def collector_manifest(table: str, collector: str, options: tuple[tuple[str, str], ...] = ()) -> ProbeManifest:
    """A query of ``table`` over the last 5 s, collected by ``collector`` with ``options``."""
    return ProbeManifest(
        NOW,
        (TableRequest(table, collector, ("time_",), NOW - 5_000_000_000, None, None),),
        (CollectorRequest(collector, (table,), None, (), options),),
    )


def profile_manifest(options: tuple[tuple[str, str], ...] = ()) -> ProbeManifest:
    return collector_manifest("stack_traces.beta", "perf_profiler", options)


def agent_info(**changes: Any) -> dict[str, Any]:
    """A live agent's ``info`` that attaches the profiler on demand (its history at 19 Hz, at most
    7 s a collection), with ``changes`` applied."""
    info = {
        "tables": HELD,
        "on_demand": "attach",
        "attachable": {"stack_traces.beta": "perf_profiler"},
        "mode": "live",
        "collector_options": {"perf_profiler": {"sample_hz": 19}},
        "on_demand_max_s": 7.0,
    }
    return {**info, **changes}
