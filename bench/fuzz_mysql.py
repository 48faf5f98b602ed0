"""Fuzz the MySQL stitcher: generated inputs from the conversations recorded from a real MariaDB
(pxq/agent/protocols/mysql/streams/), mutated, cut into reads of random sizes and fed to
:class:`pxq.agent.protocols.mysql.MysqlStitcher` with random uncaptured stretches (skip_messages)
and a close. Counts inputs, exceptions (none may escape) and inputs slower than the hang limit
(CPU time: a busy machine stalls no input).

    PYTHONPATH=$PWD .venv/bin/python bench/fuzz_mysql.py --inputs 1000000 --seed 1

A million-input run (seed 3, 2 shared CPUs): 1,000,000 inputs, 0 exceptions, 0 hangs, slowest
input 11.7 ms of CPU, 186 s of CPU in all. An earlier run (seed 1) found a read of garbage scanned
in quadratic time (380 ms for one input) and, before it, an IndexError on a COM_STMT_PREPARE_OK
with uncaptured bytes: both fixed, with tests in tests/agent/test_mysql_protocol.py.

Input ``i`` of seed ``s`` is reproducible from the two numbers alone (``random.Random(f"{s}:{i}")``):
a failure prints them, and ``--only I`` replays one input. Mutations: byte flips, insertions of
random bytes or of real packets of other conversations, deletions, truncation, a window of a
conversation starting anywhere (a connection seen from mid-stream), packet headers with random
lengths and sequence numbers, and whole random packets built from the protocol's structure
(a command byte, a length-encoded count, 0xfe/0xff/0x00 heads).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
import traceback

from pxq.agent.protocols.interface import ParseOptions
from pxq.agent.protocols.mysql import (
    RECORDED_STREAMS,
    MysqlStitcher,
    looks_like_mysql_request,
    looks_like_mysql_response,
)
from pxq.testing.streams import load_stream

HANG_SECONDS = 1.0  # CPU seconds one input may take
Chunk = tuple[bool, bytes]


def conversations() -> list[list[Chunk]]:
    out = []
    for path in sorted(RECORDED_STREAMS.glob("*.json")):
        chunks = load_stream(path).chunks
        out.append([(d == "req", data) for d, _, data in chunks])
    return out


def _packet(rng: random.Random) -> bytes:
    """A packet built from the protocol's structure, with random contents."""
    seq = rng.choice([0, 0, 1, 2, rng.randrange(256)])
    head = rng.choice([
        bytes([rng.randrange(0x20)]),  # a command byte
        b"\x00", b"\xfe", b"\xff", b"\xfb", b"\x0a",  # OK, EOF, ERR, LOCAL INFILE, greeting
        bytes([rng.choice([1, 2, 3, 0xFC, 0xFD, 0xFE])]),  # a length-encoded count
        b"\x03def",  # a column definition
    ])  # fmt: skip
    body = head + rng.randbytes(rng.choice([0, 1, 4, 8, 11, 12, 30, 200]))
    length = len(body) if rng.random() < 0.8 else rng.choice([0, 1, 0xFFFFFF, rng.randrange(1 << 24)])
    return struct.pack("<I", length)[:3] + bytes([seq]) + body


def make_input(seed: int, i: int, convs: list[list[Chunk]]) -> list[tuple[str, bool, bytes | int]]:
    """Input ``i``: a list of (op, request side, bytes or a count) with op "feed" or "skip"."""
    rng = random.Random(f"{seed}:{i}")
    conv = rng.choice(convs)
    streams = {True: bytearray(), False: bytearray()}
    order: list[tuple[bool, int, int]] = []  # (side, start, end) in its stream
    for request, data in conv:
        start = len(streams[request])
        streams[request] += data
        order.append((request, start, len(streams[request])))
    for _ in range(rng.choice([0, 1, 1, 2, 3, 8])):
        side = rng.random() < 0.5
        buf = streams[side]
        at = rng.randrange(len(buf) + 1)
        kind = rng.randrange(6)
        if kind == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif kind == 1:
            buf[at:at] = rng.randbytes(rng.randint(1, 64))
        elif kind == 2:
            del buf[at : at + rng.randint(1, 64)]
        elif kind == 3:
            other = rng.choice(convs)
            _, data = rng.choice(other)
            buf[at:at] = data
        elif kind == 4:
            buf[at:at] = _packet(rng)
        elif kind == 5 and buf:
            del buf[at:]
    ops: list[tuple[str, bool, bytes | int]] = []
    pos = {True: 0, False: 0}
    start_at = {side: (rng.randrange(len(streams[side]) + 1) if rng.random() < 0.15 else 0) for side in streams}
    for side, start, end in order:
        end = min(end, len(streams[side]))
        start = max(start, start_at[side], pos[side])
        while start < end:
            n = min(end - start, rng.choice([1, 3, 4, 5, 16, 64, 1 << 16]))
            if rng.random() < 0.03:
                ops.append(("skip", side, n))
            else:
                ops.append(("feed", side, bytes(streams[side][start : start + n])))
            start += n
        pos[side] = max(pos[side], end)
    for side in (True, False):  # what the mutations added beyond the recorded order
        if pos[side] < len(streams[side]):
            ops.append(("feed", side, bytes(streams[side][pos[side] :])))
    return ops


def run_input(ops, keep_secrets: bool) -> None:
    stitcher = MysqlStitcher(ParseOptions(body_limit=64, keep_secrets=keep_secrets))
    ts = 1
    for op, side, arg in ops:
        ts += 1
        if op == "feed":
            assert isinstance(arg, bytes)
            stitcher.feed_messages(side, arg, ts)
            if ts < 4:
                looks_like_mysql_request(arg[:256])
                looks_like_mysql_response(arg[:256])
        else:
            assert isinstance(arg, int)
            stitcher.skip_messages(side, arg, ts)
    stitcher.response_gap(ts + 1)
    stitcher.close_messages(ts + 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", type=int, default=None, help="replay one input")
    args = parser.parse_args(argv)
    convs = conversations()
    indices = [args.only] if args.only is not None else range(args.inputs)
    exceptions = hangs = 0
    slowest = 0.0
    started = time.process_time()
    for i in indices:
        ops = make_input(args.seed, i, convs)
        t0 = time.process_time()  # CPU, not wall: other processes on the machine do not make a hang
        try:
            run_input(ops, keep_secrets=i % 2 == 1)
        except Exception:  # the finding this bench looks for: any exception escaping the parser
            exceptions += 1
            print(f"EXCEPTION seed={args.seed} input={i}", file=sys.stderr)
            traceback.print_exc()
        spent = time.process_time() - t0
        slowest = max(slowest, spent)
        if spent > HANG_SECONDS:
            hangs += 1
            print(f"HANG seed={args.seed} input={i} {spent:.2f}s", file=sys.stderr)
        if i and i % 100_000 == 0:
            print(f"{i} inputs, {exceptions} exceptions, {hangs} hangs", flush=True)
    cpu = time.process_time() - started
    n = len(indices)
    print(f"mysql fuzz: {n} inputs (seed {args.seed}), {exceptions} exceptions, {hangs} hangs "
          f"(> {HANG_SECONDS:.0f} s), slowest {slowest * 1000:.1f} ms, {cpu:.0f} s CPU")  # fmt: skip
    return 1 if exceptions or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
