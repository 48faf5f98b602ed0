"""How long a client waits for a query the agent answers by collecting on demand: the agent's
``on_demand_max`` (learned from its ``info``) plus an allowance for attaching the collector, on top
of the call's own timeout; giving up says why. Live agents on the running kernel (marked
``kernel``): the on-demand profiler attaches for the query's window. Other helpers trace this host
concurrently: the profile is restricted to this test's own spinning process. No wall-clock
assertions: a client with a call timeout shorter than the collection gets its answer, and one
facing a stopped agent gives up with the bound it used."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from pxq.agent.flight import AgentClient, AgentGaveUpError, OnDemand, on_demand_wait
from pxq.api import _script_object
from pxq.testing.agent_process import running_agent
from pxq.testing.kernel import require_bpf
from tests.agent.ondemand_info import HELD, agent_info, profile_manifest
from tests.agent.test_agent_ondemand_live import PROFILE_SCRIPT, _spinner


def test_the_wait_follows_the_agents_on_demand_max_only_when_it_collects_for_the_query():
    manifest = profile_manifest((("sample_hz", "99"),))
    assert on_demand_wait(manifest, agent_info(), 30.0) == OnDemand(("perf_profiler",), 7.0, 37.0)
    assert on_demand_wait(manifest, agent_info(on_demand_max_s=300.0), 30.0) == OnDemand(
        ("perf_profiler",), 300.0, 330.0
    )
    # A running profiler at another rate is attached again at the script's rate.
    running = agent_info(tables={**HELD, "stack_traces.beta": "perf_profiler"}, attachable={})
    assert on_demand_wait(manifest, running, 30.0) == OnDemand(("perf_profiler",), 7.0, 37.0)
    # Nothing to collect: the profiler runs at the rate asked, the agent refuses, or replays.
    assert on_demand_wait(profile_manifest((("sample_hz", "19"),)), running, 30.0) is None
    assert on_demand_wait(manifest, agent_info(on_demand="refuse"), 30.0) is None
    assert on_demand_wait(manifest, agent_info(mode="replay"), 30.0) is None


def _spinning_profile(seconds: int) -> tuple[subprocess.Popen, str]:
    spin = _spinner()
    return spin, PROFILE_SCRIPT.format(seconds=seconds, pid=spin.pid)


@pytest.mark.kernel
def test_a_client_waits_for_an_on_demand_collection_longer_than_its_call_timeout(tmp_path):
    """The collection takes the query's window (4 s) plus attaching the profiler; the client's
    calls time out after 2 s, but this one waits the agent's on_demand_max (learned) and the
    attach allowance more, so it gets the samples."""
    require_bpf()
    config = tmp_path / "agent.toml"
    config.write_text('on_demand = "attach"\non_demand_max = "12s"\n')
    spin, script = _spinning_profile(4)
    try:
        with (
            running_agent("--no-perf-profiler", "--config", str(config), state_dir=tmp_path, timeout_s=180) as agent,
            AgentClient(agent.address, timeout_s=2.0) as client,
        ):
            assert client.info()["on_demand_max_s"] == 12.0
            _, results, _ = client.run(_script_object(script))
            last = client.status()["on_demand_collections"]["last"]
    finally:
        spin.kill()
        spin.wait()
    assert results.tables["samples"].num_rows == 1
    # The agent's own account: attaching and collecting outlasted the client's call timeout
    # (the window is 4 s, or at least 1 s after an attach of 8 s or more).
    assert last["start_s"] + last["attached_s"] > 2.0
    assert results.tables["samples"].column("samples")[0].as_py() > 0


@pytest.mark.kernel
def test_a_client_gives_up_on_an_agent_stuck_in_an_on_demand_query_saying_what_it_waited_for(tmp_path, monkeypatch):
    """A stopped agent never answers: the client waits its call timeout, the agent's (short)
    on_demand_max and its attach allowance, then names the collector and the bounds."""
    require_bpf()
    config = tmp_path / "agent.toml"
    config.write_text('on_demand = "attach"\non_demand_max = "2s"\n')
    spin, script = _spinning_profile(4)
    real_get = AgentClient.get
    try:
        with running_agent("--no-perf-profiler", "--config", str(config), state_dir=tmp_path, timeout_s=180) as agent:

            def get_from_a_stopped_agent(self, ticket, **options):
                os.kill(agent.pid, signal.SIGSTOP)
                return real_get(self, ticket, **options)

            monkeypatch.setattr(AgentClient, "get", get_from_a_stopped_agent)
            try:
                with (
                    AgentClient(agent.address, timeout_s=1.0, attach_allowance_s=1.5) as client,
                    pytest.raises(AgentGaveUpError) as caught,
                ):
                    client.run(_script_object(script))
            finally:
                os.kill(agent.pid, signal.SIGCONT)
    finally:
        spin.kill()
        spin.wait()
    message = str(caught.value)
    assert f"agent {agent.address} did not answer within 4.5 s, gave up" in message
    assert "attach perf_profiler on demand, which it bounds by on_demand_max = 2 s" in message
    assert "allowed 1.5 s more for attaching and 1 s for the query" in message
