"""Every registered function: documented, signature renders, declared types match what runs, nulls
propagate, and constant folding (all-Scalar calls) agrees with column execution."""

from __future__ import annotations

import math
import os

import pyarrow as pa
import pytest

from pxq.funcs.registry import resolve_semantic, resolve_type
from pxq.types import DataType, SemanticType
from tests.funcs.funcs_support import AGGREGATES, CTX, NOW_NS, SCALARS, call, internal

B, I, F, S, T, U = (
    DataType.BOOLEAN,
    DataType.INT64,
    DataType.FLOAT64,
    DataType.STRING,
    DataType.TIME64NS,
    DataType.UINT128,
)
LIST = "list"  # marks the list literal of equals_any: (LIST, element type, python list)

# One or more sample calls per function: each argument is (type, value).
SAMPLES: dict[str, list[tuple]] = {
    "add": [
        ((I, 3), (I, 4)),
        ((F, 1.5), (I, 2)),
        ((I, 2), (F, 1.5)),
        ((T, NOW_NS), (I, 10)),
        ((I, 10), (T, 5)),
        ((S, "ab"), (S, "cd")),
    ],
    "subtract": [
        ((I, 3), (I, 4)),
        ((F, 1.5), (F, 2.0)),
        ((T, NOW_NS), (I, 10)),
        ((T, 50), (T, 20)),
        ((I, 50), (T, 20)),
    ],
    "multiply": [((I, 3), (I, 4)), ((F, 1.5), (I, 2))],
    "divide": [((I, 3), (I, 4)), ((F, 1.5), (I, 2)), ((I, 1), (I, 0))],
    "modulo": [((I, -7), (I, 5)), ((T, 17), (I, 5)), ((T, 17), (T, 5)), ((I, 17), (T, 5))],
    "negate": [((I, 3),), ((F, -1.5),)],
    "invert": [((I, 5),), ((B, True),)],
    "equal": [
        ((I, 3), (F, 3.0)),
        ((S, "a"), (S, "a")),
        ((B, True), (I, 1)),
        ((T, 5), (I, 5)),
        ((U, "1:2:3"), (U, "1:2:3")),
        ((U, "1:2:3"), (S, "1:2:3")),
    ],
    "notEqual": [((I, 3), (I, 4)), ((B, True), (B, False))],
    "lessThan": [((I, 3), (F, 3.5)), ((S, "a"), (S, "b")), ((T, 5), (T, 6))],
    "lessThanEqual": [((I, 3), (I, 3))],
    "greaterThan": [((F, 3.0), (I, 2))],
    "greaterThanEqual": [((T, 3), (I, 3))],
    "logicalAnd": [((B, True), (B, False)), ((I, 2), (B, True))],
    "logicalOr": [((B, False), (B, True)), ((I, 0), (I, 0))],
    "logicalNot": [((B, True),), ((I, 0),)],
    "floor": [((F, 1.5),), ((I, 3),)],
    "ceil": [((F, 1.5),), ((I, 3),)],
    "round": [((F, 0.248), (I, 2)), ((I, 3), (I, 1))],
    "abs": [((F, -1.5),), ((I, -3),)],
    "sqrt": [((F, 2.25),), ((I, 9),)],
    "ln": [((F, math.e),), ((I, 1),)],
    "log2": [((I, 8),)],
    "log10": [((F, 1000.0),)],
    "exp": [((I, 0),), ((F, 1.0),)],
    "log": [((I, 2), (I, 8)), ((F, 10.0), (F, 1000.0))],
    "pow": [((I, 2), (I, 10)), ((F, 2.0), (F, 0.5))],
    "bin": [((I, 17), (I, 5)), ((T, NOW_NS), (I, 1_000_000_000)), ((F, 17.9), (I, 5))],
    "select": [
        ((B, True), (I, 1), (I, 2)),
        ((B, False), (I, 1), (F, 2.5)),
        ((B, True), (S, "a"), (S, "b")),
        ((B, False), (T, 5), (I, 6)),
    ],
    "equals_any": [
        ((I, 200), (LIST, I, [200, 201])),
        ((S, "GET"), (LIST, S, ["GET", "PUT"])),
        ((F, 2.0), (LIST, I, [1, 2])),
        ((I, 2), (LIST, F, [1.5, 2.0])),
    ],
    "microseconds": [((I, 2),)],
    "milliseconds": [((I, 2),), ((F, 1.5),)],
    "seconds": [((I, 2),), ((F, 0.25),)],
    "minutes": [((I, 2),)],
    "hours": [((I, 2),)],
    "days": [((I, 2),)],
    "parse_duration": [((S, "-5m"),), ((S, "250ms"),)],
    "time_to_int64": [((T, NOW_NS),)],
    "int64_to_time": [((I, NOW_NS),)],
    "DurationNanos": [((I, 5),), ((F, 2.5),)],
    "Bytes": [((I, 5),)],
    "Percent": [((F, 50.0),)],
    "Time": [((I, NOW_NS),), ((T, NOW_NS),)],
    "upid_to_pid": [((U, "7:1234:5555"),), ((S, "7:1234:5555"),)],
    "upid_to_asid": [((U, "7:1234:5555"),)],
    "upid_to_cmdline": [((U, "7:1234:5555"),)],
    "upid_to_comm": [((U, "7:1234:5555"),)],
    "upid_to_exe": [((U, "7:1234:5555"),)],
    "upid_to_pod_name": [((U, "7:1234:5555"),)],
    "upid_to_namespace": [((U, "7:1234:5555"),)],
    "upid_to_service_name": [((U, "7:1234:5555"),)],
    "upid_to_container_id": [((U, "7:1234:5555"),)],
    "upid_to_container_name": [((U, "7:1234:5555"),)],
    "upid_to_node_name": [((U, "7:1234:5555"),)],
    "upid_to_hostname": [((U, "7:1234:5555"),)],
    "http_resp_message": [((I, 404),)],
    # The Kubernetes lookups of metadata_ops.h, with its doc examples' kind of values.
    "ip_to_pod_id": [((S, "10.1.0.12"),)],
    "ip_to_service_id": [((S, "10.1.0.12"),)],
    "pod_id_to_pod_name": [((S, "1ec0c2d4-43cc-4f26-a4f7-1d1a6b9cb6b4"),)],
    "pod_id_to_service_name": [((S, "1ec0c2d4-43cc-4f26-a4f7-1d1a6b9cb6b4"),)],
    "pod_id_to_node_name": [((S, "1ec0c2d4-43cc-4f26-a4f7-1d1a6b9cb6b4"),)],
    "service_id_to_service_name": [((S, "c8c8b4bb-1d6e-4a8e-9a1b-2f2f1e0e4d11"),)],
    "contains": [((S, "checkout"), (S, "ecko"))],
    "find": [((S, "pixie-labs"), (S, "-labs"))],
    "substring": [((S, "checkout"), (I, 1), (I, 5))],
    "length": [((S, "checkout"),)],
    "tolower": [((S, "Kelvin"),)],
    "toupper": [((S, "Kelvin"),)],
    "trim": [((S, "  pl/kelvin "),)],
    "strip_prefix": [((S, "pl/"), (S, "pl/kelvin"))],
    "regex_match": [((S, ".*kel.*"), (S, "pl/kelvin"))],
    "nslookup": [((S, "127.0.0.1"),)],
    "replace": [((S, r"\d+"), (S, "a1b22"), (S, "#"))],
    "atoi": [((S, "42"), (I, -1))],
    "itoa": [((I, 42),)],
    "pluck": [((S, '{"a": {"b": 1}}'), (S, "a"))],
    "pluck_int64": [((S, '{"a": 7}'), (S, "a"))],
    "pluck_float64": [((S, '{"a": 7.5}'), (S, "a"))],
    "pluck_array": [((S, '["x", "y"]'), (I, 1))],
    "normalize_pgsql": [((S, "SELECT 1"), (S, "Query"))],
    "normalize_mysql": [((S, "SELECT 1"), (I, 3))],
}
NO_ARGUMENTS = {"now": (T, NOW_NS), "_exec_hostname": (S, "this-host"), "_exec_host_num_cpus": (I, os.cpu_count())}


def _cases():
    for name, variants in SAMPLES.items():
        for i, args in enumerate(variants):
            yield pytest.param(name, args, id=f"{name}-{i}")


def _arg_type(arg):
    return arg[1] if arg[0] == LIST else arg[0]


def _scalar(arg):
    if arg[0] == LIST:
        return pa.scalar(arg[2], pa.list_(internal(arg[1])))
    return pa.scalar(arg[1], internal(arg[0]))


def test_every_function_has_samples():
    assert set(SAMPLES) | set(NO_ARGUMENTS) == set(SCALARS)


def test_every_function_is_documented_and_its_signature_renders():
    for fn in list(SCALARS.values()) + list(AGGREGATES.values()):
        assert fn.doc.strip() and fn.doc.endswith("."), fn.name
        assert "\n" not in fn.doc and len(fn.doc) <= 160, fn.name
        text = fn.signature()
        assert f"px.{fn.name}" in text


def test_aggregates_registered():
    assert set(AGGREGATES) == {"count", "sum", "mean", "min", "max", "any", "quantiles"}


@pytest.mark.parametrize(("name", "args"), list(_cases()))
def test_declared_type_nulls_and_constant_folding(name, args):
    fn = SCALARS[name]
    returns = resolve_type(fn.returns, tuple(_arg_type(a) for a in args))
    resolve_semantic(fn.semantic, tuple(SemanticType.NONE for _ in args))
    column_args = []
    for param, arg in zip(fn.params, args):
        if param.literal:
            column_args.append(_scalar(arg))
        else:  # a row with the sample value, then a row of nulls
            column_args.append(pa.array([arg[1], None], internal(arg[0])))
    out = call(name, *column_args)
    assert isinstance(out, (pa.Array, pa.ChunkedArray))
    assert out.type == internal(returns)
    assert len(out) == 2
    assert out[1].as_py() is None, "a null argument must give null"
    folded = call(name, *(_scalar(a) for a in args))
    assert isinstance(folded, pa.Scalar)
    assert folded.type == internal(returns)
    expect, got = out[0].as_py(), folded.as_py()
    assert got == expect or (isinstance(got, float) and math.isnan(got) and math.isnan(expect))


@pytest.mark.parametrize("name", sorted(NO_ARGUMENTS))
def test_functions_without_arguments(name):
    data_type, expect = NO_ARGUMENTS[name]
    fn = SCALARS[name]
    assert fn.params == ()
    out = call(name)
    assert isinstance(out, pa.Scalar) and out.type == internal(data_type) and out.as_py() == expect
    assert resolve_type(fn.returns, ()) is data_type


def test_now_is_folded_once_and_hostname_is_not():
    assert SCALARS["now"].foldable
    assert not SCALARS["_exec_hostname"].foldable
    assert not SCALARS["upid_to_pod_name"].foldable
    assert CTX.host == "this-host"
