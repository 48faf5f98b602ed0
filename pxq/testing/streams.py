"""Recorded connection byte streams (as ``tests/agent/record_streams.py`` saves them) and
replaying them through a stitcher of a protocol of the registry
(:mod:`pxq.agent.protocols.registry`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pxq.agent.protocols.interface import ParseOptions, Stitcher
from pxq.agent.protocols.registry import DEFAULT_BODY_LIMIT, PROTOCOLS


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
    chunks: list[tuple[str, int, bytes]],
    stitcher: Stitcher | None = None,
    close_ts: int | None = None,
    *,
    protocol: str = "http",
) -> tuple[list[Any], Stitcher]:
    """Feed chunks in order, then close (at ``close_ts``, default the last chunk's time). Returns
    the completed pairs as the protocol's records (for HTTP, ``HttpTransaction``) and the stitcher
    (a new one of ``protocol`` unless one is given)."""
    spec = PROTOCOLS[protocol]
    st = stitcher if stitcher is not None else spec.make_stitcher(ParseOptions(body_limit=DEFAULT_BODY_LIMIT))
    pairs = []
    for direction, ts, data in chunks:
        pairs += st.feed_messages(direction == "req", data, ts)
    last = chunks[-1][1] if chunks else 0
    pairs += st.close_messages(last if close_ts is None else close_ts)
    return [spec.make_record(req, resp) for req, resp in pairs], st
