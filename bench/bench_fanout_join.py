"""service_stats (a group-by above a join with a one-row aggregate) over three node agents
(``pxq agent serve --from DIR`` on loopback, each serving its own capture of N synthetic
http_events): what the agents send, and the broker's wall time, in three configurations side by
side (rounds alternate; medians and the spread min..max):

- before: without the ``eager_aggregation`` rule (the group-by stays above the join, on the
  broker: the agents send every row) and without pruning each fragment alone;
- rule: with the rule (the group-by runs on the agents as a partial aggregation), fragments
  pruned together;
- after: both (what pxq does).

Bytes are the Arrow IPC size of every table the agents send, over the Arrow size of the rows they
hold. A client-side row's remote is one of three server ports (80, 443, 8080), as on a real node
(the synthetic default, a random client port, makes nearly every client-side row its own
service: ``--random-ports`` shows that worst case).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_fanout_join.py --rows 300000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import pxq.plan.split as split_module
from pxq.agent.flight import AgentClient
from pxq.broker.fleet import ClusterAgent, run_fleet
from pxq.library import load_script
from pxq.plan import optimize as optimize_module
from pxq.plan.rules import RULES, eager_aggregation
from pxq.replay import write_capture
from pxq.testing.agent_process import AgentProcess
from pxq.testing.synthetic import synthetic_http_events, synthetic_processes

START_NS = 1_764_115_200_000_000_000
SPAN_NS = 300_000_000_000
ARGS = {"start_time": "-10m", "window": "10s"}


def ipc_bytes(table: pa.Table) -> int:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().size


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f}s (min {min(values):.3f} .. max {max(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000, help="http_events per agent (default 300,000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--random-ports", action="store_true", help="client-side remotes on random ports")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pxq-bench-fanout-join-"))
    raw = 0
    captures = []
    for i in (1, 2, 3):
        table = synthetic_http_events(args.rows, seed=i, asid=i, start_ns=START_NS, span_ns=SPAN_NS, null_fraction=0.01)
        if not args.random_ports:
            ports = np.random.default_rng(i).choice([80, 443, 8080], args.rows)
            column = table.schema.get_field_index("remote_port")
            table = table.set_column(column, "remote_port", pa.array(ports, pa.int64()))
        raw += table.nbytes
        write_capture(
            root / f"node{i}",
            {"http_events": table},
            host=f"node{i}",
            start_time_ns=START_NS,
            end_time_ns=START_NS + SPAN_NS,
            processes=synthetic_processes(asid=i),
        )
        captures.append(root / f"node{i}")

    sent: list[tuple[int, int]] = []
    get = AgentClient.get

    def counting_get(self, ticket):  # what each agent's answer takes as an Arrow stream
        table = get(self, ticket)
        sent.append((ipc_bytes(table), table.num_rows))
        return table

    AgentClient.get = counting_get  # type: ignore[method-assign]
    prune_alone = split_module._pruned_alone
    without_rule = tuple(rule for rule in RULES if rule is not eager_aggregation)
    configurations = {"before": (without_rule, False), "rule": (RULES, False), "after": (RULES, True)}
    figures: dict[str, tuple[list[int], list[int], list[float]]] = {k: ([], [], []) for k in configurations}
    agents = [AgentProcess("--from", str(c), state_dir=tempfile.mkdtemp(dir=root)) for c in captures]
    try:
        for agent in agents:
            agent.wait_ready()
        cluster = [ClusterAgent(f"node{i}", a.address) for i, a in enumerate(agents, 1)]
        script = load_script("service_stats")
        result_rows = 0
        for _ in range(args.rounds):
            for label, (rules, prune) in configurations.items():
                optimize_module.optimize.__defaults__ = (rules, None)
                split_module._pruned_alone = prune_alone if prune else (lambda fragment, now_ns: fragment)
                sent.clear()
                began = time.perf_counter()
                _, results, _ = run_fleet(script, cluster, args=ARGS)
                figures[label][2].append(time.perf_counter() - began)
                figures[label][0].append(sum(size for size, _ in sent))
                figures[label][1].append(sum(rows for _, rows in sent))
                result_rows = results.tables["service_stats"].num_rows
    finally:
        for agent in agents:
            agent.stop()
    ports = "random client ports" if args.random_ports else "server ports 80/443/8080"
    print(f"service_stats over 3 agents, {args.rows:,} http_events each ({ports}); raw Arrow bytes {raw:,}")
    print(f"result: {result_rows:,} rows")
    for label, (sizes, rows, seconds) in figures.items():
        size = statistics.median(sizes)
        print(
            f"{label:6}: sent {size:,.0f} bytes ({100 * size / raw:.3f}% of raw) in "
            f"{statistics.median(rows):,.0f} rows; broker wall time {spread(seconds)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
