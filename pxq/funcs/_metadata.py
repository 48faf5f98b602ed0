"""Process metadata looked up from a upid, protocol enum decoders and properties of the executing
host.

A upid is the string ``"<asid>:<pid>:<start_ticks>"``. ``upid_to_pid``/``upid_to_asid`` parse it
(null when malformed); the other ``upid_to_*`` functions read ``ctx.processes[upid]``, once per
distinct upid, and give "" when the process or the field is unknown (Pixie's rule, which also
covers processes outside Kubernetes). ``upid_to_node_name``/``upid_to_hostname`` fall back to
``ctx.host``: a process pxq saw ran on the host that saw it.

Kubernetes metadata by id or IP (``ip_to_pod_id``, ``ip_to_service_id``, ``pod_id_to_pod_name``,
``pod_id_to_service_name``, ``pod_id_to_node_name``, ``service_id_to_service_name``) are Pixie's
UDFs of ``src/carnot/funcs/metadata/metadata_ops.h`` (``IPToPodIDUDF``, ``IPToServiceIDUDF``,
``PodIDToPodNameUDF``, ``PodIDToServiceNameUDF``, ``PodIDToNodeNameUDF``,
``ServiceIDToServiceNameUDF``), which read the cluster's pods and services and give "" for an IP
or id they do not know. pxq runs off Kubernetes and knows no pod or service: every IP and every id
is unknown, so each gives "" (null stays null), the value Pixie gives for an IP outside the
cluster. Pixie's scripts then fall back to the address itself (``px.select(df.ra_pod != '',
df.ra_pod, df.remote_addr)``).
"""

from __future__ import annotations

import http
import os

import pyarrow as pa
import pyarrow.compute as pc

from pxq.funcs._common import INT64, STRING, UINT128, S, Value, map_distinct, param, udf
from pxq.funcs.registry import ExecContext

UPID = (param("upid", UINT128, STRING),)
_UPID_FORM = r"^(?P<asid>\d{1,18}):(?P<pid>\d{1,18}):(?P<start_ticks>\d{1,20})$"


def _upid_number(name: str, field: str, doc: str) -> None:
    def impl(ctx: ExecContext, upid: Value) -> Value:
        parts = pc.extract_regex(upid, _UPID_FORM)
        return pc.cast(pc.struct_field(parts, field), pa.int64())

    udf(name, UPID, INT64, doc)(impl)


_upid_number("upid_to_pid", "pid", "The process id inside a upid.")
_upid_number("upid_to_asid", "asid", "The agent short id inside a upid.")


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def _process_field(name: str, key: str, doc: str, semantic: S = S.NONE, *, host_default: bool = False) -> None:
    def impl(ctx: ExecContext, upid: Value) -> Value:
        def look_up(u: str) -> str:
            found = _text(ctx.processes.get(u, {}).get(key))
            return found or (ctx.host if host_default else "")

        return map_distinct(upid, look_up, pa.string())

    udf(name, UPID, STRING, doc, semantic=semantic, foldable=False)(impl)


_process_field("upid_to_cmdline", "cmdline", "The command line of the process.")
_process_field("upid_to_comm", "comm", "The command name (comm) of the process.")
_process_field("upid_to_exe", "exe", "The path of the process's executable.")
_process_field("upid_to_pod_name", "pod", 'The Kubernetes pod of the process ("" off Kubernetes).', S.POD)
_process_field("upid_to_namespace", "namespace", "The Kubernetes namespace of the process's pod.", S.NAMESPACE)
_process_field("upid_to_service_name", "service", "The Kubernetes service of the process's pod.", S.SERVICE)
_process_field("upid_to_container_id", "container_id", "The id of the container the process runs in.")
_process_field("upid_to_container_name", "container", "The name of the container the process runs in.", S.CONTAINER)
_process_field("upid_to_node_name", "node", "The node (host) the process runs on.", S.NODE, host_default=True)
_process_field(
    "upid_to_hostname", "host", "The hostname of the machine the process runs on.", S.NODE, host_default=True
)


def _reason(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unassigned"  # Pixie's text for codes without a registered meaning


@udf(
    "http_resp_message",
    (param("status", INT64),),
    STRING,
    'The standard reason phrase of an HTTP status code ("Not Found"), or "Unassigned".',
)
def _http_resp_message(ctx: ExecContext, status: Value) -> Value:
    return map_distinct(status, _reason, pa.string())  # a lookup table: no Arrow kernel


@udf("_exec_hostname", (), STRING, "The hostname of the machine running the query.", foldable=False)
def _exec_hostname(ctx: ExecContext) -> Value:
    return pa.scalar(ctx.host, pa.string())


@udf("_exec_host_num_cpus", (), INT64, "The number of CPUs of the machine running the query.", foldable=False)
def _exec_host_num_cpus(ctx: ExecContext) -> Value:
    return pa.scalar(os.cpu_count() or 1, pa.int64())


def _kubernetes_lookup(name: str, arg: str, doc: str, semantic: S = S.NONE) -> None:
    def impl(ctx: ExecContext, key: Value) -> Value:
        # No Kubernetes metadata off Kubernetes: nothing is found (see the module docstring).
        return pc.if_else(pc.is_valid(key), pa.scalar("", pa.string()), pa.scalar(None, pa.string()))

    udf(name, (param(arg, STRING),), STRING, doc, semantic=semantic, foldable=False)(impl)


_kubernetes_lookup("ip_to_pod_id", "pod_ip", 'The id of the Kubernetes pod with this IP ("" off Kubernetes).')
_kubernetes_lookup("ip_to_service_id", "ip", 'The id of the Kubernetes service with this IP ("" off Kubernetes).')
_kubernetes_lookup(
    "pod_id_to_pod_name", "pod_id", 'The "namespace/name" of a Kubernetes pod by its id ("" off Kubernetes).', S.POD
)
_kubernetes_lookup(
    "pod_id_to_service_name", "pod_id", 'The services of a Kubernetes pod by its id ("" off Kubernetes).', S.SERVICE
)
_kubernetes_lookup(
    "pod_id_to_node_name", "pod_id", 'The node a Kubernetes pod runs on, by its id ("" off Kubernetes).', S.NODE
)
_kubernetes_lookup(
    "service_id_to_service_name",
    "service_id",
    'The "namespace/name" of a Kubernetes service by its id ("" off Kubernetes).',
    S.SERVICE,
)
