from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pxq.tables import CATALOG, COLLECTORS, get_table, table_names
from pxq.tables.docs import catalog_markdown
from pxq.types import DataType, SemanticType

REPO = Path(__file__).resolve().parents[2]
PROTOCOL_HEAD = [
    ("time_", DataType.TIME64NS),
    ("upid", DataType.UINT128),
    ("remote_addr", DataType.STRING),
    ("remote_port", DataType.INT64),
    ("local_addr", DataType.STRING),
    ("local_port", DataType.INT64),
    ("trace_role", DataType.INT64),
    ("encrypted", DataType.BOOLEAN),
]
PROTOCOLS = {
    "http_events": "http",
    "mysql_events": "mysql",
    "pgsql_events": "pgsql",
    "dns_events": "dns",
    "redis_events": "redis",
}
ALL = sorted(CATALOG)


def test_expected_tables_present():
    assert set(table_names()) == {
        *PROTOCOLS,
        "conn_stats",
        "process_stats",
        "stack_traces.beta",
        "proc_exit_events",
        "proc_exec_events",
        "agent_status",
    }
    assert get_table("http_events") is CATALOG["http_events"]
    assert get_table("no_such_table") is None


@pytest.mark.parametrize("name", ALL)
def test_table_is_well_formed(name):
    table = CATALOG[name]
    assert table.name == name
    assert table.doc.strip()
    assert table.collector in COLLECTORS
    first = table.columns[0]
    assert (first.name, first.type, first.semantic) == ("time_", DataType.TIME64NS, SemanticType.TIME)
    assert table.columns[1].name == "upid" and table.columns[1].semantic is SemanticType.UPID
    names = [c.name for c in table.columns]
    assert len(names) == len(set(names))
    for col in table.columns:
        assert col.name.isidentifier(), col.name
        assert isinstance(col.type, DataType) and isinstance(col.semantic, SemanticType)
        assert col.doc.strip(), f"{name}.{col.name} has no doc"
    # The Arrow schema is buildable and in declaration order.
    schema = table.arrow_schema()
    assert schema.names == names
    assert schema.field("time_").type == pa.timestamp("ns")


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_protocol_tables_share_head_and_latency(name):
    table = CATALOG[name]
    assert table.collector == "socket_tracer"
    assert table.protocol == PROTOCOLS[name]
    head = [(c.name, c.type) for c in table.columns[: len(PROTOCOL_HEAD)]]
    assert head == PROTOCOL_HEAD
    last = table.columns[-1]
    assert (last.name, last.type, last.semantic) == ("latency", DataType.INT64, SemanticType.DURATION_NS)


def test_semantic_types_follow_naming():
    for table in CATALOG.values():
        for col in table.columns:
            if col.name.endswith("_size") or col.name.endswith("_bytes") or col.name.startswith("bytes_"):
                assert col.semantic is SemanticType.BYTES, f"{table.name}.{col.name}"
                assert col.type is DataType.INT64
            if col.name.endswith("_addr"):
                assert col.semantic is SemanticType.IP_ADDRESS, f"{table.name}.{col.name}"
            if col.name.endswith("_port"):
                assert col.semantic is SemanticType.PORT, f"{table.name}.{col.name}"
            if col.name.endswith("headers"):
                assert col.semantic is SemanticType.JSON
    http = CATALOG["http_events"]
    assert http.column("resp_status").semantic is SemanticType.HTTP_STATUS
    assert CATALOG["stack_traces.beta"].column("stack_trace").semantic is SemanticType.STACK_TRACE
    dns = CATALOG["dns_events"]
    assert {dns.column(c).semantic for c in ("req_header", "req_body", "resp_header", "resp_body")} == {
        SemanticType.JSON
    }


def test_specific_column_types():
    assert CATALOG["mysql_events"].column("req_cmd").type is DataType.INT64
    assert CATALOG["pgsql_events"].column("req_cmd").type is DataType.STRING
    assert CATALOG["conn_stats"].column("ssl").type is DataType.BOOLEAN
    assert CATALOG["stack_traces.beta"].column("count").type is DataType.INT64
    assert CATALOG["stack_traces.beta"].collector == "perf_profiler"
    assert CATALOG["process_stats"].collector == "process_stats"
    assert {CATALOG[t].collector for t in ("proc_exit_events", "proc_exec_events")} == {"proc_events"}
    assert CATALOG["conn_stats"].protocol is None


def test_docs_mention_every_column():
    text = catalog_markdown()
    for table in CATALOG.values():
        assert f"## `{table.name}`" in text
        for col in table.columns:
            assert f"| `{col.name}` |" in text


def test_docs_file_is_up_to_date():
    generated = subprocess.run(
        [sys.executable, "-m", "pxq.tables.docs"], check=True, capture_output=True, text=True, cwd=REPO
    ).stdout
    on_disk = (REPO / "docs" / "tables.md").read_text()
    assert on_disk == generated, "docs/tables.md is stale: run `python -m pxq.tables.docs > docs/tables.md`"
