"""Crafted input for pxq's C extension (pxq/agent/_native.c), shared by tests/agent/test_native.py
and the AddressSanitizer run it starts: ring buffers with truncated, oversized, discarded, busy
and wrapping records, random positions and garbage; HTTP heads cut at every byte, mutated and
random. ``run_all(native)`` returns every answer of a build (plain data, comparable with ``==``)."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

from pxq.agent.conn_tracker import SockEvent

BUSY, DISCARD = 1 << 31, 1 << 30
DATA_AT = 64  # where the data area starts in the producer buffer (a page in the kernel's mapping)
RING_SIZE = 1024
# struct pxq_sock_event (bpf/socket_trace.h), packed the way the C compiler lays it out.
EVENT = struct.Struct("<QQQIiIIHHBBHHHHH16s16s")
assert EVENT.size == 88


def event_bytes(i: int, data: bytes) -> bytes:
    return EVENT.pack(
        1000 + i, 10 * i, len(data), 100 + i, -i, i, len(data), 2, 0, i % 2, 1, 2, 80, 40000 + i, 3, 0,
        bytes([i % 256]) * 16, bytes([255 - i % 256]) * 16,
    ) + data  # fmt: skip


class Ring:
    """A ring buffer as the C walk sees it: a producer buffer (position, then the data area twice,
    both copies written, as the kernel's double mapping shows it) and a consumer position."""

    def __init__(self, size: int = RING_SIZE, start: int = 0) -> None:
        self.size = size
        self.producer = bytearray(DATA_AT + 2 * size)
        self.consumer = bytearray(8)
        self.prod = start
        self.set_consumer(start)
        self.publish()

    def write(self, pos: int, blob: bytes) -> None:
        for i, b in enumerate(blob):
            at = (pos + i) % self.size
            self.producer[DATA_AT + at] = self.producer[DATA_AT + self.size + at] = b

    def add_raw(self, length_word: int, body: bytes, advance: int | None = None) -> int:
        """A record of header word ``length_word`` and ``body``; returns its position."""
        pos = self.prod
        self.write(pos, struct.pack("<II", length_word, 0) + body)
        step = advance if advance is not None else ((length_word & ~(BUSY | DISCARD)) + 8 + 7) // 8 * 8
        self.prod = (self.prod + step) % (1 << 64)
        self.publish()
        return pos

    def add(self, i: int, data: bytes, flags: int = 0) -> int:
        body = event_bytes(i, data)
        return self.add_raw(len(body) | flags, body)

    def publish(self) -> None:
        struct.pack_into("<Q", self.producer, 0, self.prod)

    def set_consumer(self, pos: int) -> None:
        struct.pack_into("<Q", self.consumer, 0, pos)

    @property
    def consumer_pos(self) -> int:
        return int(struct.unpack_from("<Q", self.consumer)[0])

    def read(self, native: Any, limit: int = 1 << 62) -> tuple[tuple[int, int], list[tuple[Any, ...]], int]:
        out: list[Any] = []
        counts = native.ring_read(self.producer, self.consumer, DATA_AT, self.size, limit, out, SockEvent)
        assert all(type(ev) is SockEvent for ev in out)
        return counts, [tuple(ev) for ev in out], self.consumer_pos


def ring_cases() -> list[tuple[str, Callable[[], Ring], int]]:
    """(name, ring maker, limit) for the crafted rings."""

    def plain() -> Ring:
        ring = Ring()
        for i, data in enumerate([b"GET / HTTP/1.1\r\n\r\n", b"", b"x" * 100]):
            ring.add(i, data)
        return ring

    def discard_and_busy() -> Ring:
        ring = Ring()
        ring.add(1, b"one")
        ring.add(2, b"gone", DISCARD)
        ring.add(3, b"later", BUSY)
        ring.add(4, b"after")
        return ring

    def wraps() -> Ring:
        ring = Ring(start=RING_SIZE - 40)  # the second record straddles the end of the data area
        ring.add(1, b"a")
        ring.add(2, bytes(range(200)))
        ring.add(3, b"b")
        return ring

    def truncated() -> Ring:
        ring = Ring()
        ring.add(1, b"before")
        ring.add_raw(20, bytes(20))  # shorter than an event header
        ring.add_raw(0, b"")  # an empty record
        ring.add(2, b"after")
        return ring

    def runs_past_producer() -> Ring:
        ring = Ring()
        ring.add(1, b"ok")
        ring.add_raw(500, event_bytes(2, b"y" * 400), advance=64)  # says 500 bytes; 64 were produced
        return ring

    def longer_than_ring() -> Ring:
        ring = Ring()
        ring.add_raw(DISCARD - 1, b"", advance=8)
        return ring

    def positions_apart() -> Ring:
        ring = Ring()
        ring.add(1, b"x")
        ring.prod = 10 * RING_SIZE  # more pending than the ring holds
        ring.publish()
        return ring

    def near_the_top() -> Ring:
        ring = Ring(start=(1 << 64) - 64)  # positions about to wrap the 64-bit counter
        ring.add_raw(0x3FFF_FFF0, b"", advance=16)
        return ring

    def limited() -> Ring:
        ring = Ring()
        for i in range(5):
            ring.add(i, b"%d" % i)
        return ring

    return [
        ("plain", plain, 1 << 62), ("discard_and_busy", discard_and_busy, 1 << 62), ("wraps", wraps, 1 << 62),
        ("truncated", truncated, 1 << 62), ("runs_past_producer", runs_past_producer, 1 << 62),
        ("longer_than_ring", longer_than_ring, 1 << 62), ("positions_apart", positions_apart, 1 << 62),
        ("near_the_top", near_the_top, 1 << 62), ("limited", limited, 2), ("limit_zero", limited, 0),
    ]  # fmt: skip


def random_rings(seed: int, count: int) -> list[tuple[Ring, int]]:
    """Rings of garbage, and of records with a byte flipped, at random positions."""
    rng = random.Random(seed)
    rings = []
    for _ in range(count):
        ring = Ring(start=rng.choice([0, 8 * rng.randrange(1 << 20), (1 << 64) - 8 * rng.randrange(1, 200)]))
        if rng.random() < 0.5:
            for i in range(rng.randrange(1, 6)):
                ring.add(i, rng.randbytes(rng.randrange(0, 150)), rng.choice([0, 0, BUSY, DISCARD]))
            for _ in range(rng.randrange(0, 4)):
                at = DATA_AT + rng.randrange(RING_SIZE)
                ring.producer[at] = ring.producer[at + RING_SIZE] = rng.randrange(256)
        else:
            blob = rng.randbytes(RING_SIZE)
            ring.producer[DATA_AT:] = blob + blob
            ring.prod = (ring.prod + rng.randrange(0, 2 * RING_SIZE)) % (1 << 64)
            ring.publish()
        rings.append((ring, rng.choice([1 << 62, rng.randrange(0, 4)])))
    return rings


# -- HTTP heads ---------------------------------------------------------------------------------
REQUESTS = [
    b"GET /a?i=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: t/1\r\n\r\n",
    b"POST /p HTTP/1.1\r\nContent-Length: 5\r\nConnection: Keep-Alive\r\n\r\nhello",
    b"HEAD / HTTP/1.1\r\nX-Empty:\r\nX-Tab:\tv \r\n\r\n",
    b"PUT /~x;y=(1) HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: n\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 503 A B C\r\n\r\n",
]
NOT_PLAIN = [
    b"GET / HTTP/1.0\r\n\r\n", b"get / HTTP/1.1\r\n\r\n", b"GET * HTTP/1.1\r\n\r\n", b"GET /a#f HTTP/1.1\r\n\r\n",
    b"GET /\xc3\xbc HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", b"GET / HTTP/1.1\r\nX: a\xffb\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 1234567890123456\r\n\r\n", b"GET / HTTP/1.1\r\nUPGRADE: h2c\r\n\r\n",
    b"HTTP/1.1 200 \r\n\r\n", b"HTTP/1.1 200\r\n\r\n", b"HTTP/1.1 200 A  B\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 600 X\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\nX: y\r\n\r\n", b"HTTP/1.1 200 OK\r\nX: y\n\r\n",
]  # fmt: skip


def http_inputs(seed: int, count: int) -> list[tuple[bytes, int, bool]]:
    """(data, at, is_request): each head cut at every byte, with bytes before it, mutated, and
    random bytes."""
    rng = random.Random(seed)
    inputs = []
    for is_request, heads in ((True, REQUESTS), (False, RESPONSES)):
        for head in heads + NOT_PLAIN:
            for cut in range(len(head) + 1):
                inputs.append((head[:cut], 0, is_request))
            inputs.append((b"junk" + head + head, 4, is_request))
            inputs.append((head + head, len(head), is_request))
    alphabet = b"GETPOSHD /HTTP1.:\r\n\t -~azAZ09" + bytes(range(0, 256, 17))
    for _ in range(count):
        head = bytearray(rng.choice(REQUESTS + RESPONSES + NOT_PLAIN))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            at = rng.randrange(len(head) + 1)
            if op == 0 and head:
                head[min(at, len(head) - 1)] = rng.choice(alphabet)
            elif op == 1:
                head[at:at] = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 4)))
            else:
                del head[at : at + rng.randrange(1, 4)]
        inputs.append((bytes(head), 0, rng.random() < 0.5))
        garbage = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        inputs.append((garbage, rng.randrange(len(garbage) + 1), rng.random() < 0.5))
    return inputs


def message_slots(framed: tuple[Any, int] | None) -> tuple[Any, ...] | None:
    """What frame_message gave, as plain data: the message's slots and where the next one starts."""
    if framed is None:
        return None
    msg, next_at = framed
    return (type(msg).__name__, *(getattr(msg, name) for name in type(msg).__slots__), next_at)


# -- the connection tracker's HTTP/1 steady state (http1_batch) --------------------------------
TRACED_PID = 4_000_000  # above any pid_max: /proc has no such process


class TracedConn:
    """One traced connection's events, its stream offsets counted per direction."""

    def __init__(self, fd: int, role: int = 2) -> None:  # ROLE_SERVER
        from pxq.agent.conn_tracker import EGRESS, INGRESS, ROLE_CLIENT

        self.fd, self.role = fd, role
        self.request_direction = EGRESS if role == ROLE_CLIENT else INGRESS
        self.pos = {EGRESS: 0, INGRESS: 0}

    def open(self, ts: int, flags: int | None = None) -> SockEvent:
        from pxq.agent.conn_tracker import EV_OPEN, F_TUPLE

        return SockEvent(ts, 0, 0, TRACED_PID, self.fd, 1, 0, EV_OPEN, F_TUPLE if flags is None else flags, 0,
                         self.role, 2, 8080, 41000 + self.fd, 0, 0, bytes([127, 0, 0, 1]) + bytes(12),
                         bytes([10, 1, 2, 3]) + bytes(12), b"")  # fmt: skip

    def data(self, ts: int, request: bool, data: bytes, *, lost: bool = False) -> SockEvent | None:
        """The event of ``data`` sent by the client (``request``) or the server; ``lost``: its
        bytes are counted in the stream but the event never comes (ring buffer full)."""
        from pxq.agent.conn_tracker import EGRESS, EV_DATA, INGRESS

        d = self.request_direction if request else (INGRESS if self.request_direction == EGRESS else EGRESS)
        pos = self.pos[d]
        self.pos[d] += len(data)
        if lost:
            return None
        return SockEvent(ts, pos, len(data), TRACED_PID, self.fd, 1, len(data), EV_DATA, 0, d, self.role, 0, 0, 0,
                         0, 0, b"", b"", data)  # fmt: skip

    def close(self, ts: int) -> SockEvent:
        from pxq.agent.conn_tracker import EGRESS, EV_CLOSE, INGRESS

        return SockEvent(ts, self.pos[EGRESS], self.pos[INGRESS], TRACED_PID, self.fd, 1, 0, EV_CLOSE, 0, 0,
                         self.role, 0, 0, 0, 0, 0, b"", b"", b"")  # fmt: skip


USUAL_REQUESTS = REQUESTS[:]
USUAL_RESPONSES = RESPONSES[:2]


def tracker_scripts(seed: int, count: int) -> list[list[Any]]:
    """Batches of events of a few connections: keep-alive exchanges of the plain messages above,
    and, among them, those messages mutated, cut, pipelined, lost, and random bytes; now and then
    odd events (a bytearray's data, an fd past int64, a negative pid) the C path must leave alone."""
    from pxq.agent.conn_tracker import ROLE_CLIENT, ROLE_SERVER

    rng = random.Random(seed)
    alphabet = b"GETPOSHD /HTTP1.:\r\n\t -~azAZ09" + bytes(range(0, 256, 17))
    scripts = []
    for _ in range(count):
        conns = [TracedConn(100 + i, rng.choice([ROLE_SERVER, ROLE_CLIENT])) for i in range(rng.randrange(1, 4))]
        events: list[Any] = [c.open(1) for c in conns if rng.random() < 0.8]
        ts = 10
        for _ in range(rng.randrange(1, 60)):
            c = rng.choice(conns)
            usual = rng.random() < 0.95  # the plain keep-alive exchanges the C path is for; else any
            head = False  # the request was a HEAD: its answer is (mostly) a head alone
            for request, pool in ((True, USUAL_REQUESTS), (False, USUAL_RESPONSES)):
                if not usual:
                    pool = (REQUESTS if request else RESPONSES) + NOT_PLAIN
                data = bytearray(b"".join(rng.choice(pool) for _ in range(1 if rng.random() < 0.95 else 2)))
                if request:
                    head = data.startswith(b"HEAD ")
                elif head and rng.random() < 0.9 and b"\r\n\r\n" in data:
                    del data[data.index(b"\r\n\r\n") + 4 :]
                if rng.random() < 0.05:
                    for _ in range(rng.randrange(1, 4)):
                        at = rng.randrange(len(data))
                        data[at] = rng.choice(alphabet)
                if rng.random() < 0.02:
                    data = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
                cut = rng.randrange(1, len(data)) if rng.random() < 0.05 and len(data) > 1 else len(data)
                for piece in (bytes(data[:cut]), bytes(data[cut:])):
                    if piece:
                        ts += -3 if rng.random() < 0.02 else rng.choice([0, 5, 10])
                        ev = c.data(ts, request, piece, lost=rng.random() < 0.02)
                        if ev is not None:
                            odd = rng.random()
                            if odd < 0.02:
                                ev = ev._replace(data=bytearray(ev.data))
                            elif odd < 0.03:
                                ev = ev._replace(fd=1 << 70)
                            elif odd < 0.04:
                                ev = ev._replace(pid=-7)
                            events.append(ev)
        if rng.random() < 0.3:
            events.append(rng.choice(conns).close(ts + 1))
        batches = []
        while events:
            n = rng.randrange(1, 20)
            batches.append(events[:n])
            events = events[n:]
        scripts.append(batches)
    return scripts


def ring_record(ev: SockEvent) -> bytes | None:
    """``ev`` as the kernel writes it into the ring buffer (the header, then its data), or None
    when a field does not fit the header (the scripts' odd pids and fds)."""
    if not (0 <= ev.pid < 1 << 32 and -(1 << 31) <= ev.fd < 1 << 31 and 0 <= ev.gen < 1 << 32):
        return None
    return EVENT.pack(*ev[:16], ev.laddr.ljust(16, b"\0"), ev.raddr.ljust(16, b"\0")) + bytes(ev.data)


class RingWalk:
    """A ConnTracker.handle_records walk of ``ring``, ``limit`` records at most, with ``native``'s
    ring_take."""

    def __init__(self, native: Any, ring: Ring, limit: int) -> None:
        self.native, self.ring, self.limit = native, ring, limit
        self.malformed = 0

    def __call__(self, conns, rows, clock_offset_ns, handle):
        ring = self.ring
        records, malformed, *taken = self.native.ring_take(
            ring.producer, ring.consumer, DATA_AT, ring.size, self.limit, SockEvent, conns, rows, clock_offset_ns,
            handle,
        )  # fmt: skip
        self.malformed += malformed
        return (records, *taken)


def tracker_answers(native: Any, seed: int, count: int) -> list[Any]:
    """The rows and counters of ConnTracker over tracker_scripts with ``native``'s http1_batch,
    and whether they are those of the Python path; and whether ``native``'s ring_take, walking the
    scripts' events written into a ring buffer (``limit`` records a walk, several walks a batch),
    gives what the Python path gives on the events ring_read decodes of the same records."""
    from pxq.agent import conn_tracker
    from pxq.agent.data_stream import DataStream
    from pxq.agent.protocols import registry
    from pxq.agent.protocols.http1.stitcher import Http1Stitcher, _Direction

    native.set_http1_classes(
        conn_tracker.Connection, DataStream, Http1Stitcher, _Direction, conn_tracker.PARSING, conn_tracker.EV_DATA,
        conn_tracker.EGRESS, conn_tracker.INGRESS, conn_tracker.ROLE_CLIENT,
    )  # fmt: skip

    def outcome(t: conn_tracker.ConnTracker) -> tuple[Any, ...]:
        t.close_all()
        return (t.take_tables()["http_events"].to_pylist(), dict(t.counts), t.drop_counts())

    saved, conn_tracker.HTTP1_BATCH = conn_tracker.HTTP1_BATCH, native.http1_batch
    try:
        answers = []
        for number, script in enumerate(tracker_scripts(seed, count)):
            results = []
            for fast in (True, False):
                t = conn_tracker.ConnTracker(protocols=[registry.PROTOCOLS["http"]], native_http1=fast, body_limit=8)
                for batch in script:
                    t.handle_batch(batch)
                    t.end_batch()
                results.append(outcome(t))
            # The same events through a ring buffer: read into SockEvents for the Python path, and
            # taken by ring_take, a few records a walk.
            ring_results = []
            for fast in (True, False):
                t = conn_tracker.ConnTracker(protocols=[registry.PROTOCOLS["http"]], native_http1=fast, body_limit=8)
                ring = Ring(size=1 << 16, start=(1 << 16) - 200 * number % (1 << 16))
                walk = RingWalk(native, ring, limit=1 + number % 7)
                for batch in script:
                    for ev in batch:
                        record = ring_record(ev)
                        if record is not None:
                            ring.add_raw(len(record), record)
                    if fast:
                        while t.handle_records(walk):
                            pass
                    else:
                        (_, _), decoded, _ = ring.read(native)
                        t.handle_batch([SockEvent(*ev) for ev in decoded])
                    t.end_batch()
                ring_results.append(outcome(t))
            same = results[0] == results[1] and ring_results[0] == ring_results[1]
            answers.append(((results[0], ring_results[0]), same))
        return answers
    finally:
        conn_tracker.HTTP1_BATCH = saved


def http1_batch_growth(native: Any, seeds: range, count: int) -> int:
    """Bytes still allocated, after rounds of tracker_answers, by ``native``'s http1_batch and
    ring_take calls (under tracemalloc, started by the caller): what C allocates during a call is
    traced to the line that calls it. (The Python path keeps a few bytes per round in caches of its
    own, re's and numpy's: not counted.)"""
    import gc
    import inspect
    import tracemalloc

    from pxq.agent import conn_tracker

    def line_of(function: Any, text: str) -> int:
        lines, first = inspect.getsourcelines(function)
        return first + next(i for i, line in enumerate(lines) if text in line)

    where = [
        tracemalloc.Filter(
            True, conn_tracker.__file__, line_of(conn_tracker.ConnTracker.handle_batch, "= http1_batch(")
        ),
        tracemalloc.Filter(True, __file__, line_of(RingWalk.__call__, "ring_take(")),
    ]
    native.clear_plain_block_cache()  # bounded, not a leak: not counted
    gc.collect()
    before = tracemalloc.take_snapshot().filter_traces(where)
    for seed in seeds:
        tracker_answers(native, seed, count)
    native.clear_plain_block_cache()
    gc.collect()
    after = tracemalloc.take_snapshot().filter_traces(where)
    return sum(stat.size_diff for stat in after.compare_to(before, "lineno"))


def run_all(native: Any, seed: int = 14, count: int = 400, tracker: bool = True) -> list[Any]:
    """Every answer of ``native`` on the crafted input: ring walks (counts, events, consumer
    position), HTTP framings and plain messages made (as the stitcher's _Message)."""
    from pxq.agent.protocols.http1.stitcher import _Message

    native.set_message_type(_Message)
    answers: list[Any] = []
    for name, make, limit in ring_cases():
        ring = make()
        answers.append((name, ring.read(native, limit), ring.read(native)))
    for ring, limit in random_rings(seed, count):
        answers.append(ring.read(native, limit))
    for i, (data, at, is_request) in enumerate(http_inputs(seed, count)):
        answers.append(native.frame_plain(data, at, is_request))
        answers.append(message_slots(native.frame_message(data, at, is_request, i % 3, (16, 0, 1 << 20)[i % 3], i, 7)))
    if tracker:
        answers += tracker_answers(native, seed, count // 8)
    return answers
