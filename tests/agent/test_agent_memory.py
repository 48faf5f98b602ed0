"""What the always-on agent keeps in memory (bench/bench_agent_steady.py measures its RSS): the
profiler's lazily decoded unwind tables keep each FDE's rows once, compactly, not pyelftools'
parsed entries besides them."""

from __future__ import annotations

import os
from pathlib import Path

from elftools.dwarf.callframe import FDE

from pxq.agent.unwind.cfi import IndexedUnwindTable, unwind_table_of_fd


def _libc() -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith("libc.so.6"):
            return line.split()[-1]
    raise AssertionError("no libc.so.6 mapped in this process")


def test_decoded_fdes_are_not_kept_twice():
    fd = os.open(_libc(), os.O_RDONLY)
    try:
        table = unwind_table_of_fd(fd)
    finally:
        os.close(fd)
    assert isinstance(table, IndexedUnwindTable)
    addresses = [int(start) + 1 for start in table.starts[:200]]
    first = [table.row(a) for a in addresses]
    assert sum(row is not None for row in first) > 150  # libc's FDEs decode
    assert not [e for e in table._cfi._entry_cache.values() if isinstance(e, FDE)]
    assert [table.row(a) for a in addresses] == first  # the rows are kept (decoded once)
