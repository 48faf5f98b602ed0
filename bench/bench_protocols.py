"""The socket tracer's completeness and cost on PostgreSQL, Redis, DNS and MariaDB traffic (issue 12).

Everything runs on this machine, in one run, side by side, on 127.0.0.1 free ports: real servers
from :mod:`pxq.testing.servers` (PostgreSQL 15, redis-server, dnsmasq, MariaDB) and their load
generators. Per protocol, one agent: the embedded agent (:class:`pxq.agent.embedded.EmbeddedAgent`,
socket tracer asked for that protocol's table only) in a process of its own, as ``pxq run`` would
be, its pids the server (its forked backends followed) and a *launcher* process of this bench
whose children are the load generators (forked after the agent started, so followed too). Both
ends are traced: every transaction is expected twice, as a client row (trace_role 1) and a server
row (trace_role 2); each role is counted on its own.

Per protocol, two phases under the same agent:

1. Completeness at a fixed rate below the drop threshold: rows captured whose response is the
   right one for their request, per role, ÷ transactions the load generator issued and got an
   answer to (target >= 99.9 % for each role).

   * pgsql: ``pgbench -S`` (select-only: one simple Query per transaction) ``--rate R -T S``; the
     expected count is pgbench's own "number of transactions actually processed". Before the
     agent starts, ``abalance`` is set to ``aid`` in every account, so a row's response must
     carry its own request's ``aid``.
   * redis: a paced client of this bench (redis-benchmark has no rate option): raw RESP over one
     connection, request ``i`` (``GET b:<i>``, the key set to ``i`` beforehand) due at
     ``start + i / rate``; each reply checked by the client.
   * dns: a paced dnspython client on one unconnected UDP socket, query ``i`` for the unique name
     ``q<i>.test`` whose A record (dnsmasq's hosts file, written by the bench) encodes ``i``.
   * mysql (MariaDB): a paced PyMySQL client, query ``i`` ``SELECT seq FROM seq_1_to_<K> /* i */``
     with ``K = i % 20 + 1`` (MariaDB's SEQUENCE engine): the row's response must say K rows (a
     mispairing between two queries with the same K goes unseen: 1 in 20).

   The agent's CPU time per 10,000 transactions (getrusage of the agent process from the end of
   its start-up until it caught up with the phase; target <= 0.3 s), given per row captured (a
   transaction as one end sees it: the figure HTTP's bench gives) and per transaction issued (both
   ends) come from this phase; its RSS (VmHWM, reset after start-up; target <= 250 MB) from this
   phase and, with the overload's backlog, from all of them.

2. Overload: the same load unpaced (Redis and DNS pipelined 16 deep; pgbench without ``--rate``
   over 4 connections; for Redis also ``redis-benchmark -P 16 -t get``): rows ÷ transactions issued,
   and every loss counted by reason (kernel and agent drop counters, the stitchers' own reasons).

Through both phases, every row whose request names its expected answer is checked: a row paired
with another request's response is a defect (must be 0), whatever was dropped.

The machine is shared and small (the load average is printed): the figures are ratios measured
side by side, and the CPU figures include the agent's fixed cost of polling.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_protocols.py [--quick] [--only pgsql,redis,dns,mysql]

Needs root, bcc, PostgreSQL 15 with pgbench, redis-server and redis-benchmark, dnsmasq, MariaDB,
dnspython, PyMySQL and redis-py. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_socket_tracer import (  # noqa: E402  (the HTTP bench's agent-process helpers)
    AGENT_START_TIMEOUT,
    TARGET_COMPLETE,
    TARGET_RSS_MB,
    Agent,
    _cpu_s,
    _proc_status,
    load,
)

# Issue 12's target for these protocols: agent CPU per 10,000 transactions (one end's row) <= 0.3 s,
# what HTTP's was when the issue was written (the HTTP bench's own target has moved since).
TARGET_CPU_PER_10K = 0.3
TABLES = {"pgsql": "pgsql_events", "redis": "redis_events", "dns": "dns_events", "mysql": "mysql_events"}
COLUMNS = {
    "pgsql": ["trace_role", "req_cmd", "req", "resp", "latency"],
    "redis": ["trace_role", "req_cmd", "req_args", "resp", "latency"],
    "dns": ["trace_role", "req_header", "req_body", "resp_header", "resp_body", "latency"],
    "mysql": ["trace_role", "req_cmd", "req_body", "resp_status", "resp_body", "latency"],
}
CLIENT, SERVER = 1, 2
PIPELINE = 16  # requests in flight per round trip in the unpaced Redis and DNS runs
MYSQL_SIZES = 20  # mysql query i returns i % MYSQL_SIZES + 1 rows (a few packets each)


def dns_addr(i: int) -> str:
    """The A record of ``q<i>.test`` (unique per i below 2**24)."""
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


# -- the agent process ---------------------------------------------------------------------------
def agent_child(protocol: str, pids: list[int], out: str) -> int:
    """The embedded agent for ``protocol``'s table, tracing ``pids``: prints a JSON line when it is
    ready, one on SIGUSR1 and a final one after SIGINT (the rows go to ``out``), with the drop
    counters and the stitchers' own error reasons."""
    import pxq.agent.loop as agent_loop
    from pxq.agent.embedded import EmbeddedAgent
    from pxq.agent.loop import Progress
    from pxq.plan.manifest import CollectorRequest, ProbeManifest, TableRequest

    table = TABLES[protocol]
    request = CollectorRequest("socket_tracer", (table,), tuple(pids), (protocol,))
    manifest = ProbeManifest(time.time_ns(), (TableRequest(table, "socket_tracer", (), None, None, tuple(pids)),),
                             (request,))  # fmt: skip
    collectors = []  # bench-only: the collector, for its stitchers' detailed error reasons
    build = agent_loop.build_collector

    def keep(*args, **kwargs):
        collectors.append(build(*args, **kwargs))
        return collectors[-1]

    agent_loop.build_collector = keep
    state = {"base_cpu": (0.0, 0.0), "ready": False, "snapshot": False, "stop": False, "last": None, "startup_peak": 0}

    def errors() -> dict[str, int]:
        if not collectors:
            return {}
        return dict(collectors[0].tracer._tracker.error_counts(protocol))  # bench-only: private counters

    def report(kind: str, p: Progress) -> None:
        print(json.dumps({
            "kind": kind, "t": time.monotonic(), "events": p.events, "rows": p.rows.get(table, 0),
            "drops": p.drop_counts.get(table, {}), "errors": errors(), "cpu": sum(_cpu_s()) - sum(state["base_cpu"]),
            "rss": _proc_status("VmRSS"), "hwm": _proc_status("VmHWM"), "startup_peak": state["startup_peak"],
        }), flush=True)  # fmt: skip

    def on_progress(p: Progress) -> None:
        state["last"] = p
        if not state["ready"]:
            state["ready"] = True
            state["startup_peak"] = _proc_status("VmHWM")  # imports, BPF compilation, attach
            with contextlib.suppress(OSError):  # reset VmHWM: the peak from here on
                Path("/proc/self/clear_refs").write_text("5")
            state["base_cpu"] = _cpu_s()
            report("ready", p)
        if state["snapshot"]:
            state["snapshot"] = False
            report("snapshot", p)
        if state["stop"]:
            state["stop"] = False
            raise KeyboardInterrupt

    signal.signal(signal.SIGUSR1, lambda *_: state.update(snapshot=True))
    signal.signal(signal.SIGINT, lambda *_: state.update(stop=True))  # ends the window from the loop's code
    store = EmbeddedAgent(manifest).run(3600.0, on_progress=on_progress)
    report("final", state["last"])
    import pyarrow.parquet as pq

    pq.write_table(store.table(table).select(COLUMNS[protocol]), out)
    return 0


class ProtocolAgent(Agent):
    """The agent process for one protocol (the HTTP bench's :class:`Agent` protocol)."""

    @classmethod
    def start_for(cls, protocol: str, pids: list[int], out: str) -> ProtocolAgent:
        cmd = [sys.executable, __file__, "--agent-child", protocol, "--pids", ",".join(map(str, pids)), "--out", out]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        agent = cls(proc, {}, out)
        try:
            agent.ready = agent._line(AGENT_START_TIMEOUT)
        except BaseException:
            agent.kill()
            raise
        return agent


# -- the launcher: the traced parent of every load generator -------------------------------------
def launcher_child() -> int:
    """Reads one JSON list of argvs per line, runs them side by side to their ends, answers
    {"rc": the worst exit status, "outs": their outputs, "err"} per line. Its children are forked
    while the agent runs, so the agent follows them from their first call."""
    print("READY", flush=True)
    for line in sys.stdin:
        procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for argv in json.loads(line)]  # fmt: skip
        done = [proc.communicate() for proc in procs]
        print(json.dumps({"rc": max(proc.returncode for proc in procs), "outs": [out for out, _ in done],
                          "err": "".join(err for _, err in done)[-4000:]}), flush=True)  # fmt: skip
    return 0


class Launcher:
    def __init__(self) -> None:
        cmd = [sys.executable, __file__, "--launcher"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "READY":
            raise RuntimeError("the launcher did not start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        return self.run_side_by_side([argv], env)[0]

    def run_side_by_side(self, argvs: list[list[str]], env: dict[str, str] | None = None) -> list[str]:
        """Run every argv at once (``env``: its PG* and REDIS* variables); their outputs."""
        if env:
            prefix = ["env", *(f"{k}={v}" for k, v in env.items() if k.startswith(("PG", "REDIS")))]
            argvs = [prefix + argv for argv in argvs]
        self.proc.stdin.write(json.dumps(argvs) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if answer["rc"] != 0:
            raise RuntimeError(f"{' '.join(argvs[0])} (of {len(argvs)}) exited {answer['rc']}: {answer['err']}")
        return answer["outs"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def run_load(launcher: Launcher, kind: str, port: int, first: int, count: int, rate: float, depth: int = 1,
             clients: int = 1) -> dict:  # fmt: skip
    """This bench's own paced (``rate`` > 0) or unpaced client(s), run by the launcher: ``clients``
    side by side, each with its share of the request numbers ``first`` .. ``first + count``; their
    summary (counts added up)."""
    share = -(-count // clients)
    argvs = [[sys.executable, __file__, "--load", kind, "--port", str(port), "--first", str(first + k * share),
              "--count", str(min(share, count - k * share)), "--rate", str(rate / clients), "--depth", str(depth)]
             for k in range(clients)]  # fmt: skip
    summaries = [json.loads(out) for out in launcher.run_side_by_side(argvs)]
    total = {key: sum(s[key] for s in summaries) for key in ("issued", "ok", "failed")}
    return {**total, "elapsed": max(s["elapsed"] for s in summaries),
            "max_late_ms": max(s["max_late_ms"] for s in summaries)}  # fmt: skip


# -- the load clients ----------------------------------------------------------------------------
class Pacer:
    """Request ``i`` (counted from 0) is due at start + i / rate; rate 0: at once."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.max_late = 0.0

    def wait(self, i: int) -> None:
        if not self.rate:
            return
        due = self.start + i / self.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            self.max_late = max(self.max_late, now - due)


def load_redis(port: int, first: int, count: int, rate: float, depth: int) -> dict:
    """``GET b:<i>`` for each i, ``depth`` per round trip, over one connection; a reply must be i."""
    sock = socket.create_connection(("127.0.0.1", port))
    pacer, buf, ok, wrong = Pacer(rate), b"", 0, 0
    for start in range(first, first + count, depth):
        batch = range(start, min(start + depth, first + count))
        pacer.wait(start - first)
        sock.sendall(b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\nb:%d\r\n" % (len(b"b:%d" % i), i) for i in batch))
        for i in batch:
            while True:  # one bulk string reply: $<len>\r\n<data>\r\n
                head = buf.find(b"\r\n")
                if head > 0:
                    size = int(buf[1:head])
                    end = head + 2 + max(size, 0) + (2 if size >= 0 else 0)
                    if len(buf) >= end:
                        value, buf = (buf[head + 2 : head + 2 + size] if size >= 0 else None), buf[end:]
                        break
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("redis closed the connection")
                buf += chunk
            if value == b"%d" % i:
                ok += 1
            else:
                wrong += 1
    sock.close()
    return {"issued": count, "ok": ok, "failed": wrong, "elapsed": time.monotonic() - pacer.start,
            "max_late_ms": 1000 * pacer.max_late}  # fmt: skip


def load_dns(port: int, first: int, count: int, rate: float, depth: int) -> dict:
    """``q<i>.test`` A for each i, ``depth`` in flight, on one unconnected UDP socket; an answer
    must be dns_addr(i); a query unanswered for 2 s is a timeout."""
    import dns.message
    import dns.rcode

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    server = ("127.0.0.1", port)
    pacer, ok, wrong, timeouts = Pacer(rate), 0, 0, 0
    for start in range(first, first + count, depth):
        pacer.wait(start - first)
        waiting = {}
        for i in range(start, min(start + depth, first + count)):
            query = dns.message.make_query(f"q{i}.test", "A")
            while query.id in waiting:  # ids are random: one per query in flight, or answers are ambiguous
                query = dns.message.make_query(f"q{i}.test", "A")
            waiting[query.id] = (i, query)
            sock.sendto(query.to_wire(), server)
        deadline = time.monotonic() + 2.0
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            wire, _ = sock.recvfrom(65535)
            reply = dns.message.from_wire(wire)
            i, query = waiting.pop(reply.id, (None, None))
            if query is None:
                continue
            addrs = [r.address for rrset in reply.answer for r in rrset if rrset.rdtype == 1]
            if reply.rcode() == dns.rcode.NOERROR and addrs == [dns_addr(i)]:
                ok += 1
            else:
                wrong += 1
        timeouts += len(waiting)
    sock.close()
    return {"issued": count, "ok": ok, "failed": wrong + timeouts, "timeouts": timeouts,
            "elapsed": time.monotonic() - pacer.start, "max_late_ms": 1000 * pacer.max_late}  # fmt: skip


def load_mysql(port: int, first: int, count: int, rate: float, depth: int) -> dict:
    """``SELECT seq FROM seq_1_to_<K> /* i=<i> */`` for each i over one connection; K rows back."""
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=port, user="root", database="test")
    pacer, ok, wrong = Pacer(rate), 0, 0
    with conn.cursor() as cursor:
        for i in range(first, first + count):
            pacer.wait(i - first)
            size = i % MYSQL_SIZES + 1
            cursor.execute(f"SELECT seq FROM seq_1_to_{size} /* i={i} */")
            if len(cursor.fetchall()) == size:
                ok += 1
            else:
                wrong += 1
    conn.close()
    return {"issued": count, "ok": ok, "failed": wrong, "elapsed": time.monotonic() - pacer.start,
            "max_late_ms": 1000 * pacer.max_late}  # fmt: skip


LOADS = {"redis": load_redis, "dns": load_dns, "mysql": load_mysql}


# -- checking rows -------------------------------------------------------------------------------
PGSQL_SELECT = re.compile(r"SELECT abalance FROM pgbench_accounts WHERE aid = (\d+);?")
MYSQL_QUERY = re.compile(r"SELECT seq FROM seq_1_to_(\d+) /\* i=(\d+) \*/")


RIGHT, UNANSWERED, MISPAIRED = "right", "unanswered", "mispaired"


def row_key(protocol: str, row: dict) -> tuple[int | None, str | None]:
    """(the request's number, RIGHT when the row's response is the one its request asks for,
    UNANSWERED when it has none, else MISPAIRED); (None, None) for a row of no request of the
    bench (a handshake, pgbench's set-up queries)."""
    if protocol == "pgsql":
        found = PGSQL_SELECT.fullmatch(row["req"] or "")
        if row["req_cmd"] != "Query" or not found:
            return None, None
        if not row["resp"]:
            return int(found.group(1)), UNANSWERED
        return int(found.group(1)), RIGHT if row["resp"] == f"abalance\n{found.group(1)}\nSELECT 1" else MISPAIRED
    if protocol == "redis":
        found = re.fullmatch(r'\{"key":"b:(\d+)"\}', row["req_args"] or "")  # Pixie's form for GET
        if row["req_cmd"] != "GET" or not found:
            return None, None
        if not row["resp"]:
            return int(found.group(1)), UNANSWERED
        return int(found.group(1)), RIGHT if row["resp"] == found.group(1) else MISPAIRED
    if protocol == "dns":
        try:
            names = [q["name"] for q in json.loads(row["req_body"])["queries"]]
        except (ValueError, KeyError, TypeError):
            return None, None
        found = re.fullmatch(r"q(\d+)\.test", names[0]) if len(names) == 1 else None
        if not found:
            return None, None
        i = int(found.group(1))
        if not row["resp_header"]:
            return i, UNANSWERED
        answers = json.loads(row["resp_body"] or '{"answers": []}')["answers"]
        same_id = json.loads(row["resp_header"])["txid"] == json.loads(row["req_header"])["txid"]
        good = same_id and answers == [{"name": f"q{i}.test", "type": "A", "addr": dns_addr(i)}]
        return i, RIGHT if good else MISPAIRED
    found = MYSQL_QUERY.fullmatch(row["req_body"] or "")
    if row["req_cmd"] != 3 or not found:
        return None, None
    if not row["resp_body"] and row["resp_status"] in (0, 1):
        return int(found.group(2)), UNANSWERED
    return int(found.group(2)), RIGHT if row["resp_body"] == f"Resultset rows = {found.group(1)}" else MISPAIRED


@dataclass
class RowCheck:
    """Rows of one role, by request number and verdict (rows with latency 0 but an answer are
    counted mispaired: a pairing that cannot be right)."""

    verdicts: dict[str, Counter]
    examples: list

    @classmethod
    def of(cls, protocol: str, rows: list[dict], role: int, numbers: range | None) -> RowCheck:
        verdicts: dict[str, Counter] = {RIGHT: Counter(), UNANSWERED: Counter(), MISPAIRED: Counter()}
        examples = []
        for row in rows:
            if row["trace_role"] != role:
                continue
            i, verdict = row_key(protocol, row)
            if i is None or (numbers is not None and i not in numbers):
                continue
            if verdict == RIGHT and not row["latency"] > 0:
                verdict = MISPAIRED
            verdicts[verdict][i] += 1
            if verdict == MISPAIRED and len(examples) < 3:
                examples.append({k: v for k, v in row.items() if k != "trace_role"})
        return cls(verdicts, examples)


# -- one protocol --------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    issued: int  # transactions the load generator issued and got an answer to
    elapsed: float
    before: dict  # agent snapshots
    after: dict
    numbers: range | None  # request numbers of this phase (None: not numbered, pgbench)
    note: str = ""


def moved(before: dict, after: dict, key: str) -> dict[str, int]:
    return {k: v - before[key].get(k, 0) for k, v in after[key].items() if v - before[key].get(k, 0)}


@contextlib.contextmanager
def server_for(protocol: str, work: str, keys: int):
    """The protocol's server, ready for the load: (its pid, its port, extra)."""
    if protocol == "pgsql":
        from pxq.testing.servers.postgres import PG_BIN, postgres_server

        with postgres_server() as server:
            base = [str(PG_BIN / "pgbench"), "-h", server.host, "-p", str(server.port), "-U", "postgres"]
            subprocess.run([*base, "-i", "-s", "1", "-q", "postgres"], env=server.env(), check=True,
                           capture_output=True)  # fmt: skip
            # Each account's balance its own id: a row's response names its request's aid.
            update = ["-c", "UPDATE pgbench_accounts SET abalance = aid", "-c", "VACUUM"]
            subprocess.run([*server.psql_args(), "-q", *update], env=server.env(), check=True, capture_output=True)
            yield server.pid, server.port, {"pgbench": base, "env": server.env()}
    elif protocol == "redis":
        import redis as redis_py

        from pxq.testing.servers.redis import redis_server

        with redis_server() as server:
            client = redis_py.Redis(host=server.host, port=server.port)
            for start in range(0, keys, 10_000):
                client.mset({f"b:{i}": i for i in range(start, min(start + 10_000, keys))})
            client.close()
            yield server.pid, server.port, {}
    elif protocol == "dns":
        from pxq.testing.servers.dnsmasq import DnsmasqServer

        hosts = Path(work) / "bench.hosts"
        hosts.write_text("".join(f"{dns_addr(i)} q{i}.test\n" for i in range(keys)))

        class BenchDnsmasq(DnsmasqServer):
            def config(self) -> str:  # the zone of the tests, plus one name per request
                return super().config() + f"addn-hosts={hosts}\ncache-size=0\n"

        with BenchDnsmasq() as server:
            yield server.pid, server.port, {}
    else:
        from pxq.testing.servers.mariadb import mariadb_server

        with mariadb_server() as server:
            server.sql("SELECT seq FROM seq_1_to_2;", database="test")  # the SEQUENCE engine is there
            yield server.pid, server.port, {}


def bench_protocol(protocol: str, plan: dict, work: str) -> dict:
    rate, seconds, burst = plan["rate"], plan["seconds"], plan["burst"]
    count = int(rate * seconds)
    print(f"\n== {protocol}: {plan['describe']} ({load()})", flush=True)
    out = f"{work}/{protocol}.parquet"
    phases: list[Phase] = []
    with server_for(protocol, work, count + burst + PIPELINE) as (server_pid, port, extra):
        launcher = Launcher()
        try:
            agent = ProtocolAgent.start_for(protocol, [server_pid, launcher.pid], out)
            try:
                print(f"  agent ready: RSS {agent.ready['rss'] / 1e6:.0f} MB, start-up peak "
                      f"{agent.ready['startup_peak'] / 1e6:.0f} MB", flush=True)  # fmt: skip
                before = agent.snapshot()
                phases.append(paced_phase(protocol, launcher, port, extra, rate, seconds, count, before, agent))
                phases.extend(overload_phases(protocol, launcher, port, extra, count, burst, plan, agent, phases))
                final = agent.finish()
            finally:
                if agent.proc.poll() is None:
                    agent.kill()
        finally:
            launcher.close()
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    return report_protocol(protocol, phases, final, rows)


def settle(agent: ProtocolAgent) -> dict:
    """A snapshot once the agent has caught up: its row count unchanged over a second."""
    time.sleep(1.2)  # rows move about every second
    snap = agent.snapshot()
    for _ in range(30):
        time.sleep(1.1)
        again = agent.snapshot()
        if again["rows"] == snap["rows"] and again["events"] == snap["events"]:
            return again
        snap = again
    return snap


def paced_phase(protocol, launcher, port, extra, rate, seconds, count, before, agent) -> Phase:
    if protocol == "pgsql":
        t0 = time.monotonic()
        text = launcher.run([*extra["pgbench"], "-S", "-n", "-c", "2", "-j", "1", "--rate", str(rate), "-T",
                             str(seconds), "postgres"], env=extra["env"])  # fmt: skip
        elapsed = time.monotonic() - t0
        issued = int(re.search(r"number of transactions actually processed: (\d+)", text).group(1))
        lag = re.search(r"rate limit schedule lag: avg ([\d.]+) \(max ([\d.]+)\) ms", text)
        note = f"pgbench: {issued:,} transactions" + (f", schedule lag max {lag.group(2)} ms" if lag else "")
        after = settle(agent)
        return Phase(f"--rate {rate}", issued, elapsed, before, after, None, note)
    summary = run_load(launcher, protocol, port, 0, count, rate)
    after = settle(agent)
    note = (f"client: {summary['ok']:,} answered as expected of {summary['issued']:,} in {summary['elapsed']:.1f}s, "
            f"{summary['failed']} failed, worst lateness {summary['max_late_ms']:.0f} ms")  # fmt: skip
    return Phase(f"{rate:,}/s", summary["ok"], summary["elapsed"], before, after, range(0, count), note)


def overload_phases(protocol, launcher, port, extra, count, burst, plan, agent, phases) -> list[Phase]:
    out = []
    before = phases[-1].after
    if protocol == "pgsql":
        t0 = time.monotonic()
        text = launcher.run([*extra["pgbench"], "-S", "-n", "-c", "4", "-j", "2", "-T", str(plan["burst_seconds"]),
                             "postgres"], env=extra["env"])  # fmt: skip
        elapsed = time.monotonic() - t0
        issued = int(re.search(r"number of transactions actually processed: (\d+)", text).group(1))
        after = settle(agent)
        out.append(Phase("unpaced -c 4", issued, elapsed, before, after, None, f"pgbench: {issued:,} transactions"))
        return out
    depth, clients = (1, 3) if protocol == "mysql" else (PIPELINE, 2)
    summary = run_load(launcher, protocol, port, count, burst, 0, depth, clients)
    after = settle(agent)
    note = (
        f"client: {summary['ok']:,} of {summary['issued']:,} in {summary['elapsed']:.1f}s, {summary['failed']} failed"
    )
    label = f"unpaced, {clients} clients" + (f" {depth} deep" if depth > 1 else "")
    out.append(Phase(label, summary["ok"], summary["elapsed"], before, after, range(count, count + burst), note))
    if protocol == "redis":
        n = plan["benchmark_n"]
        before = after
        t0 = time.monotonic()
        launcher.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "get", "-n", str(n), "-P",
                      str(PIPELINE), "-c", "4", "-q"])  # fmt: skip
        elapsed = time.monotonic() - t0
        after = settle(agent)
        out.append(Phase(f"redis-benchmark -P {PIPELINE} -c 4", n, elapsed, before, after, None,
                         f"redis-benchmark: {n:,} GETs"))  # fmt: skip
    return out


def count_rows(protocol: str, phase: Phase, rows: list[dict], role: int) -> dict[str, int]:
    """The phase's rows of one role: right (one right row per request), unanswered, mispaired,
    duplicated (a second row for the same request)."""
    if protocol == "redis" and phase.name.startswith("redis-benchmark"):
        got = [r for r in rows if r["trace_role"] == role and r["req_cmd"] == "GET"
               and r["req_args"] == '{"key":"key:__rand_int__"}']  # fmt: skip
        right = sum(1 for r in got if r["resp"] == "<NULL>" and r["latency"] > 0)  # the key does not exist
        unanswered = sum(1 for r in got if not r["resp"])
        return {RIGHT: right, UNANSWERED: unanswered, MISPAIRED: len(got) - right - unanswered, "duplicated": 0,
                "examples": []}  # fmt: skip
    check = RowCheck.of(protocol, rows, role, phase.numbers)
    v = check.verdicts
    out = {UNANSWERED: sum(v[UNANSWERED].values()), MISPAIRED: sum(v[MISPAIRED].values()), "examples": check.examples}
    if phase.numbers is None:  # pgbench: requests named by a random aid, not one to one
        return {**out, RIGHT: sum(v[RIGHT].values()), "duplicated": 0}
    return {**out, RIGHT: len(v[RIGHT]), "duplicated": sum(n - 1 for n in v[RIGHT].values())}


def report_protocol(protocol: str, phases: list[Phase], final: dict, rows: list[dict]) -> dict:
    result = {"protocol": protocol, "phases": []}
    # pgbench's phases are told apart by time only: rows in order of the agent's counts.
    pg_rows = None
    if protocol == "pgsql":
        pg_rows, start = [], 0
        for phase in phases:
            n = phase.after["rows"] - phase.before["rows"]
            pg_rows.append(rows[start : start + n])
            start += n
    for k, phase in enumerate(phases):
        phase_rows = pg_rows[k] if pg_rows is not None else rows
        agent_rows = phase.after["rows"] - phase.before["rows"]
        cpu = phase.after["cpu"] - phase.before["cpu"]
        drops = moved(phase.before, phase.after, "drops")
        errors = moved(phase.before, phase.after, "errors")
        print(f"  {phase.name}: {phase.note}")
        shares, wrong_total = {}, 0
        for role, role_name in ((CLIENT, "client"), (SERVER, "server")):
            counts = count_rows(protocol, phase, phase_rows, role)
            shares[role_name] = counts[RIGHT] / phase.issued if phase.issued else 0.0
            wrong_total += counts[MISPAIRED] + counts["duplicated"]
            print(f"    {role_name} rows right: {counts[RIGHT]:,}/{phase.issued:,} = {100 * shares[role_name]:.3f} %"
                  f"; unanswered {counts[UNANSWERED]}, mispaired {counts[MISPAIRED]}, "
                  f"duplicated {counts['duplicated']}")  # fmt: skip
            for example in counts["examples"]:
                print(f"      e.g. {example}")
        print(f"    agent: {agent_rows:,} rows, {phase.after['events'] - phase.before['events']:,} events, "
              f"{cpu:.2f} CPU-s; drops {drops or 'none'}; stitcher reasons {errors or 'none'}")  # fmt: skip
        per_row = cpu / agent_rows * 10_000 if agent_rows else float("inf")
        per_tx = cpu / phase.issued * 10_000 if phase.issued else float("inf")
        if k == 0:
            print(
                f"    agent CPU per 10,000: {per_row:.3f} s per row captured (one end's transaction), "
                f"{per_tx:.3f} s per transaction issued (both ends); {100 * cpu / phase.elapsed:.0f} % of one CPU"
            )
        result["phases"].append({"name": phase.name, "issued": phase.issued, "shares": shares, "wrong": wrong_total,
                                 "cpu_10k_row": per_row, "cpu_10k_tx": per_tx, "drops": drops, "errors": errors,
                                 "rows": agent_rows, "elapsed": phase.elapsed})  # fmt: skip
    result["hwm_mb"] = phases[0].after["hwm"] / 1e6  # the paced phase's peak: a steady capture
    result["overall_hwm_mb"] = final["hwm"] / 1e6  # with the overload's backlog
    result["startup_mb"] = final["startup_peak"] / 1e6
    result["total_drops"] = {k: v for k, v in final["drops"].items() if v}
    result["total_errors"] = final["errors"]
    print(f"  agent RSS: peak {result['hwm_mb']:.0f} MB through the paced phase, {result['overall_hwm_mb']:.0f} MB "
          f"through the overload too, start-up peak {result['startup_mb']:.0f} MB"
          f"; drops at the end {result['total_drops'] or 'none'}, stitcher reasons {final['errors'] or 'none'}"
          f" ({load()})")  # fmt: skip
    return result


# -- main ----------------------------------------------------------------------------------------
def plans(quick: bool) -> dict[str, dict]:
    """Per protocol: the paced rate (transactions/s, both ends traced) and seconds, the unpaced
    requests (pgbench: seconds), redis-benchmark's GETs."""
    seconds = 5 if quick else 15
    return {
        "pgsql": {"rate": 500 if quick else 1000, "seconds": seconds, "burst": 0, "burst_seconds": 3 if quick else 8,
                  "describe": "pgbench -S (select-only) -c 2 paced, then unpaced -c 4"},
        "redis": {"rate": 1000 if quick else 2000, "seconds": seconds, "burst": 40_000 if quick else 200_000,
                  "benchmark_n": 100_000 if quick else 300_000,
                  "describe": "a paced RESP client (GET), then 2 unpaced pipelined, then redis-benchmark"},
        "dns": {"rate": 500 if quick else 1000, "seconds": seconds, "burst": 10_000 if quick else 60_000,
                "describe": "a paced dnspython client over UDP, then 2 unpaced with 16 in flight"},
        "mysql": {"rate": 500 if quick else 1000, "seconds": seconds, "burst": 6_000 if quick else 45_000,
                  "describe": "a paced PyMySQL client, then 3 unpaced"},
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--only", help="comma-separated protocols (pgsql, redis, dns, mysql)")
    parser.add_argument("--agent-child", help=argparse.SUPPRESS)
    parser.add_argument("--launcher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--pids", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, default=1, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.agent_child:
        return agent_child(opts.agent_child, [int(p) for p in opts.pids.split(",")], opts.out)
    if opts.launcher:
        return launcher_child()
    if opts.load:
        print(json.dumps(LOADS[opts.load](opts.port, opts.first, opts.count, opts.rate, opts.depth)))
        return 0
    if os.geteuid() != 0:
        print("needs root (eBPF)", file=sys.stderr)
        return 2
    chosen = opts.only.split(",") if opts.only else list(TABLES)
    unknown = [p for p in chosen if p not in TABLES]
    if unknown:
        parser.error(f"unknown protocol {', '.join(unknown)}")
    print(f"pxq protocol bench{' (--quick)' if opts.quick else ''}: {os.cpu_count()} CPUs, {load()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="pxq-bench-protocols-") as work:
        for protocol in chosen:
            results.append(bench_protocol(protocol, plans(opts.quick)[protocol], work))
    return summary(results)


def summary(results: list[dict]) -> int:
    print(f"\n== summary ({load()})")
    ok = True

    def line(name: str, value: str, good: bool | None) -> None:
        nonlocal ok
        ok = ok and good is not False
        print(f"  {name:46} {value}{'' if good is None else ('  ok' if good else '  MISSED')}")

    for r in results:
        paced, *over = r["phases"]
        low = min(paced["shares"].values())
        line(f"{r['protocol']} completeness at {paced['name']}",
             f"client {100 * paced['shares']['client']:.3f} %, server {100 * paced['shares']['server']:.3f} % "
             f"of {paced['issued']:,} (target >= {100 * TARGET_COMPLETE:.1f} %)", low >= TARGET_COMPLETE)  # fmt: skip
        line(f"{r['protocol']} agent CPU per 10,000 transactions",
             f"{paced['cpu_10k_row']:.3f} s per row, {paced['cpu_10k_tx']:.3f} s per issued (both ends) "
             f"(target <= {TARGET_CPU_PER_10K} per row)", paced["cpu_10k_row"] <= TARGET_CPU_PER_10K)  # fmt: skip
        line(f"{r['protocol']} agent RSS peak", f"{r['hwm_mb']:.0f} MB paced capture ({r['overall_hwm_mb']:.0f} MB "
             f"with the overload), {r['startup_mb']:.0f} MB start-up "
             f"(target <= {TARGET_RSS_MB} in every phase)",
             max(r["hwm_mb"], r["overall_hwm_mb"], r["startup_mb"]) <= TARGET_RSS_MB)  # fmt: skip
        for phase in over:
            lost = {**phase["drops"], **{f"stitcher:{k}": v for k, v in phase["errors"].items()}}
            line(f"{r['protocol']} {phase['name']}",
                 f"{phase['issued'] / phase['elapsed']:,.0f}/s; client {100 * phase['shares']['client']:.1f} %, "
                 f"server {100 * phase['shares']['server']:.1f} %; {phase['cpu_10k_row']:.3f} CPU-s per 10,000 rows;"
                 f" losses {lost or 'none'}", None)  # fmt: skip
        wrong = sum(p["wrong"] for p in r["phases"])
        line(f"{r['protocol']} rows paired wrongly (all phases)", f"{wrong} (must be 0)", wrong == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
