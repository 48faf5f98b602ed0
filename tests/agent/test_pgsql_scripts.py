"""The bundled pgsql_data, pgsql_stats and sql_queries scripts over a capture whose pgsql_events
rows are the recorded PostgreSQL conversations (pxq/agent/protocols/pgsql/streams/) and whose
mysql_events table is empty. Expected values: the SQL the recorded clients sent and how often
(tests/agent/record_pgsql_streams.py), normalized as Pixie's normalize_pgsql does (its literals
to $n; its placeholders keep their number)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pxq.agent.protocols.pgsql import RECORDED_STREAMS
from pxq.api import run_script
from pxq.replay.writer import write_capture
from pxq.tables import CATALOG
from pxq.testing.conversations import ConversationCapture, both_ends
from pxq.testing.streams import load_stream

T0 = 1_700_000_000_000_000_000
CLIENT_UPID, SERVER_UPID = "0:4100:77", "0:4200:88"
PROCESSES = {
    CLIENT_UPID: {"pid": 4100, "comm": "python3", "cmdline": "python3 app.py", "exe": "/usr/bin/python3",
                  "container_id": "", "pod": "", "namespace": ""},
    SERVER_UPID: {"pid": 4200, "comm": "postgres", "cmdline": "postgres: app", "exe": "/usr/lib/postgresql/15/postgres",
                  "container_id": "", "pod": "", "namespace": ""},
}  # fmt: skip


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    conversations = ConversationCapture()
    for i, name in enumerate(("simple_queries", "prepared_types", "copy_in_out")):
        # The client's rows and the server's, as both sides would be traced.
        ends = both_ends(CLIENT_UPID, ("127.0.0.1", 40000 + i), SERVER_UPID, ("127.0.0.1", 5432))
        conversations.add("pgsql", load_stream(RECORDED_STREAMS / f"{name}.json"), ends, T0 + i * 10**9)
    table = conversations.tables()["pgsql_events"]
    directory = tmp_path_factory.mktemp("pgsql-capture")
    end = T0 + 10 * 10**9
    empty_mysql = CATALOG["mysql_events"].arrow_schema().empty_table()
    write_capture(directory, {"pgsql_events": table, "mysql_events": empty_mysql}, host="test-host",
                  start_time_ns=T0 - 10**9, end_time_ns=end, processes=PROCESSES)  # fmt: skip
    return str(directory)


def run(name: str, source: str, **args) -> list[dict]:
    _compiled, results = run_script(name, source=source, args=args)
    (table,) = results.tables.values() if hasattr(results, "tables") else results.values()
    assert isinstance(table, pa.Table)
    return table.to_pylist()


def test_pgsql_data_shows_both_sides_of_each_request(capture):
    rows = run("pgsql_data", capture, num_head=1000)
    assert len(rows) == 2 * (5 + 14 + 3)  # the rows of the three conversations, from each side
    server = [r for r in rows if r["destination"] == "postgres[4200]"]
    assert {r["source"] for r in server} == {"127.0.0.1:40000", "127.0.0.1:40001", "127.0.0.1:40002"}
    client = [r for r in rows if r["source"] == "python3[4100]"]
    assert {r["destination"] for r in client} == {"127.0.0.1:5432"}
    assert [r["req"] for r in client if r["req_cmd"] == "Query"][:2] == [
        "CREATE TABLE items (id int PRIMARY KEY, name text, price float8)",
        "INSERT INTO items VALUES (1, 'apple', 1.5), (2, 'pear', NULL)",
    ]
    only_execute = run("pgsql_data", capture, req_cmd_filter="Execute", source_filter="python3")
    assert len(only_execute) == 3


def test_pgsql_stats_counts_requests_and_errors_per_pair(capture):
    rows = run("pgsql_stats", capture, window="1m")
    by_pair = {(r["source"], r["destination"]): r for r in rows}
    client = by_pair[("python3[4100]", "127.0.0.1:5432")]
    assert client["requests"] == 5 + 14 + 3
    # One error in simple_queries (undefined table), one in prepared_types (division by zero).
    assert client["error_rate"] == pytest.approx(2 / 22)
    assert client["request_throughput"] == pytest.approx(22 / 60)
    assert client["latency_p50"] > 0


def test_sql_queries_normalizes_and_counts_with_an_empty_mysql_table(capture):
    rows = run("sql_queries", capture, endpoint_filter="python3")
    counts = {r["normed_query"]: r["requests"] for r in rows}
    assert {r["db"] for r in rows} == {"pgsql"}
    assert counts["INSERT INTO items VALUES ($1, $2, $3), ($4, $5, NULL)"] == 1  # NULL is no literal in Pixie's grammar
    assert counts["SELECT $1::int8, $2::text, $3::float8, $4::bool, $5::text, $6::timestamptz, $7::bytea"] == 2
    assert counts["SELECT pg_sleep($1)"] == 1
    assert counts["SELECT id, name FROM items ORDER BY id"] == 1
    # Parse/Bind/Describe rows are not queries run: only Query and Execute count.
    # simple_queries: 5 Queries; prepared_types: 3 Executes and a Query; copy_in_out: 3 Queries.
    assert sum(counts.values()) == 5 + 4 + 3
