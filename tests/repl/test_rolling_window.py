"""The live REPL's rolling window: ``TableStore.drop_before`` forgets the batches wholly older than
the window's start and keeps every row of the others, without counting them as losses."""

from __future__ import annotations

import pyarrow as pa

from pxq.agent.table_store import TableStore
from pxq.testing.synthetic import synthetic_http_events

START_NS = 1_764_115_200_000_000_000


def test_drop_before_keeps_batches_that_reach_the_cutoff():
    table = synthetic_http_events(1000, seed=7, start_ns=START_NS)
    parts = [table.slice(i * 200, 200) for i in range(5)]
    store = TableStore()
    for part in parts:
        store.append("http_events", part)
    newest = [max(p.column("time_").cast(pa.int64()).to_pylist()) for p in parts]
    cutoff = newest[1] + 1  # after every row of the first two batches, inside the third
    store.drop_before(cutoff)
    kept = store.scan("http_events")
    assert kept.num_rows == store.rows("http_events") == 600
    assert kept.equals(pa.concat_tables(parts[2:]))
    assert store.drops == {}  # a window the user asked for, not a loss
    store.drop_before(newest[-1] + 1)
    assert store.rows("http_events") == 0 and store.scan("http_events").num_rows == 0
