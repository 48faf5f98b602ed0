"""The few named symbols the Python unwinder needs from an interpreter binary (``_PyRuntime``, ``Py_Version``,
``PyCode_Type``, ``_PyEval_EvalFrameDefault``), data objects included, which the function-only symbolizer
(pxq/agent/symbols/elf.py) leaves out, and the libraries the file needs (``DT_NEEDED``: a ``python3.X`` that
needs ``libpython3.X.so`` runs its interpreter from there). Reads ``.symtab``, ``.dynsym`` and the dynamic
section with ``struct`` over an mmap."""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_DYN = struct.Struct("<qQ")
_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB = 0, 1, 5
_SHT_SYMTAB, _SHT_DYNSYM = 2, 11


class ElfFormatError(ValueError):
    """The file is not a 64-bit little-endian ELF file, or its tables point outside it."""


@dataclass
class InterpreterElf:
    """Named symbols (ELF virtual address, size) and the PT_LOAD segments (offset, vaddr, filesz) of one file."""

    path: str
    symbols: dict[str, tuple[int, int]] = field(default_factory=dict)
    segments: list[tuple[int, int, int]] = field(default_factory=list)
    needed: list[str] = field(default_factory=list)  # DT_NEEDED names (sonames), in the file's order
    data: bytes = b""

    def file_offset(self, vaddr: int, size: int = 1) -> int | None:
        """Where the ``size`` bytes at an ELF virtual address lie in the file (within one PT_LOAD segment)."""
        for offset, start, filesz in self.segments:
            if start <= vaddr and vaddr + size <= start + filesz:
                return offset + vaddr - start
        return None

    def read_vaddr(self, vaddr: int, size: int) -> bytes | None:
        """Bytes at an ELF virtual address taken from the file itself (initialised data such as Py_Version)."""
        begin = self.file_offset(vaddr, size)
        return None if begin is None else self.data[begin : begin + size]


def read_interpreter_elf(path: str, wanted: frozenset[str]) -> InterpreterElf:
    """The ``wanted`` symbols of the ELF file at ``path``; raises OSError or ElfFormatError."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        data = bytes(mapped)
    if len(data) < _EHDR.size or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ElfFormatError(f"{path}: not a 64-bit little-endian ELF file")
    header = _EHDR.unpack_from(data, 0)
    phoff, shoff, phnum, shentsize, shnum = header[5], header[6], header[10], header[11], header[12]
    result = InterpreterElf(path=path, data=data)
    try:
        dynamic = None
        for index in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = _PHDR.unpack_from(data, phoff + index * _PHDR.size)
            if p_type == _PT_LOAD:
                result.segments.append((p_offset, p_vaddr, p_filesz))
            elif p_type == _PT_DYNAMIC:
                dynamic = (p_offset, p_filesz)
        if dynamic is not None:
            result.needed = _needed(result, *dynamic)
        sections = [_SHDR.unpack_from(data, shoff + index * shentsize) for index in range(shnum)]
        for section in sections:
            if section[1] not in (_SHT_SYMTAB, _SHT_DYNSYM):
                continue
            strtab = sections[section[6]]
            str_begin, str_end = strtab[4], strtab[4] + strtab[5]
            begin, count = section[4], section[5] // _SYM.size
            for index in range(count):
                name_offset, _, _, shndx, value, size = _SYM.unpack_from(data, begin + index * _SYM.size)
                if shndx == 0 or name_offset == 0:
                    continue
                name_start = str_begin + name_offset
                name_end = data.find(b"\0", name_start, str_end)
                name = data[name_start:name_end].decode("ascii", "replace")
                if name in wanted and name not in result.symbols:
                    result.symbols[name] = (value, size)
    except (struct.error, IndexError) as error:
        raise ElfFormatError(f"{path}: truncated or corrupt ELF tables ({error})") from error
    return result


def _needed(elf: InterpreterElf, offset: int, size: int) -> list[str]:
    """The DT_NEEDED names of the dynamic section at file ``offset``; its string table is found by the
    virtual address DT_STRTAB gives."""
    data, name_offsets, strtab = elf.data, [], None
    for at in range(offset, offset + size - _DYN.size + 1, _DYN.size):
        tag, value = _DYN.unpack_from(data, at)
        if tag == _DT_NULL:
            break
        if tag == _DT_NEEDED:
            name_offsets.append(value)
        elif tag == _DT_STRTAB:
            strtab = value
    if strtab is None:
        return []
    names = []
    for name_offset in name_offsets:
        start = elf.file_offset(strtab + name_offset)
        end = data.find(b"\0", start) if start is not None else -1
        if start is not None and end >= 0:
            names.append(data[start:end].decode("ascii", "replace"))
    return names
