"""A script's entry function is found by what it is, not by the file's name; vis.json defaults are
read in both of Pixie's shapes."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest

from pxq.testing.fuzz import CONFORMANCE_DIR
from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import run_main, run_pxq

ROOT = Path(__file__).resolve().parents[2]
# Scripts run by their entry function (a vis.json script's .pxl alone names no single entry).
SCRIPTS = sorted(p.parent.name for p in (ROOT / "scripts").glob("*/*.pxl") if not (p.parent / "vis.json").exists())
PIXIE = CONFORMANCE_DIR


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> str:
    return write_synthetic_capture(tmp_path_factory.mktemp("entry_capture"), 120, seed=11)


def _annotated_parameters(pxl: Path) -> list[tuple[str, str]]:
    """(name, default as written) of the one function with annotated parameters, by Python's own parser."""
    tree = ast.parse(pxl.read_text())
    (entry,) = [f for f in tree.body if isinstance(f, ast.FunctionDef) and any(a.annotation for a in f.args.args)]
    defaults = [None] * (len(entry.args.args) - len(entry.args.defaults)) + entry.args.defaults
    return [(a.arg, ast.literal_eval(d)) for a, d in zip(entry.args.args, defaults)]


def _help_arguments(stdout: str) -> list[tuple[str, str]]:
    out = []
    for line in stdout.split("\n")[1:]:
        if line.strip().startswith("--"):
            flag, _, rest = line.strip().partition(" ")
            out.append((flag[2:].split("=")[0], rest.split("(default: ", 1)[1].split(")")[0]))
    return out


@pytest.mark.parametrize("name", SCRIPTS)
def test_bundled_script_copied_under_another_name_keeps_its_arguments(name, tmp_path):
    copy = tmp_path / "my.pxl"
    shutil.copy(ROOT / "scripts" / name / f"{name}.pxl", copy)
    proc = run_pxq("run", str(copy), "--", "--help", check=True)
    expected = [(param, repr(default)) for param, default in _annotated_parameters(copy)]
    assert expected and _help_arguments(proc.stdout) == expected
    assert proc.stdout == run_pxq("run", name, "--", "--help", check=True).stdout.replace(f"of {name} ", "of my ")


def test_copied_script_takes_its_arguments(tmp_path, capture):
    copy = tmp_path / "my.pxl"
    shutil.copy(ROOT / "scripts" / "http_data" / "http_data.pxl", copy)
    rows = run_pxq("run", str(copy), "--from", capture, "-o", "json", "--", "--num_head=5", check=True).stdout
    assert len(rows.strip().split("\n")) == 5


def test_entry_with_a_helper_of_unannotated_parameters(tmp_path, capture):
    script = tmp_path / "anything.pxl"
    script.write_text(
        "import px\n\ndef helper(df):\n    return df.head(2)\n\n"
        "def report(limit: int = 3):\n    return helper(px.DataFrame(table='http_events')).head(limit)\n"
    )
    rows = run_pxq("run", str(script), "--from", capture, "-o", "json", "--", "--limit=1", check=True).stdout
    assert len(rows.strip().split("\n")) == 1


def test_two_candidate_entry_functions_are_a_positioned_error(tmp_path, capture):
    script = tmp_path / "two.pxl"
    script.write_text(
        "import px\n\ndef first(start_time: str = '-5m'):\n"
        "    return px.DataFrame(table='http_events')\n\n"
        "def second(num_head: int = 10):\n    return px.DataFrame(table='http_events')\n"
    )
    for args in (["--", "--help"], ["--from", capture]):
        proc = run_pxq("run", str(script), *args)
        assert proc.returncode == 2
        assert (
            f"{script}:6:5: error: cannot tell which function runs the script: first (line 3), second (line 6)"
            in proc.stderr
        )
    # Named main, one of them is the entry.
    script.write_text(script.read_text().replace("def second", "def main"))
    assert "--num_head=INT" in run_pxq("run", str(script), "--", "--help", check=True).stdout


def test_top_level_display_needs_no_entry(tmp_path, capture):
    script = tmp_path / "top.pxl"
    script.write_text(
        "import px\n\ndef a(n: int):\n    return px.DataFrame(table='http_events').head(n)\n\n"
        "def b(n: int):\n    return px.DataFrame(table='http_events').head(n)\n\npx.display(b(2), 'b')\n"
    )
    rows = run_pxq("run", str(script), "--from", capture, "-o", "json", check=True).stdout.strip().split("\n")
    assert len(rows) == 2 and all(json.loads(r)["_table"] == "b" for r in rows)


def _older_shape(vis: dict) -> dict:
    """Pixie's older vis.json: every variable's defaultValue wrapped as {"value": ...}."""
    out = json.loads(json.dumps(vis))
    for var in out.get("variables", []):
        if "defaultValue" in var:
            var["defaultValue"] = {"value": var["defaultValue"]}
    return out


@pytest.mark.skipif(
    not PIXIE.is_dir() and not os.environ.get("CI"),
    reason="Pixie's scripts (../shared/conformance) are not on this machine",
)
@pytest.mark.parametrize("folder", ["slow_http_requests", "http_data_filtered", "service_stats", "perf_flamegraph"])
def test_older_vis_json_defaults_read_like_plain_ones(folder, tmp_path):
    # In CI a missing conformance folder fails here with the reason, never a silent skip.
    source = PIXIE / folder
    assert (source / "vis.json").is_file(), f"{source}/vis.json is missing: Pixie's conformance scripts are needed"
    vis = json.loads((source / "vis.json").read_text())
    assert any("defaultValue" in v for v in vis.get("variables", []))
    older = tmp_path / folder
    shutil.copytree(source, older)
    (older / "vis.json").write_text(json.dumps(_older_shape(vis)))
    plain_help = run_pxq("run", str(source), "--", "--help", check=True).stdout
    older_help = run_pxq("run", str(older), "--", "--help", check=True).stdout
    assert older_help == plain_help
    for var in vis["variables"]:
        if "defaultValue" in var:
            assert f"--{var['name']}=" in older_help and repr(var["defaultValue"]) in older_help


@pytest.mark.parametrize("shape", ["plain", "older"])
def test_vis_json_default_is_used_in_either_shape(shape, tmp_path, capture):
    folder = tmp_path / "rows"
    folder.mkdir()
    (folder / "rows.pxl").write_text(
        "import px\n\ndef rows(start_time: str, num_head: int):\n"
        "    return px.DataFrame(table='http_events', start_time=start_time)"
        ".head(num_head)\n"
    )
    vis = {
        "variables": [
            {"name": "start_time", "type": "PX_STRING", "defaultValue": "-5m"},
            {"name": "num_head", "type": "PX_INT64", "defaultValue": "3"},
        ],
        "widgets": [
            {
                "name": "rows",
                "func": {
                    "name": "rows",
                    "args": [
                        {"name": "start_time", "variable": "start_time"},
                        {"name": "num_head", "variable": "num_head"},
                    ],
                },
            }
        ],
    }
    (folder / "vis.json").write_text(json.dumps(vis if shape == "plain" else _older_shape(vis)))
    rows = run_pxq("run", str(folder), "--from", capture, "-o", "json", check=True).stdout.strip().split("\n")
    assert len(rows) == 3


def test_help_shows_each_arguments_docstring_line(tmp_path):
    script = tmp_path / "doc.pxl"
    script.write_text(
        "import px\ndef f(a: int = 1, b: str = 'x'):\n"
        '    """Note: a summary line that looks like an argument.\n\n'
        "    a: the first\n       continues here.\n    b: the second.\n    Other: not an argument\n"
        '    """\n'
        "    return px.DataFrame(table='http_events').head(a)\n"
    )
    assert run_pxq("run", str(script), "--", "--help", check=True).stdout.split("\n")[1:3] == [
        "  --a=INT (default: 1)  the first continues here.",
        "  --b=STR (default: 'x')  the second.",
    ]


@pytest.mark.parametrize(
    "vis, message",
    [
        ({"variables": [{"type": "PX_STRING"}]}, "variables[0]: needs 'name' (a non-empty string), got None"),
        ({"variables": "x"}, "variables: expected a list of objects, got 'x'"),
        ({"widgets": [{"func": {"args": []}}]}, "widgets[0].func: needs 'name' (a non-empty string), got None"),
        (
            {"widgets": [{"func": {"name": "rows", "args": [{"value": 1}]}}]},
            "widgets[0].func.args[0]: needs 'name' (a non-empty string), got None",
        ),
        (
            {"widgets": [{"func": {"name": "rows", "args": "x"}}]},
            "widgets[0].func.args: expected a list of objects, got 'x'",
        ),
        ({"globalFuncs": [{"func": {}}]}, "globalFuncs[0]: needs 'outputName' (a non-empty string), got None"),
        (
            {"widgets": [{"globalFuncOutputName": "q"}]},
            "widgets[0]: globalFuncOutputName 'q' names no globalFuncs entry (entries: none)",
        ),
        (
            {"widgets": [{"func": {"name": "rows", "args": [{"name": "num_head", "variable": "zz"}]}}]},
            "widgets[0].func.args[0]: variable 'zz' is not among the variables (none)",
        ),
        (
            {"variables": [{"name": "n", "defaultValue": {"x": 1}}]},
            "variables[0].defaultValue: expected a value or {\"value\": ...}, got {'x': 1}",
        ),
        ({"widgets": [{"func": 3}]}, "widgets[0].func: expected an object, got 3"),
    ],
)
def test_malformed_vis_json_is_a_usage_error_naming_the_place(vis, message, tmp_path, capsys, capture):
    folder = tmp_path / "rows"
    folder.mkdir()
    (folder / "rows.pxl").write_text(
        "import px\n\ndef rows(num_head: int = 3):\n    return px.DataFrame(table='http_events').head(num_head)\n"
    )
    (folder / "vis.json").write_text(json.dumps(vis))
    for args in (["--from", capture], ["--", "--help"]):
        code, _, err = run_main(capsys, "run", str(folder), *args)
        assert (code, err) == (2, f"pxq: vis.json: {message}\n")
