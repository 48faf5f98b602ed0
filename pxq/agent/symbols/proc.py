"""What ``/proc/PID/`` tells the symbolizer about a process: its memory map (``maps``), its start
time and name (``stat``), and :class:`ProcessMaps`, the snapshot its frames are resolved against."""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pxq.agent.procinfo import parse_stat
from pxq.agent.symbols.cache import ElfFile

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Mapping:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def is_file(self) -> bool:
        return self.inode != 0 and self.path.startswith("/")

    @property
    def module(self) -> str:
        """The name frames in this mapping are labelled with: file base name, or ``[anon]``,
        ``[heap]``, ``[stack]``, ``[vdso]``, ``[anon:name]``."""
        if self.is_file:
            return os.path.basename(self.path.removesuffix(" (deleted)"))
        return self.path or "[anon]"


def parse_maps(text: str) -> list[Mapping]:
    """The mappings of a ``/proc/PID/maps`` text, sorted by start address (bad lines skipped)."""
    out = []
    for line in text.split("\n"):  # not splitlines(): a path may hold \x0c, U+2028, ...
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            low, high = parts[0].split("-")
            out.append(
                Mapping(
                    int(low, 16),
                    int(high, 16),
                    parts[1],
                    int(parts[2], 16),
                    parts[3],
                    int(parts[4]),
                    parts[5].strip() if len(parts) > 5 else "",
                )
            )
        except ValueError:
            continue
    out.sort(key=lambda m: m.start)
    return out


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
