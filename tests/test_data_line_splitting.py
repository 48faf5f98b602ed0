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


@pytest.mark.parametrize("name", [b"odd\rname.so", b"odd\x0cname.so", b"not-utf8-\xff.so"], ids=repr)
def test_python_attach_maps_keep_odd_paths(tmp_path, name):
    """The Python attach reads a live process's maps with the symbolizer's parser: a mapped file whose
    name holds "\\r", another line break or bytes that are not UTF-8 is listed under the name that
    opens it again (the old reader split at "\\r" and failed on non-UTF-8 names)."""
    import mmap
    import os

    from pxq.agent.python.process import _maps
    from pxq.agent.symbols import Symbolizer

    path = os.path.join(os.fsencode(tmp_path), name)
    with open(path, "wb") as handle:
        handle.write(b"\0" * mmap.PAGESIZE)
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_EXEC)
    try:
        rows, executable = _maps(os.getpid())
        snapshot = Symbolizer().snapshot(os.getpid())
    finally:
        mapped.close()
    expected = os.fsdecode(path)
    assert expected in {row[3] for row in rows}
    assert expected in executable
    assert os.path.exists(expected)
    # The symbolizer labels frames with these names: a name that is not UTF-8 is shown replaced.
    assert snapshot is not None
    assert path.decode("utf-8", "replace") in {m.path for m in snapshot.mappings}
