from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st

from pxq.errors import DataError, PxqError
from pxq.replay import META_FILE, open_capture, write_capture
from pxq.tables import CATALOG
from pxq.types import FIELD_SEMANTIC_KEY

T0 = 1_764_131_462_123_456_789  # 2025-11-26 04:31:02.123456789 UTC
PROCS = {
    "1:4242:99": {
        "pid": 4242,
        "comm": "nginx",
        "cmdline": "nginx -g daemon off;",
        "exe": "/usr/sbin/nginx",
        "container_id": "abc",
        "pod": "web-0",
        "namespace": "default",
    }
}


def http_table(n: int = 5, step: int = 1_000) -> pa.Table:
    schema = CATALOG["http_events"].arrow_schema()
    values = {
        "time_": pa.array([T0 + i * step for i in range(n)], pa.int64()).cast(pa.timestamp("ns")),
        "upid": ["1:4242:99"] * n,
        "remote_addr": ["10.0.0.1"] * n,
        "remote_port": [40000 + i for i in range(n)],
        "local_addr": ["10.0.0.2"] * n,
        "local_port": [80] * n,
        "trace_role": [2] * n,
        "encrypted": [i % 2 == 0 for i in range(n)],
        "major_version": [1] * n,
        "minor_version": [1] * n,
        "content_type": [1] * n,
        "req_headers": ['{"Host": "x"}'] * n,
        "req_method": ["GET"] * n,
        "req_path": [f"/p/{i}?q=é" for i in range(n)],
        "req_body": [""] * n,
        "req_body_size": [0] * n,
        "resp_headers": ['{"Content-Type": "application/json"}'] * n,
        "resp_status": [200 if i % 3 else 500 for i in range(n)],
        "resp_message": ["OK"] * n,
        "resp_body": ['{"ok": true}'] * n,
        "resp_body_size": [12] * n,
        "latency": [1_000_000 * (i + 1) for i in range(n)],
    }
    return pa.table({name: pa.array(values[name], schema.field(name).type) for name in schema.names}, schema=schema)


def stack_table() -> pa.Table:
    return pa.table(
        {
            "time_": pa.array([T0, T0 + 10], pa.timestamp("ns")),
            "upid": ["1:4242:99", "1:4242:99"],
            "stack_trace_id": [1, 2],
            "stack_trace": ["main;work;spin", "main;0x7f00dead"],
            "count": [10, 3],
            "sampler": ["ebpf", "ebpf"],
            "truncated": [False, True],
        }
    )


def write(tmp_path: Path, tables: dict, **kw) -> Path:
    args = dict(host="node-a", start_time_ns=T0, end_time_ns=T0 + 10**9, processes=PROCS)
    args.update(kw)
    write_capture(tmp_path / "cap", tables, **args)
    return tmp_path / "cap"


def raw_capture(tmp_path: Path, files: dict[str, pa.Table], meta: dict | None = None) -> Path:
    """A capture written without write_capture (as a foreign producer would)."""
    root = tmp_path / "raw"
    root.mkdir()
    for name, table in files.items():
        pq.write_table(table, root / f"{name}.parquet")
    meta = meta or {"host": "h", "start_time_ns": 0, "end_time_ns": 1, "processes": {}}
    (root / META_FILE).write_text(json.dumps(meta))
    return root


def one_line_error(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kw)
    message = str(info.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------- round trip


def test_round_trip(tmp_path):
    http, stacks = http_table(), stack_table()
    root = write(
        tmp_path, {"http_events": http, "stack_traces.beta": stacks}, drops={"http_events": {"perf_buffer": 7}}
    )
    assert sorted(p.name for p in root.iterdir()) == [
        "capture.json",
        "http_events.parquet",
        "stack_traces.beta.parquet",
    ]
    cap = open_capture(root)
    assert (cap.host, cap.start_time_ns, cap.end_time_ns) == ("node-a", T0, T0 + 10**9)
    assert cap.processes == PROCS
    assert cap.drops == {"http_events": {"perf_buffer": 7}}
    assert cap.table_names() == ["http_events", "stack_traces.beta"]
    assert cap.has_table("http_events") and not cap.has_table("dns_events")
    assert cap.unknown_files == []
    got = cap.scan("http_events", None, None, None)
    assert got.schema == CATALOG["http_events"].arrow_schema()
    assert got.equals(http)
    assert cap.scan("stack_traces.beta", None, None, None).equals(stacks)


def test_written_files_carry_pxq_metadata(tmp_path):
    root = write(tmp_path, {"http_events": http_table()})
    schema = pq.read_schema(root / "http_events.parquet")
    assert schema.field("latency").metadata[FIELD_SEMANTIC_KEY] == b"duration_ns"
    assert schema.field("time_").type == pa.timestamp("ns")


def test_process_defaults_and_extra_keys_kept(tmp_path):
    root = write(tmp_path, {}, processes={"1:7:1": {"pid": 7}})
    meta = json.loads((root / META_FILE).read_text())
    meta["agent_version"] = "0.1"
    (root / META_FILE).write_text(json.dumps(meta))
    cap = open_capture(root)
    assert cap.processes["1:7:1"] == {
        "pid": 7,
        "comm": "",
        "cmdline": "",
        "exe": "",
        "container_id": "",
        "pod": "",
        "namespace": "",
    }
    assert cap.meta["agent_version"] == "0.1"
    assert cap.drops == {}


def test_absent_table_is_empty_with_schema(tmp_path):
    cap = open_capture(write(tmp_path, {"http_events": http_table()}))
    got = cap.scan("dns_events", ["time_", "req_body", "latency"], T0, T0 + 5)
    assert got.num_rows == 0
    assert got.schema == pa.schema([("time_", pa.timestamp("ns")), ("req_body", pa.string()), ("latency", pa.int64())])


def test_scan_columns_in_requested_order(tmp_path):
    cap = open_capture(write(tmp_path, {"http_events": http_table()}))
    got = cap.scan("http_events", ["latency", "time_", "req_path"], None, None)
    assert got.column_names == ["latency", "time_", "req_path"]
    assert got.column("latency").to_pylist() == [1_000_000 * (i + 1) for i in range(5)]
    empty = cap.scan("http_events", [], None, None)
    assert empty.num_rows == 5 and empty.num_columns == 0


def test_scan_unknown_table_or_column(tmp_path):
    cap = open_capture(write(tmp_path, {"http_events": http_table()}))
    assert "latncy" in one_line_error(cap.scan, "http_events", ["latncy"], None, None)
    assert "nope_events" in one_line_error(cap.scan, "nope_events", None, None, None)


def test_rewrite_removes_stale_tables(tmp_path):
    write(tmp_path, {"http_events": http_table(), "stack_traces.beta": stack_table()})
    root = write(tmp_path, {"stack_traces.beta": stack_table()})
    cap = open_capture(root)
    assert cap.table_names() == ["stack_traces.beta"]
    assert not any(p.name.startswith(".") for p in root.iterdir())


# ---------------------------------------------------------------- time windows


def test_time_window_bounds(tmp_path):
    cap = open_capture(write(tmp_path, {"http_events": http_table(n=10, step=100)}))

    def times(start, end):
        got = cap.scan("http_events", ["time_"], start, end).column("time_").cast(pa.int64()).to_pylist()
        return [t - T0 for t in got]

    assert times(T0 + 200, T0 + 500) == [200, 300, 400]  # start inclusive, end exclusive
    assert times(T0 + 201, T0 + 501) == [300, 400, 500]
    assert times(None, T0 + 100) == [0]
    assert times(T0 + 900, None) == [900]
    assert times(T0 + 5000, None) == []


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(-(10**6), 10**6), min_size=0, max_size=50),
    st.one_of(st.none(), st.integers(-(2 * 10**6), 2 * 10**6)),
    st.one_of(st.none(), st.integers(-(2 * 10**6), 2 * 10**6)),
)
def test_time_window_matches_naive_filter_for_coarse_units(tmp_path_factory, offsets_us, start, end):
    """A file storing time_ as timestamp[us, UTC] scans exactly like a filter on ns values."""
    base = T0 - T0 % 1000
    times_ns = [base + o * 1000 for o in offsets_us]
    table = pa.table(
        {
            "time_": pa.array(times_ns, pa.int64()).cast(pa.timestamp("ns")).cast(pa.timestamp("us", tz="UTC")),
            "upid": ["1:1:1"] * len(times_ns),
        }
    )
    root = raw_capture(tmp_path_factory.mktemp("w"), {"proc_exit_events": table})
    start_ns = None if start is None else base + start
    end_ns = None if end is None else base + end
    got = open_capture(root).scan("proc_exit_events", ["time_"], start_ns, end_ns)
    expected = [t for t in times_ns if (start_ns is None or t >= start_ns) and (end_ns is None or t < end_ns)]
    assert got.schema.field("time_").type == pa.timestamp("ns")
    assert sorted(got.column("time_").cast(pa.int64()).to_pylist()) == sorted(expected)


def test_window_over_many_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr("pxq.replay.writer.ROW_GROUP_ROWS", 1000)
    root = write(tmp_path, {"http_events": http_table(n=10_000, step=1)})
    assert pq.ParquetFile(root / "http_events.parquet").num_row_groups == 10
    got = open_capture(root).scan("http_events", ["time_", "remote_port"], T0 + 2_500, T0 + 7_500)
    assert got.num_rows == 5_000
    assert pc.min(got.column("remote_port")).as_py() == 40_000 + 2_500


# ---------------------------------------------------------------- casting and missing columns


def test_reader_casts_compatible_types(tmp_path):
    table = pa.table(
        {
            "time_": pa.array([1_000, 2_000], pa.timestamp("ms", tz="America/New_York")),
            "upid": pa.array(["1:2:3", "1:2:4"], pa.large_string()),
            "exit_code": pa.array([0, 3], pa.int32()),
            "signal": pa.array([9, 0], pa.uint64()),
            "comm": pa.array(["sh", "sh"]).dictionary_encode(),
        }
    )
    cap = open_capture(raw_capture(tmp_path, {"proc_exit_events": table}))
    got = cap.scan("proc_exit_events", None, None, None)
    assert got.schema == CATALOG["proc_exit_events"].arrow_schema()
    # ms → ns, UTC instant kept
    assert got.column("time_").cast(pa.int64()).to_pylist() == [1_000_000_000, 2_000_000_000]
    assert got.to_pydict()["comm"] == ["sh", "sh"]
    assert got.column("signal").to_pylist() == [9, 0]


def test_integer_time_is_nanoseconds(tmp_path):
    table = pa.table({"time_": pa.array([5, 15], pa.int64()), "upid": ["a", "b"]})
    cap = open_capture(raw_capture(tmp_path, {"proc_exit_events": table}))
    got = cap.scan("proc_exit_events", ["time_", "upid"], 10, None)
    assert got.column("upid").to_pylist() == ["b"]
    assert got.column("time_").type == pa.timestamp("ns")


def test_missing_columns_read_as_nulls(tmp_path):
    table = pa.table({"time_": pa.array([1, 2], pa.timestamp("ns")), "comm": ["a", "b"], "extra": [1, 2]})
    cap = open_capture(raw_capture(tmp_path, {"proc_exit_events": table}))
    got = cap.scan("proc_exit_events", ["comm", "exit_code", "upid"], None, None)
    assert got.schema == pa.schema([("comm", pa.string()), ("exit_code", pa.int64()), ("upid", pa.string())])
    assert got.to_pydict() == {"comm": ["a", "b"], "exit_code": [None, None], "upid": [None, None]}


def test_missing_time_column_with_window_is_empty(tmp_path):
    table = pa.table({"comm": ["a", "b"]})
    cap = open_capture(raw_capture(tmp_path, {"proc_exit_events": table}))
    assert cap.scan("proc_exit_events", ["comm"], None, None).num_rows == 2
    assert cap.scan("proc_exit_events", ["comm"], 0, 10**20).num_rows == 0


def test_all_null_column_accepted(tmp_path):
    table = pa.table({"time_": pa.array([1], pa.timestamp("ns")), "exit_code": pa.nulls(1)})
    cap = open_capture(raw_capture(tmp_path, {"proc_exit_events": table}))
    assert cap.scan("proc_exit_events", ["exit_code"], None, None).column(0).type == pa.int64()


@pytest.mark.parametrize(
    "column, array",
    [
        ("exit_code", pa.array(["0", "1"])),
        ("upid", pa.array([1, 2], pa.int64())),
        ("time_", pa.array(["2025-01-01", "x"])),
        ("comm", pa.array([1.5, 2.5])),
    ],
)
def test_impossible_types_rejected_on_open(tmp_path, column, array):
    root = raw_capture(tmp_path, {"proc_exit_events": pa.table({column: array})})
    message = one_line_error(open_capture, root)
    assert "proc_exit_events.parquet" in message and repr(column) in message


def test_uint64_overflow_rejected_on_scan(tmp_path):
    table = pa.table({"exit_code": pa.array([2**63 + 1], pa.uint64())})
    cap = open_capture(raw_capture(tmp_path, {"proc_exit_events": table}))
    message = one_line_error(cap.scan, "proc_exit_events", None, None, None)
    assert "proc_exit_events.parquet" in message and "'exit_code'" in message


def test_unknown_files_reported_not_fatal(tmp_path):
    root = raw_capture(tmp_path, {"http_events": http_table(), "nope_events": pa.table({"a": [1]})})
    (root / "README.txt").write_text("hi")
    cap = open_capture(root)
    assert cap.unknown_files == ["README.txt", "nope_events.parquet"]
    assert cap.table_names() == ["http_events"]


# ---------------------------------------------------------------- corrupt inputs


def test_truncated_parquet(tmp_path):
    root = write(tmp_path, {"http_events": http_table()})
    path = root / "http_events.parquet"
    path.write_bytes(path.read_bytes()[:-40])
    message = one_line_error(open_capture, root)
    assert str(path) in message and "corrupt" in message


def test_garbled_parquet_pages(tmp_path):
    root = raw_capture(tmp_path, {"proc_exit_events": pa.table({"comm": [f"command-{i}" for i in range(2000)]})})
    path = root / "proc_exit_events.parquet"
    data = bytearray(path.read_bytes())
    for i in range(8, len(data) // 2):  # keep the magic and the footer, garble the pages
        data[i] = 0xFF
    path.write_bytes(bytes(data))
    cap = open_capture(root)
    message = one_line_error(cap.scan, "proc_exit_events", None, None, None)
    assert str(path) in message


def test_empty_parquet_file(tmp_path):
    root = write(tmp_path, {"http_events": http_table()})
    (root / "http_events.parquet").write_bytes(b"")
    assert "http_events.parquet" in one_line_error(open_capture, root)


def test_listed_table_file_missing(tmp_path):
    root = write(tmp_path, {"http_events": http_table()})
    (root / "http_events.parquet").unlink()
    assert "http_events.parquet" in one_line_error(open_capture, root)


def test_missing_directory(tmp_path):
    assert "no such capture directory" in one_line_error(open_capture, tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    assert "not a directory" in one_line_error(open_capture, tmp_path / "file")


def test_missing_capture_json(tmp_path):
    root = write(tmp_path, {"http_events": http_table()})
    (root / META_FILE).unlink()
    assert "capture.json: missing" in one_line_error(open_capture, root)


GOOD_META = {"host": "h", "start_time_ns": 1, "end_time_ns": 2, "processes": {"1:2:3": {"pid": 2}}}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", "invalid JSON at line 1"),
        ("[]", "top level must be an object"),
        (json.dumps({k: v for k, v in GOOD_META.items() if k != "host"}), "missing key 'host'"),
        (json.dumps({**GOOD_META, "host": 3}), "'host' must be a string, not int"),
        (json.dumps({**GOOD_META, "start_time_ns": True}), "'start_time_ns' must be an integer, not bool"),
        (json.dumps({**GOOD_META, "end_time_ns": "2"}), "'end_time_ns' must be an integer, not str"),
        (json.dumps({**GOOD_META, "end_time_ns": 0}), "is before"),
        (json.dumps({**GOOD_META, "processes": []}), "'processes' must be an object, not list"),
        (json.dumps({**GOOD_META, "processes": {"1:2:3": {"pid": "2"}}}), "'pid' must be an integer"),
        (json.dumps({**GOOD_META, "processes": {"1:2:3": {"pid": 2, "pod": 5}}}), "'pod' must be a string"),
        (json.dumps({**GOOD_META, "drops": {"http_events": {"x": -1}}}), "non-negative integer"),
        (json.dumps({**GOOD_META, "tables": "http_events"}), "'tables' must be a list"),
    ],
)
def test_bad_capture_json(tmp_path, text, expected):
    root = tmp_path / "cap"
    root.mkdir()
    (root / META_FILE).write_text(text)
    message = one_line_error(open_capture, root)
    assert message.startswith(str(root / META_FILE)) and expected in message


def test_capture_json_not_utf8(tmp_path):
    root = tmp_path / "cap"
    root.mkdir()
    (root / META_FILE).write_bytes(b"\xff\xfe{")
    assert "cannot read" in one_line_error(open_capture, root)


# ---------------------------------------------------------------- writer validation


@pytest.mark.parametrize(
    "tables, expected",
    [
        ({"nope_events": pa.table({"a": [1]})}, "not in the catalog"),
        ({"http_events": pa.table({"latncy": [1]})}, "columns not in the catalog: latncy"),
        ({"http_events": pa.table({"latency": ["slow"]})}, "http_events.latency"),
        ({"http_events": pa.table({"latency": pa.array([2**64 - 1], pa.uint64())})}, "http_events.latency"),
        ({"http_events": "not a table"}, "expected a pyarrow.Table"),
    ],
)
def test_writer_rejects_bad_tables_and_writes_nothing(tmp_path, tables, expected):
    assert expected in one_line_error(write, tmp_path, tables)
    assert not (tmp_path / "cap").exists()


def test_writer_rejects_bad_metadata(tmp_path):
    assert "'pid'" in one_line_error(write, tmp_path, {}, processes={"u": {"comm": "x"}})
    assert "'host'" in one_line_error(write, tmp_path, {}, host=None)
    assert not (tmp_path / "cap").exists()


def test_writer_fills_missing_columns_and_casts(tmp_path):
    partial = pa.table({"time_": pa.array([1, 2], pa.timestamp("us")), "latency": pa.array([5, 6], pa.int32())})
    cap = open_capture(write(tmp_path, {"http_events": partial}))
    got = cap.scan("http_events", None, None, None)
    assert got.schema == CATALOG["http_events"].arrow_schema()
    assert got.column("latency").to_pylist() == [5, 6]
    assert got.column("time_").cast(pa.int64()).to_pylist() == [1000, 2000]
    assert got.column("req_path").null_count == 2


def test_errors_are_pxq_errors():
    assert issubclass(DataError, PxqError)
