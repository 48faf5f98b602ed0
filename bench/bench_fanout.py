"""A group-by with quantiles over three node agents (``pxq agent serve --from DIR`` on loopback,
each serving its own capture of N synthetic http_events), beside the same query run locally over
the three captures' rows concatenated (``--from`` one capture holding them all).

Printed figures (no thresholds asserted; targets from issue 15):

- bytes sent to the broker ÷ raw bytes of the rows (target <= 1%): the Arrow IPC size of every
  table the agents sent (partial aggregation states) over the Arrow size of the rows they hold,
  all columns and also just the columns the query reads;
- query time ÷ the local query's time (target <= 1.5): the broker's wall time (both rounds: the
  agents' clocks, then their fragments; compile, merge) over the local run's (compile + execute
  over the capture), both in this process. Rounds alternate fleet and local; medians and the
  spread (min..max) are printed. Here the three agents share this machine's CPUs; on separate
  nodes they run side by side, so the same query over one agent alone (a third of the rows; the
  "one node's share" line) is printed too: the fleet's time when each node has its own CPUs.
- CPU seconds per query (less noisy than wall time on a shared machine): the three agents' (their
  processes' user + system time) and the broker's (this process, during the fleet query), beside
  the local query's.

Old vs new side by side: the script uses only public entry points, so it also runs another
checkout's code, from that checkout's directory (the agents, ``python -m pxq.cli.main``, import
pxq from the working directory first): ``cd /work/main && PYTHONPATH=$PWD .venv/bin/python
/path/to/this/bench_fanout.py``; alternate the two.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_fanout.py --rows 1000000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import pxq
from pxq.agent.flight import AgentClient
from pxq.api import _script_object, run_script
from pxq.broker.fleet import ClusterAgent, run_fleet
from pxq.replay import open_capture, write_capture
from pxq.testing.agent_process import AgentProcess
from pxq.testing.synthetic import synthetic_processes, write_synthetic_capture

START_NS = 1_764_115_200_000_000_000
SPAN_NS = 300_000_000_000
QUERY = """import px
df = px.DataFrame('http_events', start_time='-10m')
df = df.groupby(['req_path', 'resp_status']).agg(
    requests=('latency', px.count), mean_latency=('latency', px.mean),
    latency_quantiles=('latency', px.quantiles), resp_bytes=('resp_body_size', px.sum))
px.display(df, 'stats')
"""
READ_COLUMNS = ["time_", "req_path", "resp_status", "latency", "resp_body_size"]


def ipc_bytes(table: pa.Table) -> int:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().size


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} (min {min(values):.3f} .. max {max(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="http_events per agent (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    code = Path(pxq.__file__).resolve().parent.parent
    if (Path.cwd() / "pxq").is_dir() and Path.cwd().resolve() != code:
        parser.error(f"run from {code}: the agents would import the pxq of {Path.cwd()} (python -m)")
    print(f"pxq code: {code}")

    root = Path(tempfile.mkdtemp(prefix="pxq-bench-fanout-"))
    print(f"writing 3 captures of {args.rows:,} http_events each under {root} ...", flush=True)
    captures = [
        write_synthetic_capture(
            root / f"node{i}",
            args.rows,
            seed=i,
            asid=i,
            host=f"node{i}",
            start_ns=START_NS,
            span_ns=SPAN_NS,
            null_fraction=0.01,
        )
        for i in (1, 2, 3)
    ]
    tables = [pq.read_table(Path(c) / "http_events.parquet") for c in captures]
    raw_all = sum(t.nbytes for t in tables)
    raw_read = sum(t.select(READ_COLUMNS).nbytes for t in tables)
    processes = {u: p for i in (1, 2, 3) for u, p in synthetic_processes(asid=i).items()}
    together = root / "together"
    write_capture(
        together,
        {"http_events": pa.concat_tables(tables)},
        host="together",
        start_time_ns=START_NS,
        end_time_ns=START_NS + SPAN_NS,
        processes=processes,
    )
    del tables
    local_source = open_capture(together)
    script = _script_object(QUERY)

    agents = [AgentProcess("--from", c, state_dir=root / f"state{i}") for i, c in enumerate(captures)]
    sent: list[int] = []
    real_get = AgentClient.get

    def counting_get(self, ticket, **options):  # the bytes each agent's answer takes as an Arrow stream
        table = real_get(self, ticket, **options)
        sent.append(ipc_bytes(table))
        return table

    AgentClient.get = counting_get  # type: ignore[method-assign]
    try:
        cluster = [ClusterAgent(f"node{i + 1}", a.wait_ready(120)) for i, a in enumerate(agents)]
        fleet_s, local_s, one_s, sent_bytes = [], [], [], []
        agents_cpu, broker_cpu, local_cpu = [], [], []
        fleet_result = local_result = None
        for _ in range(args.rounds):
            sent.clear()
            agents_before = sum(process_cpu_s(a.pid) for a in agents)
            cpu, start = own_cpu_s(), time.perf_counter()
            _, fleet_result, _ = run_fleet(script, cluster, timeout_s=600)
            fleet_s.append(time.perf_counter() - start)
            broker_cpu.append(own_cpu_s() - cpu)
            agents_cpu.append(sum(process_cpu_s(a.pid) for a in agents) - agents_before)
            sent_bytes.append(sum(sent))
            cpu, start = own_cpu_s(), time.perf_counter()
            _, local_result = run_script(script, source=local_source)
            local_s.append(time.perf_counter() - start)
            local_cpu.append(own_cpu_s() - cpu)
            start = time.perf_counter()
            run_fleet(script, cluster[:1], timeout_s=600)
            one_s.append(time.perf_counter() - start)
        assert fleet_result is not None and local_result is not None and not fleet_result.partial
        a, b = fleet_result.tables["stats"], local_result.tables["stats"]
        assert a.num_rows == b.num_rows and sum(a.column("requests").to_pylist()) == 3 * args.rows
    finally:
        AgentClient.get = real_get  # type: ignore[method-assign]
        for agent in agents:
            agent.stop()

    ratios = [f / loc for f, loc in zip(fleet_s, local_s)]
    print(f"rows: 3 agents x {args.rows:,} http_events; groups in the result: {a.num_rows}")
    print(f"bytes sent to the broker per query: {statistics.median(sent_bytes):,.0f}")
    print(f"raw bytes of the rows (Arrow): {raw_all:,} all columns, {raw_read:,} the {len(READ_COLUMNS)} columns read")
    print(
        f"sent / raw: {100 * statistics.median(sent_bytes) / raw_all:.4f}% of all columns, "
        f"{100 * statistics.median(sent_bytes) / raw_read:.4f}% of the columns read (target <= 1%)"
    )
    print(f"fleet query s: {spread(fleet_s)}")
    print(f"local query s: {spread(local_s)}")
    print(f"fleet / local (paired per round): {spread(ratios)} (target <= 1.5)")
    print(f"one node's share (one agent, {args.rows:,} rows) s: {spread(one_s)}")
    print(f"one node's share / local: {spread([o / loc for o, loc in zip(one_s, local_s)])}")
    print(f"CPU s per query: agents (3 together) {spread(agents_cpu)}; broker {spread(broker_cpu)}")
    print(f"CPU s per query: local {spread(local_cpu)}")
    fleet_cpu = [a + b for a, b in zip(agents_cpu, broker_cpu)]
    print(f"CPU fleet (agents + broker) / local: {spread([f / loc for f, loc in zip(fleet_cpu, local_cpu)])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
