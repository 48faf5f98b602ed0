"""`pxq run` as a user sees it: tables in real terminals (tmux, a real pty) at 80, 120 and 200
columns, piped output, CSV on stdout, `--out` and times in the local zone or `--utc`.

Expected screens are built here from pyarrow's reading of the capture and the documented layout
(see pxq/render/table.py): which columns a width keeps is written out per width below, cell text
comes from the capture's values with Python's own formatting (datetime + zoneinfo for times).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import shutil
import subprocess
import time
import uuid
import zoneinfo
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pxq.replay import write_capture
from pxq.testing.synthetic import synthetic_http_events, synthetic_processes
from tests.cli_support import pxq_shell_line, run_pxq

START_NS = 1_764_115_200_000_000_000  # 2025-11-26 00:00:00 UTC
SPAN_NS = 300_000_000_000
IPV6 = "2001:db8:85a3::8a2e:370:7334"
ZONE = "Asia/Kolkata"
COLUMNS = [
    "time_",
    "upid",
    "remote_addr",
    "req_method",
    "req_path",
    "resp_status",
    "latency",
    "resp_body_size",
    "req_headers",
]
SCRIPT = f"""import px
df = px.DataFrame(table='http_events', start_time='-10m')
df = df[{COLUMNS!r}]
px.display(df, 'http')
"""
RIGHT_ALIGNED = {"resp_status", "latency", "resp_body_size"}
# What each width keeps (pxq/render/table.py's ranking: time, identity, method/path/status/latency,
# sizes, addresses, ..., JSON last; within a rank the rightmost goes first). At 200 every column
# fits once the JSON headers are cut; below that whole columns go, an address never cut.
SHOWN = {
    80: ["time_", "upid", "req_method", "req_path"],
    120: ["time_", "upid", "req_method", "req_path", "resp_status", "latency", "resp_body_size"],
    200: COLUMNS,
}


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    table = synthetic_http_events(4, seed=3, start_ns=START_NS, span_ns=SPAN_NS)
    addresses = table.column("remote_addr").to_pylist()
    addresses[1] = IPV6
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("remote_addr"), "remote_addr", pa.array(addresses))
    root = tmp_path_factory.mktemp("terminal") / "capture"
    write_capture(
        root,
        {"http_events": table},
        host="synthetic-host",
        start_time_ns=START_NS,
        end_time_ns=START_NS + SPAN_NS,
        processes=synthetic_processes(),
    )
    return root


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("terminal-script") / "http.pxl"
    path.write_text(SCRIPT)
    return path


def capture_rows(capture: Path) -> list[dict]:
    return pq.read_table(capture / "http_events.parquet", columns=COLUMNS).sort_by("time_").to_pylist()


# ------------------------------------------------------------------- reference cell text


def time_text(moment: dt.datetime, zone: dt.tzinfo) -> str:
    local = moment.replace(tzinfo=dt.UTC).astimezone(zone)
    minutes = int(local.utcoffset().total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return (
        f"{local:%Y-%m-%d %H:%M:%S}.{local.microsecond // 1000:03d} "
        f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    )


def duration_text(ns: int) -> str:
    for scale, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
        if ns >= scale:
            return f"{ns / scale:.1f} {unit}"
    return f"{ns} ns"


def size_text(count: int) -> str:
    for scale, unit in ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def cell_texts(row: dict, zone: dt.tzinfo) -> dict[str, str]:
    text = {name: str(row[name]) for name in COLUMNS}
    text["time_"] = time_text(row["time_"], zone)
    text["latency"] = duration_text(row["latency"])
    text["resp_body_size"] = size_text(row["resp_body_size"])
    return text


def expected_screen(rows: list[dict], width: int, zone: dt.tzinfo) -> list[str]:
    """The screen: title, rich's SIMPLE_HEAD table (an edge cell and one of padding each side,
    three cells between columns), the hidden-columns footer wrapped at the terminal's width."""
    shown = SHOWN[width]
    cells = [cell_texts(row, zone) for row in rows]
    widths = {name: max(len(name), *(len(c[name]) for c in cells)) for name in shown}
    overhead = 3 * len(shown) + 1
    spare = width - overhead - sum(widths.values())
    if spare < 0:  # only the JSON column is cut, to what is left, with an ellipsis
        widths["req_headers"] += spare
        for c in cells:
            c["req_headers"] = c["req_headers"][: widths["req_headers"] - 1] + "…"

    def line(values: dict[str, str]) -> str:
        parts = [values[n].rjust(widths[n]) if n in RIGHT_ALIGNED else values[n].ljust(widths[n]) for n in shown]
        return ("  " + "   ".join(parts)).rstrip()

    table_width = overhead + sum(widths.values())
    screen = [f"http ({len(rows)} rows)", "", line({n: n for n in shown}), " " + "─" * (table_width - 2)]
    screen += [line(c) for c in cells] + [""]
    hidden = [n for n in COLUMNS if n not in shown]
    if hidden:
        footer = f"pxq: {len(hidden)} columns hidden ({', '.join(hidden)}): widen the terminal or use -o json"
        screen += [footer[i : i + width] for i in range(0, len(footer), width)]
    while not screen[-1]:  # as run_in_tmux returns it
        screen.pop()
    return screen


# ------------------------------------------------------------------- a real terminal


DONE_MARK = "<<pxq-test-done>>"


def run_in_tmux(line: str, width: int, tmp_path: Path, height: int = 50, timeout: float = 60) -> tuple[int, list[str]]:
    """Run a shell ``line`` in a fresh tmux server's pane of ``width`` x ``height`` cells; wait until
    it has exited and the pane shows the mark printed after it; return its exit code and the screen
    above the mark (trailing spaces and empty lines at the end removed)."""
    if shutil.which("tmux") is None:  # tools/setup.sh installs it: in CI its absence is a failure
        reason = "tmux is not installed (bash tools/setup.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    socket = f"pxq-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    status = tmp_path / f"status-{width}"
    shell = f"{line}; echo $? > {status}.tmp; mv {status}.tmp {status}; echo '{DONE_MARK}'; exec sleep 600"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", str(width), "-y", str(height), "-s", "t", shell], check=True, timeout=30
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "t"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.splitlines()
            if status.exists() and DONE_MARK in screen:
                break
            assert time.monotonic() < deadline, "pxq did not finish in the terminal:\n" + "\n".join(screen)
            time.sleep(0.05)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)
    shown = [row.rstrip() for row in screen[: screen.index(DONE_MARK)]]
    while shown and not shown[-1]:
        shown.pop()
    return int(status.read_text()), shown


@pytest.mark.parametrize("width", [80, 120, 200])
def test_table_fits_a_real_terminal(capture, script, tmp_path, width):
    line = pxq_shell_line("run", script, "--from", capture, set_env={"TZ": ZONE}, unset_env=("COLUMNS", "LINES"))
    code, screen = run_in_tmux(line, width, tmp_path)
    assert code == 0, "\n".join(screen)
    assert screen == expected_screen(capture_rows(capture), width, zoneinfo.ZoneInfo(ZONE))
    assert all(len(row) <= width for row in screen)


def test_utc_flag_in_a_real_terminal(capture, script, tmp_path):
    line = pxq_shell_line(
        "run", script, "--from", capture, "--utc", set_env={"TZ": ZONE}, unset_env=("COLUMNS", "LINES")
    )
    code, screen = run_in_tmux(line, 200, tmp_path)
    assert code == 0 and screen == expected_screen(capture_rows(capture), 200, dt.UTC)


def test_piped_table_cuts_nothing(capture, script):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = run_pxq("run", script, "--from", capture, env={**env, "TZ": ZONE}, check=True)
    zone = zoneinfo.ZoneInfo(ZONE)
    rows = capture_rows(capture)
    assert "…" not in proc.stdout and "hidden" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(row for row in lines if row.strip().startswith("time_"))
    assert header.split() == COLUMNS
    for row in rows:
        text = cell_texts(row, zone)
        # Every value in full, in column order, on one line (the JSON headers and the IPv6 address too).
        assert any(all(text[n] in candidate for n in COLUMNS) for candidate in lines), text
    assert IPV6 in proc.stdout


# ------------------------------------------------------------------- CSV and --out


def test_csv_on_stdout_is_plain_csv(capture, script):
    proc = run_pxq("run", script, "--from", capture, "-o", "csv", check=True)
    assert proc.stderr == ""
    frame = pd.read_csv(io.StringIO(proc.stdout), keep_default_na=False)
    expected = pd.DataFrame(capture_rows(capture))
    assert list(frame.columns) == COLUMNS
    assert pd.to_datetime(frame["time_"]).dt.tz_localize(None).tolist() == expected["time_"].tolist()
    for name in COLUMNS[1:]:
        assert frame[name].tolist() == expected[name].tolist(), name
    assert next(csv.reader(io.StringIO(proc.stdout))) == COLUMNS


@pytest.mark.parametrize(
    "fmt, out, written",
    [
        ("csv", "out", "out/http.csv"),
        ("parquet", "out", "out/http.parquet"),
        ("json", "out.json", "out.json"),
        ("table", "out.txt", "out.txt"),
    ],
)
def test_out_says_where_it_wrote_like_capture(capture, script, tmp_path, fmt, out, written):
    proc = run_pxq("run", script, "--from", capture, "-o", fmt, "--out", tmp_path / out, check=True)
    assert proc.stdout == ""
    # `pxq capture` says "pxq: wrote DIR: http_events N rows"; `pxq run --out` says the same per file.
    assert proc.stderr == f"pxq: wrote {tmp_path / written}: http {len(capture_rows(capture))} rows\n"
    assert (tmp_path / written).is_file()


def test_table_written_to_a_file_is_uncut(capture, script, tmp_path):
    run_pxq(
        "run",
        script,
        "--from",
        capture,
        "--out",
        tmp_path / "t.txt",
        "--utc",
        check=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    text = (tmp_path / "t.txt").read_text()
    for row in capture_rows(capture):
        assert row["req_headers"] in text and time_text(row["time_"], dt.UTC) in text
    assert IPV6 in text and "…" not in text


def test_listings_follow_columns_and_piped_lines_are_not_wrapped():
    from pxq.tables import CATALOG

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    piped = run_pxq("tables", "http_events", env=env, check=True).stdout.splitlines()
    for column in CATALOG["http_events"].columns:  # each column's meaning whole, on its row
        assert any(row.split()[:1] == [column.name] and column.doc in row for row in piped), column.name
    narrow = run_pxq("tables", "http_events", env={**env, "COLUMNS": "70"}, check=True).stdout.splitlines()
    assert max(len(row.rstrip()) for row in narrow) <= 70
