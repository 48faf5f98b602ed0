"""Unwind tables kept once per binary, in memory, by build id and size (the same libc in many
processes, and across profiler runs in one agent). The size is part of the key because a copy of
a binary keeps its build id when sections are removed (``objcopy --remove-section .eh_frame``,
``strip``): what that copy's own CFI says is what counts. A file without a build id is parsed for
each mapping of it (the symbolizer already shares one parse per device and inode)."""

from __future__ import annotations

import os

from pxq.agent.unwind.cfi import UnwindTable, unwind_table_of_fd

MAX_TABLES = 256
_TABLES: dict[tuple[str, int], UnwindTable] = {}


def unwind_table_for(fd: int, build_id: str) -> UnwindTable:
    """The unwind table of the ELF file open as ``fd`` whose build id is ``build_id``."""
    key = None
    if build_id:
        try:
            key = (build_id, os.fstat(fd).st_size)
        except OSError:
            key = None
    if key is not None:
        found = _TABLES.get(key)
        if found is not None:
            return found
    table = unwind_table_of_fd(fd)
    if key is not None:
        if len(_TABLES) >= MAX_TABLES:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = table
    return table
