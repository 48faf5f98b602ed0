"""vis.json as Pixie's scripts write it: a global function shown by several widgets (Pixie runs it
once, one output table), namespace variables without a default (off Kubernetes every process's
namespace is ""), and variables that stay required. Expected rows: pandas over the capture."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pxq.replay import open_capture
from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import run_main, run_pxq

SCRIPT = """import px

def per_path(start_time: str, ns: px.Namespace):
    df = px.DataFrame(table='http_events', start_time=start_time)
    df.namespace = df.ctx['namespace']
    df = df[df.namespace == ns]
    px.debug(df, 'matched')
    return df.groupby(['req_path', 'namespace']).agg(n=('latency', px.count))

def one_path(path: str):
    df = px.DataFrame(table='http_events', start_time='-5m')
    df = df[df.req_path == path]
    return df.groupby('req_path').agg(n=('latency', px.count))
"""


def vis(namespace_default: str | None) -> dict:
    namespace = {"name": "namespace", "type": "PX_NAMESPACE", "description": "The namespace to filter on."}
    if namespace_default is not None:
        namespace["defaultValue"] = namespace_default
    per_path = {"name": "per_path", "args": [{"name": "start_time", "variable": "start_time"},
                                             {"name": "ns", "variable": "namespace"}]}  # fmt: skip
    return {
        "variables": [
            {"name": "start_time", "type": "PX_STRING", "defaultValue": "-5m"},
            namespace,
            {"name": "path", "type": "PX_STRING", "description": "The request path to count."},
        ],
        "globalFuncs": [{"outputName": "paths", "func": per_path}],
        "widgets": [
            {"name": "Graph", "globalFuncOutputName": "paths", "displaySpec": {}},
            {"name": "Table", "globalFuncOutputName": "paths", "displaySpec": {}},
            {"name": "One path", "func": {"name": "one_path", "args": [{"name": "path", "variable": "path"}]}},
        ],
    }


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    return write_synthetic_capture(tmp_path_factory.mktemp("vis_capture"), 300, seed=5)


def script_folder(tmp_path: Path, namespace_default: str | None) -> str:
    folder = tmp_path / "paths"
    folder.mkdir()
    (folder / "paths.pxl").write_text(SCRIPT)
    (folder / "vis.json").write_text(json.dumps(vis(namespace_default)))
    return str(folder)


def displays(stdout: str) -> dict[str, pd.DataFrame]:
    rows = [json.loads(line) for line in stdout.splitlines()]
    names = list(dict.fromkeys(r["_table"] for r in rows))
    return {name: pd.DataFrame([r for r in rows if r["_table"] == name]).drop(columns="_table") for name in names}


def expected_counts(capture: str, namespace: str) -> dict[str, int]:
    cap = open_capture(capture)
    frame = cap.scan("http_events").to_pandas()
    frame = frame[frame["time_"].astype("int64") >= cap.end_time_ns - 300 * 10**9]
    namespaces = {upid: p["namespace"] for upid, p in cap.processes.items()}
    frame = frame[frame["upid"].map(namespaces) == namespace]
    return frame.groupby("req_path").size().to_dict()


@pytest.mark.parametrize(("namespace_default", "args", "namespace"), [
    (None, [], ""),  # no default: "" off Kubernetes
    (None, ["--namespace=default"], "default"),
    ("default", [], "default"),
])  # fmt: skip
def test_a_global_function_shown_by_two_widgets_runs_once(tmp_path, capture, namespace_default, args, namespace):
    folder = script_folder(tmp_path, namespace_default)
    out = run_pxq("run", folder, "--from", capture, "-o", "json", "--", "--path=/api/v1/users", *args, check=True)
    tables = displays(out.stdout)
    # px.debug inside the function shows once (twice would be two displays of one name, an error).
    assert set(tables) <= {"matched", "paths", "One path"} and "paths" in tables
    want = expected_counts(capture, namespace)
    assert want, "the capture has rows in this namespace"
    got = tables["paths"]
    assert dict(zip(got["req_path"], got["n"])) == want
    assert set(got["namespace"]) == {namespace}
    assert len(tables["matched"]) == sum(want.values())


def test_a_variable_without_default_stays_required_with_its_description(tmp_path, capture, capsys):
    folder = script_folder(tmp_path, None)
    code, _, err = run_main(capsys, "run", folder, "--from", capture)
    assert code == 2
    assert err == (
        "pxq: missing script argument --path (The request path to count.): it has no default, "
        "give it after '--' as --path=VALUE\n"
    )
    # The namespace variable is not required, and --help says its default.
    help_text = run_pxq("run", folder, "--", "--help", check=True).stdout
    assert "--namespace=" in help_text and "(default: '')" in help_text
