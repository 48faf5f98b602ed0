from __future__ import annotations

import csv
import io
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st

from pxq.errors import UsageError
from pxq.render import FORMATS, WRITERS, render
from pxq.render.json import encode_batch
from pxq.types import FIELD_SEMANTIC_KEY, FIELD_TYPE_KEY
from tests.render.render_sample import COLUMNS, T0, plain_table, sample_table

RESULTS = {"http": sample_table(), "plain": plain_table()}
EXPECTED = {name: values for name, _, _, values in COLUMNS}


def test_registry_and_unknown_format(tmp_path):
    assert FORMATS == ("table", "json", "csv", "parquet", "folded", "svg", "icicle", "speedscope", "pprof", "html")
    assert set(WRITERS) == set(FORMATS) and all(WRITERS[f].name == f for f in FORMATS)
    with pytest.raises(UsageError) as info:
        render(RESULTS, "yaml")
    assert "'yaml'" in str(info.value) and "table, json, csv, parquet" in str(info.value)


# ---------------------------------------------------------------- json


def parse_lines(text: str) -> list[dict]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_json_values(capsys):
    render(RESULTS, "json")
    rows = parse_lines(capsys.readouterr().out)
    assert [r["_table"] for r in rows] == ["http"] * 3 + ["plain"] * 2
    http = rows[:3]
    assert list(http[0]) == ["_table", *EXPECTED]
    assert [r["time_"] for r in http] == ["2025-11-26T04:31:02.123456789Z", "1970-01-01T00:00:00.000000000Z", None]
    for name in (
        "upid",
        "remote_addr",
        "remote_port",
        "encrypted",
        "req_path",
        "resp_status",
        "resp_body_size",
        "latency",
        "req_headers",
        "stack_trace",
        "pod",
        "count",
        "error_rate",
    ):
        assert [r[name] for r in http] == EXPECTED[name], name
    assert http[0]["cpu"] == pytest.approx(3.14159265) and http[1]["cpu"] is None and http[2]["cpu"] is None
    plain = rows[3:]
    assert plain[1] == {"_table": "plain", "service": "ünïcode-svc", "n": 2, "ts": "1970-01-01T00:00:02.000000000Z"}


def test_json_to_file_keeps_unicode_raw(tmp_path):
    out = tmp_path / "out.json"
    render(RESULTS, "json", str(out))
    raw = out.read_bytes().decode("utf-8")
    assert "日本" in raw and "\\u" not in raw.replace("\\u0009", "")
    assert len(parse_lines(raw)) == 5


def test_json_other_arrow_types(capsys):
    table = pa.table(
        {
            "tags": pa.array([["a", "b"], None]),
            "kind": pa.array(["x", None]).dictionary_encode(),
            "nothing": pa.nulls(2),
            "f32": pa.array([0.5, float("inf")], pa.float32()),
            "u8": pa.array([255, 0], pa.uint8()),
            "big": pa.array(["s", "t"], pa.large_string()),
        }
    )
    render({"t": table}, "json")
    rows = parse_lines(capsys.readouterr().out)
    assert rows == [
        {"_table": "t", "tags": ["a", "b"], "kind": "x", "nothing": None, "f32": 0.5, "u8": 255, "big": "s"},
        {"_table": "t", "tags": None, "kind": None, "nothing": None, "f32": None, "u8": 0, "big": "t"},
    ]


def test_json_many_batches_and_empty(capsys):
    n = 150_000
    table = pa.table({"i": pa.array(range(n), pa.int64()), "s": pa.array([f"v{i}" for i in range(n)])})
    render({"big": table.slice(7), "none": table.slice(0, 0), "nocols": pa.table({"a": [1, 2]}).select([])}, "json")
    rows = parse_lines(capsys.readouterr().out)
    assert len(rows) == n - 7 + 2
    assert rows[0] == {"_table": "big", "i": 7, "s": "v7"} and rows[n - 8]["i"] == n - 1
    assert rows[-1] == {"_table": "nocols"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=20), st.text(min_size=1, max_size=10))
def test_json_strings_round_trip(values, display):
    batch = pa.record_batch({"s": pa.array(values, pa.string()), display: pa.array(values, pa.string())})
    text = bytes(encode_batch(display, batch)).decode("utf-8")
    rows = [json.loads(line) for line in text.split("\n")[:-1]]
    assert [r["s"] for r in rows] == values
    assert [r[display] for r in rows] == values
    assert all(r["_table"] == display for r in rows)


# ---------------------------------------------------------------- csv


def test_csv_to_directory(tmp_path):
    out = tmp_path / "csv"
    render({**RESULTS, "a/b: c?": plain_table(), "a_b_ c_": plain_table()}, "csv", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["a_b_ c_-2.csv", "a_b_ c_.csv", "http.csv", "plain.csv"]
    with open(out / "http.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(EXPECTED)
    assert rows[0]["time_"] == "2025-11-26T04:31:02.123456789Z"
    assert rows[1]["req_path"] == EXPECTED["req_path"][1]  # quotes, backslash, tab, newline survive
    assert rows[0]["req_path"] == "/api/çà/日本"
    assert rows[0]["latency"] == "12345678" and rows[0]["encrypted"] == "true"
    assert all(v == "" for v in rows[2].values())  # nulls are empty fields
    assert rows[0]["req_headers"] == EXPECTED["req_headers"][0]


def test_csv_to_stdout_is_plain_csv(capsys):
    render({"first": plain_table()}, "csv")
    captured = capsys.readouterr()
    assert captured.err == ""
    # No comment line: the csv module and pandas read stdout as it is.
    rows = list(csv.reader(io.StringIO(captured.out)))
    assert rows == [
        ["service", "n", "ts"],
        ["checkout", "1", "1970-01-01T00:00:01.000000000Z"],
        ["ünïcode-svc", "2", "1970-01-01T00:00:02.000000000Z"],
    ]
    import pandas as pd

    frame = pd.read_csv(io.StringIO(captured.out))
    expected = plain_table().to_pandas()
    assert frame["service"].tolist() == expected["service"].tolist()
    assert frame["n"].tolist() == expected["n"].tolist()
    assert pd.to_datetime(frame["ts"]).tolist() == expected["ts"].tolist()


def test_csv_to_stdout_with_several_displays_names_them_on_stderr(capsys):
    second = pa.table({"x": pa.array([["n"]]), "d": pa.array(["v"]).dictionary_encode()})
    render({"first": plain_table(), "second": second}, "csv")
    captured = capsys.readouterr()
    first_text, second_text = captured.out.split("\n\n")
    assert "#" not in captured.out
    assert [r[0] for r in csv.reader(io.StringIO(first_text))] == ["service", "checkout", "ünïcode-svc"]
    assert list(csv.reader(io.StringIO(second_text))) == [["x", "d"], ['["n"]', "v"]]
    assert captured.err == (
        "pxq: csv: 2 displays on stdout, in this order, separated by an empty line: "
        "first (2 rows), second (1 row); --out DIR writes one file each\n"
    )


def test_csv_out_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        render(RESULTS, "csv", str(tmp_path / "f"))


# ---------------------------------------------------------------- parquet


def test_parquet_round_trip_keeps_metadata(tmp_path):
    render(RESULTS, "parquet", str(tmp_path / "pq"))
    back = pq.read_table(tmp_path / "pq" / "http.parquet")
    assert back.schema.equals(RESULTS["http"].schema, check_metadata=True)
    assert back.drop_columns(["cpu"]).equals(RESULTS["http"].drop_columns(["cpu"]))  # NaN != NaN
    field = back.schema.field("latency")
    assert field.metadata[FIELD_SEMANTIC_KEY] == b"duration_ns" and field.metadata[FIELD_TYPE_KEY] == b"INT64"
    assert pq.read_table(tmp_path / "pq" / "plain.parquet").equals(RESULTS["plain"])
    assert math.isnan(back.column("cpu")[1].as_py())


def test_parquet_needs_out():
    with pytest.raises(UsageError, match="output directory"):
        render(RESULTS, "parquet")


def test_time_column_from_int_with_semantic(capsys):
    field = pa.field("t", pa.int64(), metadata={FIELD_SEMANTIC_KEY: b"time"})
    table = pa.Table.from_arrays([pa.array([T0])], schema=pa.schema([field]))
    render({"x": table}, "json")
    assert json.loads(capsys.readouterr().out)["t"] == "2025-11-26T04:31:02.123456789Z"


def test_parquet_pages_carry_checksums(tmp_path):
    from tests.replay.test_damaged_files import flip_mid_page

    render({"http": sample_table()}, "parquet", str(tmp_path))
    path = tmp_path / "http.parquet"
    assert pq.read_table(path, page_checksum_verification=True).num_rows == 3
    flip_mid_page(path, 0, "req_path")
    with pytest.raises(OSError, match="CRC"):
        pq.read_table(path, page_checksum_verification=True)
