"""The symbolizer's per-file cache: an :class:`ElfFile` per mapped file (opened while its process
runs, mapped read-only and parsed on first use, its resolved frames kept), the bound on
resolved-frame caches, and :class:`ParsedFiles`, the bound on what parsed files hold in the heap."""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict

from pxq.agent.symbols.debuginfo import read_elf_map
from pxq.agent.symbols.demangling import demangle
from pxq.agent.symbols.elf import ElfInfo, map_file

# Resolved frames kept per file (and for the kernel); a cache holding this many is emptied.
MAX_CACHED_FRAMES = 65536
# Heap bytes the parsed files may hold (symbol arrays, unwind tables, resolved frames) before the
# least recently used ones are dropped (and parsed again from their mapping when next needed).
MAX_PARSED_BYTES = 64 << 20
_FRAME_BYTES = 160  # a cached frame: dict slot, key int, (name, vaddr) tuple, the name string


def remember(cache: dict, key, value):
    """``cache[key] = value``, the cache emptied first when it holds MAX_CACHED_FRAMES entries."""
    if len(cache) >= MAX_CACHED_FRAMES:
        cache.clear()
    cache[key] = value
    return value


def without_version(name: str) -> str:
    """A symbol name without its ELF symbol version: ``__libc_start_main@@GLIBC_2.34`` (as a
    debug file's .symtab spells versioned symbols) is the function ``__libc_start_main``."""
    at = name.find("@", 1)
    return name if at < 0 else name[:at]


class ParsedFiles:
    """The parsed :class:`ElfFile` objects, least recently used first; beyond ``max_bytes`` of
    heap (recounted on each parse and every ``_RECOUNT_EVERY`` uses, as frame caches grow) the
    oldest drop what they parsed (counted in ``evictions``) and keep only their mapping."""

    _RECOUNT_EVERY = 4096

    def __init__(self, max_bytes: int = MAX_PARSED_BYTES):
        self.max_bytes = max_bytes
        self.evictions = 0
        self._files: OrderedDict[ElfFile, None] = OrderedDict()
        self._uses = 0

    def __len__(self) -> int:
        return len(self._files)

    @property
    def heap_bytes(self) -> int:
        return sum(f.heap_bytes for f in self._files)

    def parsed(self, elf: ElfFile) -> None:
        self._files[elf] = None
        self.shrink()

    def used(self, elf: ElfFile) -> None:
        if elf in self._files:
            self._files.move_to_end(elf)
        self._uses += 1
        if self._uses % self._RECOUNT_EVERY == 0:
            self.shrink()

    def discard(self, elf: ElfFile) -> None:
        self._files.pop(elf, None)

    def shrink(self) -> None:
        from pxq.agent.unwind.cache import TABLES

        TABLES.shrink()  # indexed tables grow as FDEs are decoded, after they were cached
        total = self.heap_bytes
        while total > self.max_bytes and len(self._files) > 1:  # the newest stays, whatever its size
            elf, _ = self._files.popitem(last=False)
            total -= elf.heap_bytes
            elf.evict()
            self.evictions += 1


class ElfFile:
    """One mapped file: opened at snapshot time, mapped read-only and parsed on first lookup
    (symbol names and ``.eh_frame`` stay in the mapping, see :mod:`pxq.agent.symbols.table`),
    frames cached. With ``unwind``, its call-frame information is read at the same time
    (:mod:`pxq.agent.unwind`); ``unwind_table`` given: that one (the vDSO's). ``budget``: the
    :class:`ParsedFiles` that may evict what this file parsed; it is parsed again from the
    mapping when next used, so the names and rules found do not change."""

    def __init__(
        self,
        fd: int | None,
        info: ElfInfo | None = None,
        unwind: bool = False,
        unwind_table=None,
        budget: ParsedFiles | None = None,
    ):
        self._fd = fd
        self._map: mmap.mmap | None = None
        self._info = info
        self._parsed = info is not None or unwind_table is not None
        self._unwind = unwind
        self._unwind_table = unwind_table
        self._budget = budget
        self._frames: dict[int, tuple[str | None, int]] = {}

    @property
    def pending(self) -> bool:
        return self._info is None and self._fd is not None

    @property
    def heap_bytes(self) -> int:
        """Bytes this file's parse holds in the heap (its mapping is not counted: file pages)."""
        total = _FRAME_BYTES * len(self._frames)
        if self._info is not None:
            total += self._info.symbols.heap_bytes
        if self._unwind_table is not None:
            total += self._unwind_table.heap_bytes
        return total

    def info(self) -> ElfInfo | None:
        if self._fd is not None:
            try:
                self._map = map_file(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
        if not self._parsed and self._map is not None:
            self._parsed = True
            self._info = read_elf_map(self._map)
            if self._unwind:
                from pxq.agent.unwind.cache import unwind_table_for

                self._unwind_table = unwind_table_for(self._map, self._info.build_id if self._info else "")
            if self._budget is not None:
                self._budget.parsed(self)
        elif self._budget is not None:
            self._budget.used(self)
        return self._info

    def evict(self) -> None:
        """Drop what was parsed (symbols, unwind table, frames); kept: the mapping to parse again."""
        self._info, self._unwind_table, self._frames, self._parsed = None, None, {}, False

    def unwind_table(self):
        """The file's :class:`~pxq.agent.unwind.UnwindTable` (None: not asked for, or unreadable)."""
        self.info()
        return self._unwind_table

    def resolve(self, file_offset: int) -> tuple[str | None, int]:
        """(function name or None, ELF virtual address) of a file offset."""
        hit = self._frames.get(file_offset)
        if hit is None:
            info = self.info()
            if info is None:
                hit = (None, file_offset)
            else:
                vaddr = info.vaddr(file_offset)
                found = info.symbols.lookup(vaddr)
                hit = (demangle(without_version(found[0])) if found else None, vaddr)
            remember(self._frames, file_offset, hit)
        return hit

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
