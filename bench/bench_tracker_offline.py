"""The connection tracker's cost per HTTP transaction, offline, on recorded kernel events.

The agent's "tracker" part (ConnTracker.handle_batch, with the C path ``http1_batch`` of
pxq/agent/_native.c) is measured live by ``bench_socket_tracer.py --profile``, which needs a quiet
machine. This bench replays the same traffic's events instead, so two trees compare side by side
on a shared machine:

* ``record`` (root, once): nginx (:func:`pxq.testing.workload.nginx_server`) serving the paced C
  client of bench_socket_tracer.py (GET of hello.txt, index.html and big.json, HEAD every 10th
  request, keep-alive, 16 connections), traced by a :class:`SocketTracer` with pids = nginx's; every
  event the ring buffer gave (SockEvent tuples, in order) goes to a Parquet file, one row per event.
  ``bench/data/tracker_nginx_events.parquet`` is such a recording (10,000 requests at 2,000 req/s,
  December 2026), the default of ``replay``.
* ``replay``: those events through a fresh ConnTracker per round, as the agent takes them
  (handle_batch per batch of ``--batch`` events, end_batch, rows drained with take_tables), in a
  child process per tree (``--tree``, default this checkout; ``--tree`` again for another, e.g. a
  git worktree of main with its own .so from tools/build_native.py). It prints microseconds per
  transaction (the best of ``--rounds`` rounds, trees alternating) and, with ``--callgrind``,
  instructions per transaction under valgrind's callgrind (counted in handle_batch and end_batch
  only, after a warm-up; stable on a noisy machine). It also prints which
  events the C path left to Python and why (``--why``), and checks that every tree produced the
  same rows.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_EVENTS = HERE / "data" / "tracker_nginx_events.parquet"
# The agent's batches at 5,000 req/s: two events per transaction, a batch every 250 ms
# (QUIET_BATCH_INTERVAL_MS) when the ring buffer stays below its quiet share.
DEFAULT_BATCH = 2500


# -- record ---------------------------------------------------------------------------------------
def record(out: Path, rate: int, count: int) -> int:
    sys.path.insert(0, str(HERE))
    import bench_socket_tracer as bst

    from pxq.agent.socket_tracer import QUIET_BATCH_INTERVAL_MS, SocketTracer
    from pxq.testing.ports import free_port
    from pxq.testing.workload import nginx_server

    batches: list[list[tuple]] = []
    with tempfile.TemporaryDirectory(prefix="pxq-tracker-") as work:
        client = bst.build_client(work)
        with nginx_server(free_port()) as nginx:
            pids = bst.nginx_pids(nginx)
            bst.paced(client, nginx.port, rate, rate // 2, 16)  # warm-up, untraced: nginx's caches
            tracer = SocketTracer(pids=set(pids), protocols=("http",))
            tracer.quiet_batch_interval_ms = QUIET_BATCH_INTERVAL_MS  # as the agent's collector
            tracker = tracer._tracker
            handle_batch = tracker.handle_batch

            def recording(events):
                batch = list(events)
                batches.append([tuple(ev) for ev in batch])
                handle_batch(batch)

            tracker.handle_batch = recording
            done = threading.Event()
            result = {}

            def run_client():
                try:
                    result["run"] = bst.paced(client, nginx.port, rate, count, 16)
                finally:
                    done.set()

            with tracer:
                thread = threading.Thread(target=run_client)
                thread.start()
                while not done.is_set():
                    tracer.poll(100)
                thread.join()
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    tracer.poll(100)
                rows = tracer.drain()
    events = [ev for batch in batches for ev in batch]
    save_events(out, events, {"rate": rate, "count": count, "pids": pids, "batches": len(batches)})
    print(f"client: {result.get('run')}; {len(events)} events in {len(batches)} batches, {rows.num_rows} rows -> {out}")
    return 0


def save_events(out: Path, events: list[tuple], about: dict) -> None:
    """The events as a Parquet table: a column per SockEvent field, a row per event; ``about``
    (how they were recorded) in its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pxq.agent.conn_tracker import SockEvent

    columns = {}
    for i, name in enumerate(SockEvent._fields):
        values = [ev[i] for ev in events]
        columns[name] = pa.array(values, pa.binary() if isinstance(values[0], bytes) else pa.int64())
    table = pa.table(columns).replace_schema_metadata({"pxq_recording": json.dumps(about)})
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd", compression_level=19)


# -- replay ---------------------------------------------------------------------------------------
def load_events(path: Path) -> list:
    """The SockEvents save_events wrote, in order (ints and bytes objects, as the ring walk makes)."""
    import pyarrow.parquet as pq

    from pxq.agent.conn_tracker import SockEvent

    table = pq.read_table(path)
    columns = [table.column(name).to_pylist() for name in SockEvent._fields]
    return [SockEvent(*fields) for fields in zip(*columns)]


def replay_once(events: list, batch: int, why: Counter | None = None, toggle=None):
    """One replay through a fresh tracker: (seconds in handle_batch and end_batch, transactions,
    rows as a list of tables, seconds in take_tables). ``toggle``: called before and after each
    batch's handle_batch and end_batch (callgrind's collection switched on, then off)."""
    from pxq.agent.conn_tracker import ConnTracker, SockEvent
    from pxq.agent.protocols.registry import PROTOCOLS

    tracker = ConnTracker(protocols=[PROTOCOLS["http"]], clock_offset_ns=0)
    if why is not None:
        watch_c_path(tracker, why)
    tables = []
    took = taking = 0.0
    remake = tuple.__new__
    for at in range(0, len(events), batch):
        # new event tuples per batch, as the ring walk makes them: the garbage collector sees
        # a batch's events young, as in the agent, not the whole recording every time
        chunk = [remake(SockEvent, ev) for ev in events[at : at + batch]]
        if toggle is not None:
            toggle()
        t0 = time.perf_counter()
        tracker.handle_batch(chunk)
        tracker.end_batch()
        t1 = time.perf_counter()
        if toggle is not None:
            toggle()
        tables.append(tracker.take_tables()["http_events"])
        took += t1 - t0
        taking += time.perf_counter() - t1
    tracker.close_all()
    tables.append(tracker.take_tables()["http_events"])
    return took, tracker.counts["transactions"], tables, taking


def watch_c_path(tracker, why: Counter) -> None:
    """Count the events http1_batch stops at, by a reason read off the event and its connection."""
    from pxq.agent import conn_tracker as ct

    batch_fn = tracker._http1_batch

    def watched(events, start, conns, rows, offset):
        result = batch_fn(events, start, conns, rows, offset)
        stop = result[0]
        if stop < len(events):
            why[stop_reason(events[stop], conns, rows, ct)] += 1
        return result

    tracker._http1_batch = watched


def stop_reason(ev, conns, rows, ct) -> str:
    if ev.kind != ct.EV_DATA:
        return {ct.EV_OPEN: "OPEN", ct.EV_CLOSE: "CLOSE", ct.EV_PROC_EXIT: "PROC_EXIT",
                ct.EV_PROC_INFO: "PROC_INFO"}.get(ev.kind, f"kind {ev.kind}")  # fmt: skip
    side = "request" if ev.direction == ct.INGRESS else "response"  # nginx is the server
    if ev.flags:
        return f"{side}: flags {ev.flags:#x}" + (" (filler)" if ev.flags & ct.F_FILLER else "")
    conn = conns.get((ev.pid, ev.fd, ev.gen))
    if conn is None:
        return f"{side}: connection not known yet"
    if conn.state != ct.PARSING:
        return f"{side}: connection {conn.state}"
    if conn.stream.expect[ev.direction] != ev.pos or conn.stream.held_bytes:
        return f"{side}: out of order or held"
    st = conn.stitcher
    if conn.restarted and conn.held is not None:
        return f"{side}: on probation"
    data = ev.data
    if side == "request":
        first = data.split(b" ", 1)[0]
        if not data.endswith(b"\r\n\r\n"):
            return "request: not whole messages"
        return f"request: {first.decode(errors='replace')}"
    requests = list(getattr(st, "_requests", ()))
    if requests and requests[0].method == b"HEAD":
        return "response: to HEAD"
    if not requests:
        return "response: no request waiting"
    if not conn.has_tuple and not conn.addr_checked:
        return "response: first rows (addresses)"
    head_end = data.find(b"\r\n\r\n")
    raw = data[data.find(b"\r\n") + 2 : head_end + 2]
    if head_end > 0 and raw not in rows._raw_blocks:
        return "response: a header block new to the rows (its JSON made in Python; nginx's Date changes each second)"
    return f"response: other ({data[:12]!r}, {len(data)} bytes)"


def child(tree: str, events_path: Path, batch: int, rounds: int, mode: str, rows_out: str | None) -> int:
    """Runs inside the tree's interpreter (PYTHONPATH=tree). ``mode``: time, why, callgrind (a
    warm-up round, then one replay inside the function callgrind counts in)."""
    events = load_events(events_path)
    gc.freeze()  # the recording is no agent's: kept out of the collector's generations
    if mode == "callgrind":
        import ctypes

        replay_once(events[:batch], batch)  # warm-up: imports, caches
        # callgrind counts between the toggles only (--collect-atstart=no): the tracker's calls,
        # not the interpreter's start, the imports, the loading of the events or take_tables
        toggle = ctypes.CDLL(os.environ["PXQ_TOGGLE_LIB"]).pxq_toggle_collect
        transactions = replay_once(events, batch, toggle=toggle)[1]
        print(json.dumps({"events": len(events), "transactions": transactions}))
        return 0
    why: Counter | None = Counter() if mode == "why" else None
    replay_once(events[:batch], batch)  # warm-up: the module's caches, as in a running agent
    best, best_take, transactions, tables = None, None, 0, []
    for _ in range(rounds if mode == "time" else 1):
        took, transactions, tables, taking = replay_once(events, batch, why)
        best = took if best is None else min(best, took)
        best_take = taking if best_take is None else min(best_take, taking)
    if rows_out:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables([t for t in tables if t.num_rows])
        pq.write_table(table, rows_out)
    print(json.dumps({"seconds": best, "take_seconds": best_take, "transactions": transactions, "events": len(events),
                      "why": dict(why) if why is not None else None}))  # fmt: skip
    return 0


def run_child(tree: str, args: list[str], valgrind: list[str] | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": tree, "PYTHONHASHSEED": "0"}
    cmd = [*(valgrind or []), sys.executable, str(Path(__file__).resolve()), "--child", tree, *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# callgrind's client request (valgrind's header), callable from Python through ctypes
TOGGLE_C = "#include <valgrind/callgrind.h>\nvoid pxq_toggle_collect(void) { CALLGRIND_TOGGLE_COLLECT; }\n"


def callgrind_instructions(tree: str, args: list[str]) -> int:
    """Instructions of one replay (after a warm-up) in ``tree``, counted by callgrind."""
    with tempfile.TemporaryDirectory(prefix="pxq-callgrind-") as work:
        Path(f"{work}/toggle.c").write_text(TOGGLE_C)
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", f"{work}/toggle.so", f"{work}/toggle.c"], check=True)
        os.environ["PXQ_TOGGLE_LIB"] = f"{work}/toggle.so"
        out = f"{work}/callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
                    "--collect-atstart=no"]  # fmt: skip
        run_child(tree, [*args, "--mode", "callgrind"], valgrind)
        text = Path(out).read_text()
    m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
    if m is None:
        raise RuntimeError("no instruction count in callgrind's output")
    return int(m.group(1))


def replay(trees: list[str], events_path: Path, batch: int, rounds: int, callgrind: bool, why: bool) -> int:
    names = [Path(t).name for t in trees]
    common = [str(events_path), "--batch", str(batch), "--rounds", "1"]
    print(f"events {events_path}, batches of {batch}, trees: {', '.join(trees)}")
    with tempfile.TemporaryDirectory(prefix="pxq-replay-") as work:
        firsts = [run_child(t, [*common, "--mode", "time", "--rows-out", f"{work}/{i}.parquet"])
                  for i, t in enumerate(trees)]  # fmt: skip
        import pyarrow.parquet as pq

        tables = [pq.read_table(f"{work}/{i}.parquet") for i in range(len(trees))]
        for name, table in zip(names[1:], tables[1:]):
            same = table.equals(tables[0])
            print(f"rows of {name} {'equal' if same else 'DIFFER from'} {names[0]}'s ({table.num_rows} rows)")
    transactions = firsts[0]["transactions"]
    print(f"{firsts[0]['events']} events, {transactions} transactions")
    seconds: dict[str, list[float]] = {n: [] for n in names}
    take_seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = list(zip(trees, names)) if r % 2 == 0 else list(zip(trees, names))[::-1]
        for tree, name in order:
            got = run_child(tree, [*common, "--mode", "time"])
            seconds[name].append(got["seconds"])
            take_seconds[name].append(got["take_seconds"])
    print("  the tracker (handle_batch and end_batch), us per transaction; beside it, rows to Arrow (take_tables):")
    for name in names:
        best = min(seconds[name])
        print(f"  {name}: {best / transactions * 1e6:.3f} us per transaction (best of {rounds}; "
              f"all {', '.join(f'{s / transactions * 1e6:.2f}' for s in seconds[name])}); "
              f"take_tables {min(take_seconds[name]) / transactions * 1e6:.3f}")  # fmt: skip
    if len(names) > 1:
        print(f"  {names[1]} / {names[0]}: {min(seconds[names[1]]) / min(seconds[names[0]]):.3f}")
    if callgrind:
        counts = {}
        for tree, name in zip(trees, names):
            total = callgrind_instructions(tree, common)
            counts[name] = total / transactions
            print(f"  {name}: {counts[name]:,.0f} instructions per transaction (callgrind: {total:,} in the replay)")
        if len(names) > 1:
            print(f"  {names[1]} / {names[0]}: {counts[names[1]] / counts[names[0]]:.3f}")
    if why:
        for tree, name in zip(trees, names):
            got = run_child(tree, [*common, "--mode", "why"])["why"]
            print(f"  events the C path left to Python ({name}), by the event at which it stopped:")
            for reason, n in sorted(got.items(), key=lambda kv: -kv[1]):
                print(f"    {n:7d} {reason}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    rec = sub.add_parser("record", help="record nginx's events (root)")
    rec.add_argument("--out", type=Path, default=DEFAULT_EVENTS)
    rec.add_argument("--rate", type=int, default=2000, help="requests/s of the paced client")
    rec.add_argument("--count", type=int, default=10_000, help="requests")
    rep = sub.add_parser("replay", help="replay recorded events through each tree's tracker")
    rep.add_argument("--events", type=Path, default=DEFAULT_EVENTS)
    rep.add_argument("--tree", action="append", help="a pxq checkout (default: this one); repeat to compare")
    rep.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    rep.add_argument("--rounds", type=int, default=5)
    rep.add_argument("--callgrind", action="store_true", help="also instructions per transaction (slow)")
    rep.add_argument("--why", action="store_true", help="count the events the C path left to Python, by reason")
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        c = argparse.ArgumentParser()
        c.add_argument("--child")
        c.add_argument("events", type=Path)
        c.add_argument("--batch", type=int)
        c.add_argument("--rounds", type=int)
        c.add_argument("--mode")
        c.add_argument("--rows-out")
        a = c.parse_args()
        return child(a.child, a.events, a.batch, a.rounds, a.mode, a.rows_out)
    opts = parser.parse_args()
    if opts.command == "record":
        if os.geteuid() != 0:
            print("needs root (eBPF)", file=sys.stderr)
            return 2
        return record(opts.out, opts.rate, opts.count)
    if opts.command == "replay":
        trees = [str(Path(t).resolve()) for t in (opts.tree or [str(ROOT)])]
        return replay(trees, opts.events, opts.batch, opts.rounds, opts.callgrind, opts.why)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
