"""Recorded connection byte streams (as ``tests/agent/record_streams.py`` saves them) and
replaying them through a stitcher."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pxq.agent.protocols.http1 import Http1Stitcher, HttpTransaction


@dataclass
class RecordedStream:
    name: str
    server: str
    description: str
    # (direction, ns since the first chunk, bytes); direction "req" (client to server) or "resp".
    chunks: list[tuple[str, int, bytes]]

    def side(self, direction: str) -> bytes:
        """All bytes of one direction, concatenated."""
        return b"".join(data for d, _, data in self.chunks if d == direction)


def load_stream(path: str | Path) -> RecordedStream:
    record = json.loads(Path(path).read_text())
    return RecordedStream(
        name=record["name"],
        server=record["server"],
        description=record["description"],
        chunks=[(d, int(ts), data.encode("latin-1")) for d, ts, data in record["chunks"]],
    )


def replay(
    chunks: list[tuple[str, int, bytes]], stitcher: Http1Stitcher | None = None, close_ts: int | None = None
) -> tuple[list[HttpTransaction], Http1Stitcher]:
    """Feed chunks in order, then close (at ``close_ts``, default the last chunk's time)."""
    st = stitcher if stitcher is not None else Http1Stitcher()
    out: list[HttpTransaction] = []
    for direction, ts, data in chunks:
        feed = st.feed_request if direction == "req" else st.feed_response
        out += feed(data, ts)
    last = chunks[-1][1] if chunks else 0
    out += st.close(last if close_ts is None else close_ts)
    return out, st
