"""The symbolizer: snapshots processes when first seen and resolves their sampled stacks, kernel
and user, with the per-source modules of this package."""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections import OrderedDict

from pxq.agent.proc_maps import Mapping, maps_text as read_maps_text, parse_maps
from pxq.agent.symbols.cache import ElfFile, ParsedFiles
from pxq.agent.symbols.elf import parse_elf
from pxq.agent.symbols.frames import UNKNOWN, UserFrame, module_offset, stack_is_truncated
from pxq.agent.symbols.kernel import KernelSymbols
from pxq.agent.symbols.perf_map import parse_perf_map
from pxq.agent.symbols.proc import PROC, ProcessMaps, process_stat
from pxq.agent.unwind.cfi import unwind_table_of_bytes
from pxq.agent.unwind.unwinder import Registers, UnwindResult, unwind

# Keep open at most this many not-yet-parsed ELF files; beyond it, files are parsed at snapshot.
MAX_PENDING_FILES = 256
# Files (device, inode) kept for processes seen later; the least recently snapshotted beyond this are
# dropped from the cache (each holds a mapping, so a descriptor), living on while a snapshot uses them.
MAX_CACHED_FILES = 4096
# An address outside every mapping makes the process's maps be read again, at most this often.
RESNAPSHOT_S = 1.0


class Symbolizer:
    """Symbols for many processes, cached so that they survive the processes (see
    :mod:`pxq.agent.symbols`)."""

    def __init__(
        self, kallsyms: str | os.PathLike = "/proc/kallsyms", unwind: bool = False, parsed_bytes: int | None = None
    ):
        """``unwind``: parse each file's call-frame information too, for :meth:`unwind`.
        ``parsed_bytes``: the heap the parsed files may hold (:class:`ParsedFiles`)."""
        self.kernel = KernelSymbols(kallsyms)
        self.unwind_tables = unwind
        self.processes: dict[int, ProcessMaps] = {}
        self.parsed_files = ParsedFiles() if parsed_bytes is None else ParsedFiles(parsed_bytes)
        self._files: OrderedDict[tuple[str, int], ElfFile] = OrderedDict()
        self.files_dropped = 0
        self._vdso: ElfFile | None = None

    # -- snapshots
    def snapshot(self, pid: int) -> ProcessMaps | None:
        """Read ``pid``'s maps and open its executable files now; None when it is gone."""
        stat = process_stat(pid)
        try:
            maps_text = read_maps_text(pid, errors="replace")
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
            with contextlib.suppress(OSError):  # no perf map: JIT frames stay [anon]+0x..
                jit = parse_perf_map((PROC / str(pid) / "root" / "tmp" / f"perf-{pid}.map").read_text(errors="replace"))
        snap = ProcessMaps(pid, stat[0], stat[1], exe, mappings, files, jit)
        self.processes[pid] = snap
        return snap

    def _file(self, pid: int, m: Mapping) -> ElfFile:
        key = (m.dev, m.inode)
        cached = self._files.get(key)
        if cached is not None:
            self._files.move_to_end(key)
            return cached
        fd = None
        for path in (
            PROC / str(pid) / "map_files" / f"{m.start:x}-{m.end:x}",
            PROC / str(pid) / "root" / m.path.removesuffix(" (deleted)").lstrip("/"),
        ):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                break
            except OSError:
                continue
        # fd None (no path reached the file): frames are module+file offset
        elf = ElfFile(fd, unwind=self.unwind_tables, budget=self.parsed_files)
        if sum(f.pending for f in self._files.values()) >= MAX_PENDING_FILES:
            elf.info()  # parse now and close, rather than hold too many descriptors
        self._files[key] = elf
        while len(self._files) > MAX_CACHED_FILES:
            _key, dropped = self._files.popitem(last=False)
            self.parsed_files.discard(dropped)
            self.files_dropped += 1
        return elf

    def cache_stats(self) -> dict[str, int]:
        """Sizes and evictions of the per-binary caches (the unwind tables' are agent-wide)."""
        from pxq.agent.unwind.cache import TABLES

        return {
            "files": len(self._files),
            "files_dropped": self.files_dropped,
            "parsed_files": len(self.parsed_files),
            "parsed_bytes": self.parsed_files.heap_bytes,
            "parsed_evictions": self.parsed_files.evictions,
            **TABLES.stats(),
        }

    def _vdso_file(self) -> ElfFile:
        """The vDSO image is the same in every process: parse pxq's own."""
        if self._vdso is None:
            info, table = None, None
            try:
                # Not strict UTF-8: a non-UTF-8 path that pxq itself maps once failed here.
                for m in parse_maps(read_maps_text(os.getpid(), errors="replace")):
                    if m.path == "[vdso]":
                        image = ctypes.string_at(m.start, m.end - m.start)
                        info = parse_elf(image)
                        if self.unwind_tables:
                            table = unwind_table_of_bytes(image)
                        break
            except OSError:
                pass
            self._vdso = ElfFile(None, info, unwind_table=table)
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

    # -- unwinding
    def unwind(self, pid: int, regs: Registers, stack: bytes, copy_full: bool) -> UnwindResult | None:
        """The return addresses of a sample of ``pid`` (see :mod:`pxq.agent.unwind`), from its
        registers and user stack copy; None when the process was never snapshotted and is gone."""
        snap = self.processes.get(pid)
        if snap is None:
            snap = self.snapshot(pid)
        if snap is None:
            return None
        if snap.find(regs.ip) is None and time.monotonic() - snap.taken >= RESNAPSHOT_S:
            snap.taken = time.monotonic()  # code mapped since the snapshot (dlopen, JIT)?
            if self.is_current(pid):
                snap = self.snapshot(pid) or snap

        def locate(address: int):
            index = snap.find(address)
            if index is None:
                return None
            m = snap.mappings[index]
            if not m.executable:
                return None
            elf = snap.files.get(index)
            if elf is None:
                return None, 0  # anonymous code (JIT): no CFI, frame pointers only
            file_offset = address - m.start + (m.offset if m.is_file else 0)
            info = elf.info()
            return elf.unwind_table(), info.vaddr(file_offset) if info is not None else file_offset

        return unwind(regs, stack, locate, copy_full)

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
