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
import lzma
import mmap
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pxq.agent.symbols.cache import remember
from pxq.agent.symbols.frames import KERNEL_SUFFIX, UNKNOWN, UserFrame, module_offset, stack_is_truncated
from pxq.agent.symbols.kernel import KernelSymbols, parse_kallsyms
from pxq.agent.symbols.perf_map import parse_perf_map
from pxq.agent.symbols.proc import PROC, Mapping, ProcessMaps, parse_maps, process_stat
from pxq.agent.symbols.table import SymbolTable, empty_table

DEBUG_DIR = Path("/usr/lib/debug")

# Keep open at most this many not-yet-parsed ELF files; beyond it, files are parsed at snapshot.
MAX_PENDING_FILES = 256
# An address outside every mapping makes the process's maps be read again, at most this often.
RESNAPSHOT_S = 1.0


# -- ELF files ------------------------------------------------------------------------------------
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"), ("size", "<u8")])
PT_LOAD = 1
SHT_SYMTAB, SHT_NOTE, SHT_DYNSYM = 2, 7, 11
STT_FUNC, STT_GNU_IFUNC = 2, 10
NT_GNU_BUILD_ID = 3
_BIND_RANK = np.array([2, 0, 1] + [3] * 13, np.uint8)  # GLOBAL best, then WEAK, then LOCAL


@dataclass
class ElfInfo:
    """What symbolization needs from one ELF file."""

    segments: list[tuple[int, int, int]] = field(default_factory=list)  # PT_LOAD (offset, vaddr, filesz)
    symbols: SymbolTable = field(default_factory=empty_table)
    has_symtab: bool = False
    build_id: str = ""

    def vaddr(self, file_offset: int) -> int:
        """The ELF virtual address of a file offset (the file offset itself when no segment holds it)."""
        for offset, vaddr, size in self.segments:
            if offset <= file_offset < offset + size:
                return file_offset - offset + vaddr
        return file_offset


def _sections(data) -> list[tuple]:
    ident, _type, _machine, _v, _entry, _phoff, shoff, _f, _eh, _phes, _phnum, shentsize, shnum, shstrndx = (
        _EHDR.unpack_from(data, 0))
    if not shoff or shentsize != _SHDR.size:
        return []
    sections = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    return sections


def _section_name(data, sections, shstrndx: int, sh_name: int) -> bytes:
    if shstrndx >= len(sections):
        return b""
    base = sections[shstrndx][4] + sh_name
    end = data.find(b"\0", base)
    return bytes(data[base:end])


def _symbol_table(data, symtab: tuple, strtab: tuple) -> SymbolTable:
    """Function symbols of one SYMTAB/DYNSYM section, sorted, one name per address."""
    _name, _t, _fl, _addr, offset, size, _link, _info, _al, entsize = symtab
    if entsize != _SYM.itemsize or offset + size > len(data):
        return empty_table()
    syms = np.frombuffer(data, _SYM, count=size // entsize, offset=offset)
    kind = syms["info"] & 0xF
    keep = ((kind == STT_FUNC) | (kind == STT_GNU_IFUNC)) & (syms["shndx"] != 0) & (syms["value"] != 0)
    syms = syms[keep]
    str_offset, str_size = strtab[4], strtab[5]
    blob = bytes(data[str_offset : str_offset + str_size])
    # One symbol per address (aliases such as __clone / __GI___clone): prefer GLOBAL over WEAK over
    # LOCAL, then names without glibc's internal "__GI_" prefix, then the shorter name.
    raw = np.frombuffer(blob, np.uint8)
    nuls = np.flatnonzero(raw == 0)
    starts = np.minimum(syms["name"].astype(np.int64), max(len(raw) - 1, 0))
    lengths = nuls[np.minimum(np.searchsorted(nuls, starts), len(nuls) - 1)] - starts if len(nuls) else starts * 0
    internal = np.zeros(len(syms), bool)
    prefix = np.frombuffer(b"__GI_", np.uint8)
    room = starts + len(prefix) <= len(raw)
    if room.any():
        window = raw[starts[room, None] + np.arange(len(prefix))]
        internal[room] = (window == prefix).all(axis=1)
    order = np.lexsort((lengths, internal, _BIND_RANK[syms["info"] >> 4], syms["value"]))
    syms = syms[order]
    values = syms["value"]
    first = np.ones(len(values), bool)
    first[1:] = values[1:] != values[:-1]
    syms = syms[first]
    return SymbolTable(syms["value"].copy(), syms["size"].copy(), syms["name"].astype(np.int64), blob)


def parse_elf(data) -> ElfInfo | None:
    """Segments, build id and function symbols of an ELF64 little-endian image (bytes or mmap);
    None when it is not one."""
    if len(data) < _EHDR.size or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    fields = _EHDR.unpack_from(data, 0)
    phoff, phentsize, phnum, shstrndx = fields[5], fields[9], fields[10], fields[13]
    info = ElfInfo()
    if phentsize == _PHDR.size:
        for i in range(phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = _PHDR.unpack_from(data, phoff + i * phentsize)
            if p_type == PT_LOAD:
                info.segments.append((p_offset, p_vaddr, p_filesz))
    sections = _sections(data)
    tables = {}
    for section in sections:
        sh_name, sh_type, *_rest = section
        if sh_type in (SHT_SYMTAB, SHT_DYNSYM) and section[6] < len(sections):
            tables.setdefault(sh_type, section)
        elif sh_type == SHT_NOTE and not info.build_id:
            info.build_id = _build_id(data, section)
    chosen = tables.get(SHT_SYMTAB) or tables.get(SHT_DYNSYM)
    if chosen is not None:
        info.symbols = _symbol_table(data, chosen, sections[chosen[6]])
        info.has_symtab = SHT_SYMTAB in tables
    if not info.has_symtab:  # MiniDebugInfo: an xz-compressed ELF holding .symtab
        for section in sections:
            if _section_name(data, sections, shstrndx, section[0]) == b".gnu_debugdata":
                try:
                    inner = parse_elf(lzma.decompress(bytes(data[section[4] : section[4] + section[5]])))
                except lzma.LZMAError:
                    inner = None
                if inner is not None and len(inner.symbols):
                    info.symbols, info.has_symtab = inner.symbols, True
                break
    return info


def _build_id(data, note_section: tuple) -> str:
    at, end = note_section[4], note_section[4] + note_section[5]
    while at + 12 <= end:
        namesz, descsz, note_type = struct.unpack_from("<III", data, at)
        name_at = at + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        if note_type == NT_GNU_BUILD_ID and bytes(data[name_at : name_at + namesz]).rstrip(b"\0") == b"GNU":
            return bytes(data[desc_at : desc_at + descsz]).hex()
        at = desc_at + ((descsz + 3) & ~3)
    return ""


def _parse_fd(fd: int) -> ElfInfo | None:
    try:
        size = os.fstat(fd).st_size
        if size < _EHDR.size:
            return None
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as data:
            return parse_elf(data)
    except (OSError, ValueError, struct.error):
        return None


def read_elf(fd: int) -> ElfInfo | None:
    """Parse the ELF file open as ``fd`` (mapped, not read), completed from its debug file."""
    info = _parse_fd(fd)
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
        return read_elf(fd) if debug else _parse_fd(fd)
    finally:
        os.close(fd)


class ElfFile:
    """One mapped file: opened at snapshot time, parsed on first lookup, frames cached."""

    def __init__(self, fd: int | None, info: ElfInfo | None = None):
        self._fd = fd
        self._info = info
        self._frames: dict[int, tuple[str | None, int]] = {}

    @property
    def pending(self) -> bool:
        return self._info is None and self._fd is not None

    def info(self) -> ElfInfo | None:
        if self._fd is not None:
            try:
                self._info = read_elf(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
        return self._info

    def resolve(self, file_offset: int) -> tuple[str | None, int]:
        """(function name or None, ELF virtual address) of a file offset."""
        hit = self._frames.get(file_offset)
        if hit is None:
            info = self.info()
            if info is None:
                hit = (None, file_offset)
            else:
                vaddr = info.vaddr(file_offset)
                found = info.symbols.lookup(vaddr)
                hit = (demangle(found[0]) if found else None, vaddr)
            remember(self._frames, file_offset, hit)
        return hit

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- C++ names ------------------------------------------------------------------------------------
_cxa_demangle = None


def demangle(name: str) -> str:
    """C++ (and Rust legacy) ``_Z`` names demangled by libstdc++'s ``__cxa_demangle``; others as-is."""
    global _cxa_demangle
    if not name.startswith("_Z"):
        return name
    if _cxa_demangle is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
            fn = lib.__cxa_demangle
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
            free = ctypes.CDLL(None).free
            free.argtypes = [ctypes.c_void_p]
            _cxa_demangle = (fn, free)
        except (OSError, AttributeError):
            _cxa_demangle = False
    if not _cxa_demangle:
        return name
    fn, free = _cxa_demangle
    status = ctypes.c_int(0)
    out = fn(name.encode(), None, None, ctypes.byref(status))
    if not out:
        return name
    try:
        return ctypes.string_at(out).decode(errors="replace") if status.value == 0 else name
    finally:
        free(out)


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
