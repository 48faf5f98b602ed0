"""The agent's table store: time-window scans, the byte budget, drop counting, capture writing."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

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


@pytest.mark.parametrize("raw_bytes", [0, 250_000, 1 << 30], ids=["compressed", "some raw", "all raw"])
def test_budget_drops_oldest_batches_and_counts_rows(raw_bytes):
    """Whether a batch is held compressed or not changes nothing of what the budget keeps or counts."""
    parts = batches(10, 200)
    budget = sum(p.nbytes for p in parts[-3:]) + 10  # room for exactly the three newest
    store = TableStore(budget_bytes=budget, raw_bytes=raw_bytes)
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
    by a digit: the store holds its batches compressed past its raw allowance (less memory: the
    store is most of the agent's RSS under load; none here, so at once), and gives back exactly
    what was appended, in the catalog's types; the budget still counts the bytes in those types
    (what a reader gets), so what is dropped does not change."""
    schema = CATALOG["redis_events"].arrow_schema()
    rows = 1000
    values = {"upid": ["0:4242:123456789"] * rows, "req_args": [f'{{"key":"b:{i}"}}' for i in range(rows)]}
    full = pa.table({f.name: pa.array(values[f.name], f.type) if f.name in values else pa.nulls(rows, f.type)
                     for f in schema}, schema=schema)  # fmt: skip
    store = TableStore(raw_bytes=0)
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


# -- the newest batches held as appended, the oldest compressed (RAW_HELD_BYTES)


def _raw_flags(store: TableStore, table: str = "http_events") -> list[bool]:
    """Per batch held, oldest first: still as appended (not compressed)?"""
    return [b.raw for b in store._tables[table].batches]


def _raw_size_matches(store: TableStore) -> bool:
    """The store's running count of raw bytes is the sizes of the raw batches it holds, and its
    queue of raw batches holds those (oldest first) and no batch dropped."""
    raw = sorted((b for entry in store._tables.values() for b in entry.batches if b.raw), key=lambda b: b.seq)
    return store._raw_size == sum(b.size for b in raw) and [id(b) for b in store._raw] == [id(b) for b in raw]


def test_newest_batches_stay_raw_oldest_compressed_and_all_read_back_exactly():
    parts = batches(6, 300)
    allowance = parts[-1].nbytes + parts[-2].nbytes  # the two newest fit, not three
    store = TableStore(raw_bytes=allowance)
    for part in parts:
        store.append("http_events", part)
    assert _raw_flags(store) == [False] * 4 + [True] * 2
    assert _raw_size_matches(store)
    schema = CATALOG["http_events"].arrow_schema()
    assert store.table("http_events").equals(pa.concat_tables(parts).cast(schema))
    for batch, part in zip(store.batches("http_events"), parts, strict=True):
        assert batch.equals(part.cast(schema))
    # compressed and raw alike count their rows' bytes in the catalog's types
    assert store.size_bytes("http_events") == sum(p.nbytes for p in parts)
    compressed = store.held_bytes() - sum(p.nbytes for p in parts[-2:])
    assert 0 < compressed < sum(p.nbytes for p in parts[:4]) // 2  # (random synthetic rows: ~1/3)


def test_a_reader_holding_batches_reads_them_after_they_were_compressed():
    """A reader takes the batches (under the lock) and reads them later: the writer compressing
    one meanwhile (swapping its data in place) changes nothing of what the reader gets."""
    parts = batches(4, 200)
    store = TableStore(raw_bytes=parts[0].nbytes + parts[1].nbytes)
    store.append("http_events", parts[0])
    store.append("http_events", parts[1])
    pending = store.batches("http_events")  # both raw now
    since = store.batches_since("http_events", 0)
    store.append("http_events", parts[2])
    store.append("http_events", parts[3])
    assert _raw_flags(store) == [False, False, True, True]
    schema = CATALOG["http_events"].arrow_schema()
    assert [b.equals(p.cast(schema)) for b, p in zip(pending, parts[:2], strict=True)] == [True, True]
    assert [seq for seq, _ in since] == [1, 2]


def test_spill_cursor_goes_on_across_batches_being_compressed():
    """batches_since(seq) gives the same batches (seq and rows) whether they were compressed
    between two reads or not: the spill's cursor neither skips nor repeats rows."""
    parts = batches(8, 250)
    schema = CATALOG["http_events"].arrow_schema()
    store = TableStore(raw_bytes=sum(p.nbytes for p in parts[-3:]))  # the three newest fit
    cursor, got = 0, []
    for i, part in enumerate(parts):
        store.append("http_events", part)
        if i % 3 == 2 or i == len(parts) - 1:  # read now and then, as the spill flushes
            pending = store.batches_since("http_events", cursor)
            got.extend(batch for _seq, batch in pending)
            cursor = pending[-1][0]
    assert _raw_flags(store) == [False] * 5 + [True] * 3
    assert cursor == len(parts)
    assert pa.concat_tables(got).equals(pa.concat_tables(parts).cast(schema))


def test_batches_dropped_while_raw_are_never_compressed_and_leave_the_raw_count():
    """A rolling window (drop_before) and the budget drop raw batches: their bytes leave the
    raw count, so the batches kept are not compressed early to make room for them."""
    parts = batches(6, 200)
    sizes = [p.nbytes for p in parts]
    newest = [max(p.column("time_").cast(pa.int64()).to_pylist()) for p in parts]
    store = TableStore(raw_bytes=sum(sizes[:3]) + 10)
    for part in parts[:3]:
        store.append("http_events", part)
    assert _raw_flags(store) == [True] * 3
    store.drop_before(newest[1] + 1)  # the first two go, raw
    assert _raw_flags(store) == [True] and _raw_size_matches(store)
    store.append("http_events", parts[3])
    store.append("http_events", parts[4])
    assert _raw_flags(store) == [True] * 3  # (room made by the drop: nothing compressed)
    budget = sizes[3] + sizes[4] + sizes[5] + 10  # the budget then drops the oldest one, raw
    store.budget_bytes = budget
    store.append("http_events", parts[5])
    assert _raw_flags(store) == [True] * 3 and _raw_size_matches(store)
    assert store.drops["http_events"]["table_store_budget"] == parts[2].num_rows
    schema = CATALOG["http_events"].arrow_schema()
    assert store.table("http_events").equals(pa.concat_tables(parts[3:]).cast(schema))


def test_the_raw_allowance_is_shared_by_all_tables_oldest_compressed_first():
    http = batches(2, 300)
    schema = CATALOG["redis_events"].arrow_schema()
    redis = pa.table({f.name: pa.nulls(500, f.type) for f in schema}, schema=schema)
    store = TableStore(raw_bytes=http[1].nbytes + redis.nbytes)
    store.append("http_events", http[0])
    store.append("redis_events", redis)
    store.append("http_events", http[1])
    assert _raw_flags(store) == [False, True] and _raw_flags(store, "redis_events") == [True]
    assert _raw_size_matches(store)
    assert store.table("redis_events").equals(redis)


# Operations on one table: append the next part, or drop_before the newest time of part i.
OPERATIONS = st.lists(st.one_of(st.just(("append", 0)), st.tuples(st.just("drop_before"), st.integers(0, 11))),
                      min_size=1, max_size=20)  # fmt: skip
PARTS = batches(12, 60)


@settings(max_examples=80, deadline=None)
@given(OPERATIONS, st.sampled_from([0, 1, 3, 12]), st.sampled_from([None, 2, 5]))
def test_any_appends_and_drops_read_back_as_a_plain_list_of_parts_would(operations, raw_parts, budget_parts):
    """Whatever is raw or compressed when, the store holds, counts and gives back what a plain
    list of the parts appended would: the budget drops the oldest parts (counted), a rolling
    window the parts wholly older than its cutoff (not counted); batches_since(seq) the parts
    appended after the seq-th; and its raw bytes stay within the allowance."""
    size = PARTS[0].nbytes  # (every part is about this size: raw_parts and budget_parts in parts)
    budget = budget_parts * size + size // 2 if budget_parts else 1 << 40
    store = TableStore(budget_bytes=budget, raw_bytes=raw_parts * size)
    newest = [max(p.column("time_").cast(pa.int64()).to_pylist()) for p in PARTS]
    held: list[int] = []  # the parts the store should hold, by index (= seq - 1), oldest first
    evicted = 0
    appended = 0
    for op, arg in operations:
        if op == "append" and appended < len(PARTS):
            store.append("http_events", PARTS[appended])
            held.append(appended)
            appended += 1
            while len(held) > 1 and sum(PARTS[i].nbytes for i in held) > budget:
                evicted += PARTS[held.pop(0)].num_rows
        elif op == "drop_before":
            while held and newest[held[0]] < newest[arg]:
                held.pop(0)
            store.drop_before(newest[arg])
        assert _raw_size_matches(store) and store._raw_size <= raw_parts * size
    schema = CATALOG["http_events"].arrow_schema()
    expected = pa.concat_tables([PARTS[i].cast(schema) for i in held]) if held else None
    if expected is None:
        assert store.rows("http_events") == 0
    else:
        assert store.table("http_events").equals(expected)
        assert store.size_bytes("http_events") == sum(PARTS[i].nbytes for i in held)
        since = held[len(held) // 2]  # a spill cursor in the middle
        assert [seq for seq, _ in store.batches_since("http_events", since)] == [i + 1 for i in held if i + 1 > since]
    assert store.drops.get("http_events", {}).get("table_store_budget", 0) == evicted


def test_a_batch_dropped_while_it_is_being_compressed_leaves_the_counts_right(monkeypatch):
    """Compression runs outside the lock: a rolling window dropping that very batch meanwhile
    (another thread's drop_before, here made to happen inside the compression) takes its bytes
    off once, and the store holds and gives back only the batches kept."""
    from pxq.agent import table_store

    parts = batches(3, 200)
    newest = [max(p.column("time_").cast(pa.int64()).to_pylist()) for p in parts]
    store = TableStore(raw_bytes=parts[1].nbytes + parts[2].nbytes)
    real_compress = table_store.compress

    def compress_while_dropped(data: pa.Table) -> pa.Buffer:
        store.drop_before(newest[0] + 1)  # the batch being compressed (the oldest) goes
        return real_compress(data)

    store.append("http_events", parts[0])
    store.append("http_events", parts[1])
    monkeypatch.setattr(table_store, "compress", compress_while_dropped)
    store.append("http_events", parts[2])  # over the allowance: the oldest is compressed
    assert _raw_flags(store) == [True, True] and _raw_size_matches(store)
    schema = CATALOG["http_events"].arrow_schema()
    assert store.table("http_events").equals(pa.concat_tables(parts[1:]).cast(schema))


def test_raw_batches_evicted_behind_an_older_raw_batch_leave_the_raw_queue():
    """A table's per-table budget drops its raw batches while another table's older batch stays
    raw: the dropped ones leave the store's raw queue at once (the queue holding them would
    keep their rows in memory)."""
    http = batches(5, 200)
    schema = CATALOG["redis_events"].arrow_schema()
    redis = pa.table({f.name: pa.nulls(100, f.type) for f in schema}, schema=schema)
    store = TableStore(table_budget_bytes=http[0].nbytes * 2 + 10)
    store.append("redis_events", redis)  # the oldest raw batch, kept
    for part in http:
        store.append("http_events", part)
        assert _raw_size_matches(store)
    assert store.drops["http_events"]["table_store_budget"] == 600
    assert len(store._raw) == 3 and _raw_flags(store) == [True, True]
