"""A capture file damaged on disk is an error naming the file, row group and column, never
silently different values: page checksums (written by pxq, verified on read) and the time_ range
capture.json records. Captures written before either existed still read."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pxq.errors import DataError
from pxq.replay import META_FILE, open_capture
from pxq.testing.synthetic import synthetic_http_events, write_synthetic_capture
from tests.cli_support import run_pxq

ROWS, GROUP_ROWS = 300, 100
START_NS, SPAN_NS = 1_764_115_200_000_000_000, 300_000_000_000
SCRIPT = "import px\npx.display(px.DataFrame(table='http_events', start_time='-10m'), 'http')\n"


@pytest.fixture
def capture(tmp_path, monkeypatch) -> Path:
    """A capture written by pxq, in three row groups so that the error's position means something."""
    monkeypatch.setattr("pxq.replay.writer.ROW_GROUP_ROWS", GROUP_ROWS)
    root = Path(write_synthetic_capture(tmp_path / "cap", ROWS, seed=4, start_ns=START_NS, span_ns=SPAN_NS))
    assert pq.ParquetFile(root / "http_events.parquet").metadata.num_row_groups == ROWS // GROUP_ROWS
    return root


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def data_page_payload(path: Path, group: int, column: str) -> tuple[int, int]:
    """(offset, size) of the compressed payload of ``column``'s data page in row group ``group``,
    from the file metadata and the page header (Thrift compact protocol: PageHeader fields 1 type,
    2 uncompressed_page_size, 3 compressed_page_size, each a zigzag varint i32)."""
    meta = pq.ParquetFile(path).metadata
    chunk = meta.row_group(group).column(meta.schema.to_arrow_schema().get_field_index(column))
    data = path.read_bytes()
    at, fields = chunk.data_page_offset, {}
    field_id = 0
    while len(fields) < 3:
        header = data[at]
        at += 1
        field_id += header >> 4
        assert header & 0x0F == 5, "PageHeader fields 1-3 are i32"
        value, at = _varint(data, at)
        fields[field_id] = (value >> 1) ^ -(value & 1)
    assert fields[1] == 0, "a DATA_PAGE"
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    chunk_end = start + chunk.total_compressed_size
    # One data page per chunk here (pages are 1 MiB): its payload ends the chunk.
    payload = chunk_end - fields[3]
    assert 0 < payload - chunk.data_page_offset < 256, "the page header lies before the payload"
    return payload, fields[3]


def flip_mid_page(path: Path, group: int, column: str) -> None:
    """Flip one bit in the middle of the payload of ``column``'s data page in row group ``group``."""
    offset, size = data_page_payload(path, group, column)
    data = bytearray(path.read_bytes())
    data[offset + size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def scan_all(root: Path) -> pa.Table:
    return open_capture(root).scan("http_events")


@pytest.mark.parametrize("column", ["latency", "time_", "req_path", "resp_status"])
def test_a_flipped_bit_in_a_data_page_is_a_positioned_error(capture, column):
    path = capture / "http_events.parquet"
    flip_mid_page(path, 1, column)
    with pytest.raises(DataError) as info:
        scan_all(capture)
    assert str(info.value) == (
        f"{path}: damaged file: row group 1, column {column!r}: page checksum mismatch "
        "(the data on disk is not what was written)"
    )


def test_the_cli_says_it_in_one_line_with_the_data_error_exit_code(capture, tmp_path):
    script = tmp_path / "all.pxl"
    script.write_text(SCRIPT)
    path = capture / "http_events.parquet"
    flip_mid_page(path, 2, "latency")
    proc = run_pxq("run", script, "--from", capture)
    missing = run_pxq("run", script, "--from", tmp_path / "nowhere")
    assert proc.returncode == missing.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"pxq: {path}: damaged file: row group 2, column 'latency': page checksum mismatch "
        "(the data on disk is not what was written)\n"
    )


def rewrite_time(capture: Path, row: int, new_ns: int) -> None:
    """Damage that checksums cannot see (the file was rewritten with valid checksums, say by a
    tool that mangled one time): only the range capture.json records can tell."""
    path = capture / "http_events.parquet"
    table = pq.read_table(path)
    times = table.column("time_").cast(pa.int64()).to_pylist()
    times[row] = new_ns
    table = table.set_column(0, table.schema.field(0), pa.array(times, pa.int64()).cast(pa.timestamp("ns")))
    pq.write_table(table, path, row_group_size=GROUP_ROWS, write_page_checksum=True)


@pytest.mark.parametrize("bad_ns", [START_NS - 3600 * 10**9, START_NS + 10 * SPAN_NS, 0])
def test_a_time_outside_the_recorded_range_is_a_positioned_error(capture, bad_ns):
    recorded = json.loads((capture / META_FILE).read_text())["time_range_ns"]["http_events"]
    original = pq.read_table(capture / "http_events.parquet").column("time_").cast(pa.int64())
    assert recorded == [original[0].as_py(), original[-1].as_py()]  # what the writer recorded
    rewrite_time(capture, 150, bad_ns)
    path = capture / "http_events.parquet"
    expected = (
        f"{path}: damaged file: row group 1, column 'time_', row 50: time {bad_ns} ns is outside the range "
        f"capture.json records for the table ({recorded[0]}..{recorded[1]} ns)"
    )
    cap = open_capture(capture)
    scans = [
        (["time_", "latency"], None, None),
        (["latency"], START_NS, START_NS + 10**9),
        (["latency"], None, START_NS + SPAN_NS),
    ]
    for columns, start, end in scans:
        # Even a window that leaves the bad row out says so, instead of silently dropping the row.
        with pytest.raises(DataError) as info:
            cap.scan("http_events", columns, start, end)
        assert str(info.value) == expected
    # Times that neither are read nor decide which rows are: not read just to be checked.
    assert cap.scan("http_events", ["latency"]).num_rows == ROWS


def test_an_intact_capture_reads_every_value(capture):
    expected = pq.read_table(capture / "http_events.parquet")
    data = scan_all(capture)
    assert data.equals(expected.cast(data.schema))
    window = open_capture(capture).scan("http_events", ["req_path"], START_NS, START_NS + SPAN_NS // 2)
    times = expected.column("time_").cast(pa.int64()).to_pylist()
    keep = [i for i, t in enumerate(times) if START_NS <= t < START_NS + SPAN_NS // 2]
    assert window.column("req_path").to_pylist() == [expected.column("req_path")[i].as_py() for i in keep]


def test_a_capture_written_before_checksums_and_time_ranges_still_reads(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    table = synthetic_http_events(ROWS, seed=5, start_ns=START_NS, span_ns=SPAN_NS)
    pq.write_table(table, old / "http_events.parquet", compression="zstd")  # no page checksums
    (old / META_FILE).write_text(
        json.dumps(
            {
                "host": "h",
                "start_time_ns": START_NS,
                "end_time_ns": START_NS + SPAN_NS,
                "processes": {},
                "tables": ["http_events"],
            }
        )
    )
    assert pq.ParquetFile(old / "http_events.parquet").metadata.row_group(0).column(0) is not None
    data = scan_all(old)
    assert data.equals(pq.read_table(old / "http_events.parquet").cast(data.schema))


def test_the_writer_checksums_every_page(capture, tmp_path):
    # The same flip in a copy written without checksums reads "fine" with wrong values: what the
    # checksums are there to prevent.
    plain = tmp_path / "plain.parquet"
    original = pq.read_table(capture / "http_events.parquet")
    pq.write_table(original, plain, row_group_size=GROUP_ROWS, compression="zstd")
    flip_mid_page(plain, 1, "latency")
    assert not pq.read_table(plain).column("latency").equals(original.column("latency"))
    flip_mid_page(capture / "http_events.parquet", 1, "latency")
    with pytest.raises(OSError, match="CRC"):
        pq.read_table(capture / "http_events.parquet", page_checksum_verification=True)
