"""HTTP/1.x: everything the socket tracer needs for one protocol, in one folder.

* :mod:`.stitcher`: framing (llhttp through ``httptools``) and request/response stitching
  (:class:`Http1Stitcher`), and protocol inference on a stream's first bytes
  (:func:`looks_like_http_request`, :func:`looks_like_http_response`).
* :mod:`.rows`: the ``http_events`` row builder (:class:`HttpRows`).
* ``streams/``: byte streams recorded from real servers (:data:`RECORDED_STREAMS`, read with
  :func:`pxq.testing.streams.load_stream`; ``tests/agent/record_streams.py`` records them).

Its entry in the protocol registry (:data:`pxq.agent.protocols.registry.PROTOCOLS`) ties these to
the connection tracker.
"""

from pathlib import Path

from pxq.agent.defaults import DEFAULT_BODY_LIMIT
from pxq.agent.protocols.http1.rows import HttpRows, headers_json, http_events_schema, transactions_to_arrow
from pxq.agent.protocols.http1.stitcher import (
    CONTENT_TYPE_GRPC,
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_UNKNOWN,
    DECODE_FAILED_MARKER,
    DECODE_TRUNCATED_MARKER,
    HTTP_METHODS,
    MAX_HEADER_BYTES,
    UNCAPTURED_BODY_MARKER,
    Http1Stitcher,
    HttpTransaction,
    MessagePair,
    headers_dict,
    looks_like_http_request,
    looks_like_http_response,
)

RECORDED_STREAMS = Path(__file__).resolve().parent / "streams"

__all__ = [
    "CONTENT_TYPE_GRPC", "CONTENT_TYPE_JSON", "CONTENT_TYPE_UNKNOWN", "DECODE_FAILED_MARKER",
    "DECODE_TRUNCATED_MARKER", "DEFAULT_BODY_LIMIT", "HTTP_METHODS", "MAX_HEADER_BYTES", "RECORDED_STREAMS",
    "UNCAPTURED_BODY_MARKER", "Http1Stitcher", "HttpRows", "HttpTransaction", "MessagePair", "headers_dict",
    "headers_json", "http_events_schema", "looks_like_http_request", "looks_like_http_response",
    "transactions_to_arrow",
]  # fmt: skip
