"""The profiler's per-binary caches keep ELF string tables and ``.eh_frame`` in a read-only mapping
of the file (not copied into the agent's heap), survive the file being replaced, deleted or
truncated, and are bounded by the heap bytes they hold (least recently used out, evictions
counted) without changing a name or a rule. Expected names come from binutils' ``nm``, expected
rules from ``readelf --debug-dump=frames-interp`` (tests/agent/test_unwind.py)."""

from __future__ import annotations

import json
import mmap
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pxq.agent.proc_maps import Mapping
from pxq.agent.symbols import read_elf_file, symbolizer as symbolizer_module
from pxq.agent.symbols.cache import ElfFile, ParsedFiles
from pxq.agent.symbols.elf import map_file
from pxq.agent.unwind.cache import UnwindTableCache
from pxq.agent.unwind.cfi import IndexedUnwindTable, MappedSection, unwind_table_of_fd
from tests.agent.programs.build import FRAME_POINTERS, NO_FRAME_POINTERS, compile_c
from tests.agent.test_symbols import _nm
from tests.agent.test_unwind import LIBC, assert_matches_readelf, readelf_rows

REPO = Path(__file__).resolve().parents[2]


def _section_size(path: Path, name: str) -> int:
    """A section's size as ``readelf -S --wide`` prints it."""
    out = subprocess.run(["readelf", "-S", "--wide", str(path)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 5 and parts[1] == name:
            return int(parts[5], 16)
    raise AssertionError(f"no {name} in {path}")


def _open(path: Path, budget: ParsedFiles | None = None, unwind: bool = False) -> ElfFile:
    return ElfFile(os.open(path, os.O_RDONLY | os.O_CLOEXEC), unwind=unwind, budget=budget)


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    out = tmp_path_factory.mktemp("mapped")
    return {
        "spin": compile_c("spin.c", out, FRAME_POINTERS),
        "ratio": compile_c("ratio.c", out, NO_FRAME_POINTERS, "ratio_nofp"),
    }


def test_string_tables_stay_in_the_mapping_and_names_match_nm(programs):
    binary = programs["spin"]
    info = read_elf_file(binary)
    assert info is not None and info.has_symtab
    assert isinstance(info.symbols.blob, mmap.mmap)
    # The heap holds the sorted arrays only, not the string table (readelf's .strtab size).
    arrays = info.symbols.addresses.nbytes + info.symbols.sizes.nbytes + info.symbols.name_starts.nbytes
    assert info.symbols.heap_bytes == arrays
    assert _section_size(binary, ".strtab") > 0
    nm = _nm(binary)
    for name in ("main", "outer_loop", "spin_leaf"):
        assert info.symbols.lookup(nm[name]) == (name, 0)
        assert info.symbols.lookup(nm[name] + 3) == (name, 3)


def test_eh_frame_stays_in_the_mapping_and_rules_match_readelf():
    if not LIBC.exists():
        pytest.fail("no glibc at /lib/x86_64-linux-gnu: pxq supports Debian on x86-64, where it always is")
    fd = os.open(LIBC, os.O_RDONLY)
    try:
        table = unwind_table_of_fd(fd)
    finally:
        os.close(fd)
    assert isinstance(table, IndexedUnwindTable) and isinstance(table._cfi.stream, MappedSection)
    assert table._cfi.stream.size == _section_size(LIBC, ".eh_frame")
    # Before any lookup the heap holds the index only (two 8-byte words per FDE), not .eh_frame.
    assert table.heap_bytes == 16 * len(table)
    assert assert_matches_readelf(table, readelf_rows(LIBC)) <= 1
    assert table.heap_bytes > 16 * len(table)  # the decoded FDEs are counted


def test_a_replaced_then_deleted_binary_keeps_its_names_and_rules(programs, tmp_path):
    binary = tmp_path / "spin_replaced"
    shutil.copy(programs["spin"], binary)
    nm = _nm(binary)
    elf = _open(binary, unwind=True)
    assert elf.info() is not None
    # A package upgrade: a new file renamed over the old one, then removed.
    shutil.copy(programs["ratio"], tmp_path / "new")
    os.rename(tmp_path / "new", binary)
    binary.unlink()
    for name in ("main", "outer_loop", "spin_leaf"):  # not looked up before: read from the old inode
        assert elf.info().symbols.lookup(nm[name] + 1) == (name, 1)
    assert elf.unwind_table().row(nm["spin_leaf"] + 1) is not None


def _mapping_rss_kb(path: Path) -> int:
    """The Rss of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, current = 0, ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        words = line.split()
        if "-" in words[0] and len(words) >= 5 and not words[0].endswith(":"):
            current = words[5] if len(words) > 5 else ""
        elif words[0] == "Rss:" and current == str(path):
            total += int(words[1])
    return total


def test_lookups_do_not_pile_mapped_pages_up_in_rss(tmp_path, monkeypatch):
    from pxq.agent.symbols import table as table_module

    if not LIBC.exists():
        pytest.fail("no glibc at /lib/x86_64-linux-gnu: pxq supports Debian on x86-64, where it always is")
    copy = tmp_path / "libc_copy.so"  # a path no other mapping of this process has
    shutil.copy(LIBC, copy)
    monkeypatch.setattr(table_module, "RELEASE_EVERY", 1)
    elf = _open(copy, unwind=True)
    info, table = elf.info(), elf.unwind_table()
    assert info is not None and isinstance(table, IndexedUnwindTable)
    assert _mapping_rss_kb(copy) == 0  # the parse's pages are dropped
    step = max(1, len(info.symbols) // 500)
    names = [info.symbols.lookup(int(info.symbols.addresses[i])) for i in range(0, len(info.symbols), step)]
    rows = [table.row(int(start) + 1) for start in table.starts[:: max(1, len(table) // 200)]]
    assert all(names) and sum(r is not None for r in rows) > len(rows) // 2
    assert _mapping_rss_kb(copy) == 0


TRUNCATE = textwrap.dedent(
    """
    import json, os, sys
    from pxq.agent.symbols.cache import ElfFile
    path, addresses = sys.argv[1], json.loads(sys.argv[2])
    elf = ElfFile(os.open(path, os.O_RDONLY), unwind=True)
    info, table = elf.info(), elf.unwind_table()
    before = info.symbols.lookup(addresses[0])
    os.truncate(path, 0)  # cp over a library in place: every page of the mapping is gone
    after = [info.symbols.lookup(a) for a in addresses[1:]]
    rows = [table.row(a) for a in addresses[1:]]
    print(json.dumps({"before": before, "after": after, "rows": [r is not None for r in rows],
                      "unsupported": table.unsupported}))
    """
)


def test_a_binary_truncated_in_place_gives_no_names_rather_than_sigbus(programs, tmp_path):
    binary = tmp_path / "spin_truncated"
    shutil.copy(programs["spin"], binary)
    nm = _nm(binary)
    addresses = [nm["main"], nm["outer_loop"], nm["spin_leaf"]]
    done = subprocess.run(
        [sys.executable, "-c", TRUNCATE, str(binary), json.dumps(addresses)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO,
    )
    assert done.returncode == 0, (done.returncode, done.stderr)  # -7 would be SIGBUS
    result = json.loads(done.stdout)
    assert result["before"] == ["main", 0]
    assert result["after"] == [None, None]  # frames become module+offset, never a wrong name
    assert result["rows"] == [False, False] and result["unsupported"] == 2


def test_parsed_files_beyond_the_budget_are_evicted_and_parse_back_the_same(programs):
    budget = ParsedFiles(max_bytes=1)  # only the newest parsed file keeps what it parsed
    files = {name: _open(path, budget, unwind=True) for name, path in programs.items()}
    nms = {name: _nm(path) for name, path in programs.items()}
    assert files["spin"].info().symbols.lookup(nms["spin"]["spin_leaf"]) == ("spin_leaf", 0)
    assert budget.evictions == 0 and len(budget) == 1
    assert files["ratio"].info().symbols.lookup(nms["ratio"]["main"]) == ("main", 0)
    assert budget.evictions == 1 and len(budget) == 1 and files["spin"].heap_bytes == 0
    # Evicted: parsed again from its mapping, same names, counted again when pushed out.
    assert files["spin"].info().symbols.lookup(nms["spin"]["outer_loop"] + 2) == ("outer_loop", 2)
    assert budget.evictions == 2 and files["ratio"].heap_bytes == 0
    assert ParsedFiles(max_bytes=1 << 30).max_bytes == 1 << 30


def test_unwind_tables_beyond_the_budget_are_evicted_least_recently_used(programs):
    from pxq.agent.symbols.elf import parse_elf

    cache = UnwindTableCache(max_bytes=1)
    mapped = {}
    for name, path in programs.items():
        fd = os.open(path, os.O_RDONLY)
        try:
            mapped[name] = map_file(fd)
        finally:
            os.close(fd)
    ids = {name: parse_elf(path.read_bytes()).build_id for name, path in programs.items()}
    first = cache.table_for(mapped["spin"], ids["spin"])
    assert cache.table_for(mapped["spin"], ids["spin"]) is first and cache.evictions == 0
    cache.table_for(mapped["ratio"], ids["ratio"])
    assert len(cache) == 1 and cache.evictions == 1
    again = cache.table_for(mapped["spin"], ids["spin"])
    assert again is not first and cache.evictions == 2
    assert assert_matches_readelf(again, readelf_rows(programs["spin"])) == 0


def test_the_symbolizer_keeps_a_bounded_number_of_files(monkeypatch):
    monkeypatch.setattr(symbolizer_module, "MAX_CACHED_FILES", 2)
    symbolizer = symbolizer_module.Symbolizer()
    by_inode = {path.stat().st_ino: path for path in sorted(Path("/usr/lib/x86_64-linux-gnu").glob("lib*.so.*"))}
    libraries = list(by_inode.values())[:3]  # distinct files (not a library and its symlink)
    assert len(libraries) == 3
    for number, path in enumerate(libraries):
        start = 0x10000 * (number + 1)
        symbolizer._file(os.getpid(), Mapping(start, start + 0x1000, "r-xp", 0, "t", path.stat().st_ino, str(path)))
    stats = symbolizer.cache_stats()
    assert stats["files"] == 2 and stats["files_dropped"] == 1
    symbolizer.close()
