"""Separate debug files: an ELF file without ``.symtab`` (stripped, as distributions ship them) is
completed from ``/usr/lib/debug/.build-id/xx/yyyy.debug`` when one is installed (e.g. Debian's
``libc6-dbg``). MiniDebugInfo, a section inside the file itself, is read by :func:`~pxq.agent.symbols.elf.parse_elf`."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from pxq.agent.symbols.elf import ElfInfo, parse_elf_fd, parse_elf_map

DEBUG_DIR = Path("/usr/lib/debug")


def read_elf(fd: int) -> ElfInfo | None:
    """Parse the ELF file open as ``fd`` (mapped, not read), completed from its debug file."""
    return _with_debug_file(parse_elf_fd(fd))


def read_elf_map(data: mmap.mmap) -> ElfInfo | None:
    """:func:`read_elf` of a file already mapped (its names stay in the mapping)."""
    return _with_debug_file(parse_elf_map(data))


def _with_debug_file(info: ElfInfo | None) -> ElfInfo | None:
    if info is not None and not info.has_symtab and info.build_id:
        extra = read_elf_file(DEBUG_DIR / ".build-id" / info.build_id[:2] / f"{info.build_id[2:]}.debug", debug=False)
        if extra is not None and extra.has_symtab and len(extra.symbols):
            info.symbols, info.has_symtab = extra.symbols, True
    return info


def read_elf_file(path: str | os.PathLike, debug: bool = True) -> ElfInfo | None:
    """:func:`read_elf` of a path (``debug``: look for its separate debug file too)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return read_elf(fd) if debug else parse_elf_fd(fd)
    finally:
        os.close(fd)
