"""Robustness checks for every protocol of the registry: recorded conversations found by folder
convention, mutated, cut into reads, fed to a stitcher or to the connection tracker as kernel
events, and the pairs that come out compared with those of the unmodified conversation.

Used by ``tests/agent/test_protocol_robustness.py`` (hypothesis) and ``bench/fuzz_protocols.py``
(a million generated inputs per protocol). Everything here reads
:data:`pxq.agent.protocols.registry.PROTOCOLS` when called, so a protocol is covered the day it is
registered.

* **Streams by convention.** A protocol's recorded conversations are the ``*.json`` files (the
  format of :mod:`pxq.testing.streams`) in ``pxq/agent/protocols/<folder>/streams/``, where
  ``<folder>`` is the package its registry entry's functions come from (``http1`` for HTTP) or its
  name (:func:`protocol_streams`).
* **Byte identities.** A conversation is a list of :class:`Chunk` whose bytes each remember
  where they were in their direction of the original conversation (``ids``); inserted bytes
  have none (:data:`INSERTED`). Mutations keep the identities of the bytes they keep.
* **Timestamps that say where.** When a conversation is fed, each read gets the timestamp
  ``BASE_TS`` + the position of its first byte in feed order (both directions counted together),
  so time order is kept and every timestamp a stitcher puts in a request or a response names
  the byte that read began with. The pairs' objects are searched for such timestamps
  (:func:`timestamp_refs`): where a request or a response begins, in the original's terms.
* **Mispaired**, against the unmodified conversation fed one byte per read (so each timestamp is
  one byte): a pair whose request begins within original request *i* and whose response begins
  within original response *j*, where (*i*, *j*) was not a pair of the original. A message
  "begins within" the original message whose first byte is the last one at or before it.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pxq.agent.protocols
from pxq.agent.conn_tracker import (
    EGRESS,
    EV_CLOSE,
    EV_DATA,
    EV_OPEN,
    F_FILLER,
    INGRESS,
    ROLE_CLIENT,
    ROLE_SERVER,
    ConnTracker,
    SockEvent,
)
from pxq.agent.protocols import registry
from pxq.agent.protocols.interface import Pair, ParseOptions
from pxq.agent.protocols.registry import ProtocolSpec
from pxq.testing.streams import RecordedStream, load_stream

# Where protocol folders live; a test may add a root holding <name>/streams/ of a protocol it defines.
STREAM_ROOTS: list[Path] = [Path(pxq.agent.protocols.__file__).resolve().parent]
PROTOCOL_PACKAGE = "pxq.agent.protocols."

# Timestamps start here: far from any length, size or latency a record may also hold.
BASE_TS = 1 << 52
# The identity of a byte that was not in the original conversation.
INSERTED = -1
# A process id above the kernel's largest possible pid_max (2**22): /proc never has it.
FAKE_PID = 5_000_000


# -- recorded streams ---------------------------------------------------------------------------
def protocol_folders(spec: ProtocolSpec) -> list[str]:
    """The folder names a protocol's files may live under: the packages of its entry's functions
    below ``pxq.agent.protocols``, then its name."""
    names = []
    for fn in (spec.looks_like_request, spec.looks_like_response, spec.make_stitcher, spec.make_record, spec.make_rows):
        module = getattr(fn, "__module__", None) or ""
        if module.startswith(PROTOCOL_PACKAGE):
            names.append(module[len(PROTOCOL_PACKAGE) :].split(".")[0])
    names.append(spec.name)
    return list(dict.fromkeys(names))


def protocol_stream_paths(spec: ProtocolSpec) -> list[Path]:
    paths: list[Path] = []
    for root in STREAM_ROOTS:
        for folder in protocol_folders(spec):
            paths += sorted((root / folder / "streams").glob("*.json"))
    return list(dict.fromkeys(paths))


def protocol_streams(spec: ProtocolSpec) -> list[RecordedStream]:
    """The recorded conversations of one protocol (see the module docstring). A recording whose
    JSON says ``"datagrams": true`` (DNS over UDP) is a list of datagrams: each chunk is one
    read, never cut (:func:`is_datagrams`)."""
    streams = []
    for path in protocol_stream_paths(spec):
        stream = load_stream(path)
        setattr(stream, "datagrams", bool(json.loads(path.read_text()).get("datagrams")))  # noqa: B010
        streams.append(stream)
    return streams


def is_datagrams(stream: RecordedStream) -> bool:
    return bool(getattr(stream, "datagrams", False))


def registered_cases() -> list[tuple[ProtocolSpec, RecordedStream]]:
    """(protocol, recorded conversation) for every protocol registered now."""
    return [(spec, stream) for spec in registry.PROTOCOLS.values() for stream in protocol_streams(spec)]


def stream_folders() -> list[Path]:
    """Every ``<protocol folder>/streams`` directory holding recorded conversations."""
    return sorted({p.parent for root in STREAM_ROOTS for p in root.glob("*/streams/*.json")})


# -- conversations with byte identities ---------------------------------------------------------
@dataclass
class Chunk:
    """The bytes of one read of one side (``request``: the client's), each with its offset in
    that side of the original conversation (:data:`INSERTED` for bytes that were not there)."""

    request: bool
    data: bytes
    ids: list[int]

    def __post_init__(self) -> None:
        assert len(self.data) == len(self.ids)

    def cut(self, a: int, b: int) -> Chunk:
        return Chunk(self.request, self.data[a:b], self.ids[a:b])


def conversation(stream: RecordedStream) -> list[Chunk]:
    """A recorded stream as chunks in recorded (time) order, every byte its original offset."""
    offsets = {True: 0, False: 0}
    chunks = []
    for direction, _ts, data in stream.chunks:
        request = direction == "req"
        start = offsets[request]
        offsets[request] = start + len(data)
        if data:
            chunks.append(Chunk(request, data, list(range(start, start + len(data)))))
    return chunks


def side_lengths(chunks: Iterable[Chunk]) -> dict[bool, int]:
    lengths = {True: 0, False: 0}
    for chunk in chunks:
        lengths[chunk.request] += len(chunk.data)
    return lengths


# -- steps: what a stitcher is given ------------------------------------------------------------
@dataclass
class Feed:
    request: bool
    data: bytes
    ts_ns: int


@dataclass
class Skip:
    """Bytes the kernel counted without copying (a filler event)."""

    request: bool
    n: int
    ts_ns: int


@dataclass
class ResponseGap:
    """Response bytes were lost; the next response bytes (at ``ts_ns``) begin a response."""

    ts_ns: int


Step = Feed | Skip | ResponseGap


@dataclass
class Timeline:
    """The steps to feed, and which original byte (side, identity) each timestamp names."""

    steps: list[Step] = field(default_factory=list)
    where: dict[int, tuple[bool, int]] = field(default_factory=dict)


def resolve_inserted(chunks: list[Chunk]) -> list[Chunk]:
    """Inserted bytes take the identity of the next original byte of their side (or the side's
    end): a message the parser begins in them begins where that byte's message does."""
    out: list[Chunk] = []
    next_id = {
        side: max((max(c.ids) for c in chunks if c.request == side and c.ids), default=-1) + 1 for side in (True, False)
    }
    for chunk in reversed(chunks):
        ids = chunk.ids
        if INSERTED in ids:
            ids = list(ids)
            for k in range(len(ids) - 1, -1, -1):
                if ids[k] == INSERTED:
                    ids[k] = next_id[chunk.request]
                else:
                    next_id[chunk.request] = ids[k]
        elif ids:
            next_id[chunk.request] = ids[0]
        out.append(Chunk(chunk.request, chunk.data, ids))
    out.reverse()
    return out


def pieces(chunks: list[Chunk], cuts: Callable[[int, Chunk], Iterable[int]]) -> list[Chunk]:
    """Each chunk cut into reads at the positions ``cuts(index, chunk)`` names."""
    out = []
    for index, chunk in enumerate(chunks):
        points = sorted({p for p in cuts(index, chunk) if 0 < p < len(chunk.data)} | {0, len(chunk.data)})
        out += [chunk.cut(a, b) for a, b in zip(points, points[1:]) if b > a]
    return out


def timeline(reads: list[Chunk], *, locate: bool = True) -> Timeline:
    """Reads in order, each stamped with BASE_TS + the feed position of its first byte; with
    ``locate``, which original byte each timestamp names (``where``)."""
    line = Timeline()
    position = 0
    for read in resolve_inserted(reads) if locate else reads:
        ts = BASE_TS + position
        if locate:
            line.where[ts] = (read.request, read.ids[0])
        line.steps.append(Feed(read.request, read.data, ts))
        position += len(read.data)
    return line


def every_byte(chunks: list[Chunk]) -> list[Chunk]:
    return pieces(chunks, lambda _i, chunk: range(len(chunk.data)))


def no_cuts(_index: int, _chunk: Chunk) -> list[int]:
    return []


# -- running a stitcher -------------------------------------------------------------------------
def default_options() -> ParseOptions:
    return ParseOptions(body_limit=registry.DEFAULT_BODY_LIMIT)


@dataclass
class StitchResult:
    pairs: list[Pair]
    errors: Counter[str]
    # Steps the run did not take: a skip_messages that could not skip every byte, or a
    # response_gap the stitcher declined (the tracker would start over there).
    stopped_early: bool = False


def run_stitcher(spec: ProtocolSpec, steps: Iterable[Step], options: ParseOptions | None = None) -> StitchResult:
    """Feed steps to a new stitcher of ``spec`` the way the connection tracker does, then close.
    Past a skip that left bytes over, or a declined response gap, the tracker would discard the
    stitcher: the run stops there."""
    stitcher = spec.make_stitcher(options or default_options())
    pairs: list[Pair] = []
    last_ts = BASE_TS
    stopped = False
    for step in steps:
        last_ts = max(last_ts, step.ts_ns)
        if isinstance(step, Feed):
            pairs += stitcher.feed_messages(step.request, step.data, step.ts_ns)
        elif isinstance(step, Skip):
            done, left = stitcher.skip_messages(step.request, step.n, step.ts_ns)
            assert 0 <= left <= step.n, f"skip_messages left {left} of {step.n} bytes"
            pairs += done
            if left:
                stopped = True
                break
        else:
            going_on = stitcher.response_gap(step.ts_ns)
            assert isinstance(going_on, bool)
            if not going_on:
                stopped = True
                break
        if stitcher.upgraded:
            break
    pairs += stitcher.close_messages(last_ts + 1)
    for reason, n in stitcher.errors.items():
        assert isinstance(reason, str) and isinstance(n, int) and n >= 0, (reason, n)
    return StitchResult(pairs, Counter(stitcher.errors), stopped)


# -- where pairs begin --------------------------------------------------------------------------
def timestamp_refs(
    obj: Any, known: dict[int, tuple[bool, int]], depth: int = 0, seen: set[int] | None = None
) -> set[int]:
    """The timestamps of ``known`` held anywhere in ``obj`` (fields of dataclasses, slots,
    attributes, tuples, lists, dicts; a few levels deep)."""
    seen = set() if seen is None else seen
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, bytes, bytearray, float)):
        return set()
    if isinstance(obj, int):
        return {obj} if obj in known else set()
    if depth > 4 or id(obj) in seen:
        return set()
    seen.add(id(obj))
    values: Iterable[Any]
    if isinstance(obj, dict):
        values = obj.values()
    elif isinstance(obj, (tuple, list, set, frozenset)):
        values = obj
    elif dataclasses.is_dataclass(obj):
        values = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    else:
        names = [n for cls in type(obj).__mro__ for n in getattr(cls, "__slots__", ())]
        values = [getattr(obj, n) for n in names if hasattr(obj, n)] + list(getattr(obj, "__dict__", {}).values())
    found: set[int] = set()
    for value in values:
        found |= timestamp_refs(value, known, depth + 1, seen)
    return found


def pair_spans(pair: Pair, where: dict[int, tuple[bool, int]]) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """Where a pair's request and response lie: the smallest and largest original identity of
    the timestamps each holds on its own side (None: it holds none)."""
    req, resp = pair
    spans: list[tuple[int, int] | None] = []
    for obj, side in ((req, True), (resp, False)):
        ids = [where[ts][1] for ts in timestamp_refs(obj, where) if where[ts][0] == side]
        spans.append((min(ids), max(ids)) if ids else None)
    return spans[0], spans[1]


@dataclass
class Reference:
    """The pairs of an unmodified conversation, fed one byte per read."""

    request_starts: list[int]  # sorted, distinct
    response_starts: list[int]
    pairs: set[tuple[int, int]]  # (request index, response index) into the lists above
    count: int
    # Each request began after the previous pair's response ended (no pipelining).
    sequential: bool = True
    # Pairs with both a request and a response (the others are one-sided: pushes, no-reply commands).
    two_sided: int = 0

    def message(self, starts: list[int], identity: int) -> int:
        """The original message (index into ``starts``) a byte of that side lies in (-1: before
        the first)."""
        return bisect.bisect_right(starts, identity) - 1

    def touched(self, starts: list[int], span: tuple[int, int]) -> range:
        return range(self.message(starts, span[0]), self.message(starts, span[1]) + 1)

    def mispaired(self, result_pairs: list[Pair], where: dict[int, tuple[bool, int]]) -> list[str]:
        """The pairs of a run that pair a request with a response not its own in the original:
        no original pair has its request among the original requests the pair's request lies
        in and its response among those its response lies in (a damaged message may run into
        the next one: either is its own)."""
        wrong = []
        for pair in result_pairs:
            req_span, resp_span = pair_spans(pair, where)
            if req_span is None or resp_span is None:
                continue  # bytes of no original message (a garbage-only run): nothing to compare
            reqs = self.touched(self.request_starts, req_span)
            resps = self.touched(self.response_starts, resp_span)
            if not any((i, j) in self.pairs for i in reqs for j in resps):
                wrong.append(
                    f"request of original message(s) {list(reqs)} (bytes {req_span}) paired with the "
                    f"response of original message(s) {list(resps)} (bytes {resp_span}); "
                    f"original pairs: {sorted(self.pairs)}"
                )
        return wrong

    def cuts(self, extra: Callable[[int, Chunk], Iterable[int]]) -> Callable[[int, Chunk], list[int]]:
        """``extra``'s cut points, and one where each original message begins and where each
        run of inserted bytes begins: then the timestamp of the read a message begins in names a
        byte of the original message it begins in, as one byte per read would."""
        starts = {True: set(self.request_starts), False: set(self.response_starts)}

        def cuts(index: int, chunk: Chunk) -> list[int]:
            out = list(extra(index, chunk))
            side, previous = starts[chunk.request], None
            for k, identity in enumerate(chunk.ids):
                if identity in side or (identity == INSERTED and previous != INSERTED):
                    out.append(k)
                previous = identity
            return out

        return cuts


class NoTimestamps(AssertionError):
    """A protocol's pairs hold no timestamp of their own bytes: pairing cannot be checked (and
    its rows could have no latency)."""


def reference(spec: ProtocolSpec, chunks: list[Chunk], options: ParseOptions | None = None) -> Reference:
    """The pairs of the unmodified conversation, one byte per read: where each message begins."""
    line = timeline(every_byte(chunks))
    result = run_stitcher(spec, line.steps, options)
    spans = [pair_spans(pair, line.where) for pair in result.pairs]
    # A one-sided pair (a Redis pub/sub push has no request, a MySQL COM_STMT_CLOSE no response, an
    # unanswered DNS query) pairs nothing with anything: only two-sided pairs are judged.
    two_sided = [(pair, (r, s)) for pair, (r, s) in zip(result.pairs, spans) if r is not None and s is not None]
    if result.pairs and not two_sided:
        raise NoTimestamps(f"{spec.name}: no pair holds timestamps of both its request's and its response's bytes")
    starts = [(req_span[0], resp_span[0]) for _, (req_span, resp_span) in two_sided]
    req_list = sorted({s for s, _ in starts})
    resp_list = sorted({s for _, s in starts})
    ref = Reference(req_list, resp_list, set(), len(result.pairs), two_sided=len(two_sided))
    ref.pairs = {(ref.message(req_list, a), ref.message(resp_list, b)) for a, b in starts}
    # In feed order (timestamps), not identities: did a request begin before the last answer ended?
    times = sorted(
        (min(t for t in timestamp_refs(req, line.where) if line.where[t][0]),
         max(t for t in timestamp_refs(resp, line.where) if not line.where[t][0]))
        for (req, resp), _ in two_sided
    )  # fmt: skip
    ref.sequential = all(later[0] > earlier[1] for earlier, later in zip(times, times[1:]))
    return ref


# -- mutations ----------------------------------------------------------------------------------
_NUMBER = re.compile(rb"[0-9a-fA-F]+")
INTERESTING_INTS = (0, 1, 2, 7, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0xFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF)
INTERESTING_NUMBERS = (b"0", b"1", b"00", b"9", b"99999999999999999999", b"-1", b"18446744073709551616", b"ff", b"")


def _pick(rng: random.Random, chunks: list[Chunk]) -> int:
    return rng.randrange(len(chunks))


def garbage(rng: random.Random, max_len: int = 64) -> bytes:
    size = rng.choice((1, 2, 3, 4, 8, 16, rng.randint(1, max_len)))
    return rng.randbytes(size)


def flip(rng: random.Random, chunks: list[Chunk]) -> None:
    """A byte's bits flipped."""
    i = _pick(rng, chunks)
    chunk = chunks[i]
    if not chunk.data:
        return
    k = rng.randrange(len(chunk.data))
    data = bytearray(chunk.data)
    data[k] ^= rng.randint(1, 255)
    chunks[i] = Chunk(chunk.request, bytes(data), chunk.ids)


def insert(rng: random.Random, chunks: list[Chunk]) -> None:
    """Random bytes inside a read (or between two)."""
    i = _pick(rng, chunks)
    chunk = chunks[i]
    k = rng.randint(0, len(chunk.data))
    junk = garbage(rng)
    chunks[i] = Chunk(
        chunk.request, chunk.data[:k] + junk + chunk.data[k:], chunk.ids[:k] + [INSERTED] * len(junk) + chunk.ids[k:]
    )


def prefix(rng: random.Random, chunks: list[Chunk]) -> None:
    """Random bytes before the conversation, on either side."""
    junk = garbage(rng)
    chunks.insert(0, Chunk(rng.random() < 0.5, junk, [INSERTED] * len(junk)))


def append(rng: random.Random, chunks: list[Chunk]) -> None:
    """Random bytes after the conversation, on either side."""
    junk = garbage(rng)
    chunks.append(Chunk(rng.random() < 0.5, junk, [INSERTED] * len(junk)))


def truncate(rng: random.Random, chunks: list[Chunk]) -> None:
    """The conversation stops somewhere (the connection closes there)."""
    i = _pick(rng, chunks)
    k = rng.randint(0, len(chunks[i].data))
    chunks[i] = chunks[i].cut(0, k)
    del chunks[i + 1 :]


def corrupt_length(rng: random.Random, chunks: list[Chunk]) -> None:
    """A length field made wrong: a decimal or hex number replaced by another, or one to four
    bytes overwritten with a boundary value in either byte order (a binary length prefix)."""
    i = _pick(rng, chunks)
    chunk = chunks[i]
    if not chunk.data:
        return
    data = chunk.data
    numbers = [m for m in _NUMBER.finditer(data)]
    if numbers and rng.random() < 0.5:
        m = rng.choice(numbers)
        text = m.group()
        if text.isdigit():  # a decimal length (Content-Length) one off, else a hex one (a chunk size)
            near = str(int(text) + rng.choice((-1, 1))).encode()
        else:
            near = b"%x" % (int(text, 16) + rng.choice((-1, 1)))
        number = rng.choice((*INTERESTING_NUMBERS, near))
        a, b = m.span()
        width = min(len(number), b - a)
        new_ids = chunk.ids[a : a + width] + [INSERTED] * (len(number) - width)
        chunks[i] = Chunk(chunk.request, data[:a] + number + data[b:], chunk.ids[:a] + new_ids + chunk.ids[b:])
        return
    width = rng.choice((1, 2, 3, 4))
    k = rng.randrange(len(data))
    value = rng.choice(INTERESTING_INTS) + rng.choice((0, 0, -1, 1))
    raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, rng.choice(("big", "little")))
    raw = raw[: len(data) - k]
    chunks[i] = Chunk(chunk.request, data[:k] + raw + data[k + len(raw) :], chunk.ids)


def delete(rng: random.Random, chunks: list[Chunk]) -> None:
    """Bytes gone without a trace (no tracker would hand this over: fuzzing only)."""
    i = _pick(rng, chunks)
    chunk = chunks[i]
    a = rng.randint(0, len(chunk.data))
    b = min(len(chunk.data), a + rng.choice((1, 2, 4, 16, 256)))
    chunks[i] = Chunk(chunk.request, chunk.data[:a] + chunk.data[b:], chunk.ids[:a] + chunk.ids[b:])


def repeat(rng: random.Random, chunks: list[Chunk]) -> None:
    """A read or part of one sent twice (fuzzing only: a repeated request is a new request)."""
    i = _pick(rng, chunks)
    chunk = chunks[i]
    a = rng.randint(0, len(chunk.data))
    b = rng.randint(a, len(chunk.data))
    times = rng.choice((1, 2, 8))
    part = chunk.cut(a, b)
    chunks[i] = Chunk(
        chunk.request,
        chunk.data[:b] + part.data * times + chunk.data[b:],
        chunk.ids[:b] + part.ids * times + chunk.ids[b:],
    )


def swap_sides(rng: random.Random, chunks: list[Chunk]) -> None:
    """A read credited to the other side (fuzzing only)."""
    i = _pick(rng, chunks)
    chunk = chunks[i]
    chunks[i] = Chunk(not chunk.request, chunk.data, [INSERTED] * len(chunk.data))


# Mutations after which a pair that was not one of the original is the stitcher's fault.
PAIRING_SAFE = (flip, insert, prefix, append, truncate, corrupt_length)
# And those that may rightly make new pairs (a request repeated, bytes moved or gone unseen).
FUZZ_ONLY = (delete, repeat, swap_sides)
MUTATIONS = PAIRING_SAFE + FUZZ_ONLY


def mutate(
    rng: random.Random,
    chunks: list[Chunk],
    kinds: tuple[Callable[[random.Random, list[Chunk]], None], ...] = PAIRING_SAFE,
    count: int | None = None,
) -> list[Chunk]:
    """A copy of ``chunks`` with ``count`` (default 1 to 4) mutations of ``kinds``."""
    out = list(chunks)
    for _ in range(count if count is not None else rng.randint(1, 4)):
        if not out:
            break
        rng.choice(kinds)(rng, out)
    return [c for c in out if c.data]


def random_cuts(rng: random.Random, max_cuts: int = 6) -> Callable[[int, Chunk], list[int]]:
    def cuts(_index: int, chunk: Chunk) -> list[int]:
        if not chunk.data or rng.random() < 0.3:
            return []
        return [rng.randint(1, len(chunk.data)) for _ in range(rng.randint(1, max_cuts))]

    return cuts


def lossy_steps(rng: random.Random, reads: list[Chunk], line: Timeline, spec: ProtocolSpec) -> list[Step]:
    """The reads as steps, some replaced as the kernel and the tracker would hand them over: a
    read counted without its bytes (skip_messages), or server reads lost and the next server read,
    when it begins a response, announced with response_gap (the request side intact up to it)."""
    steps: list[Step] = []
    skip_p, lose_p = rng.choice((0.0, 0.1, 0.3)), rng.choice((0.0, 0.1, 0.3))
    lost = False
    for read, step in zip(reads, line.steps):
        assert isinstance(step, Feed)
        if lost and not read.request:
            if not spec.looks_like_response(read.data[:64]):
                continue
            steps.append(ResponseGap(step.ts_ns))
            lost = False
        elif lost:
            break  # request bytes after the loss: the tracker would start over, not call response_gap
        if rng.random() < skip_p:
            steps.append(Skip(read.request, len(read.data), step.ts_ns))
        elif not read.request and rng.random() < lose_p:
            lost = True
        else:
            steps.append(step)
    return steps


def reads_of(
    stream: RecordedStream, chunks: list[Chunk], rng: random.Random, ref: Reference | None = None
) -> list[Chunk]:
    """A (mutated) conversation cut into reads at random, and where ``ref`` says each original
    message begins; a datagram recording's chunks stay whole (one read per datagram)."""
    if is_datagrams(stream):
        return [c for c in chunks if c.data]
    cuts = random_cuts(rng)
    return pieces(chunks, ref.cuts(cuts) if ref is not None else cuts)


def random_conversation(rng: random.Random, max_reads: int = 12) -> list[Chunk]:
    """Pure random bytes, on random sides."""
    return [
        Chunk(rng.random() < 0.5, junk, [INSERTED] * len(junk))
        for junk in (rng.randbytes(rng.choice((1, 5, 16, 64, 300, 2000))) for _ in range(rng.randint(1, max_reads)))
    ]


# -- the connection tracker ---------------------------------------------------------------------
class RecordingRows:
    """A row buffer that keeps the pairs the tracker hands it (the table is not the point)."""

    def __init__(self, _options: ParseOptions) -> None:
        self.pairs: list[Pair] = []

    def add_pairs(self, conn: Any, pairs: list[Pair], clock_offset_ns: int) -> None:
        self.pairs += pairs

    def table(self) -> Any:
        import pyarrow as pa

        return pa.table({"pairs": pa.array([], pa.int64())})

    def __len__(self) -> int:
        return 0


def recording_tracker(**kwargs: Any) -> tuple[ConnTracker, dict[str, RecordingRows]]:
    """A tracker of every registered protocol whose row buffers keep the raw pairs, by protocol."""
    specs = [dataclasses.replace(spec, make_rows=RecordingRows) for spec in registry.PROTOCOLS.values()]
    tracker = ConnTracker(protocols=specs, **kwargs)
    rows: dict[str, RecordingRows] = {name: buf for name, buf in tracker.rows.items() if isinstance(buf, RecordingRows)}
    return tracker, rows


@dataclass
class EventPlan:
    """How a conversation reaches the tracker as kernel events."""

    role: int = ROLE_CLIENT  # the traced side: the client (connect) or the server (accept)
    opened: bool = True  # an OPEN event first; else a socket seen mid-life
    attach_at: int = 0  # reads before this one went by before the tracer attached (not seen)
    drops: frozenset[int] = frozenset()  # reads lost in the ring buffer (a hole in the offsets)
    fillers: frozenset[int] = frozenset()  # reads the kernel counted without copying
    swaps: frozenset[int] = frozenset()  # event i delivered after event i+1 (of its direction)
    # Swaps across directions too: a response's event ahead of its request's (CPUs racing to
    # the ring buffer). Pairing cannot always survive that: fuzzing only.
    cross_swaps: bool = False
    batch: int = 4  # events per poll batch
    close: bool = True  # a CLOSE event at the end (else the capture window ends)


def events(
    reads: list[Chunk], line: Timeline, plan: EventPlan, pid: int = FAKE_PID, fd: int = 9
) -> list[list[SockEvent]]:
    """Kernel events for reads stamped by ``line`` (the same reads, in order), in poll batches."""
    request_dir = EGRESS if plan.role == ROLE_CLIENT else INGRESS
    role = plan.role if plan.opened and not plan.attach_at else 0  # the kernel saw connect/accept
    base = SockEvent(ts_ns=BASE_TS, pos=0, size=0, pid=pid, fd=fd, gen=1, data_len=0, kind=EV_DATA, flags=0,
                     direction=0, role=role, family=2, lport=0, rport=0, syscall=0, reserved=0,
                     laddr=bytes(16), raddr=bytes(16))  # fmt: skip
    out: list[SockEvent] = []
    if plan.opened and plan.attach_at == 0:
        out.append(base._replace(kind=EV_OPEN))
    offset = {EGRESS: 0, INGRESS: 0}
    feeds = [s for s in line.steps if isinstance(s, Feed)]
    for index, (read, step) in enumerate(zip(reads, feeds)):
        direction = request_dir if read.request else INGRESS + EGRESS - request_dir
        pos = offset[direction]
        offset[direction] += len(read.data)
        if index < plan.attach_at:
            continue
        pos -= sum(len(r.data) for r in reads[: plan.attach_at] if r.request == read.request)
        if index in plan.drops:
            continue
        size = len(read.data)
        ev = base._replace(ts_ns=step.ts_ns, pos=pos, size=size, data_len=size, direction=direction, data=read.data)
        if index in plan.fillers:
            ev = ev._replace(flags=F_FILLER, data_len=0, data=b"")
        out.append(ev)
    for i in sorted(plan.swaps):
        if i + 1 < len(out) and (plan.cross_swaps or out[i].direction == out[i + 1].direction):
            out[i], out[i + 1] = out[i + 1], out[i]
    if plan.close:
        last = max((e.ts_ns for e in out), default=BASE_TS)
        out.append(base._replace(kind=EV_CLOSE, ts_ns=last + 1))
    return [out[i : i + plan.batch] for i in range(0, len(out), max(1, plan.batch))]


def losses_visible(reads: list[Chunk], plan: EventPlan) -> bool:
    """Can the tracker see every loss of ``plan``: is each lost read of a side followed by a
    read of that side it does get (a hole in the offsets)? A side's last reads lost leave no
    trace in its events (the kernel counts those drops)."""
    last_seen = {
        side: max((i for i, r in enumerate(reads) if r.request == side and i not in plan.drops), default=-1)
        for side in (True, False)
    }
    return all(i < last_seen[reads[i].request] for i in plan.drops if i >= plan.attach_at)


def run_tracker(batches: list[list[SockEvent]], **kwargs: Any) -> tuple[ConnTracker, dict[str, RecordingRows]]:
    """Events through a recording tracker, batch by batch, then the window ends."""
    tracker, rows = recording_tracker(**kwargs)
    for batch in batches:
        tracker.handle_all(batch)
    tracker.close_all()
    return tracker, rows


def random_plan(rng: random.Random, reads: int) -> EventPlan:
    def some(p: float) -> frozenset[int]:
        return frozenset(i for i in range(reads) if rng.random() < p)

    return EventPlan(
        role=rng.choice((ROLE_CLIENT, ROLE_SERVER)),
        opened=rng.random() < 0.7,
        attach_at=rng.randrange(reads) if reads and rng.random() < 0.2 else 0,
        drops=some(rng.choice((0.0, 0.05, 0.2))),
        fillers=some(rng.choice((0.0, 0.05, 0.2))),
        swaps=some(rng.choice((0.0, 0.1))),
        batch=rng.choice((1, 3, 8, 64)),
        close=rng.random() < 0.8,
    )


def chunked(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
