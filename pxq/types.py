"""PxL's value types and semantic types, and their Arrow representation.

Every column in the catalog, every plan expression and every function signature is typed with
these; the executor and the writers map them to Arrow with ``arrow_type``.
"""

from __future__ import annotations

import enum

import pyarrow as pa


class DataType(enum.Enum):
    BOOLEAN = "BOOLEAN"
    INT64 = "INT64"
    FLOAT64 = "FLOAT64"
    STRING = "STRING"
    # Nanoseconds since the epoch; stored as Arrow timestamp[ns] (tz-naive, UTC).
    TIME64NS = "TIME64NS"
    # Pixie's unique process id; stored as the string "<asid>:<pid>:<start_ticks>".
    UINT128 = "UINT128"

    def __str__(self) -> str:  # used in diagnostics and plan text
        return self.value


class SemanticType(enum.Enum):
    NONE = "none"
    TIME = "time"
    DURATION_NS = "duration_ns"
    BYTES = "bytes"
    PERCENT = "percent"
    UPID = "upid"
    IP_ADDRESS = "ip"
    PORT = "port"
    HTTP_STATUS = "http_status"
    JSON = "json"
    STACK_TRACE = "stack_trace"
    # Kubernetes/process identity strings, formatted plainly but named for the renderers.
    POD = "pod"
    SERVICE = "service"
    NAMESPACE = "namespace"
    NODE = "node"
    CONTAINER = "container"

    def __str__(self) -> str:
        return self.value


_ARROW = {
    DataType.BOOLEAN: pa.bool_(),
    DataType.INT64: pa.int64(),
    DataType.FLOAT64: pa.float64(),
    DataType.STRING: pa.string(),
    DataType.TIME64NS: pa.timestamp("ns"),
    DataType.UINT128: pa.string(),
}


def arrow_type(data_type: DataType) -> pa.DataType:
    return _ARROW[data_type]


NUMERIC = frozenset({DataType.INT64, DataType.FLOAT64})

# Arrow field metadata keys carrying pxq's types through Parquet and Arrow IPC files, so that a
# written result keeps its semantic formatting when read back.
FIELD_TYPE_KEY = b"pxq.type"
FIELD_SEMANTIC_KEY = b"pxq.semantic"

# PxL's time units in nanoseconds: relative times ('-5m'), px.parse_duration and --for all take these.
TIME_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
