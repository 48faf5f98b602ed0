"""The node agent's spill to disk (pxq/agent/spill.py) without the kernel: rows appended to a real
TableStore (as the collectors append them) written as rolling Parquet windows, read back by DuckDB
and by ``pxq run --from DIR``; the size cap; a real full disk (a tiny tmpfs mounted for the test).
Expected values come from the appended rows themselves (pandas), never from pxq's reading of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pxq.agent.spill import Spiller, window_stamp
from pxq.agent.table_store import TableStore
from pxq.errors import DataError
from pxq.replay import open_capture
from pxq.testing.synthetic import synthetic_http_events
from tests.cli_support import run_pxq

START_NS = 1_764_115_200_000_000_000  # 2025-11-26T00:00:00Z, a window boundary
SPAN_NS = 300_000_000_000
WINDOW_NS = 60_000_000_000
FILE_NAME = re.compile(r"^(\d{8}T\d{6})Z-(\d{6})\.parquet$")


def _rows(n: int = 4000, seed: int = 5) -> pa.Table:
    return synthetic_http_events(n, seed=seed, start_ns=START_NS, span_ns=SPAN_NS, null_fraction=0.05)


def _store_with(table: pa.Table, batch_rows: int = 700) -> TableStore:
    store = TableStore(host="spill-host", table_budget_bytes=64 << 20)
    for offset in range(0, table.num_rows, batch_rows):
        store.append("http_events", table.slice(offset, batch_rows))
    return store


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[["time_", "upid", "req_path", "resp_status", "latency"]].copy()
    frame["time_"] = pd.to_datetime(frame["time_"]).astype("datetime64[ns]")
    return frame.sort_values(["time_", "req_path", "upid"]).reset_index(drop=True)


def _duckdb(directory: Path) -> pd.DataFrame:
    return duckdb.sql(
        f"SELECT time_, upid, req_path, resp_status, latency FROM read_parquet('{directory}/http_events/*.parquet')"
    ).df()


def test_rows_are_written_once_per_window_and_duckdb_reads_them(tmp_path):
    table = _rows()
    store = _store_with(table)
    spiller = Spiller(tmp_path, 1 << 30, window_s=60, host="spill-host")
    assert spiller.flush(store, ["http_events"]) == table.num_rows
    assert spiller.flush(store, ["http_events"]) == 0  # nothing new: nothing written twice
    later = _rows(300, seed=9)
    store.append("http_events", later)
    assert spiller.flush(store, ["http_events"]) == later.num_rows

    names = sorted(p.name for p in (tmp_path / "http_events").iterdir())
    assert all(FILE_NAME.match(n) for n in names), names
    # Each file holds only rows of the window its name says.
    for name in names:
        start = pd.Timestamp(FILE_NAME.match(name).group(1), tz="UTC").value
        times = pq.read_table(tmp_path / "http_events" / name, columns=["time_"]).column("time_").cast(pa.int64())
        assert all(start <= t < start + WINDOW_NS for t in times.to_pylist()), name
    windows = {FILE_NAME.match(n).group(1) for n in names}
    assert windows == {window_stamp(START_NS + i * WINDOW_NS) for i in range(5)}

    expected = _keyed(pa.concat_tables([table, later]).to_pandas())
    pd.testing.assert_frame_equal(_keyed(_duckdb(tmp_path)), expected, check_dtype=False)
    meta = json.loads((tmp_path / "spill.json").read_text())
    assert meta["host"] == "spill-host" and meta["window_s"] == 60


def test_pxq_run_from_the_spill_directory(tmp_path):
    table = _rows()
    Spiller(tmp_path, 1 << 30, window_s=60, host="spill-host").flush(_store_with(table), ["http_events"])
    script = tmp_path / "by_status.pxl"
    script.write_text(
        "import px\n"
        "df = px.DataFrame('http_events', start_time='-2m')\n"
        "df = df.groupby('resp_status').agg(n=('latency', px.count))\n"
        "px.display(df, 'by_status')\n"
    )
    proc = run_pxq("run", str(script), "--from", str(tmp_path), "-o", "json", check=True)
    got = {json.loads(line)["resp_status"]: json.loads(line)["n"] for line in proc.stdout.splitlines() if line}
    frame = table.to_pandas()
    times = frame["time_"].astype("int64")
    newest = int(times.max())  # px.now() of a spill directory: its newest row
    recent = frame[times >= newest - 120_000_000_000]
    counts = recent.groupby("resp_status", dropna=False)["time_"].size().to_dict()
    assert got == {None if pd.isna(status) else int(status): n for status, n in counts.items()}
    assert len(recent) < len(frame)  # the window mattered


def test_the_size_cap_deletes_the_oldest_windows_and_counts_them(tmp_path):
    table = _rows(6000)
    probe = tmp_path / "probe"
    Spiller(probe, 1 << 30, window_s=60).flush(_store_with(table), ["http_events"])
    sizes: dict[str, int] = {}
    for path in (probe / "http_events").iterdir():
        stamp = FILE_NAME.match(path.name).group(1)
        sizes[stamp] = sizes.get(stamp, 0) + path.stat().st_size
    newest_two = sorted(sizes)[-2:]
    cap = sum(sizes[s] for s in newest_two) + 10  # room for the two newest windows only

    capped = tmp_path / "capped"
    spiller = Spiller(capped, cap, window_s=60)
    spiller.flush(_store_with(table), ["http_events"])
    left = {FILE_NAME.match(p.name).group(1) for p in (capped / "http_events").iterdir()}
    assert left == set(newest_two)
    assert spiller.counters.windows_deleted == len(sizes) - 2
    assert spiller.total_bytes() <= cap
    # What is left is exactly the rows of those windows.
    frame = table.to_pandas()
    times = frame["time_"].astype("int64")
    keep = times >= pd.Timestamp(newest_two[0], tz="UTC").value
    pd.testing.assert_frame_equal(_keyed(_duckdb(capped)), _keyed(frame[keep]), check_dtype=False)


def test_a_restarted_agent_goes_on_numbering_and_drops_half_written_files(tmp_path):
    table = _rows(1000)
    Spiller(tmp_path, 1 << 30, window_s=60).flush(_store_with(table), ["http_events"])
    before = {p.name for p in (tmp_path / "http_events").iterdir()}
    crashed = tmp_path / "http_events" / f".{sorted(before)[0]}.tmp-12345"
    crashed.write_bytes(b"PAR1 half a file")
    again = Spiller(tmp_path, 1 << 30, window_s=60)
    assert not crashed.exists()
    again.flush(_store_with(table), ["http_events"])  # a new agent's store: the same rows again
    after = {p.name for p in (tmp_path / "http_events").iterdir()}
    assert before < after and len(after) == 2 * len(before)  # nothing overwritten
    assert len(_duckdb(tmp_path)) == 2 * table.num_rows


def test_reading_an_empty_or_damaged_spill_directory_is_a_clear_error(tmp_path):
    (tmp_path / "spill.json").write_text(json.dumps({"format": "pxq-spill", "host": "h", "processes": {}}))
    with pytest.raises(DataError, match="a pxq spill directory with no table files yet"):
        open_capture(tmp_path)
    folder = tmp_path / "http_events"
    folder.mkdir()
    (folder / "20251126T000000Z-000001.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"20251126T000000Z-000001\.parquet: corrupt or truncated Parquet file"):
        open_capture(tmp_path)
    proc = run_pxq("run", "http_data", "--from", str(tmp_path))
    assert proc.returncode == 1 and "corrupt or truncated Parquet file" in proc.stderr


@pytest.fixture
def tiny_disk(tmp_path):
    """A real filesystem that fills up: a 256 KiB tmpfs (root only; the agent's tests run as root)."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (the agent's tests run as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_counted_and_nothing_in_memory_is_lost(tiny_disk, capsys):
    table = _rows(20_000)
    store = _store_with(table, batch_rows=2000)
    held_before = store.table("http_events")
    lines: list[str] = []
    spiller = Spiller(tiny_disk / "spill", 1 << 30, window_s=60, log=lines.append)
    assert spiller.flush(store, ["http_events"]) == 0
    assert spiller.counters.disk_full >= 1 and "disk full" in (spiller.counters.last_error or "")
    assert len([line for line in lines if "the disk is full" in line]) == 1
    # Nothing half-written is left for a reader, and the store still holds every row, unchanged.
    assert not [p for p in (tiny_disk / "spill").rglob("*.parquet")]
    assert not [p for p in (tiny_disk / "spill").rglob(".*tmp-*")]
    assert store.table("http_events").equals(held_before)
    spiller.flush(store, ["http_events"])  # still full: counted again, said once
    assert len([line for line in lines if "the disk is full" in line]) == 1

    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    assert spiller.flush(store, ["http_events"]) == table.num_rows
    assert any("again" in line for line in lines)
    pd.testing.assert_frame_equal(_keyed(_duckdb(tiny_disk / "spill")), _keyed(table.to_pandas()), check_dtype=False)
