"""One query over three agents (``pxq agent serve --from DIR`` on loopback, each serving its own
synthetic capture with its own asid): the fan-out, partial aggregation merged by the broker, and
agents that die or stall. Expected values come from pandas over the three captures' Parquet files
concatenated, never from pxq."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pxq.agent.flight import AgentClient, answered_by
from pxq.api import _script_object
from pxq.broker.fleet import ClusterAgent, load_cluster, run_fleet
from pxq.errors import UsageError
from pxq.funcs.aggregates import QUANTILE_KEYS, QUANTILES
from pxq.testing.agent_process import AgentProcess
from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import run_pxq

START_NS = 1_764_115_200_000_000_000
SPAN_NS = 300_000_000_000
NAMES = ("node-a", "node-b", "node-c")
ROWS = (4000, 2500, 6000)

ERRORS = """import px
df = px.DataFrame('http_events', start_time='-4m')
df = df[df.resp_status >= 400]
px.display(df[['time_', 'upid', 'req_path', 'resp_status', 'latency']], 'errors')
"""
STATS = """import px
df = px.DataFrame('http_events', start_time='-10m')
df = df.groupby(['req_path', 'resp_status']).agg(
    n=('latency', px.count), mean_latency=('latency', px.mean), total=('resp_body_size', px.sum),
    worst=('latency', px.max), q=('latency', px.quantiles))
px.display(df, 'stats')
"""
PER_PROCESS = """import px
df = px.DataFrame('http_events', start_time='-10m')
df = df.groupby('upid').agg(n=('latency', px.count))
px.display(df, 'per_process')
"""


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("fleet-caps")
    return [
        Path(
            write_synthetic_capture(
                root / name,
                rows,
                seed=i + 11,
                null_fraction=0.05,
                asid=i + 1,
                host=name,
                start_ns=START_NS,
                span_ns=SPAN_NS,
            )
        )
        for i, (name, rows) in enumerate(zip(NAMES, ROWS))
    ]


def _start(captures: list[Path], tmp_path_factory) -> list[AgentProcess]:
    agents = [AgentProcess("--from", str(c), state_dir=tmp_path_factory.mktemp("fleet-state")) for c in captures]
    try:
        for agent in agents:
            agent.wait_ready()
    except BaseException:
        for agent in agents:
            agent.stop()
        raise
    return agents


@pytest.fixture(scope="module")
def fleet(captures, tmp_path_factory):
    agents = _start(captures, tmp_path_factory)
    yield agents
    for agent in agents:
        agent.stop()


@pytest.fixture
def own_fleet(captures, tmp_path_factory):
    """Agents this test may kill or stop (continued and stopped afterwards)."""
    agents = _start(captures, tmp_path_factory)
    yield agents
    for agent in agents:
        if agent.proc.poll() is None:
            os.kill(agent.pid, signal.SIGCONT)
        agent.stop()


def _cluster(agents) -> list[ClusterAgent]:
    return [ClusterAgent(name, agent.address) for name, agent in zip(NAMES, agents)]


def _all_rows(captures: list[Path]) -> pd.DataFrame:
    return pd.concat([pq.read_table(c / "http_events.parquet").to_pandas() for c in captures], ignore_index=True)


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """Null group keys as values of their own (a group, as in PxL), so pandas can index them."""
    return frame.assign(req_path=frame["req_path"].fillna("<null>"), resp_status=frame["resp_status"].fillna(-1))


def _expected_errors(frame: pd.DataFrame) -> pd.DataFrame:
    times = frame["time_"].astype("int64")
    keep = (times >= START_NS + SPAN_NS - 240_000_000_000) & (frame["resp_status"] >= 400)
    out = frame.loc[keep, ["time_", "upid", "req_path", "resp_status", "latency"]]
    return out.sort_values(["time_", "upid"]).reset_index(drop=True)


def _sorted(table) -> pd.DataFrame:
    return table.to_pandas().sort_values(["time_", "upid"]).reset_index(drop=True)


def test_fan_out_gives_exactly_the_union_of_the_agents_rows(fleet, captures):
    _, results, _ = run_fleet(ERRORS, _cluster(fleet))
    assert not results.partial and results.agents == NAMES
    got = _sorted(results.tables["errors"])
    pd.testing.assert_frame_equal(got, _expected_errors(_all_rows(captures)), check_dtype=False)
    # ... which is the union of what each agent alone answers.
    singles = []
    for agent in fleet:
        with AgentClient(agent.address) as client:
            singles.append(client.run(_script_object(ERRORS))[1].tables["errors"].to_pandas())
    union = pd.concat(singles).sort_values(["time_", "upid"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, union, check_dtype=False)


def test_group_by_over_three_agents_matches_pandas_over_the_captures_concatenated(fleet, captures):
    _, results, _ = run_fleet(STATS, _cluster(fleet))
    got = _keyed(results.tables["stats"].to_pandas()).set_index(["req_path", "resp_status"]).sort_index()
    frame = _keyed(_all_rows(captures))
    groups = frame.groupby(["req_path", "resp_status"])
    expected = pd.DataFrame(
        {
            "n": groups.size(),
            "mean_latency": groups["latency"].mean(),
            "total": groups["resp_body_size"].sum(min_count=1),
            "worst": groups["latency"].max(),
        }
    ).sort_index()
    assert len(got) == len(expected)
    np.testing.assert_array_equal(got["n"].to_numpy(), expected["n"].to_numpy())
    np.testing.assert_allclose(
        got["mean_latency"].to_numpy(float), expected["mean_latency"].to_numpy(float), rtol=1e-12
    )
    np.testing.assert_array_equal(got["total"].to_numpy(), expected["total"].to_numpy())
    np.testing.assert_array_equal(got["worst"].to_numpy(float), expected["worst"].to_numpy(float))
    # Quantiles merged from the agents' t-digests: each within 0.2 percentage point of rank of
    # the true one (measured worst 0.1 point over log-normal, exponential, uniform and small-integer
    # data of 15 to 600,000 values split over three digests; see pxq/funcs/aggregates.py).
    for key, estimate in got["q"].items():
        values = groups.get_group(key)["latency"].dropna().to_numpy(float)
        quantiles = json.loads(estimate)
        for p, name in zip(QUANTILES, QUANTILE_KEYS):
            low, high = np.quantile(values, max(0.0, p - 0.002)), np.quantile(values, min(1.0, p + 0.002))
            assert low - 1e-6 <= quantiles[name] <= high + 1e-6, (key, name, quantiles[name], low, high)


def test_upids_of_two_agents_never_collide_so_group_bys_stay_per_node(fleet, captures):
    """The captures share pids and start times; only the asid in the upid tells the nodes apart."""
    _, results, _ = run_fleet(PER_PROCESS, _cluster(fleet))
    got = dict(zip(*(results.tables["per_process"].column(c).to_pylist() for c in ("upid", "n"))))
    expected = _all_rows(captures).groupby("upid").size().to_dict()
    assert got == expected
    assert {u.split(":")[0] for u in got} == {"1", "2", "3"}
    assert len({u.split(":", 1)[1] for u in got}) < len(got)  # same pid:start on several nodes


def test_an_agent_killed_mid_query_gives_a_partial_result_naming_it(own_fleet, captures, monkeypatch):
    victim = own_fleet[1]
    asked = threading.Event()
    real_get = AgentClient.get

    def get(self, ticket, **options):  # the real call, once the test has killed the agent it goes to
        if self.address == victim.address:
            asked.set()
            victim.proc.wait(30)
        return real_get(self, ticket, **options)

    def kill_when_asked():
        assert asked.wait(30)
        victim.proc.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_when_asked)
    killer.start()
    monkeypatch.setattr(AgentClient, "get", get)
    _, results, _ = run_fleet(ERRORS, _cluster(own_fleet), timeout_s=30)
    killer.join()
    assert results.partial and list(results.missing) == ["node-b"]
    assert "no agent answers" in results.missing["node-b"]
    expected = _expected_errors(_all_rows([captures[0], captures[2]]))
    pd.testing.assert_frame_equal(_sorted(results.tables["errors"]), expected, check_dtype=False)


def test_a_stopped_agent_times_out_and_the_result_is_partial_in_every_output(own_fleet, captures, tmp_path):
    os.kill(own_fleet[2].pid, signal.SIGSTOP)
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(
        "".join(f'[[agent]]\nname = "{n}"\naddress = "{a.address}"\n\n' for n, a in zip(NAMES, own_fleet))
    )
    _, results, _ = run_fleet(STATS, _cluster(own_fleet), timeout_s=1.5)
    assert results.missing == {"node-c": "did not answer within 1.5s"}
    assert sum(results.tables["stats"].column("n").to_pylist()) == ROWS[0] + ROWS[1]
    # The CLI says it in the terminal table and in JSON output.
    script = tmp_path / "errors.pxl"
    script.write_text(ERRORS)
    table = run_pxq("run", str(script), "--cluster", str(cluster), "--timeout", "1.5", check=True)
    assert "PARTIAL result: without agent node-c (did not answer within 1.5s)" in table.stdout
    out = run_pxq("run", str(script), "--cluster", str(cluster), "--timeout", "1.5", "-o", "json", check=True)
    first = json.loads(out.stdout.splitlines()[0])
    assert first == {
        "_partial": {"table": "errors", "missing_agents": [{"agent": "node-c", "reason": "did not answer within 1.5s"}]}
    }
    rows = [json.loads(line) for line in out.stdout.splitlines()[1:]]
    assert len(rows) == len(_expected_errors(_all_rows(captures[:2])))


HEAD_OF_GROUPS = """import px
df = px.DataFrame('http_events', start_time='-10m')
df = df.groupby('req_path').agg(n=('latency', px.count))
px.display(df.head(3), 'first_groups')
"""


def test_a_head_after_a_group_by_reads_whole_groups_not_the_first_rows(fleet, captures):
    """A head's row limit goes to agents only for row fragments: a group-by's states are
    complete groups (the agent refuses a limit on a partial aggregation)."""
    _, results, _ = run_fleet(HEAD_OF_GROUPS, _cluster(fleet))
    assert not results.partial
    got = results.tables["first_groups"].to_pandas()
    counts = _keyed(_all_rows(captures)).groupby("req_path").size()
    assert len(got) == 3
    for path, n in zip(got["req_path"].fillna("<null>"), got["n"]):
        assert n == counts[path]


def _agg_ticket(now_ns: int, *, on_top: bool = False, limit: int | None = None) -> bytes:
    from pxq.agent.flight import make_ticket
    from pxq.api import compile_script
    from pxq.plan.nodes import Filter
    from pxq.plan.split import split

    plan = split(compile_script(_script_object(HEAD_OF_GROUPS), now_ns=now_ns).optimized, partial_aggs=True)
    (fragment,) = plan.agent_fragments
    if on_top:
        from pxq.plan.expr import Literal
        from pxq.types import DataType

        fragment = Filter(fragment, Literal(True, DataType.BOOLEAN))
    return make_ticket(fragment, now_ns=now_ns, limit=limit)


@pytest.mark.parametrize(
    ("on_top", "limit", "message"),
    [
        (True, None, "an agent runs a group-by (agg) only as the fragment's root"),
        (False, 5, "a row limit does not apply to a partial aggregation"),
    ],
)
def test_a_group_by_anywhere_but_the_root_or_with_a_limit_is_refused(fleet, on_top, limit, message):
    from pxq.agent.flight import AgentQueryError

    with AgentClient(fleet[0].address) as client:
        ticket = _agg_ticket(client.info()["now_ns"], on_top=on_top, limit=limit)
        with pytest.raises(AgentQueryError, match=re.escape(message)):
            client.get(ticket)
        assert client.info()["now_ns"]  # still serving


def test_cluster_file_mistakes_and_credentials_are_clear_errors(fleet, tmp_path):
    script = tmp_path / "q.pxl"
    script.write_text(HEAD_OF_GROUPS)
    cases = {
        "[[agent]]\nname = 'x'\n": "[[agent]] #1: needs address",
        "[[agent]]\naddress = 'a:1'\nport = 3\n": "unknown key 'port'",
        "agents = 1\n": "unknown key 'agents'",
        "[[agent\n": "not TOML",
        f"[[agent]]\nname = 'n'\naddress = '{fleet[0].address}'\n"
        f"[[agent]]\nname = 'n'\naddress = '{fleet[1].address}'\n": "agent 'n' is named twice",
    }
    cluster = tmp_path / "cluster.toml"
    for text, message in cases.items():
        cluster.write_text(text)
        with pytest.raises(UsageError, match=re.escape(message)):
            load_cluster(cluster)
    proc = run_pxq("run", str(script), "--cluster", str(cluster))
    assert proc.returncode == 2 and f"cluster file {cluster}: agent 'n' is named twice" in proc.stderr
    # Credentials are per entry, paths relative to the cluster file, checked as it is read ...
    cluster.write_text(f"[[agent]]\nname = 'half'\naddress = '{fleet[0].address}'\ncert = 'client.crt'\n")
    with pytest.raises(UsageError, match="#1: cert is given but key is not"):
        load_cluster(cluster)
    # ... and presented by the one function that opens agents: TLS (a ca) to an agent that speaks
    # plaintext leaves that agent out, said why, and the others answer.
    (tmp_path / "ca.crt").write_text("not read before connecting\n")
    cluster.write_text(
        f"[[agent]]\nname = 'tls'\naddress = '{fleet[0].address}'\nca = 'ca.crt'\n"
        f"[[agent]]\nname = 'plain'\naddress = '{fleet[1].address}'\n"
    )
    (tls, plain) = load_cluster(cluster)
    assert tls.credentials == {"ca": str(tmp_path / "ca.crt")} and plain.credentials == {}
    proc = run_pxq("run", str(script), "--cluster", str(cluster), check=True)
    assert "pxq: partial result: agent tls is missing (agent " in proc.stderr
    assert "PARTIAL result: without agent tls" in proc.stdout
    proc = run_pxq("run", str(script), "--cluster", str(cluster), "--agent", fleet[0].address)
    assert proc.returncode == 2 and "--agent and --cluster both choose the agents" in proc.stderr


def test_an_agent_puts_its_asid_in_the_upids_it_makes(captures, fleet, tmp_path_factory):
    """--asid (or `asid` in the config) is in the agent's info and in its own agent_status row's
    upid and asid; without it the id is derived from the host name: stable and never 0 (embedded)."""
    from pxq.testing.agent_process import running_agent

    script = "import px\ndf = px.DataFrame('agent_status')\npx.display(df[['upid', 'asid']], 'me')\n"
    with (
        running_agent("--from", str(captures[0]), "--asid", "4242", state_dir=tmp_path_factory.mktemp("asid")) as agent,
        AgentClient(agent.address) as client,
    ):
        assert client.info()["asid"] == 4242
        me = client.run(_script_object(script))[1].tables["me"].to_pylist()
    assert me and all(row["asid"] == 4242 and row["upid"].startswith("4242:") for row in me)
    derived = set()
    for agent in fleet:
        with AgentClient(agent.address) as client:
            derived.add(client.info()["asid"])
    assert len(derived) == 1 and derived.pop() != 0  # one host: one derived id
    proc = run_pxq("agent", "serve", "--from", str(captures[0]), "--asid", "0")
    assert proc.returncode == 2 and "asid must be 1..4294967295 (0 is the embedded mode's), not 0" in proc.stderr


def test_the_api_result_object_says_which_agents_are_missing(fleet, captures):
    from pxq.api import run_agents
    from pxq.testing.ports import free_port

    dead = f"127.0.0.1:{free_port()}"
    results = run_agents(ERRORS, [fleet[0].address, dead, fleet[2].address], timeout_s=5)
    assert results.partial and list(results.missing) == [dead]
    assert results.missing[dead].startswith(f"no agent answers at {dead} (connection refused)")
    expected = _expected_errors(_all_rows([captures[0], captures[2]]))
    pd.testing.assert_frame_equal(_sorted(results.tables["errors"]), expected, check_dtype=False)
    marker = json.loads(results.tables["errors"].schema.metadata[b"pxq.partial"])
    assert marker == [{"agent": dead, "reason": results.missing[dead]}]


def test_cluster_entries_present_their_own_credentials(fleet, captures, tmp_path_factory):
    """One agent wanting mutual TLS and a token, one plain: each entry's credentials (paths
    relative to the cluster file) are what the broker presents to that agent."""
    from pxq.agent.security import make_certs

    root = tmp_path_factory.mktemp("fleet-tls")
    certs = make_certs(root / "certs", ["localhost", "127.0.0.1"])["ca.crt"].parent
    other = make_certs(root / "other", ["localhost", "127.0.0.1"])["ca.crt"].parent
    good = {"ca": "certs/ca.crt", "cert": "certs/client.crt", "key": "certs/client.key"}
    flags = ["--tls-cert", str(certs / "server.crt"), "--tls-key", str(certs / "server.key")]
    flags += ["--client-ca", str(certs / "ca.crt"), "--token-file", str(certs / "agent.token")]
    secured = AgentProcess(
        "--from",
        str(captures[0]),
        *flags,
        state_dir=root / "state",
        credentials={k: str(root / v) for k, v in {**good, "token_file": "certs/agent.token"}.items()},
    )
    try:
        address = secured.wait_ready()
        cluster = root / "cluster.toml"

        def write(token: str) -> None:
            entry = "".join(f"{k} = '{v}'\n" for k, v in {**good, "token_file": token}.items())
            cluster.write_text(
                f"[[agent]]\nname = 'secured'\naddress = '{address}'\n{entry}"
                f"[[agent]]\nname = 'plain'\naddress = '{fleet[1].address}'\n"
            )

        write("certs/agent.token")
        _, results, _ = run_fleet(ERRORS, load_cluster(cluster), timeout_s=20)
        assert not results.partial
        expected = _expected_errors(_all_rows(captures[:2]))
        pd.testing.assert_frame_equal(_sorted(results.tables["errors"]), expected, check_dtype=False)
        write(str(other / "agent.token"))  # another deployment's token: that agent refuses
        _, results, _ = run_fleet(ERRORS, load_cluster(cluster), timeout_s=20)
        assert list(results.missing) == ["secured"] and "bearer token was refused" in results.missing["secured"]
    finally:
        secured.stop()


def test_each_answer_names_the_agent_process_so_the_broker_asks_each_clock_once(fleet, monkeypatch):
    """The broker learns from the answers themselves which agent process ran them (no second
    status round per query to detect a restart): one ``info`` call per agent, and each answer's
    stamp is the pid and start time that agent's ``info`` gave."""
    asked: list[str] = []
    real_info = AgentClient.info

    def info(self, timeout_s=None):
        asked.append(self.address)
        return real_info(self, timeout_s)

    monkeypatch.setattr(AgentClient, "info", info)
    _, results, _ = run_fleet(STATS, _cluster(fleet))
    assert not results.partial
    assert sorted(asked) == sorted(agent.address for agent in fleet)
    monkeypatch.setattr(AgentClient, "info", real_info)
    for agent in fleet:
        with AgentClient(agent.address) as client:
            clock = client.info()
            answer = client.get(_agg_ticket(clock["now_ns"]))
        assert answered_by(answer) == {k: clock[k] for k in ("agent_id", "pid", "started_ns")}
        assert answered_by(answer)["pid"] == agent.pid  # the process, not what it says of itself


def test_an_agent_restarted_between_the_rounds_is_named_from_its_answer(own_fleet, captures, monkeypatch, tmp_path):
    """Asked for its clock, then restarted on the same address before its fragment (gRPC reconnects
    to the new process, whose store starts empty): named as restarted, the others' rows whole."""
    victim = own_fleet[0]
    address, old_pid = victim.address, victim.pid
    restarted: list[AgentProcess] = []
    real_get = AgentClient.get

    def get_after_a_restart(self, ticket, **options):
        if self.address == address and not restarted:
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(30)
            restarted.append(AgentProcess("--from", str(captures[0]), "--listen", address, state_dir=tmp_path))
            assert restarted[0].wait_ready() == address
        return real_get(self, ticket, **options)

    monkeypatch.setattr(AgentClient, "get", get_after_a_restart)
    try:
        _, results, _ = run_fleet(STATS, _cluster(own_fleet), timeout_s=60)
    finally:
        for agent in restarted:
            agent.stop()
    assert set(results.missing) == {"node-a"}, results.missing
    assert results.missing["node-a"].startswith(
        f"restarted during the query (agent pid {old_pid}, then {restarted[0].pid})"
    )
    assert sum(results.tables["stats"].column("n").to_pylist()) == ROWS[1] + ROWS[2]


def test_one_agent_restarted_between_its_clock_and_its_answer_is_an_error_not_a_short_result(
    captures, tmp_path, monkeypatch
):
    """``pxq run --agent``: the agent restarted after the client asked its clock (its store empty
    again): its answer names another process, so the client refuses it rather than show less."""
    from pxq.agent.flight import AgentQueryError

    first = AgentProcess("--from", str(captures[0]), state_dir=tmp_path / "first")
    address = first.wait_ready()
    second: list[AgentProcess] = []
    real_get = AgentClient.get

    def get_after_a_restart(self, ticket, **options):
        if not second:
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(30)
            second.append(AgentProcess("--from", str(captures[0]), "--listen", address, state_dir=tmp_path / "second"))
            assert second[0].wait_ready() == address
        return real_get(self, ticket, **options)

    monkeypatch.setattr(AgentClient, "get", get_after_a_restart)
    try:
        with AgentClient(address) as client, pytest.raises(AgentQueryError) as caught:
            client.run(_script_object(STATS))
    finally:
        for agent in (first, *second):
            agent.stop()
    assert str(caught.value).startswith(f"restarted during the query (agent pid {first.pid}, then {second[0].pid})")
