"""On-demand collectors without the kernel: what the client decides from the agent's ``info``
(pxq/agent/flight.py check_collected, settings_notes). The live attach/detach is in
test_agent_ondemand_live.py."""

from __future__ import annotations

import pytest

from pxq.agent.collector import AgentError
from pxq.agent.flight import check_collected, settings_notes
from pxq.plan.manifest import CollectorRequest, ProbeManifest, TableRequest

NOW = 1_764_115_200_000_000_000


def _manifest(table: str, collector: str, options: tuple[tuple[str, str], ...] = ()) -> ProbeManifest:
    return ProbeManifest(
        NOW,
        (TableRequest(table, collector, ("time_",), NOW - 5_000_000_000, None, None),),
        (CollectorRequest(collector, (table,), None, (), options),),
    )


HELD = {"http_events": "socket_tracer", "agent_status": "agent"}


def test_refusing_agent_names_the_collector_and_the_setting_that_would_attach_it():
    info = {"tables": HELD, "on_demand": "refuse", "attachable": {}, "mode": "live"}
    with pytest.raises(AgentError) as caught:
        check_collected(_manifest("stack_traces.beta", "perf_profiler"), info, "127.0.0.1:7100")
    message = str(caught.value)
    assert "does not collect stack_traces.beta (collector perf_profiler is not running there" in message
    assert 'set on_demand = "attach" there' in message


def test_a_replaying_agent_cannot_attach_and_does_not_suggest_it():
    info = {"tables": HELD, "mode": "replay", "on_demand": "attach", "attachable": {}}
    with pytest.raises(AgentError) as caught:
        check_collected(_manifest("dns_events", "socket_tracer"), info, "a:1")
    assert "does not collect dns_events" in str(caught.value) and "on_demand" not in str(caught.value)


def test_an_attaching_agent_accepts_what_it_can_attach():
    info = {
        "tables": HELD,
        "on_demand": "attach",
        "attachable": {"stack_traces.beta": "perf_profiler"},
        "mode": "live",
        "collector_options": {"perf_profiler": {"sample_hz": 19}},
    }
    manifest = _manifest("stack_traces.beta", "perf_profiler", (("sample_hz", "99"),))
    check_collected(manifest, info, "a:1")  # no refusal
    assert settings_notes(manifest, info, "a:1") == [
        "the script sets perf_profiler.sample_hz=99: agent a:1 attached perf_profiler with sample_hz=99 for the "
        "query's window (its history has sample_hz=19)"
    ]
