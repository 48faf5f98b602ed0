"""Unwind tables kept once per binary, in memory, by build id and size (the same libc in many
processes, and across profiler runs in one agent). The size is part of the key because a copy of
a binary keeps its build id when sections are removed (``objcopy --remove-section .eh_frame``,
``strip``): what that copy's own CFI says is what counts. A file without a build id is parsed for
each mapping of it (the symbolizer already shares one parse per device and inode).

The cache is bounded by the heap bytes its tables hold (``.eh_frame`` itself stays in the mapped
file), least recently used first out, evictions counted: a host with many binaries cannot grow
the agent without limit."""

from __future__ import annotations

import mmap
from collections import OrderedDict

from pxq.agent.unwind.cfi import IndexedUnwindTable, UnwindTable, unwind_table_of_map

MAX_TABLE_BYTES = 32 << 20


class UnwindTableCache:
    """Tables by (build id, file size), least recently used evicted beyond ``max_bytes``."""

    def __init__(self, max_bytes: int = MAX_TABLE_BYTES):
        self.max_bytes = max_bytes
        self.evictions = 0
        self._tables: OrderedDict[tuple[str, int], UnwindTable | IndexedUnwindTable] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tables)

    @property
    def heap_bytes(self) -> int:
        # Recomputed: indexed tables grow as their FDEs are decoded.
        return sum(t.heap_bytes for t in self._tables.values())

    def table_for(self, data: mmap.mmap, build_id: str) -> UnwindTable | IndexedUnwindTable:
        """The unwind table of the mapped ELF file whose build id is ``build_id``."""
        key = (build_id, len(data)) if build_id else None
        if key is not None:
            found = self._tables.get(key)
            if found is not None:
                self._tables.move_to_end(key)
                return found
        table = unwind_table_of_map(data)
        if key is not None:
            self._tables[key] = table
            self.shrink()
        return table

    def shrink(self) -> None:
        """Evict least recently used tables until the rest hold at most ``max_bytes`` (the newest
        one stays, whatever its size)."""
        total = self.heap_bytes
        while total > self.max_bytes and len(self._tables) > 1:
            _key, table = self._tables.popitem(last=False)
            total -= table.heap_bytes
            self.evictions += 1

    def stats(self) -> dict[str, int]:
        return {"unwind_tables": len(self), "unwind_table_bytes": self.heap_bytes, "unwind_evictions": self.evictions}


TABLES = UnwindTableCache()


def unwind_table_for(data: mmap.mmap, build_id: str) -> UnwindTable | IndexedUnwindTable:
    """The unwind table of the mapped ELF file whose build id is ``build_id`` (the agent-wide cache)."""
    return TABLES.table_for(data, build_id)
