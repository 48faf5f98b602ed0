"""Kernel function names from ``/proc/kallsyms`` (bpftrace's ``symbols/kernel``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pxq.agent.symbols.cache import remember
from pxq.agent.symbols.frames import KERNEL_SUFFIX, UNKNOWN
from pxq.agent.symbols.table import SymbolTable, empty_table

_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def parse_kallsyms(data: bytes) -> SymbolTable:
    """The text symbols (types t, T, w, W) of a ``/proc/kallsyms`` text, vectorized.

    Lines are ``ADDRESS TYPE NAME[\\t[MODULE]]``; all-zero addresses (``kptr_restrict``) give an
    empty table.
    """
    blob = data.replace(b"\t", b"\n")
    if not blob.endswith(b"\n"):
        blob += b"\n"
    raw = np.frombuffer(blob, np.uint8)
    ends = np.flatnonzero(raw == ord("\n"))
    starts = np.concatenate(([0], ends[:-1] + 1))
    first_space = blob.find(b" ")
    width = first_space if 0 < first_space <= 16 else 16  # hex digits of an address (16 on 64-bit)
    # A symbol line, not a module continuation: "ADDR T NAME" (the module part became its own line).
    ok = (ends - starts > width + 3) & (raw[np.minimum(starts + width, len(raw) - 1)] == ord(" "))
    starts = starts[ok]
    kinds = raw[starts + width + 1]
    ok = np.isin(kinds, np.frombuffer(b"tTwW", np.uint8))
    starts = starts[ok]
    digits = _HEX[raw[starts[:, None] + np.arange(width)]]
    good = (digits != 255).all(axis=1)
    starts, digits = starts[good], digits[good].astype(np.uint64)
    shifts = np.uint64(4) * np.arange(width - 1, -1, -1, dtype=np.uint64)
    addresses = (digits << shifts).sum(axis=1, dtype=np.uint64)
    nonzero = addresses != 0
    addresses, starts = addresses[nonzero], starts[nonzero]
    order = np.argsort(addresses, kind="stable")
    return SymbolTable(
        addresses[order], np.zeros(len(order), np.uint64), (starts[order] + width + 3).astype(np.int64), blob, b"\n"
    )


class KernelSymbols:
    """Kernel function names for addresses, from ``/proc/kallsyms`` (read on first use)."""

    def __init__(self, path: str | os.PathLike = "/proc/kallsyms", data: bytes | None = None):
        self.path = Path(path)
        self._table = parse_kallsyms(data) if data is not None else None
        self._cache: dict[int, str] = {}

    @property
    def table(self) -> SymbolTable:
        if self._table is None:
            try:
                self._table = parse_kallsyms(self.path.read_bytes())
            except OSError:
                self._table = empty_table()
        return self._table

    def name(self, address: int) -> str | None:
        found = self.table.lookup(address)
        return found[0] if found else None

    def frame(self, address: int) -> str:
        """``name_[k]``, or ``[unknown]_[k]`` (an address below every kernel symbol)."""
        text = self._cache.get(address)
        if text is None:
            text = remember(self._cache, address, (self.name(address) or UNKNOWN) + KERNEL_SUFFIX)
        return text
