"""Byte reassembly of one connection: both directions put back in stream order, holes waited for
or given up (Pixie's ``DataStream``, src/stirling/source_connectors/socket_tracer/data_stream.h,
holds the same job there: events in by position, contiguous bytes out to the parser).

The kernel numbers each direction's bytes from 0 for every generation of a connection (for a
socket opened before attach, from the first call it saw), so lost first bytes are a hole too.
Bytes that arrive ahead of a hole wait, and so do the other direction's bytes meanwhile, so that
both reach the parser in time order (a hole stops the other direction too: were its later bytes
parsed meanwhile, resynchronising after a lost piece would pair requests with the responses of
others, or throw away every transaction parsed while the hole waited).

A filler event (bytes the kernel counted but did not copy) takes its place in the stream like
any bytes, as an :class:`Uncaptured` range without bytes.

:class:`DataStream` says what to hand on and when; what the pieces mean (a gap that restarts the
parser, a response gap the stitcher can pair over, bytes skipped inside a body) is the connection
tracker's business (:mod:`pxq.agent.conn_tracker`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

# What an Uncaptured range held in reassembly costs of the reorder budget: it holds no bytes.
UNCAPTURED_HELD_COST = 1


class Uncaptured:
    """A range of a stream that the kernel counted but did not copy (a filler event): its length,
    without bytes. Sliced like the bytes it stands for (``span[k:]``), so reassembly treats both
    alike."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, cut: slice) -> Uncaptured:
        start, stop, _ = cut.indices(self.size)
        return Uncaptured(max(0, stop - start))

    def __repr__(self) -> str:
        return f"Uncaptured({self.size})"


Data = bytes | Uncaptured


def held_cost(data: Data) -> int:
    return len(data) if type(data) is bytes else UNCAPTURED_HELD_COST


class Piece(NamedTuple):
    """Bytes (or an uncaptured range) of one direction, in stream order, for the parser."""

    direction: int
    ts_ns: int
    data: Data  # may be empty after a gap (all of it was taken before)
    # Bytes before it were lost (a hole given up): the parser cannot simply go on.
    after_gap: bool = False
    # With after_gap: the other direction lost nothing up to here (its next bytes follow on).
    other_intact: bool = False


class Arrival:
    """What :meth:`DataStream.arrive` made of new bytes."""

    IN_ORDER = 0  # the next bytes of their direction, nothing waiting: parse them now
    HELD = 1  # waiting behind a hole (or behind bytes that wait): nothing to parse yet
    FILLED = 2  # they filled the hole the held bytes waited for: release() what follows on
    OLD = 3  # bytes already taken (an overlap): nothing


class DataStream:
    """Both directions of one connection, by stream offset (direction 0 and 1)."""

    __slots__ = ("expect", "held", "held_bytes", "blocked", "hole_batches")

    def __init__(self) -> None:
        # Next stream offset per direction (None: start where first seen). The kernel counts both
        # directions of every generation from 0, also of a socket opened before the tracer (from
        # the first call it saw): a direction whose first event lies further on lost its first
        # bytes (ring buffer full), a hole like any other. Taking it as the stream's start would
        # pair every later response with an earlier request.
        self.expect: list[int | None] = [0, 0]
        self.held: list[dict[int, tuple[int, Data]]] = [{}, {}]  # pos -> (ts, data), waiting
        self.held_bytes = 0
        self.blocked = -1  # the direction whose hole the held bytes wait for (-1: none)
        self.hole_batches = 0

    @property
    def waiting(self) -> bool:
        """Bytes are held behind a hole."""
        return bool(self.held[0] or self.held[1])

    def start_anywhere(self) -> None:
        """The stream's offsets went on while no one looked: start each direction where its
        next bytes are."""
        self.expect = [None, None]

    def arrive(self, d: int, pos: int, ts_ns: int, data: Data) -> tuple[int, Data]:
        """Bytes of direction ``d`` at stream offset ``pos``: an :class:`Arrival` code and the
        bytes (trimmed of what was taken already). IN_ORDER: the caller parses them now."""
        expect = self.expect[d]
        if expect is None:
            expect = self.expect[d] = pos
        if pos < expect:  # overlap with bytes already taken
            data = data[expect - pos :]
            pos = expect
            if not data:
                return Arrival.OLD, data
        if pos > expect or self.held_bytes:
            # Behind a hole, or the connection has bytes waiting behind one (in either
            # direction): wait in line, so both directions reach the parser in time order.
            waiting = self.held_bytes
            self.held[d][pos] = (ts_ns, data)
            self.held_bytes += held_cost(data)
            if not waiting:
                self.blocked = d  # a new hole: nothing can go on until it fills
            elif d == self.blocked and pos <= expect:
                return Arrival.FILLED, data  # the missing bytes came: go on up to the next hole
            return Arrival.HELD, data
        self.expect[d] = pos + len(data)
        return Arrival.IN_ORDER, data

    def release(self, lost: bool = False) -> Iterator[Piece]:
        """The held bytes, both directions merged in time order, up to the first piece that waits
        behind a hole. ``lost``: the missing bytes are not coming: jump over each hole (a piece
        ``after_gap``), losing what was there. Consume it whole: the stream's state moves as the
        pieces go (each is taken off before the parser sees it)."""
        held = self.held
        queues = (sorted(held[0]), sorted(held[1]))  # once, not min() per piece: thousands may wait
        heads = [0, 0]
        while True:
            d, first_ts = -1, 0
            for side in (0, 1):
                if heads[side] < len(queues[side]):
                    ts_ns = held[side][queues[side][heads[side]]][0]
                    if d < 0 or ts_ns < first_ts:
                        d, first_ts = side, ts_ns
            if d < 0:
                break
            pos = queues[d][heads[d]]
            expect = self.expect[d]
            assert expect is not None  # set by the arrival that held it
            gap = other_intact = False
            if pos > expect:
                if not lost:
                    self.blocked = d
                    break
                gap = True
                other = 1 - d  # its next bytes (later in time) follow on: nothing lost there
                other_expect = self.expect[other]
                other_intact = (
                    heads[other] < len(queues[other])
                    and other_expect is not None
                    and queues[other][heads[other]] <= other_expect
                )
                self.expect[d] = expect = pos
            heads[d] += 1
            ts_ns, data = held[d].pop(pos)
            self.held_bytes -= held_cost(data)
            skip = expect - pos
            if skip < len(data):
                self.expect[d] = pos + len(data)
                yield Piece(d, ts_ns, data[skip:], gap, other_intact)
            elif gap:
                yield Piece(d, ts_ns, data[len(data) :], gap, other_intact)
        if not held[0] and not held[1]:
            self.held_bytes = 0
            self.blocked = -1
            self.hole_batches = 0
