"""Data read line by line (folded stacks, /proc maps, perf maps, py-spy output, cgroup files) ends a
line at "\\n" only: str.splitlines() also splits at \\x0b \\x0c \\x1c-\\x1e \\x85 U+2028 U+2029, which
a frame name, a file path or a cgroup name may hold."""

from __future__ import annotations

import pytest

from pxq.agent.procinfo import container_id
from pxq.agent.pyspy import parse_collapsed
from pxq.agent.symbols import parse_maps, parse_perf_map
from pxq.render.stacks import parse_folded

# Every character str.splitlines() ends a line at, besides "\n" and "\r".
UNICODE_BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("brk", UNICODE_BREAKS, ids=repr)
def test_folded_frame_names_keep_unicode_breaks(brk):
    assert parse_folded(f"main;a{brk}b 3\nmain 2\r\n") == ([f"main;a{brk}b", "main"], [3, 2])


@pytest.mark.parametrize("brk", UNICODE_BREAKS, ids=repr)
def test_maps_paths_keep_unicode_breaks(brk):
    text = (
        f"7f0000000000-7f0000001000 r-xp 00000000 08:01 1234 /opt/odd{brk}dir/libx.so\n"
        "7f0000002000-7f0000003000 rw-p 00000000 00:00 0 [heap]\n"
    )
    mappings = parse_maps(text)
    assert [m.path for m in mappings] == [f"/opt/odd{brk}dir/libx.so", "[heap]"]


@pytest.mark.parametrize("brk", UNICODE_BREAKS, ids=repr)
def test_perf_map_symbols_keep_unicode_breaks(brk):
    assert parse_perf_map(f"1000 20 LazyCompile:odd{brk}name\n2000 10 other\n") == [
        (0x1000, 0x20, f"LazyCompile:odd{brk}name"),
        (0x2000, 0x10, "other"),
    ]


@pytest.mark.parametrize("brk", UNICODE_BREAKS, ids=repr)
def test_pyspy_stacks_keep_unicode_breaks(brk):
    stack = f"<module> (a{brk}b.py:1);f (a{brk}b.py:2)"
    assert parse_collapsed(f"{stack} 4\n") == {stack: 4}


def test_pyspy_count_must_be_a_decimal_number():
    # "²".isdigit() is true but int("²") raises: such a line is skipped, not a crash.
    assert parse_collapsed("main;f 2\nmain;g ²\n") == {"main;f": 2}


def test_cgroup_line_with_a_unicode_break_does_not_hide_the_container():
    cid = "ab" * 32
    text = f"0::/user.slice/odd\u2028name\n1:cpu:/docker/{cid}\n"
    assert container_id(text) == cid
    # The break inside a name must not make the name's tail look like a line of its own.
    assert container_id(f"0::/user.slice/x\u2028{cid}\n") == ""
