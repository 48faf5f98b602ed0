"""MySQL / MariaDB: everything the socket tracer needs for the protocol, in one folder.

* :mod:`.wire`: command bytes, packet classes, length-encoded values, binary-protocol parameters.
* :mod:`.stitcher`: packet framing and command/response pairing (:class:`MysqlStitcher`), and
  protocol inference on a stream's first bytes (:func:`looks_like_mysql_request`,
  :func:`looks_like_mysql_response`).
* :mod:`.rows`: the ``mysql_events`` row builder (:class:`MysqlRows`).
* ``streams/``: conversations recorded from a real MariaDB server (:data:`RECORDED_STREAMS`, read
  with :func:`pxq.testing.streams.load_stream`).
"""

from pathlib import Path

from pxq.agent.protocols.mysql.rows import MysqlRows, mysql_events_schema
from pxq.agent.protocols.mysql.stitcher import (
    HEAD_BYTES,
    RESP_ERR,
    RESP_NONE,
    RESP_OK,
    RESP_UNKNOWN,
    TRUNCATED_MARKER,
    MysqlRecord,
    MysqlRequest,
    MysqlResponse,
    MysqlStitcher,
    head_incomplete,
    looks_like_mysql_request,
    looks_like_mysql_response,
)

RECORDED_STREAMS = Path(__file__).resolve().parent / "streams"

__all__ = [
    "HEAD_BYTES", "RECORDED_STREAMS", "RESP_ERR", "RESP_NONE", "RESP_OK", "RESP_UNKNOWN", "TRUNCATED_MARKER",
    "MysqlRecord", "MysqlRequest", "MysqlResponse", "MysqlRows", "MysqlStitcher", "head_incomplete",
    "looks_like_mysql_request",
    "looks_like_mysql_response", "mysql_events_schema",
]  # fmt: skip
