"""pxq's C extension (``pxq/agent/_native.c``): the socket tracer's ring buffer walk, the
HTTP/1 plain-message framing and the connection tracker's HTTP/1 steady state (``http1_batch``,
and ``ring_take``: the walk and the steady state in one),
loaded here so that a missing or stale build says how to fix it.

The extension is built by the project's install (``bash tools/setup.sh``, or
``python tools/build_native.py``; the wheel's hatch build hook too). There is no pure-Python
fallback: a silent slow path would hide a broken install behind a tracer that drops events.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_SOURCE = Path(__file__).with_name("_native.c")
_REBUILD = "run `bash tools/setup.sh` (or `python tools/build_native.py`) in the pxq checkout"

try:
    from pxq.agent import _native
except ImportError as err:
    raise ImportError(f"pxq's C extension pxq/agent/_native is not built ({err}): {_REBUILD}") from err

# A build of another source (the C file edited or merged since): refuse it rather than run old code.
if _SOURCE.exists() and hashlib.sha256(_SOURCE.read_bytes()).hexdigest() != _native.SOURCE_SHA256:
    raise ImportError(f"pxq's C extension {_native.__file__} was built from another _native.c: {_REBUILD}")

ring_read = _native.ring_read
frame_plain = _native.frame_plain
frame_message = _native.frame_message
set_message_type = _native.set_message_type
EVENT_FIELDS = _native.EVENT_FIELDS
EVENT_SIZE = _native.EVENT_SIZE
plain_block_cache = _native.plain_block_cache
clear_plain_block_cache = _native.clear_plain_block_cache
set_http1_classes = _native.set_http1_classes
http1_batch = _native.http1_batch
ring_take = _native.ring_take
