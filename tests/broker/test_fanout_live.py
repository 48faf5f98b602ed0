"""Three live node agents on this machine, each standing for a node: each traces only its own
cgroup (``[socket_tracer] traced_cgroups``, a filter in the kernel program on
``bpf_get_current_cgroup_id``) where its own workload runs (sock_apps' HTTP server and client),
and has its own asid. One query over the three must give each node's transactions, and only its
own. Expected values: the clients' own reports of the requests they sent."""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest

from pxq.broker.fleet import ClusterAgent, run_fleet
from pxq.testing.agent_process import AgentProcess
from pxq.testing.cgroups import temporary_cgroup
from pxq.testing.kernel import require_bpf
from tests.agent.test_socket_tracer import Client, http_server

pytestmark = pytest.mark.kernel

QUERY = """import px
df = px.DataFrame('http_events', start_time='-5m')
df.pid = px.upid_to_pid(df.upid)
df.asid = px.upid_to_asid(df.upid)
px.display(df[['asid', 'pid', 'trace_role', 'req_path']], 'rows')
"""


def test_three_agents_each_tracing_its_own_cgroup_give_each_nodes_rows_and_only_those(tmp_path):
    require_bpf()
    with contextlib.ExitStack() as stack:
        nodes = []
        for i in range(3):
            cgroup = stack.enter_context(temporary_cgroup(f"pxq-fleet-{os.getpid()}-{i}"))
            server, port = stack.enter_context(http_server())
            client = Client(port, "basic")
            stack.callback(client.kill)
            for pid in (server.pid, client.pid):
                (cgroup / "cgroup.procs").write_text(str(pid))
            config = tmp_path / f"agent{i}.toml"
            config.write_text(
                f"asid = {i + 1}\n[collectors]\nperf_profiler = false\n"
                f"[socket_tracer]\ntraced_cgroups = [{json.dumps(str(cgroup))}]\n"
            )
            agent = AgentProcess("--config", str(config), state_dir=tmp_path / f"state{i}")
            stack.callback(agent.stop)
            nodes.append((server, client, agent))
        cluster = [ClusterAgent(f"node{i}", agent.wait_ready(240)) for i, (_, _, agent) in enumerate(nodes)]
        for _, client, _ in nodes:
            client.go()
        sent = {}
        for i, (_, client, _) in enumerate(nodes):
            assert client.proc.wait(60) == 0
            sent[i + 1] = sorted(json.loads(line)["path"] for line in client.proc.stdout.read().splitlines())
            assert len(sent[i + 1]) == 4
        # Each agent's loop moves rows into its store as it polls: wait until every request has
        # both of its rows (client and server side), then compare exactly.
        deadline = time.monotonic() + 60
        while True:
            _, results, _ = run_fleet(QUERY, cluster, timeout_s=30)
            assert not results.partial, results.missing
            rows = results.tables["rows"].to_pylist()
            if len(rows) >= 2 * sum(len(paths) for paths in sent.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    for asid, (server, client, _) in zip(sorted(sent), nodes):
        mine = [r for r in rows if r["asid"] == asid]
        # Only this node's cgroup: its client's and its server's processes, nothing else.
        assert {r["pid"] for r in mine} == {client.pid, server.pid}, (asid, mine)
        for pid, role in ((client.pid, 1), (server.pid, 2)):
            assert sorted(r["req_path"] for r in mine if r["pid"] == pid and r["trace_role"] == role) == sent[asid]
    assert {r["asid"] for r in rows} == {1, 2, 3}
