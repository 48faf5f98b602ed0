"""The agent's table store (pxq/agent/table_store.py) offline, this tree's beside a baseline's,
side by side in one run: CPU per row of ``TableStore.append`` (what the agent spends moving each
drained batch into the store, compression included), of reading everything back
(``TableStore.table``), and the bytes held, for windows of realistic ``http_events`` rows; then
the RSS of a process holding a 30 s window at 5,000 rows/s (one child process per store).

The rows are built as the agent builds them (:class:`pxq.agent.protocols.http1.HttpRows`) for the
requests of bench/bench_socket_tracer.py's paced client: GET (HEAD every tenth) of
/static/{hello.txt,index.html,big.json}?i=N from nginx, with nginx's response headers (its Date
changing every second), over 100 keep-alive connections; ~850 bytes a row in Arrow. A batch is
what the socket tracer's collector drains: a second of rows, or 5,000
(pxq/agent/socket_tracer_collector.py).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_table_store.py [--baseline main|TREE] [--rounds 5]

``--baseline``: a git revision of this repository (default main) or a pxq checkout, whose
pxq/agent/table_store.py is loaded beside this tree's (the rest of pxq is this tree's).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from pxq.agent.protocols.http1 import HttpRows
from pxq.agent.protocols.http1.stitcher import _Message
from pxq.testing.workload import STATIC_FILES

ROOT = Path(__file__).resolve().parent.parent
FILES = ("hello.txt", "index.html", "big.json")  # the paced client's, in request order i % 3
START_NS = 1_764_115_200_000_000_000
CONNECTIONS = 100
# (label, rows per second, seconds): the live bench's fixed-rate window (bench 4: 6 s at 5,000
# req/s), a 30 s window at 5,000 and at 2,000 req/s, and a quiet second's small batches.
SCENARIOS = (("5,000 rows/s, 6 s", 5000, 6), ("5,000 rows/s, 30 s", 5000, 30), ("2,000 rows/s, 30 s", 2000, 30),
             ("250 rows/s, 30 s", 250, 30))  # fmt: skip
DRAIN_ROWS = 5000  # a batch is a second of rows, at most this many (the collector's drain)


def _message(ts_ns: int, **fields) -> _Message:
    msg = _Message(1024, ts_ns)
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def http_batch(first: int, rows: int, rate: int) -> pa.Table:
    """Rows ``first`` .. ``first + rows - 1`` of a paced client at ``rate`` req/s, as the agent
    builds them."""
    return http_rows(first, rows, rate).table()


def http_rows(first: int, rows: int, rate: int) -> HttpRows:
    """:func:`http_batch`'s rows added, not yet made a table."""
    out = HttpRows()
    conns = [out.connection(f"0:{1000 + c % 4}:123456789", "127.0.0.1", "127.0.0.1", 40000 + c, 8080, 2)
             for c in range(CONNECTIONS)]  # fmt: skip
    for i in range(first, first + rows):
        name = FILES[i % 3]
        method = b"HEAD" if i % 10 == 9 else b"GET"
        body = STATIC_FILES[name]
        start = START_NS + i * 10**9 // rate
        end = start + 150_000 + (i * 7919) % 100_000
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(start // 10**9)).encode()
        req_pairs = [(b"Host", b"127.0.0.1:8080"), (b"User-Agent", b"pxq-paced"), (b"Accept", b"*/*")]
        resp_pairs = [
            (b"Server", b"nginx/1.22.1"), (b"Date", date),
            (b"Content-Type", b"application/json" if name.endswith(".json") else b"text/html"),
            (b"Content-Length", str(len(body)).encode()), (b"Last-Modified", b"Mon, 01 Dec 2026 10:00:00 GMT"),
            (b"Connection", b"keep-alive"), (b"ETag", b'"692d6b20-%x"' % len(body)), (b"Accept-Ranges", b"bytes"),
        ]  # fmt: skip
        req = _message(start, method=method, url=f"/static/{name}?i={i}".encode(), header_pairs=req_pairs,
                       raw_headers=b"\r\n".join(n + b": " + v for n, v in req_pairs))  # fmt: skip
        resp = _message(end, status=200, reason=b"OK", header_pairs=resp_pairs, body_size=len(body),
                        body=b"" if method == b"HEAD" else body[:1024],
                        raw_headers=b"\r\n".join(n + b": " + v for n, v in resp_pairs))  # fmt: skip
        out.add(conns[i % CONNECTIONS], req, resp, start, end)
    return out


def window_batches(rate: int, seconds: int) -> list[pa.Table]:
    """The batches the collector would drain over ``seconds`` at ``rate`` rows/s."""
    per_batch = min(rate, DRAIN_ROWS)
    total = rate * seconds
    return [http_batch(first, min(per_batch, total - first), rate) for first in range(0, total, per_batch)]


def load_baseline(baseline: str, file: str = "pxq/agent/table_store.py") -> ModuleType:
    """The baseline's ``file`` as a module of its own (baseline_<its name>; the rest of pxq it
    imports is this tree's)."""
    tree = Path(baseline)
    if tree.is_dir():
        source = (tree / file).read_text()
    else:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{baseline}:{file}"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
    name = f"baseline_{Path(file).stem}"
    path = Path(tempfile.mkdtemp(prefix="pxq-bench-store-")) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def this_store_module() -> ModuleType:
    from pxq.agent import table_store

    return table_store


def measure(module: ModuleType, parts: list[pa.Table]) -> dict[str, float]:
    """One store of ``module`` filled with ``parts``: CPU us per row of the appends and of reading
    everything back, the bytes held (MB) and the share of them compressed."""
    store = module.TableStore()
    rows = sum(p.num_rows for p in parts)
    pa.default_memory_pool().release_unused()  # (each run starts from the same allocator state)
    started = time.process_time()
    for part in parts:
        store.append("http_events", part)
    appended = time.process_time() - started
    started = time.process_time()
    back = store.table("http_events")
    read = time.process_time() - started
    assert back.num_rows == rows
    return {"append_us": appended / rows * 1e6, "read_us": read / rows * 1e6, "held_mb": store.held_bytes() / 1e6,
            "raw_mb": sum(p.nbytes for p in parts) / 1e6}  # fmt: skip


def cpu(baseline: ModuleType, rounds: int) -> None:
    print(f"== CPU per row, baseline ÷ this tree, median of {rounds} alternating rounds (process CPU time)")
    print(f"  {'window':<22}{'rows':>8}{'B/row':>7}   {'append us/row':<28}{'read back us/row':<28}"
          f"held MB of raw MB")  # fmt: skip
    for label, rate, seconds in SCENARIOS:
        parts = window_batches(rate, seconds)
        rows = sum(p.num_rows for p in parts)
        got: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for i in range(rounds):
            order = (("old", baseline), ("new", this_store_module()))
            for name, module in order if i % 2 == 0 else order[::-1]:
                got[name].append(measure(module, parts))

        raw = got["old"][0]["raw_mb"]
        print(f"  {label:<22}{rows:>8,}{raw * 1e6 / rows:>7.0f}   {_old_new(got, 'append_us', 3)}   "
              f"{_old_new(got, 'read_us', 3)}   {_old_new(got, 'held_mb', 1)} of {raw:.0f}")  # fmt: skip


def _old_new(got: dict[str, list[dict[str, float]]], key: str, digits: int) -> str:
    """'old -> new (old/new x)' of the medians of ``key``."""
    old, new = (statistics.median(r[key] for r in got[which]) for which in ("old", "new"))
    return f"{old:>8.{digits}f} -> {new:<6.{digits}f}({old / max(new, 1e-9):4.1f}x)"


def rows_to_arrow(baseline: str, rounds: int) -> None:
    """HttpRows.table (the drained rows' buffers becoming an Arrow table), the baseline's beside
    this tree's, over the same filled buffers; median of 100 x ``rounds`` alternating calls."""
    base = load_baseline(baseline, "pxq/agent/protocols/http1/rows.py")
    print(f"\n== rows to Arrow (HttpRows.table), us per row, median of {100 * rounds} alternating calls")
    for label, rate in (("5,000-row batch", 5000), ("2,000-row batch", 2000), ("250-row batch", 250)):
        rows = http_rows(0, min(rate, DRAIN_ROWS), rate)
        state = (rows._strings, rows._numbers, rows._connections, rows.rows)
        builds = (("old", base.HttpRows.table), ("new", HttpRows.table))
        assert _table_of(rows, state, builds[0][1])[1].equals(_table_of(rows, state, builds[1][1])[1])
        took: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(100 * rounds):
            for name, build in builds if i % 2 == 0 else builds[::-1]:
                took[name].append(_table_of(rows, state, build)[0] / state[3] * 1e6)
        old, new = statistics.median(took["old"]), statistics.median(took["new"])
        print(f"  {label:<22}{old:8.3f} -> {new:<6.3f}({old / new:4.2f}x)")


def _table_of(rows: HttpRows, state: tuple, build: Callable[[HttpRows], pa.Table]) -> tuple[float, pa.Table]:
    """(CPU seconds, table) of ``build(rows)`` with ``rows`` set back to ``state`` first (the
    same rows each time: table() starts its buffers over)."""
    rows._strings, rows._numbers, rows._connections, rows.rows = state
    started = time.process_time()
    out = build(rows)
    return time.process_time() - started, out


def rss_child(which: str, baseline: str, rate: int, seconds: int) -> None:
    """Fill a store as the agent loop does (a batch built, appended; Arrow's freed memory given
    back every 10 batches, pxq.agent.loop.RELEASE_INTERVAL_S at one drain a second) and print
    the process's RSS before and after, and its peak, in MB (JSON)."""
    module = load_baseline(baseline) if which == "old" else this_store_module()
    http_batch(0, 100, rate)  # (imports and first-call costs before the 'before')
    pa.default_memory_pool().release_unused()
    before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    store = module.TableStore()
    per_batch = min(rate, DRAIN_ROWS)
    for n, first in enumerate(range(0, rate * seconds, per_batch)):
        store.append("http_events", http_batch(first, per_batch, rate))
        if n % 10 == 9:
            pa.default_memory_pool().release_unused()
    print(json.dumps({"before": before, "after": _status_mb("VmRSS"), "peak": _status_mb("VmHWM"),
                      "held": store.held_bytes() / 1e6, "rows": store.rows("http_events")}))  # fmt: skip


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss(baseline: str, rounds: int, rate: int = 5000, seconds: int = 30) -> None:
    print(f"\n== RSS of a process holding {seconds} s at {rate:,} rows/s (MB; one child per store, alternating, "
          f"median of {rounds})")  # fmt: skip
    got: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(rounds):
        for which in ("old", "new") if i % 2 == 0 else ("new", "old"):
            cmd = [sys.executable, __file__, "--rss-child", which, "--baseline", baseline, "--rate", str(rate),
                   "--seconds", str(seconds)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            got[which].append(json.loads(out.splitlines()[-1]))
    for which, label in (("old", "baseline"), ("new", "this tree")):
        med = {k: statistics.median(r[k] for r in got[which]) for k in ("before", "after", "peak", "held")}
        print(f"  {label:<10} before {med['before']:6.1f}  after {med['after']:6.1f}  peak {med['peak']:6.1f}  "
              f"(+{med['peak'] - med['before']:.1f} at peak)  held {med['held']:6.1f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git revision or pxq checkout (default main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=("cpu", "rows", "rss"))
    parser.add_argument("--rss-child", choices=("old", "new"), help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=5000, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, default=30, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.baseline, args.rate, args.seconds)
        return 0
    if args.only in (None, "cpu"):
        cpu(load_baseline(args.baseline), args.rounds)
    if args.only in (None, "rows"):
        rows_to_arrow(args.baseline, args.rounds)
    if args.only in (None, "rss"):
        rss(args.baseline, max(1, args.rounds // 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
