"""One parser of ``/proc/PID/maps`` for every reader: the symbolizer's process snapshots
(pxq/agent/symbols/proc.py) and the Python attach (pxq/agent/python/process.py, which finds the
interpreter among the mappings). Kept free of heavy imports: the attach path needs only this."""

from __future__ import annotations

import os
from dataclasses import dataclass


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


def maps_text(pid: int, errors: str = "surrogateescape") -> str:
    """``/proc/PID/maps`` as text, decoded without newline translation (a text-mode read turns a
    "\r" in a path into a line end). ``errors``: "surrogateescape" keeps a non-UTF-8 path as the
    name that opens the file again; "replace" for names that only label frames. OSError
    (FileNotFoundError among them) when the process is gone or unreadable."""
    with open(f"/proc/{pid}/maps", "rb") as handle:
        return handle.read().decode("utf-8", errors)


def read_maps(pid: int) -> list[Mapping]:
    """The mappings of a live process, their paths as names that open the files again."""
    return parse_maps(maps_text(pid))
