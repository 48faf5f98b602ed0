"""Calling registered px functions the way the executor and the constant folder do."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import settings

from pxq.funcs.registry import AGGREGATES, SCALARS, ExecContext, load_builtins
from pxq.types import DataType, arrow_type

load_builtins()

NOW_NS = 1_700_000_000_123_456_789
PROCESSES = {
    "7:1234:5555": {
        "cmdline": "python3 server.py --port 8080",
        "comm": "python3",
        "exe": "/usr/bin/python3.11",
        "pod": "default/web-1",
        "namespace": "default",
        "service": "default/web",
        "container_id": "abc123",
        "container": "web",
        "node": "node-a",
    },
    "7:99:1": {"cmdline": ["nginx", "-g", "daemon off;"], "comm": "nginx"},
}
CTX = ExecContext(now_ns=NOW_NS, processes=PROCESSES, host="this-host")


def internal(data_type: DataType) -> pa.DataType:
    """Arrow type of a value of ``data_type`` inside expressions (times are int64 ns)."""
    return pa.int64() if data_type is DataType.TIME64NS else arrow_type(data_type)


def call(name: str, *args, ctx: ExecContext = CTX):
    return SCALARS[name].impl(ctx, *args)


def col(values, data_type: DataType) -> pa.Array:
    return pa.array(values, internal(data_type))


def lit(value, data_type: DataType) -> pa.Scalar:
    return pa.scalar(value, internal(data_type))


def values(result) -> list:
    return result.to_pylist()


__all__ = [
    "AGGREGATES",
    "CTX",
    "NOW_NS",
    "PROCESSES",
    "SCALARS",
    "SETTINGS",
    "call",
    "col",
    "internal",
    "lit",
    "values",
]

# Hypothesis settings for these tests (per test, so other suites keep their own).
SETTINGS = settings(deadline=None, max_examples=150)
