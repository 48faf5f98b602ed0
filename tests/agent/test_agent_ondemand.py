"""On-demand collectors without the kernel: what the client decides from the agent's ``info``
(pxq/agent/flight.py check_collected, settings_notes). The live attach/detach is in
test_agent_ondemand_live.py."""

from __future__ import annotations

import pytest

from pxq.agent.collector import AgentError
from pxq.agent.flight import check_collected, settings_notes
from tests.agent.ondemand_info import agent_info, collector_manifest, profile_manifest


def test_refusing_agent_names_the_collector_and_the_setting_that_would_attach_it():
    info = agent_info(on_demand="refuse", attachable={})
    with pytest.raises(AgentError) as caught:
        check_collected(profile_manifest(), info, "127.0.0.1:7100")
    message = str(caught.value)
    assert "does not collect stack_traces.beta (collector perf_profiler is not running there" in message
    assert 'set on_demand = "attach" there' in message


def test_a_replaying_agent_cannot_attach_and_does_not_suggest_it():
    info = agent_info(mode="replay", attachable={})
    with pytest.raises(AgentError) as caught:
        check_collected(collector_manifest("dns_events", "socket_tracer"), info, "a:1")
    assert "does not collect dns_events" in str(caught.value) and "on_demand" not in str(caught.value)


def test_an_attaching_agent_accepts_what_it_can_attach():
    info = agent_info()
    manifest = profile_manifest((("sample_hz", "99"),))
    check_collected(manifest, info, "a:1")  # no refusal
    assert settings_notes(manifest, info, "a:1") == [
        "the script sets perf_profiler.sample_hz=99: agent a:1 attached perf_profiler with sample_hz=99 for the "
        "query's window (its history has sample_hz=19)"
    ]
