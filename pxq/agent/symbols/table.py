"""The symbol table kallsyms and ELF ``.symtab``/``.dynsym`` are parsed into: sorted function start
addresses, looked up by binary search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SymbolTable:
    """Sorted function start addresses with sizes (0: unknown), names kept in one byte blob and
    decoded only when looked up."""

    addresses: np.ndarray  # uint64, ascending
    sizes: np.ndarray  # uint64
    name_starts: np.ndarray  # int64 offsets into blob
    blob: bytes
    terminator: bytes = b"\0"

    def __len__(self) -> int:
        return len(self.addresses)

    def name_at(self, index: int) -> str:
        start = int(self.name_starts[index])
        end = self.blob.find(self.terminator, start)
        return self.blob[start : end if end >= 0 else len(self.blob)].decode(errors="replace")

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
        return self.name_at(index), offset


def empty_table() -> SymbolTable:
    return SymbolTable(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64), b"")
