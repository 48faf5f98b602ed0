"""The three investigation notebooks in notebooks/, executed by nbclient in a real ipykernel
(PYTHONPATH: this checkout) over the captures committed beside them (tools/notebook_captures.py);
the answer each one reaches is compared with pandas over the same capture's Parquet files.

Also: a %%pxq cell with a syntax error prints the positioned diagnostic (lines counted as the cell
shows them) and the cells after it still run."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CAPTURES = NOTEBOOKS / "captures"


def execute(notebook, cwd: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    client = NotebookClient(notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)  # raises CellExecutionError, with the traceback, when a cell fails
    return notebook


def run_notebook(name: str):
    return execute(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4), NOTEBOOKS)


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def tagged_value(notebook, tag: str):
    """The Python value a tagged cell showed (its text/plain repr, a literal)."""
    (cell,) = [c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", [])]
    (output,) = [o for o in cell.outputs if o.output_type == "execute_result"]
    return output.data["text/plain"]


def literal(notebook, tag: str):
    return ast.literal_eval(tagged_value(notebook, tag))


def cell_starting(notebook, text: str):
    (cell,) = [c for c in code_cells(notebook) if c.source.startswith(text)]
    return cell


def headings(cell) -> list[str]:
    return [h for o in cell.outputs if "data" in o for h in re.findall(r"<h4>(.*?)</h4>", o.data.get("text/html", ""))]


def no_errors(notebook) -> None:
    for cell in code_cells(notebook):
        for output in cell.outputs:
            assert output.output_type != "error", output
            assert "Traceback" not in output.get("text", ""), output


def processes(capture: Path) -> dict[str, dict]:
    return json.loads((capture / "capture.json").read_text())["processes"]


def python_function(frame: str) -> str:
    """Reference: a py-spy frame 'func (file.py:12)' as its function, 'func (file.py)'."""
    return re.sub(r":\d+\)$", ")", frame)


def normalize_literals(sql: str) -> str:
    """Reference normalization for the workload's statements (numbers only; Pixie's
    normalize_pgsql also replaces strings): each numeric literal becomes $1, $2, ... in order."""
    counter = iter(range(1, 1000))
    return re.sub(r"(?<![\w$])\d+(\.\d+)?\b", lambda _m: f"${next(counter)}", sql)


# -- investigation 1: an endpoint got slow ---------------------------------------------------


@pytest.fixture(scope="module")
def slow_endpoint():
    return run_notebook("1-slow-endpoint")


@pytest.fixture(scope="module")
def demo_http() -> pd.DataFrame:
    return pd.read_parquet(CAPTURES / "demo" / "http_events.parquet")


def test_slow_endpoint_runs_clean(slow_endpoint):
    no_errors(slow_endpoint)
    assert all(cell.outputs for cell in code_cells(slow_endpoint)[1:]), "every cell after %load_ext shows something"


def test_slow_endpoint_finds_the_slowest_path(slow_endpoint, demo_http):
    served = demo_http[demo_http.trace_role == 2]
    medians = served.groupby("req_path").latency.median().sort_values(ascending=False)
    assert medians.iloc[0] > 1.2 * medians.iloc[1]  # a clear winner: t-digest's p50 must agree
    assert literal(slow_endpoint, "slowest-endpoint") == medians.index[0]
    by_path = cell_starting(slow_endpoint, "%%pxq --from {CAPTURE}\nimport px\ndf = px.DataFrame(table='http_events'")
    assert headings(by_path) == [f"latency_by_path ({served.req_path.nunique()} rows)"]


def test_slow_endpoint_charts_the_median_per_path(slow_endpoint, demo_http):
    medians = demo_http[demo_http.trace_role == 2].groupby("req_path").latency.median().sort_values(ascending=False)
    assert medians.iloc[1] > 10 * medians.iloc[2]  # the notebook says: two paths, an order of magnitude above
    (cell,) = [c for c in code_cells(slow_endpoint) if "latency-chart" in c.metadata.get("tags", [])]
    (output,) = cell.outputs
    page = output.data["text/html"]
    start = re.search(r"Plotly\.newPlot\(\s*", page).end()
    _, end = json.JSONDecoder().raw_decode(page, start)  # the chart's div id, then its traces
    (bars,), _ = json.JSONDecoder().raw_decode(page, re.compile(r",\s*").match(page, end).end())
    assert sorted(bars["x"]) == sorted(medians.index)
    heights = dict(zip(bars["x"], bars["y"], strict=True))  # in ms: the chart's duration unit
    assert sorted(heights, key=heights.get, reverse=True)[:2] == list(medians.index[:2])
    assert min(heights[p] for p in medians.index[:2]) > 10 * max(heights[p] for p in medians.index[2:])


def test_slow_endpoint_names_the_process_serving_it(slow_endpoint, demo_http):
    path = literal(slow_endpoint, "slowest-endpoint")
    rows = demo_http[demo_http.req_path == path]
    server_upids = set(rows[rows.trace_role == 2].upid)
    client_pids = {upid.split(":")[1] for upid in rows[rows.trace_role == 1].upid}
    (backend,) = {u for u in server_upids if u.split(":")[1] not in client_pids}
    info = processes(CAPTURES / "demo")[backend]
    assert "pxq.testing.backend" in info["cmdline"]  # the workload's backend, as the workload says
    assert literal(slow_endpoint, "backend-process") == f"{info['comm']}[{info['pid']}]"


def test_slow_endpoint_draws_the_backend_flamegraph(slow_endpoint):
    stacks = pd.read_parquet(CAPTURES / "demo" / "stack_traces.beta.parquet")
    backend = literal(slow_endpoint, "backend-process")
    pid = backend[backend.index("[") + 1 : -1]
    mine = stacks[stacks.upid.str.split(":").str[1] == pid]
    cell = cell_starting(slow_endpoint, "%pxq --from {CAPTURE} --script cpu_flamegraph")
    (output,) = cell.outputs
    assert "<iframe" in output.data["text/html"] and "flamegraph" in output.data["text/html"]
    # cpu_flamegraph: one row per (process, sampler, stack)
    distinct = mine.groupby(["sampler", "stack_trace"]).ngroups
    assert headings(cell) == [f"cpu_flamegraph ({distinct} rows)"]
    busy = cell_starting(slow_endpoint, "import json\nfrom pathlib import Path\n\nflame = _")
    on_cpu = mine[mine.sampler == "ebpf"]["count"].sum()
    assert busy.outputs[0].text.startswith(f"{on_cpu} on-CPU samples in ")


# -- investigation 2: database latency -------------------------------------------------------


@pytest.fixture(scope="module")
def database():
    return run_notebook("2-database-latency")


@pytest.fixture(scope="module")
def demo_pgsql() -> pd.DataFrame:
    return pd.read_parquet(CAPTURES / "demo" / "pgsql_events.parquet")


def statement(row) -> str:
    """A pgsql_events request as SQL: Execute rows carry 'query=[SQL] params=[...]'."""
    if row.req_cmd == "Execute":
        return re.match(r"query=\[(.*)\] params=", row.req, re.S).group(1)
    return row.req


def test_database_runs_clean(database):
    no_errors(database)


def test_database_finds_the_slowest_query(database, demo_pgsql):
    runs = demo_pgsql[demo_pgsql.req_cmd.isin(["Query", "Execute"])].copy()
    runs["normed"] = [normalize_literals(statement(r)) for r in runs.itertuples()]
    medians = runs.groupby("normed").latency.median().sort_values(ascending=False)
    assert medians.iloc[0] > 10 * medians.iloc[1]
    assert literal(database, "slowest-query") == medians.index[0]


def test_database_joins_the_requests_that_issued_it(database, demo_pgsql, demo_http):
    slowest = literal(database, "slowest-query")
    queries = demo_pgsql[(demo_pgsql.trace_role == 1) & demo_pgsql.req_cmd.isin(["Query", "Execute"])].copy()
    queries = queries[[normalize_literals(statement(r)) == slowest for r in queries.itertuples()]]
    queries["q_end"] = queries.time_.astype("int64")
    queries["q_start"] = queries.q_end - queries.latency
    served = demo_http[demo_http.trace_role == 2].copy()
    served["r_end"] = served.time_.astype("int64")
    served["r_start"] = served.r_end - served.latency
    pairs = served.merge(queries[["upid", "q_start", "q_end"]], on="upid")
    pairs = pairs[(pairs.q_start >= pairs.r_start) & (pairs.q_end <= pairs.r_end)]
    assert len(pairs) > 0
    joined = cell_starting(database, '%%pxq --from {CAPTURE} -- --query="{slowest_query}"')
    assert headings(joined) == [f"requests_issuing ({len(pairs)} row{'' if len(pairs) == 1 else 's'})"]
    summary = tagged_value(database, "issuing-requests")
    for path, count in pairs.groupby("req_path").size().items():
        assert re.search(rf"^{re.escape(path)}\s+{count}\s", summary, re.M), summary


# -- investigation 3: a regression -----------------------------------------------------------


@pytest.fixture(scope="module")
def regression():
    return run_notebook("3-regression")


def worker_samples(capture: Path) -> pd.DataFrame:
    """The order worker's py-spy rows."""
    stacks = pd.read_parquet(capture / "stack_traces.beta.parquet")
    worker = [u for u, info in processes(capture).items() if "order_worker" in info["cmdline"]]
    return stacks[(stacks.sampler == "py-spy") & stacks.upid.isin(worker)]


def function_shares(capture: Path) -> pd.Series:
    """Reference: per function, the percentage of the worker's py-spy samples whose stack passes
    through it (once per stack)."""
    stacks = worker_samples(capture)
    shares: dict[str, int] = {}
    for stack, count in zip(stacks.stack_trace, stacks["count"]):
        for function in {python_function(frame) for frame in stack.split(";")}:
            shares[function] = shares.get(function, 0) + count
    return pd.Series(shares, dtype="float64") * 100 / stacks["count"].sum()


def test_regression_runs_clean(regression):
    no_errors(regression)


def test_regression_names_the_function_that_grew(regression):
    before, after = function_shares(CAPTURES / "before"), function_shares(CAPTURES / "after")
    change = after.sub(before, fill_value=0).sort_values(ascending=False)
    assert change.iloc[0] > 2 * change.iloc[1]
    grown = literal(regression, "grown-function")
    assert grown == change.index[0]
    assert grown.startswith("checksum (")  # the function order_worker.py's v2 changed


def test_regression_draws_the_differential_flamegraph(regression):
    (output,) = cell_starting(regression, "diff = differential_flamegraph(").outputs
    page = output.data["text/html"]
    assert page.startswith("<iframe")
    assert "order_worker: v1 -&amp;gt; v2" in page  # the notebook's title, escaped in the SVG, then in srcdoc
    assert output.data["text/plain"].startswith("differential flamegraph (")
    totals = [worker_samples(CAPTURES / side)["count"].sum() for side in ("before", "after")]
    assert f"{totals[1]:,} samples after, {totals[0]:,} before" in page


# -- bad input: a cell with a syntax error ---------------------------------------------------


def test_a_syntax_error_is_positioned_and_later_cells_work(tmp_path):
    cells = [
        "%load_ext pxq",
        # line 1 is the %%pxq line: the unclosed bracket is on line 3, column 18 of the cell
        f"%%pxq --from {CAPTURES / 'demo'}\nimport px\ndf = px.DataFrame(table='http_events'\npx.display(df)",
        f"%%pxq --from {CAPTURES / 'demo'}\nimport px\n"
        "px.display(px.DataFrame(table='http_events').groupby('req_method').agg(n=('latency', px.count)))",
        "len(_)",
    ]
    notebook = execute(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells]), tmp_path)
    broken, working, after = notebook.cells[1:]
    (output,) = broken.outputs
    assert output.output_type == "stream" and output.name == "stdout"
    lines = output.text.splitlines()
    assert lines[0] == "<cell>:3:18: error: '(' was never closed"
    assert lines[1].strip() == "df = px.DataFrame(table='http_events'"
    assert lines[2].index("^") == lines[1].index("(")
    assert "Traceback" not in output.text
    methods = pd.read_parquet(CAPTURES / "demo" / "http_events.parquet").req_method.nunique()
    assert [o.output_type for o in working.outputs] == ["execute_result"]
    assert after.outputs[0].data["text/plain"] == str(methods)
