"""append and merge match columns by name and value type, whatever made each column: a Parquet
column read dictionary-encoded, a function result, a literal, in any column order, with any
semantic type. Results against pandas; mismatches are positioned compile errors."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from pxq.errors import CompileError
from pxq.exec.execute import execute
from pxq.lang import parse
from pxq.plan.compile import compile
from pxq.plan.optimize import optimize
from pxq.types import SemanticType


def compiled(text: str, capture):
    return compile(parse("import px\n" + text), now_ns=capture.end_time_ns)


def results(text: str, capture) -> list[dict[str, pd.DataFrame]]:
    graph = compiled(text, capture)
    return [
        {name: table.to_pandas() for name, table in execute(g, capture).tables.items()}
        for g in (graph, optimize(graph))
    ]


def rows(frame: pd.DataFrame) -> list[tuple]:
    values = frame.astype(object).where(frame.notna(), None)
    return sorted(map(tuple, values.itertuples(index=False)), key=lambda r: [(v is None, str(v)) for v in r])


def test_the_capture_reads_strings_dictionary_encoded(synthetic_capture):
    # What makes the next tests meaningful: a table's strings arrive as dictionaries.
    table = synthetic_capture.scan("http_events", ["req_path"], dictionary_strings=True)
    assert pa.types.is_dictionary(table.column("req_path").type)


def test_append_table_column_with_function_result_and_literal_in_another_order(synthetic_capture, http_frame):
    outputs = results(
        """
df = px.DataFrame(table='http_events', select=['time_', 'req_path', 'latency'])
other = df[['latency', 'req_path', 'time_']]
other.req_path = px.itoa(other.latency)
other.latency = 0
px.display(df.append(other), 'out')
""",
        synthetic_capture,
    )
    mine = http_frame[["time_", "req_path", "latency"]]
    other = mine.copy()
    other["req_path"] = [None if pd.isna(v) else str(int(v)) for v in mine.latency]
    other["latency"] = 0
    expected = pd.concat([mine, other], ignore_index=True)
    for out in outputs:
        assert list(out["out"].columns) == ["time_", "req_path", "latency"]
        assert rows(out["out"]) == rows(expected)
        assert out["out"].time_.is_monotonic_increasing  # append keeps time order


def test_merge_dictionary_column_with_function_result_key(synthetic_capture, http_frame):
    outputs = results(
        """
df = px.DataFrame(table='http_events', select=['req_path', 'latency'])
paths = df.groupby('req_path').agg(n=('latency', px.count))
paths.path = px.substring(paths.req_path, 0, 100)
paths = paths.drop(['req_path'])
px.display(df.merge(paths, how='inner', left_on='req_path', right_on='path'), 'out')
""",
        synthetic_capture,
    )
    mine = http_frame[["req_path", "latency"]]
    counts = mine.groupby("req_path", dropna=True).size().rename("n").reset_index()
    counts["path"] = counts.pop("req_path")
    expected = mine.dropna(subset=["req_path"]).merge(counts, left_on="req_path", right_on="path")
    for out in outputs:
        assert rows(out["out"]) == rows(expected)


@pytest.mark.parametrize(
    "other_value,semantic",
    [
        ("0", SemanticType.DURATION_NS),  # a plain literal defers to the table column's type
        ("df.latency * 2", SemanticType.DURATION_NS),  # both parts durations
        ("df.resp_status", SemanticType.NONE),  # a duration and an HTTP status: neither
    ],
)
def test_append_semantic_type(synthetic_capture, other_value, semantic):
    graph = compiled(
        f"""
df = px.DataFrame(table='http_events', select=['time_', 'latency', 'resp_status'])
other = df
other.latency = {other_value}
px.display(df.append(other), 'out')
""",
        synthetic_capture,
    )
    assert graph.displays[0].schema.get("latency").semantic is semantic
    table = execute(graph, synthetic_capture).tables["out"]
    assert table.schema.field("latency").metadata[b"pxq.semantic"] == semantic.value.encode()


@pytest.mark.parametrize(
    "text,column",
    [
        ("other = df\nother.latency = df.req_path\npx.display(df.append(other))", "'latency' is INT64"),
        ("other = df[['time_', 'latency']]\npx.display(df.append(other))", "'req_path' is only in the first"),
        ("px.display(df.merge(df, how='inner', left_on='latency', right_on='req_path'))", "'latency' (INT64)"),
    ],
)
def test_mismatches_name_the_column_where_they_are_written(synthetic_capture, text, column):
    script = "df = px.DataFrame(table='http_events', select=['time_', 'req_path', 'latency'])\n" + text
    with pytest.raises(CompileError) as raised:
        compiled(script, synthetic_capture)
    assert column in str(raised.value)
    # Positioned at the append or merge (line 1 is the 'import px' that compiled() adds).
    lines = ["import px"] + script.splitlines()
    assert "px.display(df." in lines[raised.value.diagnostics[0].span.line - 1]
