"""Every corpus script and bundled script, snapshotted as plan, optimized plan and probe manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxq.errors import CompileError, Source
from pxq.lang import parse
from pxq.library import bundled_scripts
from pxq.plan.compile import compile
from pxq.plan.format import format_graph
from pxq.plan.optimize import optimize
from pxq.plan.split import split
from tests.snapshot import assert_snapshot

HERE = Path(__file__).parent
NOW_NS = 1_764_115_500_000_000_000  # fixed, so relative times in snapshots are stable
CORPUS = sorted((HERE / "corpus").glob("*.pxl"))
ERRORS = sorted((HERE / "errors").glob("*.pxl"))


def explain(text: str, name: str, vis=None, args=None) -> str:
    graph = compile(parse(text, f"{name}.pxl"), now_ns=NOW_NS, name=name, vis=vis, args=args)
    optimized = optimize(graph)
    plan = split(optimized)
    return "\n".join(
        [
            "== compiled ==",
            format_graph(graph),
            "== optimized ==",
            format_graph(optimized),
            "== manifest ==",
            plan.manifest.to_text(),
            "",
        ]
    )


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_plan(path: Path) -> None:
    assert_snapshot(HERE / "snapshots" / f"{path.stem}.plan.txt", explain(path.read_text(), path.stem))


@pytest.mark.parametrize("script", bundled_scripts(), ids=lambda s: s.name)
def test_bundled_script_plan(script) -> None:
    text = explain(script.text, script.name, script.vis)
    assert_snapshot(HERE / "snapshots" / f"bundled_{script.name}.plan.txt", text)


@pytest.mark.parametrize("path", ERRORS, ids=lambda p: p.stem)
def test_compile_error(path: Path) -> None:
    text = path.read_text()
    filename = f"{path.stem}.pxl"
    with pytest.raises(CompileError) as caught:
        compile(parse(text, filename), now_ns=NOW_NS, name=path.stem)
    rendered = caught.value.with_source(Source(text, filename)).render()
    assert "Traceback" not in rendered
    assert_snapshot(path.with_suffix(".err.txt"), rendered + "\n")


def test_filter_pushdown_narrows_window_and_pids() -> None:
    text = (HERE / "corpus" / "filter_pushdown.pxl").read_text()
    plan = split(optimize(compile(parse(text), now_ns=NOW_NS)))
    (table,) = plan.manifest.tables
    assert table.table == "http_events"
    assert table.pids == (1017,)
    assert table.start_ns == NOW_NS - 90 * 10**9  # the later of -2m and now-90s
    assert set(table.columns) == {"time_", "upid", "req_path", "resp_status", "latency"}


def test_pid_filter_pushed_through_map() -> None:
    text = (HERE / "corpus" / "map_through_pushdown.pxl").read_text()
    manifest = split(optimize(compile(parse(text), now_ns=NOW_NS))).manifest
    assert manifest.tables[0].pids == (1000,)
    assert manifest.collectors[0].protocols == ("http",)


def test_script_arguments_reach_the_plan() -> None:
    text = (HERE / "corpus" / "user_functions.pxl").read_text()
    graph = compile(parse(text), now_ns=NOW_NS, name="user_functions", args={"limit": "3", "start_time": "-10s"})
    assert "n=3" in format_graph(graph)
    assert format_graph(graph).count("2025-11-26 00:04:50") == 1


def test_manifest_json_round_trip() -> None:
    text = (HERE / "corpus" / "two_tables.pxl").read_text()
    manifest = split(optimize(compile(parse(text), now_ns=NOW_NS))).manifest
    from pxq.plan.manifest import ProbeManifest

    assert ProbeManifest.from_json(manifest.to_json()) == manifest
    assert {c.name for c in manifest.collectors} == {"socket_tracer", "process_stats"}
