"""pxq/testing/conversations.py: a recorded conversation becomes the rows both traced ends would
have, and conn_stats counts each end's bytes as the recording holds them."""

from __future__ import annotations

from pxq.agent.protocols import pgsql, redis
from pxq.testing.conversations import CLIENT, SERVER, ConversationCapture, both_ends, conversation_pairs
from pxq.testing.streams import load_stream

START_NS = 1_764_115_200_000_000_000


def test_both_ends_of_two_conversations_and_their_byte_counts():
    first = load_stream(pgsql.RECORDED_STREAMS / "simple_queries.json")
    second = load_stream(redis.RECORDED_STREAMS / "basic.json")
    capture = ConversationCapture()
    capture.add("pgsql", first, both_ends("0:1:1", ("10.0.0.1", 40000), "0:2:2", ("10.0.0.2", 5432)), START_NS)
    capture.add("redis", second, both_ends("0:1:1", ("10.0.0.1", 40001), "0:3:3", ("10.0.0.3", 6379)), START_NS + 10**9)
    tables = capture.tables()
    assert sorted(tables) == ["conn_stats", "pgsql_events", "redis_events"]
    pgsql_rows = tables["pgsql_events"].to_pylist()
    n = len(conversation_pairs("pgsql", first))
    assert n > 0 and len(pgsql_rows) == 2 * n
    client_rows, server_rows = pgsql_rows[:n], pgsql_rows[n:]
    assert {(r["upid"], r["trace_role"], r["remote_addr"], r["remote_port"], r["local_port"]) for r in client_rows} \
        == {("0:1:1", CLIENT, "10.0.0.2", 5432, 40000)}  # fmt: skip
    assert {(r["upid"], r["trace_role"], r["remote_addr"], r["remote_port"], r["local_port"]) for r in server_rows} \
        == {("0:2:2", SERVER, "10.0.0.1", 40000, 5432)}  # fmt: skip
    assert [r["req"] for r in client_rows] == [r["req"] for r in server_rows]
    assert min(r["time_"].value for r in pgsql_rows) >= START_NS
    # The last report of each end: one connection opened and closed, the recording's bytes.
    last = {}
    for row in tables["conn_stats"].to_pylist():
        last[(row["upid"], row["remote_addr"], row["remote_port"])] = row
    for stream, client, server, port in ((first, ("0:1:1", "10.0.0.2"), ("0:2:2", "10.0.0.1"), 5432),
                                         (second, ("0:1:1", "10.0.0.3"), ("0:3:3", "10.0.0.1"), 6379)):  # fmt: skip
        requests, responses = len(stream.side("req")), len(stream.side("resp"))
        counters = ("conn_open", "conn_close", "bytes_sent", "bytes_recv")
        assert [last[(*client, port)][c] for c in counters] == [1, 1, requests, responses]
        # A server's aggregate has no remote port (Pixie's AggKey).
        assert [last[(*server, 0)][c] for c in counters] == [1, 1, responses, requests]
