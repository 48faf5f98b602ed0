"""Fuzz every registered protocol's parser: generated inputs through a fresh stitcher each (and a
sample through the connection tracker as kernel events), every exception caught and every hang
stopped by a watchdog.

    PYTHONPATH=$PWD .venv/bin/python bench/fuzz_protocols.py --inputs 1000000 --seed 1 --jobs 2 --out fuzz-protocols/

Input i of protocol p and seed s is the same on every run (``make_input``): mostly a recorded
conversation of p (``pxq/agent/protocols/<p>/streams/``) with 1 to 4 mutations (bit flips,
inserted, prefixed and appended garbage, truncation, corrupted length fields, deletions,
repetition, bytes credited to the wrong side), cut into reads at random, with reads skipped as
uncaptured (``skip_messages``) or lost before a ``response_gap``; one in ten is pure random bytes.
One input in ``--tracker-every`` also goes through a ConnTracker of every registered protocol
(lost, filler and reordered events, sockets picked up mid-stream); one in ``--pairing-every`` is
a conversation damaged only by the mutations after which pairing is judged (see
``pxq.testing.protocol_fuzz``), whose mispaired inputs are counted (a statistic: a flipped length
can make any parser without ids frame the wrong message).

Workers (``--jobs``) run batches of inputs; the parent is the watchdog: an input still running
after ``--time-limit`` seconds is a hang, its worker is killed and replaced, and the batch goes on
after it. Prints per protocol: inputs, inputs/s, exceptions, hangs, tracker runs, pairing-checked
and mispaired inputs; ``--out`` gets one reproducer per finding class (exception type and where
it was raised; hangs), minimized for exceptions, as JSON (``--replay FILE`` runs one again).
Exits 1 on any exception or hang.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import queue
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pxq.agent.protocols import registry  # noqa: E402 (after the sys.path entry that finds this checkout's pxq)
from pxq.agent.protocols.interface import ParseOptions  # noqa: E402
from pxq.testing import protocol_fuzz as pf  # noqa: E402

BATCH = 500
DEFAULT_TIME_LIMIT_S = 2.0
BODY_LIMITS = (0, 1, 16, 1024, 1024, 1024, 65536)


# -- inputs ---------------------------------------------------------------------------------------
@dataclass
class FuzzInput:
    protocol: str
    index: int
    steps: list[pf.Step]
    body_limit: int
    # Reads and their kernel events plan, when the input also goes through the tracker.
    reads: list[pf.Chunk] | None = None
    plan: pf.EventPlan | None = None
    # A pairing-checked input: the stream whose reference judges it, and where its bytes were.
    stream: str | None = None
    where: dict[int, tuple[bool, int]] = field(default_factory=dict)


_STREAMS: dict[str, list[Any]] = {}
_REFERENCES: dict[tuple[str, str], pf.Reference] = {}
_CONVERSATIONS: dict[tuple[str, str], list[pf.Chunk]] = {}


def _streams(protocol: str) -> list[Any]:
    if protocol not in _STREAMS:
        _STREAMS[protocol] = pf.protocol_streams(registry.PROTOCOLS[protocol])
    return _STREAMS[protocol]


def _reference(protocol: str, stream: Any) -> pf.Reference:
    key = (protocol, stream.name)
    if key not in _REFERENCES:
        _REFERENCES[key] = pf.reference(registry.PROTOCOLS[protocol], pf.conversation(stream))
    return _REFERENCES[key]


def _conversation(protocol: str, stream: Any) -> list[pf.Chunk]:
    """A stream's chunks, built once (mutations make new chunks, never change these)."""
    key = (protocol, stream.name)
    if key not in _CONVERSATIONS:
        _CONVERSATIONS[key] = pf.conversation(stream)
    return list(_CONVERSATIONS[key])


def make_input(seed: int, protocol: str, index: int, tracker_every: int, pairing_every: int) -> FuzzInput:
    """Input ``index`` of ``protocol`` for ``seed``: the same on every run."""
    rng = random.Random(f"{seed}:{protocol}:{index}")
    spec = registry.PROTOCOLS[protocol]
    streams = _streams(protocol)
    body_limit = rng.choice(BODY_LIMITS)
    if pairing_every and index % pairing_every == 0 and streams:
        stream = rng.choice(streams)
        ref = _reference(protocol, stream)
        chunks = pf.mutate(rng, _conversation(protocol, stream), pf.PAIRING_SAFE)
        reads = pf.reads_of(stream, chunks, rng, ref)
        line = pf.timeline(reads)
        return FuzzInput(protocol, index, line.steps, registry.DEFAULT_BODY_LIMIT, stream=stream.name, where=line.where)
    if not streams or rng.random() < 0.1:
        reads = pf.pieces(pf.random_conversation(rng), pf.random_cuts(rng))
    else:
        stream = rng.choice(streams)
        reads = pf.reads_of(stream, pf.mutate(rng, _conversation(protocol, stream), pf.MUTATIONS), rng)
    line = pf.timeline(reads, locate=False)
    steps = pf.lossy_steps(rng, reads, line, spec)
    fuzz = FuzzInput(protocol, index, steps, body_limit)
    if tracker_every and index % tracker_every == 0:
        plan = pf.random_plan(rng, len(reads))
        fuzz.reads, fuzz.plan = reads, dataclasses.replace(plan, cross_swaps=rng.random() < 0.5)
    return fuzz


@dataclass
class Outcome:
    tracker: bool = False
    checked: bool = False
    mispaired: bool = False


def run_input(fuzz: FuzzInput) -> Outcome:
    """Run one input; exceptions propagate (the caller records them)."""
    spec = registry.PROTOCOLS[fuzz.protocol]
    result = pf.run_stitcher(spec, fuzz.steps, ParseOptions(body_limit=fuzz.body_limit))
    outcome = Outcome()
    if fuzz.stream is not None:
        stream = next(s for s in _streams(fuzz.protocol) if s.name == fuzz.stream)
        outcome.checked = True
        outcome.mispaired = bool(_reference(fuzz.protocol, stream).mispaired(result.pairs, fuzz.where))
    if fuzz.reads is not None and fuzz.plan is not None:
        line = pf.timeline(fuzz.reads, locate=False)
        pf.run_tracker(pf.events(fuzz.reads, line, fuzz.plan))
        outcome.tracker = True
    return outcome


def where_raised(exc: BaseException) -> str:
    """The innermost frame of pxq's own code (else the innermost) that the exception passed."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/pxq/" in f.filename and "/pxq/testing/" not in f.filename] or frames
    f = ours[-1]
    return f"{Path(f.filename).name}:{f.lineno} {f.name}"


# -- workers --------------------------------------------------------------------------------------
def worker(worker_id: int, seed: int, tasks: Any, results: Any, current: Any, options: dict[str, int]) -> None:
    """Take (protocol, start, stop) batches; report each batch's counts and each exception."""
    while True:
        task = tasks.get()
        if task is None:
            return
        protocol, start, stop = task
        counts: Counter[str] = Counter()
        for index in range(start, stop):
            current[0], current[1], current[2], current[3] = index, time.monotonic_ns(), start, stop
            try:
                fuzz = make_input(seed, protocol, index, options["tracker_every"], options["pairing_every"])
                outcome = run_input(fuzz)
            except Exception as exc:  # every exception is a finding: report it and go on
                results.put(("exception", protocol, index, type(exc).__name__, where_raised(exc), str(exc)[:300]))
                continue
            finally:
                counts["inputs"] += 1
            counts["tracker"] += outcome.tracker
            counts["checked"] += outcome.checked
            counts["mispaired"] += outcome.mispaired
        current[0] = -1
        results.put(("batch", worker_id, protocol, start, stop, dict(counts)))


@dataclass
class Summary:
    protocol: str
    inputs: int = 0
    seconds: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    # (kind, where) -> (count, first index, message)
    findings: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def add_finding(self, kind: str, where: str, index: int, message: str) -> None:
        found = self.findings.setdefault((kind, where), [0, index, message])
        found[0] += 1
        if index < found[1]:
            found[1], found[2] = index, message


class Fuzzer:
    def __init__(self, seed: int, jobs: int, time_limit: float, tracker_every: int, pairing_every: int) -> None:
        self.seed, self.jobs, self.time_limit = seed, jobs, time_limit
        self.options = {"tracker_every": tracker_every, "pairing_every": pairing_every}
        self.ctx = mp.get_context("fork")

    def _start(self, worker_id: int, tasks: Any, results: Any) -> tuple[Any, Any]:
        # The input being run, since when (monotonic ns), and its batch's bounds; -1: none.
        current = self.ctx.Array("q", [-1, 0, 0, 0], lock=False)
        proc = self.ctx.Process(target=worker, args=(worker_id, self.seed, tasks, results, current, self.options))
        proc.daemon = True
        proc.start()
        return proc, current

    def run(self, protocol: str, inputs: int, progress: bool = True) -> Summary:
        summary = Summary(protocol)
        tasks, results = self.ctx.Queue(), self.ctx.Queue()
        pending = 0
        for start in range(0, inputs, BATCH):
            tasks.put((protocol, start, min(inputs, start + BATCH)))
            pending += 1
        workers = [self._start(i, tasks, results) for i in range(self.jobs)]
        began = last_print = time.monotonic()
        limit_ns = int(self.time_limit * 1e9)
        while pending:
            try:
                message = results.get(timeout=0.2)
            except queue.Empty:
                message = None
            if message is not None and message[0] == "exception":
                _, _, index, kind, where, text = message
                summary.add_finding(kind, where, index, text)
                summary.counts["exceptions"] += 1
            elif message is not None:
                pending -= 1
                summary.counts.update(message[5])
            now = time.monotonic_ns()
            for i, (proc, current) in enumerate(workers):
                index, since, start, stop = current[0], current[1], current[2], current[3]
                if index >= 0 and now - since > limit_ns and proc.is_alive():
                    proc.kill()  # a hang: the input is a finding, the batch goes on after it
                    proc.join()
                    summary.add_finding("hang", f"over {self.time_limit:g} s", index, "")
                    summary.counts["hangs"] += 1
                    # It and the batch's inputs before it were run (their other counts are lost).
                    summary.counts["inputs"] += index - start + 1
                    if index + 1 < stop:
                        tasks.put((protocol, index + 1, stop))
                    else:
                        pending -= 1
                    workers[i] = self._start(i, tasks, results)
                elif not proc.is_alive():
                    raise SystemExit(f"worker {i} died (exit code {proc.exitcode}) outside any input")
            if progress and time.monotonic() - last_print > 30:
                last_print = time.monotonic()
                rate = summary.counts["inputs"] / (last_print - began)
                print(f"... {protocol}: {summary.counts['inputs']}/{inputs} inputs, {rate:.0f}/s", file=sys.stderr)
        for _ in workers:
            tasks.put(None)
        for proc, _ in workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        summary.inputs = summary.counts["inputs"]
        summary.seconds = time.monotonic() - began
        return summary


# -- reproducers ----------------------------------------------------------------------------------
def step_json(step: pf.Step) -> list[Any]:
    if isinstance(step, pf.Feed):
        return ["feed", "req" if step.request else "resp", step.ts_ns, step.data.decode("latin-1")]
    if isinstance(step, pf.Skip):
        return ["skip", "req" if step.request else "resp", step.ts_ns, step.n]
    return ["response_gap", step.ts_ns]


def step_from_json(item: list[Any]) -> pf.Step:
    if item[0] == "feed":
        return pf.Feed(item[1] == "req", item[3].encode("latin-1"), int(item[2]))
    if item[0] == "skip":
        return pf.Skip(item[1] == "req", int(item[3]), int(item[2]))
    return pf.ResponseGap(int(item[1]))


def reproduce(protocol: str, steps: list[pf.Step], body_limit: int) -> tuple[str, str] | None:
    """(exception type, where) when these steps raise through the protocol's stitcher, else None."""
    try:
        pf.run_stitcher(registry.PROTOCOLS[protocol], steps, ParseOptions(body_limit=body_limit))
    except Exception as exc:
        return type(exc).__name__, where_raised(exc)
    return None


def minimize(protocol: str, steps: list[pf.Step], body_limit: int, budget_s: float = 30.0) -> list[pf.Step]:
    """Fewer steps and fewer bytes while the same exception is raised at the same place."""
    target = reproduce(protocol, steps, body_limit)
    if target is None:
        return steps
    deadline = time.monotonic() + budget_s
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for i in range(len(steps) - 1, -1, -1):  # drop whole steps
            trial = steps[:i] + steps[i + 1 :]
            if reproduce(protocol, trial, body_limit) == target:
                steps, changed = trial, True
        for i, step in enumerate(steps):  # halve the bytes of a read, from either end
            if not isinstance(step, pf.Feed):
                continue
            for cut in (step.data[len(step.data) // 2 :], step.data[: len(step.data) // 2]):
                trial = [*steps[:i], pf.Feed(step.request, cut, step.ts_ns), *steps[i + 1 :]]
                if cut != step.data and reproduce(protocol, trial, body_limit) == target:
                    steps, changed = trial, True
                    break
    return steps


def write_reproducer(out: Path, seed: int, fuzz: FuzzInput, kind: str, where: str, minimized: bool) -> Path:
    name = f"{fuzz.protocol}-{kind}-{fuzz.index}".replace(" ", "_")
    feeds = [s for s in fuzz.steps if isinstance(s, pf.Feed)]
    record = {
        "name": name,
        "server": "bench/fuzz_protocols.py",
        "description": f"{kind} at {where}; seed {seed}, input {fuzz.index}" + (" (minimized)" if minimized else ""),
        "protocol": fuzz.protocol,
        "body_limit": fuzz.body_limit,
        "steps": [step_json(s) for s in fuzz.steps],
        # The feeds alone, in the recorded-stream format (pxq.testing.streams.load_stream).
        "chunks": [["req" if s.request else "resp", s.ts_ns, s.data.decode("latin-1")] for s in feeds],
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def _minimize_into(conn: Any, protocol: str, steps: list[pf.Step], body_limit: int) -> None:
    conn.send(minimize(protocol, steps, body_limit))


def minimized_in_a_child(
    protocol: str, steps: list[pf.Step], body_limit: int, timeout_s: float = 60.0
) -> list[pf.Step] | None:
    """minimize(), in a process of its own (a trial may hang too): None when it ran out of time."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_minimize_into, args=(child, protocol, steps, body_limit), daemon=True)
    proc.start()
    ready = parent.poll(timeout_s)
    result = parent.recv() if ready else None
    proc.kill()
    proc.join()
    return result


def replay(path: str) -> int:
    record = json.loads(Path(path).read_text())
    steps = [step_from_json(s) for s in record["steps"]]
    spec = registry.PROTOCOLS[record["protocol"]]
    result = pf.run_stitcher(spec, steps, ParseOptions(body_limit=int(record["body_limit"])))
    print(f"{len(result.pairs)} pairs, errors {dict(result.errors)}")
    return 0


# -- main -----------------------------------------------------------------------------------------
def format_table(summaries: list[Summary]) -> str:
    head = ("protocol", "inputs", "inputs/s", "exceptions", "hangs", "tracker runs", "pairing-checked", "mispaired")
    rows = [head]
    for s in summaries:
        checked, wrong = s.counts["checked"], s.counts["mispaired"]
        rows.append((
            s.protocol, f"{s.inputs:,}", f"{s.inputs / max(s.seconds, 1e-9):,.0f}", str(s.counts["exceptions"]),
            str(s.counts["hangs"]), f"{s.counts['tracker']:,}", f"{checked:,}",
            f"{wrong:,} ({100 * wrong / checked:.2f}%)" if checked else "0",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per protocol (default 1,000,000)")
    parser.add_argument("--protocol", action="append", help="a registered protocol (repeat; default every one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S, help="seconds per input (default 2)")
    parser.add_argument("--tracker-every", type=int, default=50, help="one input in N through the tracker too")
    parser.add_argument("--pairing-every", type=int, default=20, help="one input in N judged for mispairing")
    parser.add_argument("--out", metavar="DIR", help="write summary.txt and one reproducer per finding class here")
    parser.add_argument("--replay", metavar="FILE", help="run one reproducer written by --out, and stop")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay)
    protocols = args.protocol or list(registry.PROTOCOLS)
    unknown = sorted(set(protocols) - set(registry.PROTOCOLS))
    if unknown:
        parser.error(f"unknown protocol(s) {', '.join(unknown)}; registered: {', '.join(registry.PROTOCOLS)}")
    fuzzer = Fuzzer(args.seed, args.jobs, args.time_limit, args.tracker_every, args.pairing_every)
    summaries = [fuzzer.run(protocol, args.inputs) for protocol in protocols]
    lines = [format_table(summaries)]
    out = Path(args.out) if args.out else None
    for s in summaries:
        for (kind, where), (count, index, message) in sorted(s.findings.items()):
            line = f"{s.protocol}: {count} x {kind} at {where} (first: input {index}) {message}"
            if out is not None:
                fuzz = make_input(args.seed, s.protocol, index, args.tracker_every, args.pairing_every)
                steps = None if kind == "hang" else minimized_in_a_child(s.protocol, fuzz.steps, fuzz.body_limit)
                if steps is not None:
                    fuzz.steps = steps
                line += f" -> {write_reproducer(out, args.seed, fuzz, kind, where, steps is not None)}"
            lines.append(line)
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.txt").write_text(text + "\n")
    return 1 if any(s.counts["exceptions"] or s.counts["hangs"] for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
