"""The query memory limit (pxq.exec.limits): joins sized before they materialize, a check after every
operator, settings that cannot crash, and an exploding self-merge chain that ends with one line."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pxq.api import run_script
from pxq.errors import CompileError, ExecutionError, ResourceLimitError
from pxq.exec.limits import DEFAULT_MAX_MEMORY_MB, ENV_VAR, MIB, join_output, memory_limit_bytes
from pxq.library import Script
from pxq.testing.synthetic import write_synthetic_capture
from tests.cli_support import run_pxq

ROOT = Path(__file__).resolve().parents[2]


def run(text: str, source):
    return run_script(Script("query", "import px\n" + text, "query.pxl"), source=source)[1]


def keyed_tables(seed: int, n_left: int, n_right: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def frame(n):
        keys = pd.array(rng.integers(0, 6, n), dtype="Int64")
        keys[rng.random(n) < 0.2] = pd.NA
        return pd.DataFrame({"k": keys, "j": pd.array(rng.integers(0, 2, n), dtype="Int64"), "v": rng.random(n)})

    return frame(n_left), frame(n_right)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
def test_join_output_rows_against_pandas(seed, how):
    left, right = keyed_tables(seed, 40 + seed * 7, 30 + seed * 3)
    on = ["k", "j"]
    rows, size = join_output(pa.Table.from_pandas(left), pa.Table.from_pandas(right), on, on, how)
    # Null keys never match in a join (pandas would match them with each other, so drop them).
    inner = len(left.dropna(subset=on).merge(right.dropna(subset=on), on=on, how="inner"))
    if how == "inner":
        assert rows == inner
    else:
        unmatched_left = len(left) - len(
            left.dropna(subset=on).merge(right.dropna(subset=on)[on].drop_duplicates(), on=on, how="inner")
        )
        unmatched_right = len(right) - len(
            right.dropna(subset=on).merge(left.dropna(subset=on)[on].drop_duplicates(), on=on, how="inner")
        )
        exact = (
            inner
            + (unmatched_left if how in ("left", "outer") else 0)
            + (unmatched_right if how in ("right", "outer") else 0)
        )
        assert exact <= rows <= inner + len(left) + len(right)
    assert size > 0 or rows == 0


def test_join_output_of_empty_sides():
    empty = pa.table({"k": pa.array([], pa.int64())})
    assert join_output(empty, empty, ["k"], ["k"], "outer") == (0, 0.0)


SELF_MERGES = (
    """
df = px.DataFrame('http_events')
df = df[['req_method', 'req_path', 'latency']]
"""
    + "df = df.merge(df, how='inner', left_on='req_method', right_on='req_method')\n" * 4
    + "px.display(df)\n"
)


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory):
    return write_synthetic_capture(tmp_path_factory.mktemp("limits") / "cap", 2000, seed=3, null_fraction=0.05)


def test_exploding_self_merges_end_with_one_line_in_bounded_memory(capture_dir, tmp_path):
    script = tmp_path / "merges.pxl"
    script.write_text("import px\n" + SELF_MERGES)
    address_space = 6 << 30  # far below what the fourth merge would need; the OOM killer never comes

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    env = {**os.environ, "PYTHONPATH": str(ROOT), ENV_VAR: "1024"}
    done = run_pxq("run", script, "--from", capture_dir, env=env, preexec_fn=cap_memory, timeout=300)
    assert done.returncode == ExecutionError.exit_code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("pxq: query memory limit: the merge on req_method=req_method (")
    assert lines[0].endswith(
        "more than the 1,024 MiB limit; filter or aggregate the data first, "
        "or raise it with #px:set max_memory_mb=N or PXQ_MAX_MEMORY_MB=N"
    )
    assert done.stdout == ""


def test_merge_rows_in_the_message_are_the_real_count(capture_dir):
    # The first self-merge of 2,000 rows already passes 1 MiB; its row count, computed by pandas
    # (null keys dropped: they never match), is in the message.
    from pxq.replay import open_capture

    capture = open_capture(capture_dir)
    frame = capture.scan("http_events").to_pandas()[["req_method", "req_path"]].dropna(subset=["req_method"])
    expected_rows = len(frame.merge(frame, on="req_method"))
    text = (
        "#px:set max_memory_mb=1\ndf = px.DataFrame('http_events')[['req_method', 'req_path']]\n"
        "df = df.merge(df, how='inner', left_on='req_method', right_on='req_method')\npx.display(df)\n"
    )
    with pytest.raises(ResourceLimitError, match=rf"the merge on req_method=req_method \({expected_rows:,} rows\)"):
        run(text, capture)


def test_every_step_is_checked_against_the_limit(tmp_path):
    from pxq.replay import open_capture

    capture = open_capture(write_synthetic_capture(tmp_path / "cap", 20_000, seed=4))
    with pytest.raises(
        ResourceLimitError,
        match=r"query memory limit: the source step needs about [\d.]+ MiB, more "
        r"than the 1 MiB limit",
    ):
        run("#px:set max_memory_mb=1\ndf = px.DataFrame('http_events')\npx.display(df)\n", capture)


def test_a_query_within_the_limit_runs(capture_dir):
    from pxq.replay import open_capture

    results = run(
        "#px:set max_memory_mb=512\ndf = px.DataFrame('http_events')\n"
        "df = df.merge(df, how='inner', left_on='req_method', right_on='req_method')\n"
        "px.display(df.groupby('req_method').agg(n=('latency_x', px.count)))\n",
        open_capture(capture_dir),
    )
    assert results.tables["output"].num_rows > 0


def test_limit_from_setting_environment_or_default(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert memory_limit_bytes(None) == DEFAULT_MAX_MEMORY_MB * MIB == 4096 * MIB
    monkeypatch.setenv(ENV_VAR, "300")
    assert memory_limit_bytes(None) == 300 * MIB
    assert memory_limit_bytes("2_000") == 2000 * MIB  # the script's setting wins


@pytest.mark.parametrize(
    "setting,message",
    [
        ("abc", "#px:set max_memory_mb must be a whole number, not 'abc'"),
        ("-5", "#px:set max_memory_mb must be 0 or more, not -5"),
        ("0", "max_memory_mb must be at least 1"),
        ("1.5", "must be a whole number"),
    ],
)
def test_bad_memory_settings_are_execution_errors(setting, message, capture_dir):
    from pxq.replay import open_capture

    with pytest.raises(ExecutionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(f"#px:set max_memory_mb={setting}\npx.display(px.DataFrame('http_events'))\n", open_capture(capture_dir))


def test_bad_environment_limit_is_an_execution_error(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ExecutionError, match=f"{ENV_VAR} must be a whole number, not 'lots'"):
        memory_limit_bytes(None)


def test_bad_row_limit_setting_is_a_positioned_compile_error(capture_dir):
    from pxq.replay import open_capture

    # Refused where it is written (the compiler checks settings); the executor's own check stays
    # for graphs built without the compiler.
    with pytest.raises(CompileError, match=r":2:1: error: invalid value for setting max_output_rows_per_table: 'many'"):
        run(
            "#px:set max_output_rows_per_table=many\npx.display(px.DataFrame('http_events'))\n",
            open_capture(capture_dir),
        )
