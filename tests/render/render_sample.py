"""A result table with every pxq type and semantic type, nulls and unicode, for renderer tests."""

from __future__ import annotations

import pyarrow as pa

from pxq.types import FIELD_SEMANTIC_KEY, FIELD_TYPE_KEY, DataType, SemanticType, arrow_type

T0 = 1_764_131_462_123_456_789  # 2025-11-26 04:31:02.123456789 UTC

# name, DataType, SemanticType, values (3 rows: typical, edge, null-ish)
COLUMNS = [
    ("time_", DataType.TIME64NS, SemanticType.TIME, [T0, 0, None]),
    ("upid", DataType.UINT128, SemanticType.UPID, ["1:4242:99", "1:1:1", None]),
    ("remote_addr", DataType.STRING, SemanticType.IP_ADDRESS, ["10.0.0.1", "::1", None]),
    ("remote_port", DataType.INT64, SemanticType.PORT, [443, 65535, None]),
    ("encrypted", DataType.BOOLEAN, SemanticType.NONE, [True, False, None]),
    ("req_path", DataType.STRING, SemanticType.NONE, ["/api/çà/日本", 'quote " back \\ tab\tnl\n', None]),
    ("resp_status", DataType.INT64, SemanticType.HTTP_STATUS, [200, 503, None]),
    ("resp_body_size", DataType.INT64, SemanticType.BYTES, [1234, 5 * 1024**3, None]),
    ("latency", DataType.INT64, SemanticType.DURATION_NS, [12_345_678, 850, None]),
    ("error_rate", DataType.FLOAT64, SemanticType.PERCENT, [0.123, 1.0, None]),
    ("cpu", DataType.FLOAT64, SemanticType.NONE, [3.14159265, float("nan"), None]),
    (
        "req_headers",
        DataType.STRING,
        SemanticType.JSON,
        ['{"Host": "example.com", "User-Agent": "' + "x" * 80 + '"}', "{}", None],
    ),
    (
        "stack_trace",
        DataType.STRING,
        SemanticType.STACK_TRACE,
        [";".join(f"frame_{i}" for i in range(20)), "main", None],
    ),
    ("pod", DataType.STRING, SemanticType.POD, ["default/web-0", "", None]),
    ("count", DataType.INT64, SemanticType.NONE, [7, -1, None]),
]


def typed_field(name: str, data_type: DataType, semantic: SemanticType) -> pa.Field:
    return pa.field(
        name,
        arrow_type(data_type),
        metadata={FIELD_TYPE_KEY: data_type.value.encode(), FIELD_SEMANTIC_KEY: semantic.value.encode()},
    )


def sample_table() -> pa.Table:
    fields, arrays = [], []
    for name, data_type, semantic, values in COLUMNS:
        field = typed_field(name, data_type, semantic)
        if data_type is DataType.TIME64NS:
            array = pa.array(values, pa.int64()).cast(field.type)
        else:
            array = pa.array(values, field.type)
        fields.append(field)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def plain_table() -> pa.Table:
    """A second display without pxq metadata: formatted by Arrow type only."""
    return pa.table(
        {
            "service": ["checkout", "ünïcode-svc"],
            "n": pa.array([1, 2], pa.int32()),
            "ts": pa.array([1_000_000, 2_000_000], pa.timestamp("us", tz="UTC")),
        }
    )
