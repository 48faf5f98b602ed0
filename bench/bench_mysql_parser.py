"""CPU of the MySQL parser per 10,000 transactions: the conversations recorded from a real MariaDB
(pxq/agent/protocols/mysql/streams/) replayed through the stitcher and into mysql_events rows, as
the connection tracker does, until 10,000 command/response pairs were made. The issue's target
for each protocol is 0.3 s per 10,000 transactions (as HTTP). The kernel side and the tracker's
reassembly are not included (bench/bench_socket_tracer.py measures the whole path for HTTP).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_mysql_parser.py
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from pxq.agent.protocols.interface import ParseOptions
from pxq.agent.protocols.mysql import RECORDED_STREAMS, MysqlRows, MysqlStitcher
from pxq.testing.streams import load_stream

TARGET_S = 0.3
TRANSACTIONS = 10_000


@dataclass
class Conn:
    upid: str = "0:1:1"
    raddr: str = "127.0.0.1"
    laddr: str = "127.0.0.1"
    rport: int = 3306
    lport: int = 40000
    role: int = 1


def _run(conversations: list[list[tuple[str, int, bytes]]], one_connection: bool) -> tuple[int, float]:
    """Replay until TRANSACTIONS pairs were made: (pairs, CPU seconds)."""
    options = ParseOptions(body_limit=1024)
    rows, conn = MysqlRows(), Conn()
    made = 0
    stitcher = MysqlStitcher(options)
    started = time.process_time()
    while made < TRANSACTIONS:
        for chunks in conversations:
            if not one_connection:
                stitcher = MysqlStitcher(options)
            for direction, ts, data in chunks:
                pairs = stitcher.feed_messages(direction == "req", data, ts)
                if pairs:
                    rows.add_pairs(conn, pairs, 0)
                    made += len(pairs)
            if not one_connection:
                pairs = stitcher.close_messages(chunks[-1][1])
                rows.add_pairs(conn, pairs, 0)
                made += len(pairs)
        if len(rows) > 4096:
            rows.table()
    rows.table()
    return made, time.process_time() - started


def main() -> int:
    streams = {p.stem: load_stream(p).chunks for p in sorted(RECORDED_STREAMS.glob("*.json"))}
    # Every recorded conversation, each on a new connection (handshake, a few commands, quit); and
    # one connection's SELECT of 3 rows, INSERT and error, over and over (the "queries" recording
    # without its handshake and its COM_QUIT).
    queries = streams["queries"]
    steady = [c for c in queries[2:] if not (c[0] == "req" and c[2][4:5] == b"\x01")]
    worst = 0.0
    for label, conversations, one in (("new connections", list(streams.values()), False),
                                      ("one connection", [steady], True)):  # fmt: skip
        made, cpu = _run(conversations, one)
        per_10k = cpu * TRANSACTIONS / made
        worst = max(worst, per_10k)
        print(f"mysql parser, {label}: {made} transactions, {cpu:.3f} s CPU, {per_10k:.3f} s per 10,000 "
              f"(target {TARGET_S} s)")  # fmt: skip
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
