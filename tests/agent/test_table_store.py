"""The agent's table store: time-window scans, the byte budget, drop counting, capture writing."""

from __future__ import annotations

import pyarrow as pa

from pxq.agent.table_store import TableStore
from pxq.replay import open_capture
from pxq.tables import CATALOG
from pxq.testing.synthetic import synthetic_http_events, synthetic_processes

START_NS = 1_764_115_200_000_000_000


def batches(n_batches: int, rows: int) -> list[pa.Table]:
    table = synthetic_http_events(n_batches * rows, seed=2, start_ns=START_NS)
    return [table.slice(i * rows, rows) for i in range(n_batches)]


def test_scan_window_and_columns():
    store = TableStore()
    for batch in batches(4, 250):
        store.append("http_events", batch)
    everything = store.scan("http_events")
    assert everything.num_rows == 1000
    times = everything.column("time_").cast(pa.int64()).to_pylist()
    start, end = times[100], times[900]
    window = store.scan("http_events", ["time_", "latency"], start, end)
    assert window.column_names == ["time_", "latency"]
    assert window.num_rows == sum(start <= t < end for t in times)


def test_budget_drops_oldest_batches_and_counts_rows():
    parts = batches(10, 200)
    budget = sum(p.nbytes for p in parts[-3:]) + 10  # room for exactly the three newest
    store = TableStore(budget_bytes=budget)
    for batch in parts:
        store.append("http_events", batch)
    kept = store.scan("http_events")
    assert kept.num_rows == 600  # the three newest batches
    assert kept.column("time_")[0] == parts[7].column("time_")[0]
    assert store.drops["http_events"]["table_store_budget"] == 1400


def test_collector_counters_keep_store_counters():
    store = TableStore(budget_bytes=1)
    for batch in batches(2, 10):
        store.append("http_events", batch)
    store.set_drops("http_events", {"ringbuf_reserve_failed": 3, "truncated": 0})
    assert store.drops["http_events"] == {"ringbuf_reserve_failed": 3, "table_store_budget": 10}


def test_write_capture_round_trip(tmp_path):
    store = TableStore(host="store-host")
    store.start_time_ns, store.end_time_ns = START_NS, START_NS + 300 * 10**9
    store.processes = synthetic_processes()
    for batch in batches(3, 100):
        store.append("http_events", batch)
    store.set_drops("http_events", {"truncated": 2})
    store.write_capture(tmp_path)
    capture = open_capture(tmp_path)
    assert capture.host == "store-host" and capture.drops["http_events"]["truncated"] == 2
    assert capture.scan("http_events").equals(store.scan("http_events"))


def test_repetitive_text_is_held_compactly_and_read_back_exactly():
    """The connection columns repeat one value for thousands of rows and the text columns differ
    by a digit: the store holds its batches compressed (less memory: the store is most of the
    agent's RSS under load), and gives back exactly what was appended, in the catalog's types;
    the budget still counts the bytes in those types (what a reader gets), so what is dropped
    does not change."""
    schema = CATALOG["redis_events"].arrow_schema()
    rows = 1000
    values = {"upid": ["0:4242:123456789"] * rows, "req_args": [f'{{"key":"b:{i}"}}' for i in range(rows)]}
    full = pa.table({f.name: pa.array(values[f.name], f.type) if f.name in values else pa.nulls(rows, f.type)
                     for f in schema}, schema=schema)  # fmt: skip
    store = TableStore()
    store.append("redis_events", full)
    back = store.table("redis_events")
    assert back.equals(full) and back.schema == schema
    assert store.held_bytes() < full.nbytes // 5
    assert store._tables["redis_events"].bytes == full.nbytes


def test_rolling_window_drops_held_batches_by_their_newest_row():
    """drop_before keeps a batch while any of its rows is inside the window (the batch's newest
    time, taken when appended: a held batch is not read back to decide)."""
    parts = batches(4, 100)
    store = TableStore()
    for batch in parts:
        store.append("http_events", batch)
    newest = [max(p.column("time_").cast(pa.int64()).to_pylist()) for p in parts]
    store.drop_before(newest[1] + 1)  # the first two batches are wholly older
    assert store.rows("http_events") == 200
    assert store.table("http_events").equals(pa.concat_tables(parts[2:]).cast(store.table("http_events").schema))
    assert "http_events" not in store.drops  # a window asked for: not a loss
