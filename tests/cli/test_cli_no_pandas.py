"""`pxq run` makes no DataFrame, so it never imports pandas (half a second or more of each run's
start, issue 15's first-row target): neither the renderers of the terminal, JSON and CSV formats
nor pyarrow's pandas shim, whose first probe pxq settles (pxq.pandas_guard)
without taking pandas from anything that really converts to or from it.

Which modules a run imported is read from ``sys.modules`` at the process's exit. Help, too,
is quick: it loads no pyarrow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pxq.testing.agent_process import running_agent
from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import run_pxq

ROOT = Path(__file__).resolve().parents[2]
NUM_HEAD = 50  # fewer than the capture's rows, all inside the script's default 5 minutes


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return Path(write_synthetic_capture(tmp_path_factory.mktemp("nopandas-cap"), 200, seed=3, null_fraction=0.05))


@pytest.fixture(scope="module")
def agent(capture, tmp_path_factory):
    with running_agent("--from", str(capture), state_dir=tmp_path_factory.mktemp("nopandas-state")) as running:
        yield running


MARK = "modules at exit: "
# Imported by site at the start of the pxq process (a directory of its own first on PYTHONPATH):
# at exit, the process says which modules it holds, sys.modules as Python keeps it.
SITECUSTOMIZE = f"""
import atexit, json, sys
atexit.register(lambda: print({MARK!r} + json.dumps(sorted(sys.modules)), file=sys.stderr))
"""


@pytest.fixture(scope="module")
def reporting_env(tmp_path_factory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("report-modules")
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(directory), str(ROOT)])}


def run_reporting_imports(
    env: dict[str, str], *args: str, expected: frozenset[str] = frozenset({"pxq.cli", "pxq.api", "pyarrow"})
) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``pxq ARGS`` (the console script), and the modules it held at exit."""
    proc = run_pxq(*args, env=env, check=True)
    [line] = [line for line in proc.stderr.splitlines() if line.startswith(MARK)]
    modules = set(json.loads(line[len(MARK) :]))
    assert expected <= modules, "no module report: the check would prove nothing"
    return proc, modules


@pytest.mark.parametrize("output", ["json", "csv", "table"])
@pytest.mark.parametrize("where", ["replay", "agent"])
def test_pxq_run_never_imports_pandas(request, reporting_env, capture, where, output):
    source = ["--from", str(capture)] if where == "replay" else ["--agent", request.getfixturevalue("agent").address]
    proc, modules = run_reporting_imports(
        reporting_env, "run", "http_data", *source, "-o", output, "--", f"--num_head={NUM_HEAD}", "--start_time=-5m"
    )
    assert not {m for m in modules if m == "pandas" or m.startswith("pandas.")}
    if where == "agent":  # no Parquet read here: pyarrow's dataset module (0.2 s) stays unloaded
        assert "pyarrow.dataset" not in modules and "pyarrow.parquet" not in modules
    lines = proc.stdout.splitlines()
    if output == "json":
        assert len(lines) == NUM_HEAD and all(json.loads(line)["_table"] == "http_data" for line in lines)
    elif output == "csv":
        assert len(lines) == NUM_HEAD + 1  # the header line, then the rows
    else:
        assert "http_data" in proc.stdout


def test_only_the_json_writer_is_loaded_for_json(reporting_env, capture):
    _, modules = run_reporting_imports(reporting_env, "run", "http_data", "--from", str(capture), "-o", "json")
    assert "pxq.render.json" in modules
    assert not {"pxq.render.stacks", "pxq.render.flamegraph_svg", "pxq.render.html", "pxq.render.table"} & modules


SETTLED_PROBE = textwrap.dedent(
    """
    import sys
    import pyarrow as pa
    from pxq.pandas_guard import settle_pandas_probe

    settle_pandas_probe()
    pa.array([1, None]), pa.scalar("x", pa.large_string()), pa.table({"a": [1.5, None]})
    assert "pandas" not in sys.modules, "a pyarrow probe imported pandas after all"
    frame = pa.table({"a": [1.5, None]}).to_pandas()  # a real conversion still gets pandas
    import pandas as pd

    assert isinstance(frame, pd.DataFrame) and frame["a"].isna().tolist() == [False, True]
    # ... and pyarrow knows pandas' objects again: NaN in a pandas Series is a null, as in pandas
    assert pa.array(pd.Series([1.0, float("nan")])).null_count == 1
    assert pa.Table.from_pandas(frame).column("a").null_count == 1
    print("ok")
    """
)


def test_settling_the_probe_leaves_pandas_to_whatever_really_uses_it():
    out = subprocess.run(
        [sys.executable, "-c", SETTLED_PROBE], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["explain", "--help"], ["agent", "--help"]])
def test_help_loads_no_pyarrow(reporting_env, args):
    """Help is text: it waits for no pyarrow, numpy or pandas (0.3-1 s on a busy machine)."""
    proc, modules = run_reporting_imports(reporting_env, *args, expected=frozenset({"pxq.cli", "argparse"}))
    assert "usage: pxq" in proc.stdout
    assert not {m for m in modules if m.split(".")[0] in ("pyarrow", "numpy", "pandas")}
