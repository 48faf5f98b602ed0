"""Symbolization of sampled stacks in user space: kernel frames from ``/proc/kallsyms``, user
frames from the ELF symbol tables of the files a process had mapped.

::

    symbolizer = Symbolizer()
    symbolizer.snapshot(pid)          # when a pid is first seen: read its maps, open its ELF files
    ...                               # the process may exit now
    frames, truncated = symbolizer.user_stack(pid, addresses)   # leaf first in, root first out
    kframes = symbolizer.kernel_stack(addresses)                # "do_syscall_64_[k]", ...

Frame text:

* a known function: its (demangled) name, ``main``; kernel functions get ``_[k]`` appended, as in
  bcc's ``profile -f`` and Pixie (``do_syscall_64_[k]``);
* an address in a mapped file without a symbol for it: ``module+0xOFFSET`` with the file's base
  name and the ELF virtual address (what ``addr2line -e FILE`` and ``nm`` take), e.g.
  ``libc.so.6+0x2724a``;
* anonymous or JIT memory: ``[anon]+0xOFFSET`` from the mapping's start (``[heap]+0x..``,
  ``[anon:name]+0x..`` for named ones; ``/tmp/perf-PID.map`` names JIT functions when it exists);
* an address in no mapping at all (a broken frame chain): ``[unknown]``. Never a bare address.

Surviving the process: :meth:`Symbolizer.snapshot` reads ``/proc/PID/maps`` and opens every
executable file mapping through ``/proc/PID/map_files/`` (the exact file, even if it was deleted
or lives in another mount namespace) while the process runs. Symbol tables are parsed on first
use, from that open file, once per file (keyed by device and inode, shared by every process that
maps it). So a sample taken just before its process exited still resolves at the next drain.

Symbol tables: ``.symtab``, else ``.dynsym``; a file without ``.symtab`` is completed from its
separate debug file (``/usr/lib/debug/.build-id/xx/yyyy.debug``, e.g. Debian's ``libc6-dbg``)
or its MiniDebugInfo (``.gnu_debugdata``). Parsing is numpy over the raw symbol table, so a file
with 100k symbols costs milliseconds. The vDSO is symbolized from pxq's own copy of it.

Truncated stacks: the kernel walks user stacks by frame pointers. Code built without them
(``-fomit-frame-pointer``, the default at ``-O2``; most distribution Pythons) yields one frame, or
a chain that wanders into garbage. :func:`stack_is_truncated` calls a user stack complete only when
its outermost frame is a known process or thread entry (``_start``, ``__libc_start_main``,
``__libc_start_call_main``, ``clone``/``clone3``, ``start_thread``, Go's ``runtime.goexit``, ...)
and every frame lies in a mapping. Where libc itself has no symbols (no debug file installed),
its entry functions cannot be recognized and those stacks are reported truncated too: wrongly
flagged is better than silently wrong.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

from pxq.agent.symbols.cache import ElfFile, remember
from pxq.agent.symbols.debuginfo import DEBUG_DIR, read_elf, read_elf_file
from pxq.agent.symbols.demangling import demangle
from pxq.agent.symbols.elf import ElfInfo, parse_elf
from pxq.agent.symbols.frames import KERNEL_SUFFIX, UNKNOWN, UserFrame, module_offset, stack_is_truncated
from pxq.agent.symbols.kernel import KernelSymbols, parse_kallsyms
from pxq.agent.symbols.perf_map import parse_perf_map
from pxq.agent.symbols.proc import PROC, Mapping, ProcessMaps, parse_maps, process_stat
from pxq.agent.symbols.table import SymbolTable, empty_table


# Keep open at most this many not-yet-parsed ELF files; beyond it, files are parsed at snapshot.
MAX_PENDING_FILES = 256
# An address outside every mapping makes the process's maps be read again, at most this often.
RESNAPSHOT_S = 1.0


class Symbolizer:
    """Symbols for many processes, cached so that they survive the processes (see module doc)."""

    def __init__(self, kallsyms: str | os.PathLike = "/proc/kallsyms"):
        self.kernel = KernelSymbols(kallsyms)
        self.processes: dict[int, ProcessMaps] = {}
        self._files: dict[tuple[str, int], ElfFile] = {}
        self._vdso: ElfFile | None = None

    # -- snapshots
    def snapshot(self, pid: int) -> ProcessMaps | None:
        """Read ``pid``'s maps and open its executable files now; None when it is gone."""
        stat = process_stat(pid)
        try:
            maps_text = (PROC / str(pid) / "maps").read_text(errors="replace")
            exe = os.readlink(PROC / str(pid) / "exe")
        except OSError:
            maps_text, exe = None, ""
        if stat is None or not maps_text:
            return None
        mappings = parse_maps(maps_text)
        files: dict[int, ElfFile] = {}
        for index, m in enumerate(mappings):
            if m.executable and m.is_file:
                files[index] = self._file(pid, m)
            elif m.path == "[vdso]":
                files[index] = self._vdso_file()
        jit = []
        if any(m.executable and not m.is_file and m.path != "[vdso]" for m in mappings):
            try:
                jit = parse_perf_map((PROC / str(pid) / "root" / "tmp" / f"perf-{pid}.map").read_text(errors="replace"))
            except OSError:
                pass
        snap = ProcessMaps(pid, stat[0], stat[1], exe, mappings, files, jit)
        self.processes[pid] = snap
        return snap

    def _file(self, pid: int, m: Mapping) -> ElfFile:
        key = (m.dev, m.inode)
        cached = self._files.get(key)
        if cached is not None:
            return cached
        fd = None
        for path in (PROC / str(pid) / "map_files" / f"{m.start:x}-{m.end:x}",
                     PROC / str(pid) / "root" / m.path.removesuffix(" (deleted)").lstrip("/")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                break
            except OSError:
                continue
        elf = ElfFile(fd) if fd is not None else ElfFile(None, None)
        if sum(f.pending for f in self._files.values()) >= MAX_PENDING_FILES:
            elf.info()  # parse now and close, rather than hold too many descriptors
        self._files[key] = elf
        return elf

    def _vdso_file(self) -> ElfFile:
        """The vDSO image is the same in every process: parse pxq's own."""
        if self._vdso is None:
            info = None
            try:
                for m in parse_maps((PROC / "self" / "maps").read_text()):
                    if m.path == "[vdso]":
                        info = parse_elf(ctypes.string_at(m.start, m.end - m.start))
                        break
            except OSError:
                pass
            self._vdso = ElfFile(None, info)
        return self._vdso

    def forget(self, pid: int) -> None:
        """Drop a process's snapshot (its files stay cached for other processes)."""
        self.processes.pop(pid, None)

    def close(self) -> None:
        for elf in self._files.values():
            elf.close()
        self._files.clear()
        self.processes.clear()

    def is_current(self, pid: int) -> bool:
        """Whether the snapshotted process still runs (same pid, same start time)."""
        snap = self.processes.get(pid)
        stat = process_stat(pid)
        return snap is not None and stat is not None and stat[0] == snap.start_ticks

    # -- resolution
    def kernel_stack(self, addresses: list[int]) -> list[str]:
        """Kernel frames, root first, from addresses leaf first."""
        return [self.kernel.frame(a) for a in reversed(addresses)]

    def user_stack(self, pid: int, addresses: list[int]) -> tuple[list[str], bool]:
        """User frames root first (from addresses leaf first) and whether the stack is truncated."""
        frames = self.user_frames(pid, addresses)
        return [f.text for f in frames], stack_is_truncated(frames)

    def user_frames(self, pid: int, addresses: list[int]) -> list[UserFrame]:
        snap = self.processes.get(pid)
        if snap is None:
            snap = self.snapshot(pid)
        frames = []
        for address in reversed(addresses):
            frame = self._resolve(snap, address) if snap is not None else UserFrame(UNKNOWN, None, False)
            if not frame.mapped and snap is not None and time.monotonic() - snap.taken >= RESNAPSHOT_S:
                # Maybe mapped since the snapshot (dlopen, JIT): look again, if it still runs. At
                # most once per RESNAPSHOT_S: broken frame chains point outside every mapping.
                snap.taken = time.monotonic()
                if self.is_current(pid):
                    snap = self.snapshot(pid) or snap
                    frame = self._resolve(snap, address)
            frames.append(frame)
        return frames

    @staticmethod
    def _resolve(snap: ProcessMaps, address: int) -> UserFrame:
        index = snap.find(address)
        if index is None:
            return UserFrame(UNKNOWN, None, False)
        m = snap.mappings[index]
        elf = snap.files.get(index)
        if elf is not None:
            file_offset = address - m.start + (m.offset if m.is_file else 0)
            name, vaddr = elf.resolve(file_offset)
            if name is not None:
                return UserFrame(name, name, True)
            return UserFrame(module_offset(m.module, vaddr), None, True)
        name = snap.jit_name(address)
        if name is not None:
            return UserFrame(name, name, True)
        return UserFrame(module_offset(m.module, address - m.start), None, True)
