"""What ``/proc/PID/`` tells the symbolizer about a process: its memory map (``maps``), its start
time and name (``stat``), and :class:`ProcessMaps`, the snapshot its frames are resolved against."""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pxq.agent.proc_maps import Mapping
from pxq.agent.procinfo import parse_stat
from pxq.agent.symbols.cache import ElfFile

PROC = Path("/proc")


def process_stat(pid: int) -> tuple[int, str] | None:
    """(start_ticks, comm) of a live process."""
    try:
        text = (PROC / str(pid) / "stat").read_text(errors="replace")
    except OSError:
        return None
    stat = parse_stat(text)
    return None if stat is None else (stat["start_ticks"], stat["comm"])


@dataclass
class ProcessMaps:
    """A snapshot of one process: its mappings and the files behind the executable ones."""

    pid: int
    start_ticks: int
    comm: str
    exe: str
    mappings: list[Mapping]
    files: dict[int, ElfFile]  # index in mappings -> file (executable file mappings only)
    jit: list[tuple[int, int, str]] = field(default_factory=list)
    taken: float = field(default_factory=time.monotonic)  # when the maps were read

    def __post_init__(self) -> None:
        self._starts = [m.start for m in self.mappings]

    def find(self, address: int) -> int | None:
        index = bisect.bisect_right(self._starts, address) - 1
        if index >= 0 and address < self.mappings[index].end:
            return index
        return None

    def jit_name(self, address: int) -> str | None:
        index = bisect.bisect_right(self.jit, (address, float("inf"), "")) - 1
        if index >= 0:
            start, size, name = self.jit[index]
            if address < start + size:
                return name
        return None

    @property
    def is_python(self) -> bool:
        """Whether this looks like a CPython process: ``python*`` executable or libpython's code mapped
        (py-spy and pxq's symbolizer map libpython read-only to parse it: that is no Python)."""
        if os.path.basename(self.exe).startswith("python"):
            return True
        return any(m.module.startswith("libpython") and m.executable for m in self.mappings if m.is_file)
