"""The few named symbols the Python unwinder needs from an interpreter binary (``_PyRuntime``, ``Py_Version``,
``PyCode_Type``, ``_PyEval_EvalFrameDefault``), data objects included, which the function-only symbolizer
(pxq/agent/symbols/elf.py) leaves out. Reads ``.symtab`` and ``.dynsym`` with ``struct`` over an mmap."""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_PT_LOAD = 1
_SHT_SYMTAB, _SHT_DYNSYM = 2, 11


class ElfFormatError(ValueError):
    """The file is not a 64-bit little-endian ELF file, or its tables point outside it."""


@dataclass
class InterpreterElf:
    """Named symbols (ELF virtual address, size) and the PT_LOAD segments (offset, vaddr, filesz) of one file."""

    path: str
    symbols: dict[str, tuple[int, int]] = field(default_factory=dict)
    segments: list[tuple[int, int, int]] = field(default_factory=list)
    data: bytes = b""

    def read_vaddr(self, vaddr: int, size: int) -> bytes | None:
        """Bytes at an ELF virtual address taken from the file itself (initialised data such as Py_Version)."""
        for offset, start, filesz in self.segments:
            if start <= vaddr and vaddr + size <= start + filesz:
                begin = offset + vaddr - start
                return self.data[begin : begin + size]
        return None


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
        for index in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = _PHDR.unpack_from(data, phoff + index * _PHDR.size)
            if p_type == _PT_LOAD:
                result.segments.append((p_offset, p_vaddr, p_filesz))
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
