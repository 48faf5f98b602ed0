"""%%pxq in a real Jupyter kernel: notebooks built with nbformat, executed by nbclient in an
ipykernel whose PYTHONPATH is this checkout; every cell's outputs asserted exactly. Expected values
come from pandas over the capture's Parquet file, and units from the reference below."""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from pxq.testing.synthetic import write_synthetic_capture

ROOT = Path(__file__).resolve().parents[2]

# Two displays with a duration (mean latency) and sizes (max and total body bytes).
TWO_DISPLAYS = """\
import px
df = px.DataFrame(table='http_events')
df = df.groupby('req_method').agg(n=('latency', px.count), mean_latency=('latency', px.mean),
                                  max_resp=('resp_body_size', px.max), sum_req=('req_body_size', px.sum))
px.display(df, 'by_method')
px.display(df[df.n > 60], 'busy')
"""


def reference_duration(ns: float) -> str:
    """Units as the README and pxq.render.human document them: one decimal, ns/µs/ms/s."""
    for limit, unit, scale in ((1e3, "ns", 1), (1e6, "µs", 1e3), (1e9, "ms", 1e6), (60e9, "s", 1e9)):
        if abs(ns) < limit:
            return f"{ns / scale:.0f} {unit}" if unit == "ns" else f"{ns / scale:.1f} {unit}"
    raise AssertionError(f"no reference unit for {ns} ns")


def reference_size(count: float) -> str:
    """Binary units, one decimal: 512 B, 1.2 KiB, 3.4 MiB."""
    for limit, unit, scale in ((1024, "B", 1), (1024**2, "KiB", 1024), (1024**3, "MiB", 1024**2)):
        if abs(count) < limit:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count / scale:.1f} {unit}"
    raise AssertionError(f"no reference unit for {count} bytes")


class _Tables(HTMLParser):
    """The ``<h4>`` headings and ``<table>`` cells of an HTML output, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.tables: list[list[list[str]]] = []  # per table: header row, then body rows
        self._text: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("h4", "td", "th"):
            self._text = []

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "h4":
            self.headings.append("".join(self._text).strip())
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._text).strip())
        if tag in ("h4", "td", "th"):
            self._text = None


def parse_html(text: str) -> _Tables:
    parsed = _Tables()
    parsed.feed(text)
    return parsed


def execute(sources: list[str], cwd: Path) -> list:
    """Run the cells in a fresh kernel (PYTHONPATH: this checkout), in ``cwd``; the executed cells."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    return _execute(notebook, cwd).cells


def _execute(notebook, cwd: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    client = NotebookClient(notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)  # raises CellExecutionError, with the traceback, when a cell fails
    return notebook


def output_types(cell) -> list[str]:
    return [output.output_type for output in cell.outputs]


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return Path(write_synthetic_capture(tmp_path_factory.mktemp("nb_kernel_capture"), 300, seed=5))


@pytest.fixture(scope="module")
def events(capture) -> pd.DataFrame:
    return pd.read_parquet(capture / "http_events.parquet")


@pytest.fixture(scope="module")
def cells(capture, tmp_path_factory) -> list:
    return execute(
        [
            "%load_ext pxq",
            f"%%pxq --from {capture}\n{TWO_DISPLAYS}",
            f"x = %pxq --from {capture} --script http_data",
            "x.shape",
            "x",
            f"%pxq --from {capture} --script http_data -- --bogus",
        ],
        tmp_path_factory.mktemp("nb_kernel_cwd"),
    )


def expected_by_method(events: pd.DataFrame) -> pd.DataFrame:
    grouped = events.groupby("req_method").agg(
        n=("latency", "size"),
        mean_latency=("latency", "mean"),
        max_resp=("resp_body_size", "max"),
        sum_req=("req_body_size", "sum"),
    )
    return grouped.reset_index()


def test_load_ext_and_assignment_show_nothing(cells):
    assert cells[0].outputs == []
    assert cells[2].outputs == []  # `x = %pxq ...` only assigns


def test_a_cell_shows_each_display_once_with_units(cells, events):
    cell = cells[1]
    assert output_types(cell) == ["execute_result"], cell.outputs
    expected = expected_by_method(events)
    busy = expected[expected.n > 60]
    assert 0 < len(busy) < len(expected)  # the second display is a strict subset
    shown = parse_html(cell.outputs[0].data["text/html"])
    assert shown.headings == [
        f"by_method ({len(expected)} rows)",
        f"busy ({len(busy)} row{'' if len(busy) == 1 else 's'})",
    ]
    header = ["req_method", "n", "mean_latency", "max_resp", "sum_req"]

    def rows(frame: pd.DataFrame) -> set[tuple]:
        return {
            (
                r.req_method,
                str(r.n),
                reference_duration(r.mean_latency),
                reference_size(r.max_resp),
                reference_size(r.sum_req),
            )
            for r in frame.itertuples()
        }

    for table, frame in zip(shown.tables, (expected, busy)):
        assert table[0] == header
        assert {tuple(row) for row in table[1:]} == rows(frame)
        assert len(table) - 1 == len(frame)
    # The text form (a console, nbconvert --to markdown) carries the same units.
    text = cell.outputs[0].data["text/plain"]
    assert text.count("by_method (") == 1 and text.count("busy (") == 1
    for row in rows(expected):
        assert all(value in text for value in row)


def test_an_assigned_result_is_the_dataframe(cells, capture, events):
    meta = json.loads((capture / "capture.json").read_text())
    in_window = events[events.time_.astype("int64") >= meta["end_time_ns"] - 5 * 60 * 10**9]  # http_data: -5m
    assert len(in_window) > 100
    # http_data's 11 columns (scripts/http_data), its default num_head=100.
    assert output_types(cells[3]) == ["execute_result"]
    assert cells[3].outputs[0].data == {"text/plain": "(100, 11)"}


def test_an_assigned_result_shows_with_units_when_asked(cells, events):
    (output,) = cells[4].outputs
    assert output.output_type == "execute_result"
    shown = parse_html(output.data["text/html"])
    assert shown.headings == ["http_data (100 rows)"]
    (table,) = shown.tables
    header, body = table[0], table[1:]
    first = events.head(100)  # the capture's order, as http_data keeps it
    assert [row[header.index("latency")] for row in body] == [reference_duration(v) for v in first.latency]
    assert [row[header.index("resp_body_size")] for row in body] == [reference_size(v) for v in first.resp_body_size]
    assert [row[header.index("req_path")] for row in body] == list(first.req_path)


def test_a_bad_argument_prints_the_diagnostic(cells):
    assert output_types(cells[5]) == ["stream"]
    assert cells[5].outputs[0].name == "stdout"
    assert "bogus" in cells[5].outputs[0].text and "Traceback" not in cells[5].outputs[0].text


def test_quickstart_notebook_executes(capture, tmp_path):
    shutil.copytree(capture, tmp_path / "capture")
    notebook = _execute(nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4), tmp_path)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [output_types(cell) for cell in code] == [[], ["execute_result"], ["execute_result"]]
    events = pd.read_parquet(tmp_path / "capture" / "http_events.parquet")
    groups = events.groupby(["req_path", "resp_status"]).size()
    shown = parse_html(code[1].outputs[0].data["text/html"])
    assert shown.headings == [f"by_path ({len(groups)} rows)"]
    table = shown.tables[0]
    assert table[0] == ["req_path", "resp_status", "n", "p99", "bytes_out"]
    bytes_out = events.groupby(["req_path", "resp_status"]).resp_body_size.sum()
    assert {(r[0], r[1], r[2], r[4]) for r in table[1:]} == {
        (path, str(status), str(n), reference_size(bytes_out[path, status])) for (path, status), n in groups.items()
    }
    assert all(r[3].endswith((" µs", " ms", " s")) for r in table[1:])  # p99 latency, with a unit
