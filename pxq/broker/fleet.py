"""One query over many agents.

A cluster file (TOML) lists the agents::

    [[agent]]
    name = "node-a"                 # how results and errors name it (default: its address)
    address = "10.0.0.5:7100"
    # credentials, all optional: ca, cert, key (mutual TLS), token_file (bearer token); paths,
    # relative ones from the cluster file's directory (pxq.agent.security.ClientCredentials)

Every agent is opened through :func:`open_agent`, with its entry's credentials. The broker asks
every agent for its clock (``info``) and compiles once against the latest one, splits the plan
with partial aggregation, and sends each agent its fragments concurrently. An agent that fails,
is refused, or has not answered within the timeout is left out: the result is then *partial*
(:class:`FleetResults.missing` names each such agent and why; the renderers and ``-o json`` say
it too). Only when no agent answers at
all is it an error.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from pxq.agent.flight import (
    META_DROPS,
    META_HOST,
    META_PROCESSES,
    ON_DEMAND_ATTACH_S,
    AgentClient,
    AgentGaveUpError,
    AgentQueryError,
    AgentUnavailableError,
    answered_by,
    fragment_limits,
    make_ticket,
    on_demand_wait,
    restarted_error,
    same_process,
    settings_notes,
)
from pxq.agent.security import ClientCredentials
from pxq.errors import PxqError, UsageError
from pxq.exec.execute import Results

DEFAULT_TIMEOUT_S = 10.0
CREDENTIAL_KEYS = ("ca", "cert", "key", "token_file")
PARTIAL_KEY = b"pxq.partial"  # schema metadata of a partial result's tables: JSON [{agent, reason}]


@dataclass(frozen=True)
class ClusterAgent:
    name: str
    address: str
    credentials: dict[str, str] = field(default_factory=dict)


@dataclass
class FleetResults(Results):
    """Results of a query over many agents; ``missing``: agent name -> why it is not in the result."""

    missing: dict[str, str] = field(default_factory=dict)
    agents: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.missing)


def load_cluster(path: str | Path) -> list[ClusterAgent]:
    """The agents of a cluster file; UsageError naming the file and entry for anything malformed."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cluster file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"cluster file {path}: not TOML: {exc}") from None
    unknown = sorted(set(doc) - {"agent"})
    if unknown:
        raise UsageError(f"cluster file {path}: unknown key {unknown[0]!r} (expected [[agent]] entries)")
    entries = doc.get("agent")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f'cluster file {path}: no agents (expected [[agent]] entries with address = "HOST:PORT")')
    agents: list[ClusterAgent] = []
    for i, entry in enumerate(entries):
        where = f"cluster file {path}: [[agent]] #{i + 1}"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected a table")
        extra = sorted(set(entry) - {"name", "address", *CREDENTIAL_KEYS})
        if extra:
            raise UsageError(f"{where}: unknown key {extra[0]!r} (known: name, address, {', '.join(CREDENTIAL_KEYS)})")
        address = entry.get("address")
        if not isinstance(address, str) or not address:
            raise UsageError(f'{where}: needs address = "HOST:PORT"')
        name = entry.get("name", address)
        for key in ("name", *CREDENTIAL_KEYS):
            if key in entry and not isinstance(entry[key], str):
                raise UsageError(f"{where}: {key} must be a string")
        credentials = ClientCredentials.from_mapping(
            {key: entry[key] for key in CREDENTIAL_KEYS if key in entry}, base_dir=Path(path).parent, where=where
        )
        given = {key: getattr(credentials, key) for key in CREDENTIAL_KEYS if getattr(credentials, key) is not None}
        agents.append(ClusterAgent(name, address, given))
    _check_unique(agents, f"cluster file {path}")
    return agents


def agents_of_addresses(addresses: list[str], credentials: dict[str, str] | None = None) -> list[ClusterAgent]:
    """``--agent`` given several times: each agent named by its address, all with the same
    credentials (``--agent-ca`` ...)."""
    agents = [ClusterAgent(address, address, dict(credentials or {})) for address in addresses]
    _check_unique(agents, "--agent")
    return agents


def _check_unique(agents: list[ClusterAgent], where: str) -> None:
    seen: set[str] = set()
    for agent in agents:
        if agent.name in seen:
            raise UsageError(f"{where}: agent {agent.name!r} is named twice")
        seen.add(agent.name)


def open_agent(agent: ClusterAgent, *, timeout_s: float) -> AgentClient:
    """The one place the broker connects to an agent, presenting its entry's credentials."""
    return AgentClient(agent.address, timeout_s=timeout_s, credentials=agent.credentials or None)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PxqError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _Fleet:
    """Per agent: an open client (or the reason there is none), run on worker threads."""

    def __init__(self, agents: list[ClusterAgent], timeout_s: float):
        self.agents = agents
        self.timeout_s = timeout_s
        self.missing: dict[str, str] = {}
        # Not a context manager: a worker stuck on a stopped agent must not hold the query up
        # (its gRPC call ends at its own deadline, on its daemon thread).
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(agents)), thread_name_prefix="pxq-broker")

    def each(self, call, names: list[str], wait_s: float) -> dict[str, Any]:
        """``call(agent)`` on every named agent at once; those failing or not done within
        ``wait_s`` go to ``missing`` (with why) and are left out of the answer."""
        deadline = time.monotonic() + wait_s
        futures = {name: self.pool.submit(call, self._agent(name)) for name in names}
        done: dict[str, Any] = {}
        for name, future in futures.items():
            left = max(0.0, deadline - time.monotonic())
            try:
                done[name] = future.result(timeout=left)
            except TimeoutError:
                self.missing[name] = f"did not answer within {wait_s:g}s"
            except Exception as exc:  # noqa: BLE001 - any failure of one agent leaves it out, said
                self.missing[name] = _reason(exc)
        return done

    def _agent(self, name: str) -> ClusterAgent:
        return next(a for a in self.agents if a.name == name)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def run_fleet(
    script: Any,
    agents: list[ClusterAgent],
    *,
    args: dict[str, Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[Any, FleetResults, dict[str, dict[str, int]]]:
    """Run ``script`` over every agent of ``agents``: (Compiled, FleetResults, drops of the tables
    read, summed over the agents). ``timeout_s`` bounds each of the two rounds the broker waits
    for the agents: their clocks, then their fragments' results."""
    from pxq.api import _script_object, compile_script
    from pxq.broker.partial import merge_partials
    from pxq.exec.execute import conform, execute
    from pxq.library import load_script
    from pxq.plan.nodes import Agg
    from pxq.plan.split import split

    if not agents:
        raise UsageError("no agents to query")
    script = _script_object(script)
    if isinstance(script, str):
        script = load_script(script)
    fleet = _Fleet(agents, timeout_s)
    clients: dict[str, AgentClient] = {}
    lock = threading.Lock()
    try:

        def info(agent: ClusterAgent) -> dict[str, Any]:
            client = open_agent(agent, timeout_s=timeout_s)
            with lock:
                clients[agent.name] = client
            return client.info(timeout_s=timeout_s)

        infos = fleet.each(info, [a.name for a in agents], timeout_s)
        if not infos:
            raise AgentUnavailableError(
                "no agent answered: " + "; ".join(f"{name}: {why}" for name, why in fleet.missing.items())
            )
        now_ns = max(i["now_ns"] for i in infos.values())
        compiled = compile_script(script, args=args, now_ns=now_ns)
        plan = split(compiled.optimized, partial_aggs=True)
        for name, agent_info in infos.items():
            held = agent_info.get("tables", {})
            lacking = [r.table for r in plan.manifest.tables if r.table not in held]
            if lacking:
                fleet.missing[name] = f"does not hold {', '.join(lacking)}"
        limits = fragment_limits(plan.merge)
        tickets = [
            make_ticket(
                fragment,
                now_ns=compiled.optimized.now_ns,
                settings=compiled.optimized.settings,
                limit=None if isinstance(fragment, Agg) else limits.get(index),
            )
            for index, fragment in enumerate(plan.agent_fragments)
        ]

        # An agent that collects for this query first (on demand) may take its on_demand_max and
        # the time to attach the collector more: its calls, and this round, wait that long too.
        on_demand = {name: on_demand_wait(plan.manifest, infos[name], ON_DEMAND_ATTACH_S) for name in infos}
        longest = max((wait.wait_s for wait in on_demand.values() if wait is not None), default=0.0)

        def query(agent: ClusterAgent) -> list[pa.Table]:
            client = clients[agent.name]
            try:
                tables = [client.get(ticket, on_demand=on_demand[agent.name]) for ticket in tickets]
            except AgentGaveUpError:
                raise  # it says why itself (an on-demand collection that took too long)
            except AgentUnavailableError as exc:
                # It answered the clock round: gone since, mid-query (stopped, killed, restarting).
                raise AgentUnavailableError(f"lost during the query (the agent stopped or restarted): {exc}") from None
            # The process that answered must be the one that was asked first: an agent restarted
            # in between (gRPC reconnects to the new one) answers from a store that starts empty,
            # so its node's earlier rows would be missing from a result that says it is whole.
            # Each answer names the process that ran it; an agent that does not stamp its
            # answers is asked again.
            before = infos[agent.name]
            stamps = [answered_by(table) for table in tables]
            if any(stamp is None for stamp in stamps):
                stamps = [client.info(timeout_s=timeout_s)]
            for stamp in stamps:
                assert stamp is not None
                if not same_process(before, stamp):
                    raise restarted_error(before, stamp)
            return tables

        asking = [a.name for a in agents if a.name in infos and a.name not in fleet.missing]
        answers = fleet.each(query, asking, timeout_s + longest)
        if not answers:
            raise AgentUnavailableError(
                "no agent answered: " + "; ".join(f"{name}: {why}" for name, why in fleet.missing.items())
            )
        # Merge in the agents' order (the file's), so results do not depend on who answered first.
        order = [a.name for a in agents if a.name in answers]
        drops: dict[str, dict[str, int]] = {}
        processes: dict[str, dict] = {}
        hosts: list[str] = []
        inputs: list[pa.Table] = []
        for index, fragment in enumerate(plan.agent_fragments):
            parts = []
            for name in order:
                table = answers[name][index]
                meta = table.schema.metadata or {}
                for table_name, counters in json.loads(meta.get(META_DROPS, b"{}")).items():
                    total = drops.setdefault(table_name, {})
                    for reason, count in counters.items():
                        total[reason] = total.get(reason, 0) + count
                processes.update(json.loads(meta.get(META_PROCESSES, b"{}")))
                host = meta.get(META_HOST, b"").decode()
                if host and host not in hosts:
                    hosts.append(host)
                parts.append(table.replace_schema_metadata(None))
            if isinstance(fragment, Agg):
                inputs.append(merge_partials(parts, fragment))
            else:
                inputs.append(pa.concat_tables([conform(_plain(p), fragment.schema) for p in parts]))
        merged = _MergeSide(",".join(hosts), processes, now_ns)
        results = execute(plan.merge, merged, fragment_inputs=tuple(inputs))
        fleet_results = FleetResults(results.tables, list(results.notes), dict(fleet.missing), tuple(order))
        for name in order:
            fleet_results.notes[:0] = settings_notes(plan.manifest, infos[name], name)
        if fleet_results.partial:
            fleet_results.tables = {d: mark_partial(t, fleet_results.missing) for d, t in results.tables.items()}
        return compiled, fleet_results, drops
    finally:
        fleet.close()
        for client in clients.values():
            with contextlib.suppress(Exception):  # a client of a dead agent may fail to close
                client.close()


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded: each agent's dictionaries differ, and the merge concatenates."""
    columns = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.Table.from_arrays(columns, names=table.column_names)


class _MergeSide:
    """The merge fragment's DataSource: no tables (the agents sent them), every agent's processes."""

    def __init__(self, host: str, processes: dict[str, dict], end_time_ns: int):
        self.host, self.processes, self.end_time_ns = host, processes, end_time_ns

    def scan(self, table, *_args, **_kwargs):
        raise AgentQueryError(f"the merge side cannot read table {table!r}: it runs on the agents")


def mark_partial(table: pa.Table, missing: dict[str, str]) -> pa.Table:
    """``table`` marked as a partial result (schema metadata the renderers read)."""
    marker = json.dumps([{"agent": name, "reason": why} for name, why in missing.items()])
    return table.replace_schema_metadata({**(table.schema.metadata or {}), PARTIAL_KEY: marker.encode()})
