"""Tables the catalog names a collector for, but that no live collector fills yet (the protocol
tables other than http_events, process_stats): asking for them live is refused before
anything attaches, with one line and exit code 3, instead of a capture that holds zero rows."""

from __future__ import annotations

import pytest

from tests.cli_support import run_pxq

AGENT_CANNOT_COLLECT = 3  # pxq/cli/main.py's exit code for "the agent cannot collect here"


def _refusal(tables: str, collector: str, it: str = "it") -> str:
    return (
        f"pxq: this pxq cannot collect {tables} live yet (collector {collector} does not produce {it}); "
        f"replay a capture that holds {it} with --from DIR\n"
    )


@pytest.mark.parametrize(
    "tables, expected",
    [
        (
            "process_stats",
            "pxq: this pxq cannot collect process_stats live yet (collector process_stats is not "
            "implemented); replay a capture that holds it with --from DIR\n",
        ),
    ],
)
def test_capture_of_a_table_not_collected_live_is_refused(tmp_path, tables, expected):
    out = tmp_path / "cap"
    proc = run_pxq("capture", "--out", str(out), "--for", "1s", "--tables", tables)
    assert (proc.returncode, proc.stderr, proc.stdout) == (AGENT_CANNOT_COLLECT, expected, "")
    assert not out.exists()  # nothing was written, not even an empty capture


def test_run_of_a_script_reading_process_stats_is_refused(tmp_path):
    script = tmp_path / "procs.pxl"
    script.write_text("import px\npx.display(px.DataFrame('process_stats'), 'procs')\n")
    proc = run_pxq("run", str(script), "--for", "1s")
    refusal = (
        "pxq: this pxq cannot collect process_stats live yet (collector process_stats is not "
        "implemented); replay a capture that holds it with --from DIR\n"
    )
    assert (proc.returncode, proc.stderr) == (AGENT_CANNOT_COLLECT, refusal)
