from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
import zoneinfo
from pathlib import Path

import pyarrow as pa
import pytest
from rich.cells import cell_len
from rich.console import Console

from pxq.errors import UsageError
from pxq.render import human, render
from pxq.render.table import DEFAULT_MAX_ROWS, fit_widths
from tests.render.render_sample import plain_table, sample_table
from tests.snapshot import assert_snapshot

SNAPSHOTS = Path(__file__).parent / "snapshots"


def rendered(results, width: int, **kw) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    kw.setdefault("zone", dt.UTC)  # the same text whatever the machine's zone
    render(results, "table", console=console, **kw)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120, 200])
def test_table_snapshot(width):
    text = rendered({"http": sample_table(), "plain": plain_table()}, width, max_rows=2)
    assert_snapshot(SNAPSHOTS / f"table_{width}.txt", text)


def test_table_content():
    text = rendered({"http": sample_table(), "plain": plain_table()}, 400)
    lines = text.splitlines()
    assert lines[0].startswith("http (3 rows)")
    assert "plain (2 rows)" in text
    for expected in (
        "2025-11-26 04:31:02.123 +00:00",
        "12.3 ms",
        "850 ns",
        "1.2 KiB",
        "5.0 GiB",
        "12.3%",
        "100.0%",
        "/api/çà/日本",
        "true",
        "false",
        "65535",
        "3.14159",
        "nan",
        "1:4242:99",
    ):
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


def test_narrow_console_hides_the_least_needed_columns_whole_and_says_which():
    text = rendered({"http": sample_table()}, 80, max_rows=1)
    lines = text.splitlines()
    header = next(line for line in lines if "time_" in line)
    # Time, identity and the key request fields stay; the rest goes, least needed (JSON, stacks,
    # other numbers, addresses) first; nothing is wider than the console.
    assert header.split() == ["time_", "upid", "req_path", "pod"]
    hidden = [
        "remote_addr",
        "remote_port",
        "encrypted",
        "resp_status",
        "resp_body_size",
        "latency",
        "error_rate",
        "cpu",
        "req_headers",
        "stack_trace",
        "count",
    ]
    assert lines[-1] == f"pxq: {len(hidden)} columns hidden ({', '.join(hidden)}): widen the terminal or use -o json"
    assert max(len(line) for line in lines[:-1]) <= 80
    assert "2025-11-26 04:31:02.123 +00:00   1:4242:99   /api/çà/日本   default/web-0" in text


def test_addresses_are_hidden_whole_never_cut():
    ipv6 = "2001:db8:85a3:1234:5678:8a2e:370:7334"
    table = pa.table({"remote_addr": [ipv6], "comm": ["nginx-worker-process"], "req_body": ["b" * 200]})
    for width in (30, 50, 60, 100):
        text = rendered({"t": table}, width)
        assert ipv6 in text or "remote_addr" in text.splitlines()[-1], (width, text)
        assert "nginx-worker-process" in text, (width, text)  # the identity column is never cut
        assert "2001:db8…" not in text and "nginx-wo…" not in text
    # Who talked to whom (`comm[pid]` or `address:port`, as the bundled scripts show it) is identity.
    peers = pa.table(
        {"source": ["[2001:db8::1]:8080"], "destination": ["nginx-worker[4242]"], "resp_body": ["b" * 100]}
    )
    text = rendered({"t": peers}, 60)
    assert "[2001:db8::1]:8080   nginx-worker[4242]   bbbb" in text
    text = rendered({"t": peers}, 45)
    assert "[2001:db8::1]:8080   nginx-worker[4242]" in text
    assert text.splitlines()[-1].startswith("pxq: 1 column hidden (resp_body)")
    text = rendered({"t": peers}, 40)  # both do not fit: one is hidden whole, neither is cut
    assert "[2001:db8::1]:8080" in text and "nginx-worker[" not in text
    assert text.splitlines()[-1].startswith("pxq: 2 columns hidden (destination, resp_body)")
    narrow = rendered({"t": table}, 50)
    assert narrow.splitlines()[-1].startswith("pxq: 2 columns hidden (remote_addr, req_body)")
    assert "b" * 59 + "…" in rendered({"t": table}, 150)  # the body is cut, the address kept


def test_piped_output_without_columns_cuts_nothing(tmp_path):
    """stdout not a terminal and COLUMNS unset: no pretended width, every value in full."""
    wide = pa.table({f"column_{i}": ["x" * 90] for i in range(6)})
    script = (
        "import pyarrow as pa; from pxq.render import render; "
        "render({'wide': pa.table({f'column_{i}': ['x' * 90] for i in range(6)})}, 'table')"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == "wide (1 row)"
    row = next(line for line in lines if "xxx" in line)
    assert row.split() == wide.column(0).to_pylist() * 6 and "…" not in proc.stdout
    assert "hidden" not in proc.stdout
    # COLUMNS set: the table fits it even piped (and hides what does not fit).
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**env, "COLUMNS": "60"}, check=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert max(len(line) for line in lines[:-1]) <= 60
    assert lines[-1].startswith("pxq: 3 columns hidden (column_3, column_4, column_5)")


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
    [
        (0, "0 ns"),
        (850, "850 ns"),
        (12_345, "12.3 µs"),
        (12_345_678, "12.3 ms"),
        (1_234_000_000, "1.2 s"),
        (150 * 10**9, "2.5 min"),
        (5400 * 10**9, "1.5 h"),
        (-2_000_000, "-2.0 ms"),
        (999.6, "1000 ns"),
    ],
)
def test_duration(ns, text):
    assert human.duration(ns) == text


@pytest.mark.parametrize(
    "count, text",
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1229, "1.2 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2 * 1024**7, "2048.0 EiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_size(count, text):
    assert human.size(count) == text


def test_other_human_formats():
    assert human.percent(0.123) == "12.3%"
    utc = dt.UTC
    assert human.timestamp(1_764_131_462_123_456_789, utc) == "2025-11-26 04:31:02.123 +00:00"
    assert human.timestamp(-1, utc) == "1969-12-31 23:59:59.999 +00:00"
    assert human.timestamp(10**30) == str(10**30)
    assert human.cut("abcdef", 4) == "abc…" and human.cut("abcdef", 4, keep_end=True) == "…def"
    assert human.cut("abc", 3) == "abc"
    assert human.one_line("a\nb\x00") == "a\\nb\\u0000"
    assert human.number(1e20) == "1.0000e+20" and human.number(2) == "2" and human.number(True) == "true"


@pytest.mark.parametrize("zone_name", ["Asia/Kolkata", "America/New_York", "Australia/Lord_Howe", "UTC"])
def test_timestamps_carry_the_offset_in_force_at_that_instant(zone_name):
    zone = zoneinfo.ZoneInfo(zone_name)
    # Either side of New York's 2025 DST end (2025-11-02 06:00 UTC) and a plain winter time.
    for ns in (1_762_063_200_000_000_000 - 1, 1_762_063_200_000_000_000, 1_764_131_462_123_456_789):
        moment = dt.datetime.fromtimestamp(ns // 10**9, dt.UTC).astimezone(zone)
        offset = moment.utcoffset()
        sign = "-" if offset < dt.timedelta(0) else "+"
        minutes = abs(int(offset.total_seconds())) // 60
        expected = f"{moment:%Y-%m-%d %H:%M:%S}.{ns % 10**9 // 10**6:03d} {sign}{minutes // 60:02d}:{minutes % 60:02d}"
        assert human.timestamp(ns, zone) == expected


def test_the_local_zone_is_the_default_and_tz_is_respected():
    script = "from pxq.render import human; print(human.timestamp(1_764_131_462_123_456_789))"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "Asia/Kolkata"},
    )
    assert proc.stdout.strip() == "2025-11-26 10:01:02.123 +05:30"


# Column kinds in the order a reader needs them (the spec of the ranking): each with a name, its
# pxq types and a value maker. Kinds in NEVER_CUT are shown whole or hidden whole.
from hypothesis import given, settings, strategies as st  # noqa: E402

from pxq.types import DataType, SemanticType  # noqa: E402
from tests.render.render_sample import typed_field  # noqa: E402

KINDS = {
    "time_": (0, DataType.TIME64NS, SemanticType.TIME),
    "upid": (1, DataType.UINT128, SemanticType.UPID),
    "req_path": (2, DataType.STRING, SemanticType.NONE),
    "resp_body_size": (3, DataType.INT64, SemanticType.BYTES),
    "remote_addr": (4, DataType.STRING, SemanticType.IP_ADDRESS),
    "count": (5, DataType.INT64, SemanticType.NONE),
    "note": (6, DataType.STRING, SemanticType.NONE),
    "resp_body": (7, DataType.STRING, SemanticType.NONE),
}
NEVER_CUT = {"upid", "remote_addr", "count"}
addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
texts = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "Zs", "Cc", "So")), max_size=90)
VALUES = {
    "time_": st.integers(0, 2**62),
    "upid": st.tuples(st.integers(0, 9), st.integers(1, 4_000_000), st.integers(0, 10**9)).map(
        lambda t: f"{t[0]}:{t[1]}:{t[2]}"
    ),
    "req_path": texts.map(lambda s: "/" + s),
    "resp_body_size": st.integers(0, 2**40),
    "remote_addr": addresses,
    "count": st.integers(-(10**12), 10**12),
    "note": texts,
    "resp_body": texts,
}


@st.composite
def tables(draw):
    names = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=8, unique=True))
    rows = draw(st.integers(1, 4))
    fields, arrays = [], []
    for name in names:
        _, data_type, semantic = KINDS[name]
        field = typed_field(name, data_type, semantic)
        values = draw(st.lists(VALUES[name], min_size=rows, max_size=rows))
        arrays.append(
            pa.array(values, pa.int64()).cast(field.type) if name == "time_" else pa.array(values, field.type)
        )
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


@settings(max_examples=150, deadline=None)
@given(tables(), st.integers(20, 250))
def test_any_table_fits_hiding_least_needed_columns_whole(table, width):
    text = rendered({"t": table}, width)
    lines = text.splitlines()
    hidden = []
    if lines[-1].startswith("pxq: "):
        inside = lines[-1].split(" hidden (", 1)[1].rsplit("): widen the terminal", 1)[0]
        hidden = inside.split(", ")
        lines = lines[:-1]
    header = lines[2].split()
    assert header + hidden == [n for n in table.column_names if n in header] + [
        n for n in table.column_names if n in hidden
    ]
    assert sorted(header + hidden) == sorted(table.column_names)
    # Least needed first: every hidden column is needed no more than every shown one.
    if hidden:
        assert min(KINDS[n][0] for n in hidden) >= max(KINDS[n][0] for n in header)
    # The table fits, unless a single column left is wider than the terminal by itself.
    if len(header) > 1:
        assert max(cell_len(line) for line in lines) <= width
    for name in header:
        if name in NEVER_CUT:
            for value in table.column(name).to_pylist():
                assert str(value) in text, (name, value)
