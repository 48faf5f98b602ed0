"""PostgreSQL (frontend/backend protocol v3): everything the socket tracer needs, in one folder.

* :mod:`.stitcher`: framing, pairing (:class:`PgsqlStitcher`) and inference
  (:func:`looks_like_pgsql_request`, :func:`looks_like_pgsql_response`).
* :mod:`.rows`: the ``pgsql_events`` row builder (:class:`PgsqlRows`).
* ``streams/``: conversations recorded from a real PostgreSQL 15 (:data:`RECORDED_STREAMS`, read
  with :func:`pxq.testing.streams.load_stream`; ``tests/agent/record_pgsql_streams.py`` records them).
"""

from pathlib import Path

from pxq.agent.protocols.pgsql.rows import PgsqlRows, pgsql_events_schema
from pxq.agent.protocols.pgsql.stitcher import (
    PgsqlRecord,
    PgsqlStitcher,
    Request,
    Response,
    looks_like_pgsql_request,
    looks_like_pgsql_response,
    make_record,
)

RECORDED_STREAMS = Path(__file__).resolve().parent / "streams"

__all__ = [
    "RECORDED_STREAMS", "PgsqlRecord", "PgsqlRows", "PgsqlStitcher", "Request", "Response", "looks_like_pgsql_request",
    "looks_like_pgsql_response", "make_record", "pgsql_events_schema",
]  # fmt: skip
