"""Redis (RESP2 and RESP3): everything the socket tracer needs for one protocol, in one folder.

* :mod:`.resp`: RESP framing, one message at a time.
* :mod:`.commands`: command names and ``req_args`` as Pixie writes them; credentials redacted.
* :mod:`.stitcher`: pairing commands with replies (:class:`RedisStitcher`), and protocol inference
  on a stream's first bytes (:func:`looks_like_redis_request`, :func:`looks_like_redis_response`).
* :mod:`.rows`: the ``redis_events`` row builder (:class:`RedisRows`).
* ``streams/``: conversations recorded from a real redis-server (:data:`RECORDED_STREAMS`, read
  with :func:`pxq.testing.streams.load_stream`; ``tests/agent/record_redis_streams.py`` records them).
"""

from pathlib import Path

from pxq.agent.protocols.redis.rows import RedisRows, redis_events_schema
from pxq.agent.protocols.redis.stitcher import (
    MAX_INLINE,
    PUSH_PUB,
    TRUNCATED_MARKER,
    RedisMessage,
    RedisStitcher,
    RedisTransaction,
    looks_like_redis_request,
    looks_like_redis_response,
    make_record,
)

RECORDED_STREAMS = Path(__file__).resolve().parent / "streams"
# conn_stats.protocol for Redis (Pixie's traffic_protocol_t kProtocolRedis).
CONN_STATS_PROTOCOL = 7

__all__ = [
    "CONN_STATS_PROTOCOL", "MAX_INLINE", "PUSH_PUB", "RECORDED_STREAMS", "TRUNCATED_MARKER", "RedisMessage",
    "RedisRows", "RedisStitcher", "RedisTransaction", "looks_like_redis_request", "looks_like_redis_response",
    "make_record", "redis_events_schema",
]  # fmt: skip
