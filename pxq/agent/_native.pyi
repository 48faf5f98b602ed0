# Types of pxq/agent/_native.c (see its docstrings).
from collections.abc import Callable
from typing import Any

EVENT_FIELDS: tuple[tuple[str, int, int], ...]
EVENT_SIZE: int
SOURCE_SHA256: str

def ring_read(
    producer: Any, consumer: Any, data_at: int, size: int, limit: int, out: list[Any], event_type: type[tuple[Any, ...]]
) -> tuple[int, int]: ...
def frame_plain(
    data: bytes, at: int, is_request: bool
) -> tuple[bytes | int, bytes, list[tuple[bytes, bytes]], bytes, int, int] | None: ...
def plain_block_cache() -> list[bytes]: ...
def clear_plain_block_cache() -> None: ...
def frame_message(
    data: bytes, at: int, is_request: bool, answers: int, body_limit: int, ts_ns: int, epoch: int
) -> tuple[Any, int] | None: ...
def set_message_type(cls: type) -> None: ...
def set_http1_classes(
    connection: type,
    data_stream: type,
    stitcher: type,
    direction: type,
    parsing: str,
    ev_data: int,
    egress: int,
    ingress: int,
    role_client: int,
) -> None: ...
def http1_batch(
    events: list[Any], start: int, conns: dict[Any, Any], rows: Any, clock_offset_ns: int
) -> tuple[int, int, int, int, int]: ...
def ring_take(
    producer: Any,
    consumer: Any,
    data_at: int,
    size: int,
    limit: int,
    event_type: type[tuple[Any, ...]],
    conns: dict[Any, Any],
    rows: Any,
    clock_offset_ns: int,
    handle: Callable[[Any], None],
) -> tuple[int, int, int, int, int, int]: ...
