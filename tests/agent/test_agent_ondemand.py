"""On-demand collectors without the kernel: what the client decides from the agent's ``info``
(pxq/agent/flight.py check_collected, settings_notes), and the agent's bound on a collector's start.
The live attach/detach is in test_agent_ondemand_live.py."""

from __future__ import annotations

import inspect

import pytest

from pxq.agent.collector import AgentError
from pxq.agent.daemon import load_config
from pxq.agent.flight import AgentClient, check_collected, settings_notes
from pxq.errors import UsageError
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


def test_the_agents_bound_on_a_collector_start_is_at_most_what_clients_wait_for_one(tmp_path):
    """on_demand_attach_max (pxq/agent/daemon.py) bounds an on-demand collector's start in the agent;
    clients allow 120 s for that start (README), so the agent's bound defaults to it and may only be
    shorter: the client then always hears the agent's reason instead of timing out first. (The
    bound at work: test_agent_ondemand_wait.py, a start blocked in bcc's compiler.)"""
    clients_allowance = inspect.signature(AgentClient).parameters["attach_allowance_s"].default
    assert clients_allowance == 120.0
    assert load_config(None, {}).on_demand_attach_max_s == clients_allowance
    config = tmp_path / "agent.toml"
    config.write_text('on_demand = "attach"\non_demand_attach_max = "30s"\n')
    assert load_config(str(config), {}).on_demand_attach_max_s == 30.0
    for too_long_or_short in ("121s", "10m", "500ms"):
        config.write_text(f'on_demand = "attach"\non_demand_attach_max = "{too_long_or_short}"\n')
        with pytest.raises(
            UsageError, match=r"on_demand_attach_max must be 1s\.\.120s \(what clients wait for a start\)"
        ):
            load_config(str(config), {}).check()
