"""Three nodes on this machine, each as a node would be: its own network namespace (a veth pair to
the host, its own 10.77.N.0/24) and its own cgroup, its own workload there (sock_apps' HTTP server
and client, talking over the namespace's own 127.0.0.1), and its own agent that traces only that
cgroup (``traced_cgroups``) and listens on the namespace's veth address, off loopback, with mutual
TLS and a bearer token (certificates from ``pxq agent certs`` for the three addresses). The broker
is this test, in the host's namespace, reading a cluster file with the credentials.

Expected values: the clients' own reports of the requests they sent (and the pids the test
started), never pxq's output. Also issue 15's bad input "an agent restarted while a query runs".

Needs root (namespaces, cgroups, eBPF): marked ``kernel``."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pxq.broker.fleet import ClusterAgent, load_cluster, run_fleet
from pxq.testing.agent_process import AgentProcess
from pxq.testing.kernel import require_bpf
from pxq.testing.netns import Node, network_node
from tests.cli_support import assert_no_traceback, pxq_command

pytestmark = pytest.mark.kernel

APPS = Path(__file__).resolve().parents[1] / "agent" / "data" / "sock_apps.py"
PREFIX = "pxq-netns3"
SUBNETS = (101, 102, 103)  # 10.77.N.0/24 per node
ASIDS = (31, 32, 33)
QUERY = """import px
df = px.DataFrame('http_events', start_time='-10m')
df.pid = px.upid_to_pid(df.upid)
df.asid = px.upid_to_asid(df.upid)
px.display(df[['asid', 'pid', 'trace_role', 'req_path']], 'rows')
"""


def _line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"{proc.args} said nothing for {timeout:g}s"
    assert proc.stdout is not None
    return proc.stdout.readline()


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _start_server(node: Node) -> tuple[subprocess.Popen[str], int]:
    server = node.spawn([sys.executable, str(APPS), "server", "--host", "127.0.0.1"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    line = _line(server)
    assert line.startswith("PORT "), line
    return server, int(line.split()[1])


def _run_client(node: Node, port: int) -> tuple[int, list[str]]:
    """sock_apps' basic client in the node, run to its end: (its pid, the paths it sent and had answered)."""
    client = node.spawn([sys.executable, str(APPS), "client", "--host", "127.0.0.1", "--port", str(port),
                         "--scenario", "basic"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert _line(client).strip() == "READY"
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write("go\n")
        client.stdin.flush()
        assert client.wait(60) == 0
        paths = sorted(json.loads(line)["path"] for line in client.stdout.read().splitlines())
        assert len(paths) == 4, paths
        return client.pid, paths
    finally:
        _end(client)


class LiveNode:
    """A node's namespace, cgroup, server and agent (the agent outside the traced cgroup)."""

    def __init__(self, stack: contextlib.ExitStack, index: int, certs: Path, base: Path):
        self.index, self.asid = index, ASIDS[index]
        self.node = stack.enter_context(network_node(PREFIX, index, SUBNETS[index]))
        self.server, self.port = _start_server(self.node)
        stack.callback(_end, self.server)
        self.spill_dir = base / f"spill{index}"
        self.state_dir = base / f"state{index}"
        self.config = base / f"agent{index}.toml"
        self.config.write_text(
            f'asid = {self.asid}\nspill_dir = "{self.spill_dir}"\nspill_flush = "1s"\n'
            f"[collectors]\nperf_profiler = false\n"
            f"[socket_tracer]\ntraced_cgroups = [{json.dumps(str(self.node.cgroup))}]\n"
        )
        self.certs = certs
        self.credentials = {
            "ca": str(certs / "ca.crt"),
            "cert": str(certs / "client.crt"),
            "key": str(certs / "client.key"),
            "token_file": str(certs / "agent.token"),
        }
        self.agent = self.start_agent(f"{self.node.ip}:0")
        stack.callback(lambda: self.agent.stop())

    def start_agent(self, listen: str) -> AgentProcess:
        c = self.certs
        return AgentProcess(
            "--config", str(self.config), "--listen", listen,
            "--tls-cert", str(c / "server.crt"), "--tls-key", str(c / "server.key"),
            "--client-ca", str(c / "ca.crt"), "--token-file", str(c / "agent.token"),
            state_dir=self.state_dir, credentials=self.credentials, prefix=self.node.prefix,
        )  # fmt: skip

    @property
    def name(self) -> str:
        return f"node{self.index}"

    def cluster_agent(self) -> ClusterAgent:
        return ClusterAgent(self.name, self.agent.address, self.credentials)


def _rows(cluster: list[ClusterAgent], want: Counter, timeout_s: float = 60.0) -> list[dict]:
    """The query's rows over ``cluster`` once they hold every row of ``want`` (the agents move
    rows into their stores as they poll); exactly what the last answer held."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, results, _ = run_fleet(QUERY, cluster, timeout_s=30)
        assert not results.partial, results.missing
        rows = results.tables["rows"].to_pylist()
        if _key(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _key(rows: list[dict]) -> Counter:
    return Counter((r["asid"], r["pid"], r["trace_role"], r["req_path"]) for r in rows)


def _expected(asid: int, server_pid: int, clients: list[tuple[int, list[str]]]) -> Counter:
    """From the clients' own view: each request once as the client's row, once as the server's."""
    out: Counter = Counter()
    for pid, paths in clients:
        for path in paths:
            out[(asid, pid, 1, path)] += 1
            out[(asid, server_pid, 2, path)] += 1
    return out


def _spilled(spill_dir: Path) -> list[dict]:
    """``pxq run --from SPILL_DIR``: the CLI a user would run on the spill directory."""
    script = spill_dir.parent / "rows.pxl"
    script.write_text(QUERY)
    proc = subprocess.run(pxq_command("run", str(script), "--from", str(spill_dir), "-o", "json"),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stderr)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def _spilled_row_count(spill_dir: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in (spill_dir / "http_events").glob("*.parquet"))


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    require_bpf()
    if os.geteuid() != 0:
        pytest.fail("network namespaces and cgroups need root (this test is marked kernel)")
    base = tmp_path_factory.mktemp("netns3")
    certs = base / "certs"
    hosts = ",".join(f"10.77.{s}.2" for s in SUBNETS)
    made = subprocess.run(pxq_command("agent", "certs", str(certs), "--hosts", hosts),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    with contextlib.ExitStack() as stack:
        live = [LiveNode(stack, i, certs, base) for i in range(3)]
        for node in live:
            node.agent.wait_ready(240)
            assert node.agent.address.startswith(f"{node.node.ip}:")
        cluster_file = base / "cluster.toml"
        cluster_file.write_text(
            "".join(
                f'[[agent]]\nname = "{n.name}"\naddress = "{n.agent.address}"\n'
                + "".join(f'{k} = "{v}"\n' for k, v in n.credentials.items())
                for n in live
            )
        )
        yield live, cluster_file


def test_each_agent_gives_its_nodes_requests_and_the_fanout_their_union(nodes):
    live, cluster_file = nodes
    cluster = load_cluster(cluster_file)
    assert [a.address for a in cluster] == [n.agent.address for n in live]
    assert all(a.credentials for a in cluster)
    clients = [_run_client(n.node, n.port) for n in live]
    expected = [_expected(n.asid, n.server.pid, [c]) for n, c in zip(live, clients)]
    alone = []
    for agent, want in zip(cluster, expected):
        rows = _rows([agent], want)
        assert _key(rows) == want, agent.name  # its own cgroup's requests, all and only those
        alone.append(_key(rows))
    union = _key(_rows(cluster, sum(expected, Counter())))
    assert union == sum(alone, Counter()) == sum(expected, Counter())
    assert {asid for asid, *_ in union} == set(ASIDS)


def test_an_agent_restarted_mid_query_is_named_serves_the_next_query_and_keeps_its_spill(nodes, monkeypatch):
    from pxq.agent import flight

    live, cluster_file = nodes
    cluster = load_cluster(cluster_file)
    victim = live[0]
    server_pid = victim.server.pid
    before = [_run_client(victim.node, victim.port)]
    want_before = _expected(victim.asid, server_pid, before)
    # The rows are in the agent's store and spilled before the restart. Wait for these very rows
    # in the spill, not for a row count: rows of earlier tests' clients still being spilled would
    # make a count reach its mark first. The spill is written in the store's order, so once these
    # rows are there, every earlier one is too.
    assert _key(_rows([cluster[0]], want_before)) >= want_before
    deadline = time.monotonic() + 60
    while True:
        spilled_before = _key(r for r in _spilled(victim.spill_dir) if r["asid"] == victim.asid)
        if spilled_before >= want_before:
            break
        assert time.monotonic() < deadline, "the agent did not spill its rows within 60 s"
        time.sleep(0.2)
    address = victim.agent.address
    old_agent = victim.agent
    restarted: list[AgentProcess] = []

    # While the broker's fragment request to the victim is in flight (the agent is frozen, the
    # request sits unread in its socket), the agent is killed and started again on its address.
    original_get = flight.AgentClient.get

    def get_while_restarting(self, ticket, **options):
        if self.address != address:
            return original_get(self, ticket, **options)
        os.kill(old_agent.pid, signal.SIGSTOP)
        port = address.rsplit(":", 1)[1]

        def restart() -> None:
            deadline = time.monotonic() + 30
            while not _unread_request(victim.node, port):
                if time.monotonic() > deadline:
                    break  # killed anyway: the broker sees the agent go mid-call
                time.sleep(0.02)
            os.kill(old_agent.pid, signal.SIGKILL)
            old_agent.proc.wait(10)
            restarted.append(victim.start_agent(address))

        killer = threading.Thread(target=restart)
        killer.start()
        try:
            return original_get(self, ticket, **options)
        finally:
            killer.join()

    monkeypatch.setattr(flight.AgentClient, "get", get_while_restarting)
    try:
        _, results, _ = run_fleet(QUERY, cluster, timeout_s=20)
    finally:
        monkeypatch.setattr(flight.AgentClient, "get", original_get)
        if restarted:
            victim.agent = restarted[0]
    old_agent.stop()
    assert restarted, "the agent was not restarted"
    # A partial result naming the restarted agent, the others' rows whole.
    assert results.partial and set(results.missing) == {victim.name}, results.missing
    assert results.missing[victim.name].startswith("lost during the query (the agent stopped or restarted)")
    assert address in results.missing[victim.name]
    assert results.agents == tuple(n.name for n in live[1:])
    assert {r["asid"] for r in results.tables["rows"].to_pylist()} <= {n.asid for n in live[1:]}

    # The restarted agent, on the same address, serves the next query (what it collected since).
    assert victim.agent.wait_ready(240) == address
    after = [_run_client(victim.node, victim.port)]
    want_after = _expected(victim.asid, server_pid, after)
    rows = _rows(cluster, want_after)
    mine = _key(r for r in rows if r["asid"] == victim.asid)
    assert mine == want_after
    # Its spill directory: the rows spilled before the restart still read back, uncorrupted
    # (every file's checksums verified by the reader), and the new ones after them.
    deadline = time.monotonic() + 60
    want_spilled = sum(spilled_before.values()) + sum(want_after.values())
    while _spilled_row_count(victim.spill_dir) < want_spilled:
        assert time.monotonic() < deadline, "the restarted agent did not spill its rows within 60 s"
        time.sleep(0.2)
    for path in (victim.spill_dir / "http_events").glob("*.parquet"):
        pq.read_table(path)  # raises on a torn or corrupt file
    spilled = _key(r for r in _spilled(victim.spill_dir) if r["asid"] == victim.asid)
    assert spilled == spilled_before + want_after


def _unread_request(node: Node, port: str) -> bool:
    """Whether a connection to the agent's port holds bytes the (frozen) agent has not read."""
    out = subprocess.run([*node.prefix, "ss", "-tnH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    return any(int(line.split()[0]) > 0 for line in out.splitlines() if line.split())


def test_an_agent_restarted_between_the_brokers_rounds_is_named_not_read_as_if_nothing_happened(nodes, monkeypatch):
    """The broker asked the agent for its clock and tables, then the agent restarted (its store
    empty again) before the fragments were sent: the new process must not stand in for the old
    one silently (its node's earlier rows would be missing from a result that says it is whole)."""
    from pxq.agent import flight

    live, cluster_file = nodes
    cluster = load_cluster(cluster_file)
    for node in live:  # a restart in an earlier test done, whatever that test's outcome
        node.agent.wait_ready(240)
    victim, others = live[1], (live[0], live[2])
    wants = [_expected(n.asid, n.server.pid, [_run_client(n.node, n.port)]) for n in live]
    assert _key(_rows(cluster, sum(wants, Counter()))) >= sum(wants, Counter())
    address, old_agent = victim.agent.address, victim.agent
    original_get = flight.AgentClient.get

    def get_after_a_restart(self, ticket, **options):
        if self.address == address and victim.agent is old_agent:
            os.kill(old_agent.pid, signal.SIGKILL)
            old_agent.proc.wait(10)
            victim.agent = victim.start_agent(address)
            assert victim.agent.wait_ready(240) == address
        return original_get(self, ticket, **options)

    monkeypatch.setattr(flight.AgentClient, "get", get_after_a_restart)
    try:
        _, results, _ = run_fleet(QUERY, cluster, timeout_s=20)
    finally:
        monkeypatch.setattr(flight.AgentClient, "get", original_get)
        old_agent.stop()
    assert victim.agent is not old_agent
    assert results.partial and set(results.missing) == {victim.name}, results.missing
    assert results.missing[victim.name].startswith(
        f"restarted during the query (agent pid {old_agent.pid}, then {victim.agent.pid})"
    )
    rows = _key(results.tables["rows"].to_pylist())
    assert {asid for asid, *_ in rows} == {n.asid for n in others}  # the other nodes' rows, whole
    assert rows >= wants[0] + wants[2]
