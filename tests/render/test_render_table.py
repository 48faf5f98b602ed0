from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pytest
from tests.render.render_sample import plain_table, sample_table
from rich.console import Console

from pxq.errors import UsageError
from pxq.render import human, render
from pxq.render.table import DEFAULT_MAX_ROWS, PLAIN_WIDTH, fit_widths
from tests.snapshot import assert_snapshot

SNAPSHOTS = Path(__file__).parent / "snapshots"


def rendered(results, width: int, **kw) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    render(results, "table", console=console, **kw)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 250, 400])
def test_table_snapshot(width):
    text = rendered({"http": sample_table(), "plain": plain_table()}, width, max_rows=2)
    assert_snapshot(SNAPSHOTS / f"table_{width}.txt", text)


def test_table_content():
    text = rendered({"http": sample_table(), "plain": plain_table()}, 400)
    lines = text.splitlines()
    assert lines[0].startswith("http (3 rows)")
    assert "plain (2 rows)" in text
    for expected in ("2025-11-26 04:31:02.123", "12.3 ms", "850 ns", "1.2 KiB", "5.0 GiB", "12.3%", "100.0%",
                     "/api/çà/日本", "true", "false", "65535", "3.14159", "nan", "1:4242:99"):
        assert expected in text, expected
    # The control characters of a string are escaped so the row stays on one line.
    assert 'quote " back \\ tab\\tnl\\n' in text
    # JSON cut with an ellipsis at the end, a folded stack at the start (the leaf end stays).
    assert '{"Host": "example.com", "User-Agent": "xxxxxxxxxxxxxxxxxxxx…' in text
    assert "…me_13;frame_14;frame_15;frame_16;frame_17;frame_18;frame_19" in text
    null_row = next(line for line in lines if line.strip().startswith("null"))
    assert null_row.split() == ["null"] * 15
    # Numbers are right-aligned under their header, text left-aligned.
    header = next(line for line in lines if "remote_port" in line)
    row = next(line for line in lines if "65535" in line)
    assert row.index("65535") + 5 == header.index("remote_port") + len("remote_port")
    assert row.index("::1") == header.index("remote_addr")


def test_row_cap_and_counts():
    table = pa.table({"i": list(range(250))})
    text = rendered({"t": table}, 100)
    assert text.startswith("t (250 rows)")
    assert "… 150 more rows" in text and DEFAULT_MAX_ROWS == 100
    shown = [line.strip() for line in text.split("… 150")[0].splitlines()]
    assert "99" in shown and "100" not in shown
    text = rendered({"t": table}, 100, max_rows=249)
    assert "… 1 more row\n" in text
    assert "more row" not in rendered({"t": table}, 100, max_rows=250)
    single = rendered({"one": pa.table({"i": [1]}), "none": pa.table({"i": pa.array([], pa.int64())})}, 100)
    assert "one (1 row)" in single and "none (0 rows)" in single
    with pytest.raises(UsageError):
        rendered({"t": table}, 100, max_rows=-1)


def test_narrow_console_never_drops_columns():
    text = rendered({"http": sample_table()}, 40, max_rows=1)
    header = next(line for line in text.splitlines() if "time_" in line)
    for name in ("time_", "upid", "remote_port", "latency", "req_headers", "stack_trace", "count"):
        assert name in header
    assert "2025-11-26 04:31:02.123" in text and "12.3 ms" in text


def test_not_a_tty_uses_plain_width(capsys):
    wide = pa.table({f"column_{i}": ["x" * 30] for i in range(6)})  # ~220 cells wide naturally
    render({"wide": wide}, "table")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("wide (1 row)")
    assert max(len(line) for line in lines) == PLAIN_WIDTH
    assert any("x…" in line for line in lines)


def test_table_to_file(tmp_path):
    out = tmp_path / "table.txt"
    render({"plain": plain_table()}, "table", str(out))
    text = out.read_text(encoding="utf-8")
    assert "ünïcode-svc" in text and "\x1b[" not in text


def test_fit_widths():
    assert fit_widths([5, 10, 30], [5, 4, 4], 100) == [5, 10, 30]
    assert fit_widths([5, 10, 30], [5, 4, 4], 30) == [5, 10, 15]
    assert fit_widths([5, 10, 30], [5, 4, 4], 20) == [5, 8, 7]
    assert fit_widths([5, 10, 30], [5, 8, 12], 10) == [5, 8, 12]
    assert sum(fit_widths([50, 40, 30, 3], [3, 3, 3, 3], 61)) <= 61


@pytest.mark.parametrize(
    "ns, text",
    [(0, "0 ns"), (850, "850 ns"), (12_345, "12.3 µs"), (12_345_678, "12.3 ms"), (1_234_000_000, "1.2 s"),
     (150 * 10**9, "2.5 min"), (5400 * 10**9, "1.5 h"), (-2_000_000, "-2.0 ms"), (999.6, "1000 ns")],
)
def test_duration(ns, text):
    assert human.duration(ns) == text


@pytest.mark.parametrize(
    "count, text",
    [(0, "0 B"), (1023, "1023 B"), (1229, "1.2 KiB"), (5 * 1024**2, "5.0 MiB"), (3 * 1024**3, "3.0 GiB"),
     (2 * 1024**7, "2048.0 EiB"), (-2048, "-2.0 KiB")],
)
def test_size(count, text):
    assert human.size(count) == text


def test_other_human_formats():
    assert human.percent(0.123) == "12.3%"
    assert human.timestamp(1_764_131_462_123_456_789) == "2025-11-26 04:31:02.123"
    assert human.timestamp(-1) == "1969-12-31 23:59:59.999"
    assert human.timestamp(10**30) == str(10**30)
    assert human.cut("abcdef", 4) == "abc…" and human.cut("abcdef", 4, keep_end=True) == "…def"
    assert human.cut("abc", 3) == "abc"
    assert human.one_line("a\nb\x00") == "a\\nb\\u0000"
    assert human.number(1e20) == "1.0000e+20" and human.number(2) == "2" and human.number(True) == "true"
