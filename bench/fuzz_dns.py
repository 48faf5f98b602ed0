"""Fuzz the DNS parser and stitcher: mutated real messages (the recorded dnsmasq conversations and
Pixie's captured frames), random bytes and random splits of TCP streams, through protocol
inference (datagram and stream), the UDP stitcher and the TCP stitcher.

    PYTHONPATH=$PWD .venv/bin/python bench/fuzz_dns.py --inputs 1000000 --seed 1

Input i of seed s is the same on every run (``random.Random(f"{s}:{i}")``), so ``--start I
--inputs 1`` replays one. Prints inputs run, exceptions (each class with its first reproducer, hex),
pairs made, pairs whose response does not answer their query (id or question differ: must be 0),
the slowest input and the rate; an input that takes more than ``--hang`` seconds of CPU is a hang
(CPU time, not wall time: on a shared machine a stalled process is not a slow parser). Exits 1 on any
exception, mispairing or hang.

Measured (seed 1, 1,000,000 inputs, 300,027 of them through the TCP stitcher, on the shared 2-CPU
development machine): 0 exceptions, 111,645 pairs made, 0 mispaired, 0 hangs, slowest input
52.6 ms of CPU, 819 s.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pxq.agent.protocols.dns import (  # noqa: E402
    RECORDED_DATAGRAMS,
    RECORDED_STREAMS,
    DnsStitcher,
    looks_like_query_datagram,
    looks_like_query_stream,
    looks_like_response_datagram,
    looks_like_response_stream,
)
from pxq.testing.streams import load_stream  # noqa: E402


def corpus() -> list[tuple[bytes, bytes]]:
    """Real (query, response) pairs: the recorded datagrams and the recorded TCP streams' messages."""
    queries: list[bytes] = []
    responses: list[bytes] = []
    for path in sorted(RECORDED_DATAGRAMS.glob("*.json")):
        for direction, _, data in load_stream(path).chunks:
            (queries if direction == "req" else responses).append(data)
    for path in sorted(RECORDED_STREAMS.glob("*.json")):
        stream = load_stream(path)
        for side, into in (("req", queries), ("resp", responses)):
            data = stream.side(side)
            while len(data) >= 2:
                end = 2 + int.from_bytes(data[:2], "big")
                into.append(data[2:end])
                data = data[end:]
    by_id = {r[:2]: r for r in responses}
    return [(q, by_id[q[:2]]) for q in queries]


def mutate(rng: random.Random, message: bytes, messages: list[bytes]) -> bytes:
    data = bytearray(message)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        if kind == 0 and data:  # flip bits
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1 and data:  # a random byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 2:  # truncate
            del data[rng.randrange(len(data) + 1) :]
        elif kind == 3:  # insert bytes
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 4 and len(data) > 12:  # a header count or a compression pointer to anywhere
            at = rng.choice([4, 6, 8, 10, rng.randrange(12, len(data))])
            data[at : at + 2] = rng.choice([b"\xff\xff", b"\xc0\x0c", b"\xc0\x00", rng.randbytes(2)])
        elif kind == 5:  # splice with another message
            other = rng.choice(messages)
            data = data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]
        else:  # random bytes
            data = bytearray(rng.randbytes(rng.randint(0, 120)))
    return bytes(data)


def one_input(seed: int, i: int, pairs: list[tuple[bytes, bytes]], messages: list[bytes]) -> tuple[bool, list]:
    """Input i: a real query and its response, one of the two mutated most of the time (or random
    bytes), through inference and a UDP or a TCP stitcher; returns whether TCP, and the pairs made."""
    rng = random.Random(f"{seed}:{i}")
    query, response = rng.choice(pairs)
    mutated = query
    if rng.random() < 0.9:
        if rng.random() < 0.5:
            query = mutated = mutate(rng, query, messages)
        else:
            response = mutated = mutate(rng, response, messages)
    for infer in (looks_like_query_datagram, looks_like_response_datagram, looks_like_query_stream,
                  looks_like_response_stream):  # fmt: skip
        infer(mutated[:256])
    if rng.random() < 0.7:
        stitcher = DnsStitcher(datagrams=True)
        made = stitcher.feed_messages(True, query, 1)
        made += stitcher.feed_messages(False, response, 2)
        made += stitcher.close_messages(3)
        return False, made
    # TCP: each message behind a length that may lie, cut into random reads.
    made = []
    stitcher = DnsStitcher(datagrams=False)
    for request, data in ((True, query), (False, response)):
        length = len(data).to_bytes(2, "big") if rng.random() < 0.8 else rng.randbytes(2)
        stream = length + data
        at = 0
        while at < len(stream):
            n = rng.randint(1, len(stream) - at)
            made += stitcher.feed_messages(request, stream[at : at + n], 10 * at + (0 if request else 5))
            at += n
    made += stitcher.close_messages(1 << 20)
    return True, made


def answers(query, response) -> bool:
    """Whether ``response`` can be the answer to ``query``: the same id, and the same question
    where both carry one."""
    same_question = not query.question or not response.question or query.question == response.question
    return bool(response.txid == query.txid and same_question)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--hang", type=float, default=1.0, help="CPU seconds one input may take (default 1)")
    args = parser.parse_args()
    pairs = corpus()
    messages = [m for pair in pairs for m in pair]
    exceptions: dict[str, tuple[int, int]] = {}  # class -> (first input, count)
    pairs_made = mispaired = hangs = tcp_inputs = 0
    slowest = (0.0, -1)
    started = time.monotonic()
    for i in range(args.start, args.start + args.inputs):
        t0 = time.process_time()  # CPU time: on a busy machine wall time measures the other processes
        try:
            tcp, made = one_input(args.seed, i, pairs, messages)
        except Exception as exc:  # a finding: the parser must never raise
            key = f"{type(exc).__name__}: {str(exc)[:80]}"
            first = exceptions.get(key)
            exceptions[key] = (first[0], first[1] + 1) if first else (i, 1)
            spent = 0.0
            continue
        spent = time.process_time() - t0
        slowest = max(slowest, (spent, i))
        hangs += spent > args.hang
        tcp_inputs += tcp
        pairs_made += sum(1 for _, resp in made if resp is not None)
        mispaired += sum(1 for req, resp in made if resp is not None and not answers(req, resp))
        if (i - args.start + 1) % 100_000 == 0:
            print(f"  {i - args.start + 1} inputs, {time.monotonic() - started:.0f} s", file=sys.stderr)
    elapsed = time.monotonic() - started
    print(f"inputs: {args.inputs} (seed {args.seed}, from {args.start}; {tcp_inputs} through the TCP stitcher)")
    print(f"exceptions: {sum(n for _, n in exceptions.values())} in {len(exceptions)} classes")
    for key, (first, n) in sorted(exceptions.items()):
        print(f"  {n} x {key}  (first: --start {first} --inputs 1)")
    print(f"pairs made: {pairs_made}, mispaired: {mispaired}")
    print(f"hangs (> {args.hang} CPU s): {hangs}; slowest input: {slowest[1]} ({slowest[0] * 1000:.1f} ms CPU)")
    print(f"time: {elapsed:.1f} s ({args.inputs / elapsed:,.0f} inputs/s)")
    return 1 if exceptions or mispaired or hangs else 0


if __name__ == "__main__":
    raise SystemExit(main())
