"""The symbol table kallsyms and ELF ``.symtab``/``.dynsym`` are parsed into: sorted function start
addresses, looked up by binary search. An ELF file's names stay in the file, mapped read-only
(:func:`mapped_slice`), and are decoded only when looked up."""

from __future__ import annotations

import contextlib
import mmap
from dataclasses import dataclass

import numpy as np


def mapped_slice(data: bytes | mmap.mmap, start: int, end: int) -> bytes | None:
    """``data[start:end]``; for a mapped file, None when the file is now shorter than ``end``: a
    file truncated in place after it was mapped raises SIGBUS on a read past its new end (a file
    replaced or deleted keeps its old pages and is read as it was). The size is checked just before
    the read; a truncation between the two (microseconds) is the remaining risk."""
    if isinstance(data, mmap.mmap):
        try:
            if data.size() < end:
                return None
        except (OSError, ValueError):  # closed mapping, or the file is gone from under fstat
            return None
    return data[start:end]


def release_pages(data: bytes | mmap.mmap) -> None:
    """Drop this process's page-table entries of a mapped file after a pass over it: the pages
    stay in the page cache (shared, read again by a minor fault), but no longer count in the
    agent's RSS. The whole mapping, not the bytes read: a fault maps the 64 KiB around the page
    too (fault-around), and pyelftools reads each FDE's CIE elsewhere in the section."""
    if isinstance(data, mmap.mmap):
        with contextlib.suppress(OSError, ValueError):
            data.madvise(mmap.MADV_DONTNEED)


# Mappings read since their pages were last dropped; dropped every RELEASE_EVERY reads, so lookups
# touching names and FDEs all over hundreds of binaries cannot pile their pages up in RSS (at most
# RELEASE_EVERY x 64 KiB stay mapped), at one madvise per mapping per RELEASE_EVERY reads.
RELEASE_EVERY = 128
_read_since_release: dict[int, mmap.mmap] = {}
_reads = [0]


def read_from(data: bytes | mmap.mmap) -> None:
    """Note one lookup's read of a mapped file (see RELEASE_EVERY)."""
    if not isinstance(data, mmap.mmap):
        return
    _read_since_release[id(data)] = data
    _reads[0] += 1
    if _reads[0] >= RELEASE_EVERY:
        release_read_pages()


def release_read_pages() -> None:
    """Drop the pages of every mapping read since the last call."""
    pending = list(_read_since_release.values())
    _read_since_release.clear()
    _reads[0] = 0
    for data in pending:
        release_pages(data)


@dataclass
class SymbolTable:
    """Sorted function start addresses with sizes (0: unknown), names kept in one byte blob (bytes,
    or a read-only mapping of the ELF file with the string table ending at ``blob_end``) and
    decoded only when looked up."""

    addresses: np.ndarray  # uint64, ascending
    sizes: np.ndarray  # uint64
    name_starts: np.ndarray  # int64 offsets into blob
    blob: bytes | mmap.mmap
    terminator: bytes = b"\0"
    blob_end: int = -1  # where the names end in blob (-1: its end)

    def __len__(self) -> int:
        return len(self.addresses)

    @property
    def heap_bytes(self) -> int:
        """The bytes this table holds in the heap (a mapped blob is the file's, not counted)."""
        arrays = self.addresses.nbytes + self.sizes.nbytes + self.name_starts.nbytes
        return arrays + (0 if isinstance(self.blob, mmap.mmap) else len(self.blob))

    def name_at(self, index: int) -> str | None:
        """The name of entry ``index``; None when its mapped file was truncated since."""
        start = int(self.name_starts[index])
        limit = len(self.blob) if self.blob_end < 0 else self.blob_end
        if isinstance(self.blob, mmap.mmap) and mapped_slice(self.blob, limit - 1, limit) is None:
            return None  # find() below reads up to limit: not after a truncation
        end = self.blob.find(self.terminator, start, limit)
        name = self.blob[start : end if end >= 0 else limit].decode(errors="replace")
        read_from(self.blob)
        return name

    def lookup(self, address: int) -> tuple[str, int] | None:
        """(name, offset into the function) of the function holding ``address``, or None."""
        if not len(self.addresses):
            return None
        index = int(np.searchsorted(self.addresses, np.uint64(address), side="right")) - 1
        if index < 0:
            return None
        offset = address - int(self.addresses[index])
        size = int(self.sizes[index])
        if size and offset >= size:
            return None
        name = self.name_at(index)
        return None if name is None else (name, offset)


def empty_table() -> SymbolTable:
    return SymbolTable(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64), b"")
