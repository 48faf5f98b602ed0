"""Call-frame information of one ELF file as a compact table: the rows of every FDE of
``.eh_frame`` (else ``.debug_frame``), decoded by pyelftools, sorted by address in numpy arrays.

Each row says, from its address on (x86-64, DWARF register numbers: 6 rbp, 7 rsp, 16 the return
address column), how to find the caller:

* the CFA (canonical frame address: the caller's sp after the return): ``rsp + offset``,
  ``rbp + offset``, or the PLT stubs' standard expression ``rsp + 8 + 8 * ((rip & 15) >= N)``;
  any other expression is unsupported (``CFA_EXPRESSION``, the unwinder stops and counts it);
* the caller's rbp: unchanged, saved at ``CFA + offset``, or unknown;
* the return address: at ``CFA + offset`` (``-8`` on x86-64), or undefined: the outermost frame
  (glibc's ``_start`` and ``clone3`` say so).

An FDE covers ``[start, start + length)``; an ``END`` row closes it, so an address in a gap
between FDEs finds no rule rather than the previous function's.
"""

from __future__ import annotations

import io
import mmap
import sys
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

# cfa_kind
CFA_RSP, CFA_RBP, CFA_PLT, CFA_EXPRESSION, END = 1, 2, 3, 4, 5
# rbp_kind
RBP_SAME, RBP_AT_CFA, RBP_UNKNOWN = 0, 1, 2
# ra_kind
RA_AT_CFA, RA_UNDEFINED, RA_UNSUPPORTED = 0, 1, 2

RBP, RSP, RIP = 6, 7, 16
# DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit<N>; DW_OP_ge; DW_OP_lit3;
# DW_OP_shl; DW_OP_plus: the CFA of a 16-byte PLT entry (binutils' elf_x86_64_eh_frame_plt).
_DW_OP_LIT0 = 0x30
_PLT_PREFIX = [0x77, 8, 0x80, 0, 0x3F, 0x1A]
_PLT_SUFFIX = [0x2A, 0x33, 0x24, 0x22]


# Rows looked up per table, and FDEs decoded per indexed table, kept; a cache holding this many is emptied.
MAX_CACHED_ROWS = 65536
MAX_DECODED_FDES = 8192
_ROW_BYTES = 200  # a looked-up row: dict slot, int key, UnwindRow with six ints


class MappedSection:
    """A read-only stream over ``[start, start + size)`` of a mapped file, for pyelftools: the
    section stays in the file instead of being copied into the heap (``.eh_frame`` is megabytes
    in libpython and libLLVM). pyelftools reads a few bytes at a time, so the file's size is not
    checked on each read: call :meth:`intact` before a pass over it (a file truncated in place
    since it was mapped raises SIGBUS on a read past its new end)."""

    def __init__(self, data: mmap.mmap, start: int, size: int):
        self.data, self.start, self.size, self.position = data, start, max(0, min(size, len(data) - start)), 0

    def intact(self) -> bool:
        """Whether the file still holds the whole section (see :func:`~pxq.agent.symbols.table.mapped_slice`)."""
        from pxq.agent.symbols.table import mapped_slice  # here: pxq.agent.symbols imports this module

        end = self.start + self.size
        return mapped_slice(self.data, end - 1, end) is not None if self.size else True

    def read(self, count: int = -1) -> bytes:
        end = self.size if count is None or count < 0 else min(self.size, self.position + count)
        if end <= self.position:
            return b""
        chunk = self.data[self.start + self.position : self.start + end]
        self.position = end
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position


@dataclass(frozen=True, slots=True)
class UnwindRow:
    cfa_kind: int
    cfa_offset: int
    rbp_kind: int
    rbp_offset: int
    ra_kind: int
    ra_offset: int


class UnwindTable:
    """The sorted rows of one file (see the module docstring); ``unsupported`` counts FDEs that
    could not be decoded at all (their addresses find no rule)."""

    def __init__(self, pcs, cfa_kind, cfa_offset, rbp_kind, rbp_offset, ra_kind, ra_offset, source="", unsupported=0):
        self.pcs = np.asarray(pcs, np.uint64)
        self.cfa_kind = np.asarray(cfa_kind, np.uint8)
        self.cfa_offset = np.asarray(cfa_offset, np.int64)
        self.rbp_kind = np.asarray(rbp_kind, np.uint8)
        self.rbp_offset = np.asarray(rbp_offset, np.int64)
        self.ra_kind = np.asarray(ra_kind, np.uint8)
        self.ra_offset = np.asarray(ra_offset, np.int64)
        self.source = source  # ".eh_frame", ".debug_frame" or "" (no CFI)
        self.unsupported = unsupported
        self._rows: dict[int, UnwindRow | None] = {}
        arrays = (
            self.pcs,
            self.cfa_kind,
            self.cfa_offset,
            self.rbp_kind,
            self.rbp_offset,
            self.ra_kind,
            self.ra_offset,
        )
        self._array_bytes = sum(sys.getsizeof(a) for a in arrays) + sys.getsizeof(self)

    def __len__(self) -> int:
        return len(self.pcs)

    @property
    def heap_bytes(self) -> int:
        """Bytes held in the heap: the arrays (with their object headers) and the rows looked up."""
        return self._array_bytes + _ROW_BYTES * len(self._rows)

    def row(self, vaddr: int) -> UnwindRow | None:
        """The rule in force at ELF virtual address ``vaddr``; None when no FDE covers it."""
        found = self._rows.get(vaddr, self)
        if found is not self:
            return found  # type: ignore[return-value]
        if not 0 <= vaddr < 1 << 64:
            return None
        index = int(np.searchsorted(self.pcs, np.uint64(vaddr), side="right")) - 1
        row = None
        if index >= 0 and self.cfa_kind[index] != END:
            row = UnwindRow(
                int(self.cfa_kind[index]),
                int(self.cfa_offset[index]),
                int(self.rbp_kind[index]),
                int(self.rbp_offset[index]),
                int(self.ra_kind[index]),
                int(self.ra_offset[index]),
            )
        if len(self._rows) >= MAX_CACHED_ROWS:
            self._rows.clear()
        self._rows[vaddr] = row
        return row


EMPTY = UnwindTable([], [], [], [], [], [], [])


def _cfa(rule) -> tuple[int, int]:
    if rule is None:
        return CFA_EXPRESSION, 0
    if rule.expr is not None:
        expr = list(rule.expr)
        if (
            len(expr) == 11
            and expr[:6] == _PLT_PREFIX
            and expr[7:] == _PLT_SUFFIX
            and _DW_OP_LIT0 <= expr[6] < _DW_OP_LIT0 + 16
        ):
            return CFA_PLT, expr[6] - _DW_OP_LIT0
        return CFA_EXPRESSION, 0
    if rule.reg == RSP:
        return CFA_RSP, rule.offset
    if rule.reg == RBP:
        return CFA_RBP, rule.offset
    return CFA_EXPRESSION, 0


def _register(rule, saved_kind: int, same_kind: int, other_kind: int, undefined_kind: int) -> tuple[int, int]:
    if rule is None:
        return same_kind, 0
    kind = rule.type
    if kind == "OFFSET":
        return saved_kind, rule.arg
    if kind == "SAME_VALUE":
        return same_kind, 0
    if kind == "UNDEFINED":
        return undefined_kind, 0
    return other_kind, 0


def fde_rows(fde) -> list[tuple[int, ...]] | None:
    """The rows of one FDE as (pc, cfa_kind, cfa_offset, rbp_kind, rbp_offset, ra_kind,
    ra_offset) tuples, closed by an END row; None when pyelftools cannot decode it."""
    try:
        start = fde["initial_location"]
        end = start + fde["address_range"]
        table = fde.get_decoded().table
    except Exception:  # noqa: BLE001 - an opcode pyelftools does not know, a truncated FDE
        return None
    rows = []
    for row in table:
        pc = row["pc"]
        if not start <= pc < end:
            continue
        cfa_kind, cfa_offset = _cfa(row.get("cfa"))
        rbp_kind, rbp_offset = _register(row.get(RBP), RBP_AT_CFA, RBP_SAME, RBP_UNKNOWN, RBP_UNKNOWN)
        ra_rule = row.get(RIP)
        if ra_rule is None:
            ra_kind, ra_offset = RA_AT_CFA, -8
        else:
            ra_kind, ra_offset = _register(ra_rule, RA_AT_CFA, RA_UNSUPPORTED, RA_UNSUPPORTED, RA_UNDEFINED)
        rows.append((pc, cfa_kind, cfa_offset, rbp_kind, rbp_offset, ra_kind, ra_offset))
    rows.append((end, END, 0, 0, 0, 0, 0))
    return rows


def _entries(dwarf):
    if dwarf.has_EH_CFI():
        return ".eh_frame", dwarf.EH_CFI_entries()
    if dwarf.has_CFI():
        return ".debug_frame", dwarf.CFI_entries()
    return "", []


def parse_unwind_table(stream: BinaryIO) -> UnwindTable:
    """The unwind table of the ELF file in ``stream``; an empty one when it has no CFI or is not
    an ELF file. A malformed section gives the rows decoded before the damage."""
    from elftools.dwarf.callframe import FDE
    from elftools.elf.elffile import ELFFile

    columns: list[list[int]] = [[] for _ in range(7)]
    unsupported = 0
    source = ""
    fdes = []
    try:
        elf = ELFFile(stream)
        if elf.get_machine_arch() != "x64":
            return EMPTY
        source, entries = _entries(elf.get_dwarf_info(follow_links=False))
        for entry in entries:
            if isinstance(entry, FDE):
                fdes.append(entry)
    except Exception:  # noqa: BLE001 - pyelftools raises many kinds on corrupt input
        unsupported += 1  # a corrupt section: the FDEs read before the damage are kept
    for fde in fdes:
        rows = fde_rows(fde)
        if rows is None:
            unsupported += 1
            continue
        for row in rows:
            for column, value in zip(columns, row):
                column.append(value)
    if not columns[0]:
        return UnwindTable(*columns, source=source, unsupported=unsupported)
    pcs = np.asarray(columns[0], np.uint64)
    # By address; at one address the END of one function sorts before the first row of the next,
    # so that searchsorted(side="right") - 1 finds the function's row.
    is_end = np.asarray(columns[1]) == END
    order = np.lexsort((~is_end, pcs))
    return UnwindTable(*(np.asarray(c)[order] for c in columns), source=source, unsupported=unsupported)


class IndexedUnwindTable:
    """The unwind table of a file with ``.eh_frame_hdr``: its sorted FDE index is read at once
    (numpy over the section), each FDE decoded only when an address in it is first looked up.
    Parsing every FDE of libpython3.11 takes seconds; a profile touches a few hundred."""

    def __init__(self, eh_frame: bytes | MappedSection, eh_frame_vaddr: int, starts, fde_offsets):
        from elftools.dwarf.callframe import CallFrameInfo
        from elftools.dwarf.structs import DWARFStructs

        self.source = ".eh_frame"
        self.unsupported = 0
        self.starts = starts  # sorted FDE start addresses (ELF virtual addresses)
        self.fde_offsets = fde_offsets  # where each FDE is in .eh_frame
        self._cfi = CallFrameInfo(
            stream=eh_frame if isinstance(eh_frame, MappedSection) else io.BytesIO(eh_frame),
            size=eh_frame.size if isinstance(eh_frame, MappedSection) else len(eh_frame),
            address=eh_frame_vaddr,
            base_structs=DWARFStructs(little_endian=True, dwarf_format=32, address_size=8),
            for_eh_frame=True,
        )
        self._decoded: dict[int, UnwindTable | None] = {}
        self._decoded_bytes = 0  # heap of the decoded FDEs' tables, when decoded

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def heap_bytes(self) -> int:
        """Bytes held in the heap: the index and the FDEs decoded so far (``.eh_frame`` itself
        stays in the mapped file)."""
        return self.starts.nbytes + self.fde_offsets.nbytes + self._decoded_bytes

    def row(self, vaddr: int) -> UnwindRow | None:
        if not 0 <= vaddr < 1 << 64:
            return None
        index = int(np.searchsorted(self.starts, np.uint64(vaddr), side="right")) - 1
        if index < 0:
            return None
        table = self._decoded.get(index, self)
        if table is self:
            if len(self._decoded) >= MAX_DECODED_FDES:
                self._decoded.clear()
                self._decoded_bytes = 0
            table = self._decoded[index] = self._decode(index)
            self._decoded_bytes += 100 + (table._array_bytes if table is not None else 0)
        if table is None:
            return None
        rows_before = len(table._rows)  # type: ignore[union-attr]
        row = table.row(vaddr)  # type: ignore[union-attr]
        self._decoded_bytes += _ROW_BYTES * (len(table._rows) - rows_before)  # type: ignore[union-attr]
        return row

    def _decode(self, index: int) -> UnwindTable | None:
        from elftools.dwarf.callframe import FDE

        if isinstance(self._cfi.stream, MappedSection) and not self._cfi.stream.intact():
            self.unsupported += 1  # the file was truncated in place since it was mapped
            return None
        try:
            fde = self._cfi._parse_entry_at(int(self.fde_offsets[index]))
        except Exception:  # noqa: BLE001 - a corrupt FDE: no rule for its addresses, counted
            fde = None
        rows = fde_rows(fde) if isinstance(fde, FDE) else None
        stream = self._cfi.stream
        if isinstance(stream, MappedSection):  # the FDE's pages (and its CIE's) leave RSS, in batches
            from pxq.agent.symbols.table import read_from

            read_from(stream.data)
        # pyelftools keeps every entry it parsed (with its decoded rows): the FDE's rows are kept
        # here, compactly, so only the CIEs stay cached there (the node agent's RSS grew by ~15 MB).
        self._cfi._entry_cache.pop(int(self.fde_offsets[index]), None)
        if rows is None:
            self.unsupported += 1
            return None
        return UnwindTable(*zip(*rows))


# .eh_frame_hdr (LSB: "Exception Frame Header"): version 1, then the encodings of eh_frame_ptr,
# fde_count and the table; the table pairs (initial location, FDE address) sorted by location,
# almost always as DW_EH_PE_datarel | DW_EH_PE_sdata4 relative to the header's start.
_EH_PE_UDATA4, _EH_PE_SDATA4, _EH_PE_PCREL, _EH_PE_DATAREL = 0x03, 0x0B, 0x10, 0x30


def _indexed(elf, mapped: mmap.mmap | None = None) -> IndexedUnwindTable | None:
    eh_frame, header = elf.get_section_by_name(".eh_frame"), elf.get_section_by_name(".eh_frame_hdr")
    if eh_frame is None or header is None:
        return None
    data = header.data()
    if len(data) < 12 or data[0] != 1 or data[2] != _EH_PE_UDATA4 or data[3] != _EH_PE_DATAREL | _EH_PE_SDATA4:
        return None
    if data[1] != _EH_PE_PCREL | _EH_PE_SDATA4:
        return None
    count = int.from_bytes(data[8:12], "little")
    if count <= 0 or 12 + 8 * count > len(data):
        return None
    pairs = np.frombuffer(data, "<i4", count=2 * count, offset=12).astype(np.int64).reshape(count, 2)
    base = int(header["sh_addr"])
    starts = (pairs[:, 0] + base).astype(np.uint64)
    offsets = pairs[:, 1] + base - int(eh_frame["sh_addr"])
    if np.any(np.diff(starts.astype(np.int64)) < 0) or np.any(offsets < 0) or np.any(offsets >= eh_frame["sh_size"]):
        return None  # not the sorted table the format promises: parse every FDE instead
    if mapped is not None:
        section = MappedSection(mapped, int(eh_frame["sh_offset"]), int(eh_frame["sh_size"]))
        return IndexedUnwindTable(section, int(eh_frame["sh_addr"]), starts, offsets)
    return IndexedUnwindTable(eh_frame.data(), int(eh_frame["sh_addr"]), starts, offsets)


def load_unwind_table(stream: BinaryIO, mapped: mmap.mmap | None = None) -> UnwindTable | IndexedUnwindTable:
    """The unwind table of the ELF file in ``stream``: indexed by its ``.eh_frame_hdr`` (FDEs
    decoded on demand), else every FDE parsed (:func:`parse_unwind_table`). ``mapped``: the
    file's mapping, which the indexed table then reads ``.eh_frame`` from."""
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(stream)
        if elf.get_machine_arch() != "x64":
            return EMPTY
        indexed = _indexed(elf, mapped)
    except Exception:  # noqa: BLE001 - pyelftools raises many kinds on corrupt input
        return EMPTY
    if indexed is not None:
        return indexed
    stream.seek(0)
    return parse_unwind_table(stream)


def unwind_table_of_fd(fd: int) -> UnwindTable | IndexedUnwindTable:
    """:func:`load_unwind_table` of the file open as ``fd``, mapped (:func:`unwind_table_of_map`)."""
    from pxq.agent.symbols.elf import map_file

    data = map_file(fd)
    return unwind_table_of_map(data) if data is not None else EMPTY


def unwind_table_of_map(data: mmap.mmap) -> UnwindTable | IndexedUnwindTable:
    """:func:`load_unwind_table` of a mapped file; ``.eh_frame`` stays in the mapping (which the
    table keeps alive) and is read an FDE at a time."""
    from pxq.agent.symbols.table import release_pages

    whole = MappedSection(data, 0, len(data))
    try:
        return load_unwind_table(whole, mapped=data) if whole.intact() else EMPTY  # type: ignore[arg-type]
    finally:
        release_pages(data)


def unwind_table_of_bytes(data: bytes) -> UnwindTable | IndexedUnwindTable:
    return load_unwind_table(io.BytesIO(data))
