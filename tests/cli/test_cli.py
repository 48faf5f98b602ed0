"""The CLI through the real `pxq` entry point, in a subprocess."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import run_pxq


def pxq(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return run_pxq(*args, check=check, env=dict(os.environ, COLUMNS="200"))


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    return write_synthetic_capture(tmp_path_factory.mktemp("cli_capture"), 800, seed=3)


def test_scripts_lists_the_library():
    out = pxq("scripts", check=True).stdout
    for name in ("http_data", "http_request_stats", "service_stats", "slow_http_requests", "largest_http_request"):
        assert name in out
    assert "HTTP requests" in out or "HTTP" in out


def test_help_mentions_commands():
    out = pxq("--help", check=True).stdout
    for command in ("run", "explain", "scripts", "tables"):
        assert command in out


def test_run_table_output(capture):
    proc = pxq("run", "http_data", "--from", capture, "--", "--num_head=5", check=True)
    assert "http_data" in proc.stdout
    assert proc.stdout.count(" ms") + proc.stdout.count(" µs") + proc.stdout.count(" s ") >= 1


def test_run_json_lines(capture):
    proc = pxq("run", "http_request_stats", "--from", capture, "-o", "json", check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert rows and all(r["_table"] == "http_request_stats" for r in rows)
    assert sum(r["requests"] for r in rows) == 800


def test_run_csv_and_parquet_files(capture, tmp_path):
    pxq("run", "service_stats", "--from", capture, "-o", "csv", "--out", str(tmp_path / "csv"), check=True)
    with open(tmp_path / "csv" / "service_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:2] == ["service", "timestamp"] and sum(int(r["requests"]) for r in rows) == 800
    pxq("run", "service_stats", "--from", capture, "-o", "parquet", "--out", str(tmp_path / "pq"), check=True)
    table = pq.read_table(tmp_path / "pq" / "service_stats.parquet")
    assert table.column("requests").to_pylist() and sum(table.column("requests").to_pylist()) == 800


def test_script_help_lists_arguments():
    out = pxq("run", "http_data", "--", "--help", check=True).stdout
    assert "--num_head=INT (default: 100)" in out and "--start_time=STR" in out


def test_explain_prints_plans_and_manifest():
    out = pxq("explain", "slow_http_requests", check=True).stdout
    assert "== optimized plan ==" in out and "== probe manifest ==" in out
    assert "socket_tracer: tables=http_events protocols=http" in out


def test_explain_json_manifest():
    manifest = json.loads(pxq("explain", "http_data", "--json", check=True).stdout)
    assert manifest["collectors"][0]["name"] == "socket_tracer"


def test_malformed_script_is_positioned(tmp_path):
    bad = tmp_path / "bad.pxl"
    bad.write_text("import px\ndf = px.DataFrame(table='http_events')\nfor x in df:\n    pass\n")
    proc = pxq("explain", str(bad))
    assert proc.returncode == 2
    assert f"{bad}:3:1" in proc.stderr and "^" in proc.stderr and "hint:" in proc.stderr


def test_compile_error_is_positioned(tmp_path, capture):
    bad = tmp_path / "bad_column.pxl"
    bad.write_text("import px\ndf = px.DataFrame(table='http_events')\npx.display(df[df.latncy > 1])\n")
    proc = pxq("run", str(bad), "--from", capture)
    assert proc.returncode == 2
    assert "bad_column.pxl:3:18: error: unknown column 'latncy'" in proc.stderr
    assert "did you mean 'latency'" in proc.stderr


def test_unknown_script_and_format():
    proc = pxq("run", "htp_data", "--from", "x")
    assert proc.returncode == 2 and "did you mean http_data" in proc.stderr
    proc = pxq("run", "http_data", "-o", "yaml")
    assert proc.returncode == 2 and "table" in proc.stderr and "parquet" in proc.stderr


def test_bad_script_argument(capture):
    proc = pxq("run", "http_data", "--from", capture, "--", "--num_head=many")
    assert proc.returncode == 2 and "--num_head expects int" in proc.stderr
    proc = pxq("run", "http_data", "--from", capture, "--", "--nope=1")
    assert proc.returncode == 2 and "unknown script argument --nope" in proc.stderr


def test_missing_and_corrupt_capture(tmp_path, capture):
    proc = pxq("run", "http_data", "--from", str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and "nowhere" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in Path(capture).iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    data = (broken / "http_events.parquet").read_bytes()
    (broken / "http_events.parquet").write_bytes(data[: len(data) // 2])
    proc = pxq("run", "http_data", "--from", str(broken))
    assert proc.returncode == 1 and "http_events.parquet" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_pixie_script_folder_with_vis_json(tmp_path, capture):
    folder = tmp_path / "errors_by_path"
    folder.mkdir()
    (folder / "data.pxl").write_text(
        "import px\n"
        "def errors(start_time: str, min_status: int):\n"
        "    df = px.DataFrame(table='http_events', start_time=start_time)\n"
        "    df = df[df.resp_status >= min_status]\n"
        "    return df.groupby('req_path').agg(n=('latency', px.count))\n"
    )
    (folder / "vis.json").write_text(
        json.dumps(
            {
                "variables": [
                    {"name": "start_time", "type": "PX_STRING", "defaultValue": "-5m"},
                    {"name": "min_status", "type": "PX_INT64", "defaultValue": "500"},
                ],
                "globalFuncs": [
                    {
                        "outputName": "errs",
                        "func": {
                            "name": "errors",
                            "args": [
                                {"name": "start_time", "variable": "start_time"},
                                {"name": "min_status", "variable": "min_status"},
                            ],
                        },
                    }
                ],
                "widgets": [{"name": "Errors by path", "globalFuncOutputName": "errs", "displaySpec": {}}],
            }
        )
    )
    out = pxq("run", str(folder), "--from", capture, "-o", "json", check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and {r["_table"] for r in rows} == {"Errors by path"}
    high = pxq("run", str(folder), "--from", capture, "-o", "json", "--", "--min_status=503", check=True).stdout
    assert sum(json.loads(line)["n"] for line in high.splitlines()) < sum(r["n"] for r in rows)
    assert "--min_status=INT (default: '500')" in pxq("run", str(folder), "--", "--help", check=True).stdout
