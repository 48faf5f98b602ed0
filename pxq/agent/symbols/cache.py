"""The symbolizer's per-file cache: an :class:`ElfFile` per mapped file (opened while its process
runs, parsed on first use, its resolved frames kept), and the bound on resolved-frame caches."""

from __future__ import annotations

import os

from pxq.agent.symbols.debuginfo import read_elf
from pxq.agent.symbols.demangling import demangle
from pxq.agent.symbols.elf import ElfInfo

# Resolved frames kept per file (and for the kernel); a cache holding this many is emptied.
MAX_CACHED_FRAMES = 65536


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


class ElfFile:
    """One mapped file: opened at snapshot time, parsed on first lookup, frames cached. With
    ``unwind``, its call-frame information is parsed at the same time (:mod:`pxq.agent.unwind`),
    before the file is closed; ``unwind_table`` given: that one (the vDSO's)."""

    def __init__(self, fd: int | None, info: ElfInfo | None = None, unwind: bool = False, unwind_table=None):
        self._fd = fd
        self._info = info
        self._unwind = unwind
        self._unwind_table = unwind_table
        self._frames: dict[int, tuple[str | None, int]] = {}

    @property
    def pending(self) -> bool:
        return self._info is None and self._fd is not None

    def info(self) -> ElfInfo | None:
        if self._fd is not None:
            try:
                self._info = read_elf(self._fd)
                if self._unwind:
                    from pxq.agent.unwind.cache import unwind_table_for

                    self._unwind_table = unwind_table_for(self._fd, self._info.build_id if self._info else "")
            finally:
                os.close(self._fd)
                self._fd = None
        return self._info

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
