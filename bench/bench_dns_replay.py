"""The agent's user-space CPU per 10,000 DNS rows, without a kernel: the traffic of
bench_protocols.py's paced DNS phase (a client asking ``q<i>.test A`` on one UDP socket, the server
answering one A record, both ends traced: four datagram events per transaction) replayed through
:class:`pxq.agent.conn_tracker.ConnTracker` in poll-sized batches, tables taken once a second as the
agent does. What it leaves out: reading the ring buffer and the agent loop.

``--baseline DIR`` runs the same replay with another checkout's ``pxq`` (e.g. the main branch),
alternating with this one, each in a process of its own: the machine is shared and noisy, so the
figures are compared side by side and the best of the rounds is shown.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_dns_replay.py [--transactions N] [--rounds R] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

BATCH = 50  # transactions per 50 ms poll at 1,000/s
TAKE_EVERY = 1000  # transactions per take_tables (once a second)


def replay(transactions: int) -> dict:
    import dns.flags
    import dns.message
    import dns.rrset

    from pxq.agent.conn_tracker import EGRESS, EV_DATA, F_DATAGRAM, INGRESS, ConnTracker, SockEvent
    from pxq.agent.protocols import registry

    loopback = socket.inet_aton("127.0.0.1").ljust(16, b"\0")

    def event(pid: int, fd: int, direction: int, pos: int, data: bytes, ts: int, rport: int) -> SockEvent:
        return SockEvent(ts, pos, len(data), pid, fd, 1, len(data), EV_DATA, F_DATAGRAM, direction, 0,
                         socket.AF_INET, 0, rport, 0, 0, bytes(16), loopback, data)  # fmt: skip

    events = []
    client_pos = server_pos = 0
    ts = 10**9
    for i in range(transactions):
        query = dns.message.make_query(f"q{i}.test", "A")
        query.id = (i * 7919) & 0xFFFF
        answer = dns.message.make_response(query)
        answer.flags |= dns.flags.AA | dns.flags.RA
        answer.answer.append(
            dns.rrset.from_text(f"q{i}.test.", 0, "IN", "A", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        )
        q, a = query.to_wire(), answer.to_wire()
        events += [
            event(100, 5, EGRESS, client_pos, q, ts, 53),
            event(200, 4, INGRESS, server_pos, q, ts + 20_000, 40000),
            event(200, 4, EGRESS, server_pos + len(q), a, ts + 70_000, 40000),
            event(100, 5, INGRESS, client_pos + len(q), a, ts + 90_000, 53),
        ]  # fmt: skip
        client_pos += len(q) + len(a)
        server_pos += len(q) + len(a)
        ts += 1_000_000
    tracker = ConnTracker(protocols=[registry.DNS], disable=lambda *_: None)
    tracker.take_tables()  # imports the catalog: not the agent's steady cost
    rows = 0
    start = time.process_time()
    for first in range(0, transactions, BATCH):
        for ev in events[4 * first : 4 * (first + BATCH)]:
            tracker.handle(ev)
        tracker.end_batch()
        if (first + BATCH) % TAKE_EVERY == 0:
            rows += tracker.take_tables()["dns_events"].num_rows
    rows += tracker.take_tables()["dns_events"].num_rows
    cpu = time.process_time() - start
    return {"rows": rows, "cpu_s": cpu, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_in(root: str, transactions: int) -> dict:
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, __file__, "--child", "--transactions", str(transactions)], env=env,
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="another checkout whose pxq to compare with")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(replay(opts.transactions)))
        return 0
    roots = {"this": str(Path(__file__).resolve().parent.parent)}
    if opts.baseline:
        roots = {"baseline": str(Path(opts.baseline).resolve()), **roots}
    best: dict[str, dict] = {}
    print(f"DNS replay, {opts.transactions:,} transactions per run, load average {os.getloadavg()[0]:.1f}")
    for round_ in range(opts.rounds):
        for name, root in roots.items():
            got = run_in(root, opts.transactions)
            print(f"  round {round_ + 1} {name:8s} {got['cpu_s'] / got['rows'] * 1e4:.3f} CPU-s per 10,000 rows, "
                  f"{got['cpu_s'] / opts.transactions * 1e4:.3f} per 10,000 transactions, {got['rows']:,} rows, "
                  f"max RSS {got['maxrss_mb']:.0f} MB", flush=True)  # fmt: skip
            if name not in best or got["cpu_s"] < best[name]["cpu_s"]:
                best[name] = got
    for name, got in best.items():
        print(f"best {name:8s} {got['cpu_s'] / got['rows'] * 1e4:.3f} CPU-s per 10,000 rows "
              f"({got['cpu_s'] / opts.transactions * 1e4:.3f} per 10,000 transactions)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
