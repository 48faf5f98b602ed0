"""upid parsing and process metadata lookups, http_resp_message, _exec_hostname."""

from __future__ import annotations

import http

import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

from pxq.funcs.registry import ExecContext, resolve_semantic
from pxq.types import DataType, SemanticType
from tests.funcs.funcs_support import CTX, PROCESSES, SCALARS, SETTINGS, call, col, lit, values

I, S, U = DataType.INT64, DataType.STRING, DataType.UINT128

upids = st.tuples(st.integers(0, 2**32), st.integers(0, 2**22), st.integers(0, 2**63))


@SETTINGS
@given(st.lists(st.none() | upids, max_size=20))
def test_upid_parsing(parts):
    text = [None if p is None else f"{p[0]}:{p[1]}:{p[2]}" for p in parts]
    assert values(call("upid_to_pid", col(text, U))) == [None if p is None else p[1] for p in parts]
    assert values(call("upid_to_asid", col(text, U))) == [None if p is None else p[0] for p in parts]


def test_malformed_upids_give_null():
    bad = ["", "1:2", "a:b:c", "1:2:3:4", "1:99999999999999999999:3", " 1:2:3"]
    assert values(call("upid_to_pid", col(bad, U))) == [None] * len(bad)


FIELDS = [
    ("upid_to_cmdline", "cmdline"),
    ("upid_to_comm", "comm"),
    ("upid_to_exe", "exe"),
    ("upid_to_pod_name", "pod"),
    ("upid_to_namespace", "namespace"),
    ("upid_to_service_name", "service"),
    ("upid_to_container_id", "container_id"),
    ("upid_to_container_name", "container"),
]


@pytest.mark.parametrize(("name", "key"), FIELDS)
def test_process_fields_come_from_ctx_processes(name, key):
    rows = ["7:1234:5555", "unknown:1:2", None, "7:1234:5555"]
    expect = [PROCESSES["7:1234:5555"][key], "", None, PROCESSES["7:1234:5555"][key]]
    assert values(call(name, col(rows, U))) == expect
    assert not SCALARS[name].foldable


def test_missing_fields_are_empty_and_lists_are_joined():
    assert call("upid_to_pod_name", lit("7:99:1", U)).as_py() == ""
    assert call("upid_to_cmdline", lit("7:99:1", U)).as_py() == "nginx -g daemon off;"


@pytest.mark.parametrize("name", ["upid_to_node_name", "upid_to_hostname"])
def test_node_and_host_fall_back_to_ctx_host(name):
    got = values(call(name, col(["7:1234:5555", "7:99:1", None], U)))
    known = "node-a" if name == "upid_to_node_name" else "this-host"
    assert got == [known, "this-host", None]


@SETTINGS
@given(st.lists(st.sampled_from(list(PROCESSES) + ["0:0:0", None]), max_size=50))
def test_lookups_match_a_python_loop(rows):
    got = values(call("upid_to_comm", col(rows, U)))
    assert got == [None if u is None else PROCESSES.get(u, {}).get("comm", "") for u in rows]


def test_lookups_happen_once_per_distinct_upid():
    calls = []

    class Counting(dict):
        def get(self, key, default=None):
            calls.append(key)
            return super().get(key, default)

    ctx = ExecContext(now_ns=0, processes=Counting(PROCESSES), host="h")
    call("upid_to_comm", col(["7:1234:5555"] * 500 + ["7:99:1"] * 500, U), ctx=ctx)
    assert sorted(calls) == ["7:1234:5555", "7:99:1"]


def test_metadata_semantics():
    expect = {
        "upid_to_pod_name": SemanticType.POD,
        "upid_to_namespace": SemanticType.NAMESPACE,
        "upid_to_service_name": SemanticType.SERVICE,
        "upid_to_node_name": SemanticType.NODE,
        "upid_to_container_name": SemanticType.CONTAINER,
        "upid_to_cmdline": SemanticType.NONE,
    }
    for name, semantic in expect.items():
        assert resolve_semantic(SCALARS[name].semantic, (SemanticType.UPID,)) is semantic


@SETTINGS
@given(st.lists(st.none() | st.integers(-5, 1000), max_size=40))
def test_http_resp_message(codes):
    def phrase(code):
        try:
            return http.HTTPStatus(code).phrase
        except ValueError:
            return "Unassigned"

    assert values(call("http_resp_message", col(codes, I))) == [None if c is None else phrase(c) for c in codes]


def test_http_resp_message_examples():
    assert values(call("http_resp_message", col([200, 404, 503, 999], I))) == [
        "OK",
        "Not Found",
        "Service Unavailable",
        "Unassigned",
    ]


def test_exec_hostname():
    assert call("_exec_hostname").as_py() == CTX.host
    assert call("_exec_hostname", ctx=ExecContext(now_ns=0, host="other")).as_py() == "other"
    assert isinstance(call("_exec_hostname"), pa.Scalar)


# metadata_ops.h (github.com/pixie-io/pixie src/carnot/funcs/metadata/): each lookup gives "" for
# an IP or id the cluster's metadata does not hold ("otherwise returns an empty string"), with the
# semantic type of its SemanticInferenceRules. Off Kubernetes pxq holds none: every value is unknown,
# including the pod and service names processes may carry (names are not ids).
KUBERNETES_LOOKUPS = [
    ("ip_to_pod_id", SemanticType.NONE),
    ("ip_to_service_id", SemanticType.NONE),
    ("pod_id_to_pod_name", SemanticType.POD),
    ("pod_id_to_service_name", SemanticType.SERVICE),
    ("pod_id_to_node_name", SemanticType.NODE),
    ("service_id_to_service_name", SemanticType.SERVICE),
]


@pytest.mark.parametrize(("name", "semantic"), KUBERNETES_LOOKUPS)
def test_kubernetes_lookups_find_nothing_off_kubernetes(name, semantic):
    keys = ["10.1.0.12", "127.0.0.1", "", None, "default/web-1", "default/web", "1ec0c2d4-43cc-4f26-a4f7-1d1a6b9cb6b4"]
    assert values(call(name, col(keys, S))) == ["", "", "", None, "", "", ""]
    assert call(name, lit("10.1.0.12", S)).as_py() == ""
    assert resolve_semantic(SCALARS[name].semantic, (SemanticType.NONE,)) is semantic


def test_pixie_scripts_name_a_remote_end_by_its_address():
    """The idiom of Pixie's *_data scripts: the remote end's pod name where there is one, else
    its address."""
    addresses = col(["10.1.0.12", "198.51.100.14", None], S)
    pod = call("pod_id_to_pod_name", call("ip_to_pod_id", addresses))
    named = call("select", call("notEqual", pod, lit("", S)), pod, addresses)
    assert values(named) == ["10.1.0.12", "198.51.100.14", None]
