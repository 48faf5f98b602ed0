"""A node agent's config for standing in a cluster: asid and the cgroups it traces (no kernel)."""

from __future__ import annotations

import pytest

from pxq.agent.bpf_program import BpfError
from pxq.agent.daemon import load_config
from pxq.agent.socket_tracer import SocketTracerOptions, cgroup_v2_root, options_from_manifest
from pxq.errors import UsageError
from pxq.plan.manifest import CollectorRequest


def test_traced_cgroups_compile_in_the_kernel_filter_only_when_given():
    assert SocketTracerOptions().defines()["TRACE_CGROUPS"] == 0
    assert SocketTracerOptions(trace_cgroups=frozenset({42})).defines()["TRACE_CGROUPS"] == 1
    root = cgroup_v2_root()
    request = CollectorRequest("socket_tracer", ("http_events",), None, ("http",), (("traced_cgroups", "/, 7"),))
    assert options_from_manifest(request).trace_cgroups == {root.stat().st_ino, 7}
    missing = CollectorRequest("socket_tracer", ("http_events",), None, ("http",), (("traced_cgroups", "/nope-x"),))
    with pytest.raises(BpfError, match="cgroup to trace not found: '/nope-x'"):
        options_from_manifest(missing)


def test_agent_config_reads_asid_and_traced_cgroups(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('asid = 12\n[socket_tracer]\ntraced_cgroups = ["/kubepods/pod-a", 77]\n')
    loaded = load_config(str(config), {})
    assert (loaded.asid, loaded.agent_asid, loaded.traced_cgroups) == (12, 12, ("/kubepods/pod-a", "77"))
    assert load_config(str(config), {"asid": 5}).agent_asid == 5  # the flag wins
    for text, message in (
        ("asid = 'x'\n", "asid: expected int"),
        ("[socket_tracer]\ntraced_cgroups = '/a'\n", "socket_tracer.traced_cgroups: expected list"),
        ("[socket_tracer]\ntraced_cgroups = [true]\n", "expected a list of cgroup v2 paths or ids"),
    ):
        config.write_text(text)
        with pytest.raises(UsageError, match=message):
            load_config(str(config), {})
