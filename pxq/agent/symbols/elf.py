"""ELF files: load segments, build id, and function symbols from ``.symtab`` or ``.dynsym`` (or the
MiniDebugInfo ``.gnu_debugdata`` section), parsed with numpy over the raw tables (bcc's
``bcc_elf``, bpftrace's ``symbols/elf_parser``)."""

from __future__ import annotations

import lzma
import mmap
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from pxq.agent.symbols.table import SymbolTable, empty_table, release_pages

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
    fields = _EHDR.unpack_from(data, 0)
    shoff, shentsize, shnum = fields[6], fields[11], fields[12]
    if not shoff or shentsize != _SHDR.size:
        return []
    return [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]


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
    if str_offset + str_size > len(data):
        return empty_table()
    # One symbol per address (aliases such as __clone / __GI___clone): prefer GLOBAL over WEAK over
    # LOCAL, then names without glibc's internal "__GI_" prefix, then the shorter name.
    raw = np.frombuffer(data, np.uint8, count=str_size, offset=str_offset)
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
    names = syms["name"].astype(np.int64)
    if isinstance(data, mmap.mmap):
        # The names stay in the read-only mapping of the file (libc's and libpython's string
        # tables are megabytes each; a busy host's binaries held ~28 MB of copies), decoded on lookup.
        return SymbolTable(
            syms["value"].copy(), syms["size"].copy(), names + str_offset, data, blob_end=str_offset + str_size
        )
    blob = bytes(data[str_offset : str_offset + str_size])
    return SymbolTable(syms["value"].copy(), syms["size"].copy(), names, blob)


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
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = _PHDR.unpack_from(
                data, phoff + i * phentsize
            )
            if p_type == PT_LOAD:
                info.segments.append((p_offset, p_vaddr, p_filesz))
    sections = _sections(data)
    tables: dict[int, tuple] = {}  # section type -> its first section header
    for section in sections:
        sh_type = section[1]
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


def map_file(fd: int) -> mmap.mmap | None:
    """A read-only shared mapping of the whole file open as ``fd`` (None: empty or unmappable).
    It stays valid when the file is deleted or replaced by a rename (the old inode lives on); see
    :func:`~pxq.agent.symbols.table.mapped_slice` for a file truncated in place."""
    try:
        size = os.fstat(fd).st_size
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) if size else None
    except (OSError, ValueError):
        return None


def parse_elf_map(data: mmap.mmap) -> ElfInfo | None:
    """:func:`parse_elf` of a mapped file, whose symbol names then stay in (and keep alive) the
    mapping; None when it is no ELF64 file or is cut short."""
    try:
        if data.size() < _EHDR.size or data.size() < len(data):  # truncated since it was mapped
            return None
        return parse_elf(data)
    except (OSError, ValueError, struct.error):
        return None
    finally:
        release_pages(data)


def parse_elf_fd(fd: int) -> ElfInfo | None:
    """:func:`parse_elf` of the file open as ``fd``, mapped rather than read; None when it is no
    ELF64 file or cannot be read."""
    data = map_file(fd)
    return parse_elf_map(data) if data is not None else None
