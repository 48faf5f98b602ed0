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
import os
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

    def __len__(self) -> int:
        return len(self.pcs)

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
        if len(self._rows) >= 65536:
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

    def __init__(self, eh_frame: bytes, eh_frame_vaddr: int, starts, fde_offsets):
        from elftools.dwarf.callframe import CallFrameInfo
        from elftools.dwarf.structs import DWARFStructs

        self.source = ".eh_frame"
        self.unsupported = 0
        self.starts = starts  # sorted FDE start addresses (ELF virtual addresses)
        self.fde_offsets = fde_offsets  # where each FDE is in .eh_frame
        self._cfi = CallFrameInfo(
            stream=io.BytesIO(eh_frame),
            size=len(eh_frame),
            address=eh_frame_vaddr,
            base_structs=DWARFStructs(little_endian=True, dwarf_format=32, address_size=8),
            for_eh_frame=True,
        )
        self._decoded: dict[int, UnwindTable | None] = {}

    def __len__(self) -> int:
        return len(self.starts)

    def row(self, vaddr: int) -> UnwindRow | None:
        if not 0 <= vaddr < 1 << 64:
            return None
        index = int(np.searchsorted(self.starts, np.uint64(vaddr), side="right")) - 1
        if index < 0:
            return None
        table = self._decoded.get(index, self)
        if table is self:
            table = self._decoded[index] = self._decode(index)
        return table.row(vaddr) if table is not None else None  # type: ignore[union-attr]

    def _decode(self, index: int) -> UnwindTable | None:
        from elftools.dwarf.callframe import FDE

        try:
            fde = self._cfi._parse_entry_at(int(self.fde_offsets[index]))
        except Exception:  # noqa: BLE001 - a corrupt FDE: no rule for its addresses, counted
            fde = None
        rows = fde_rows(fde) if isinstance(fde, FDE) else None
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


def _indexed(elf) -> IndexedUnwindTable | None:
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
    return IndexedUnwindTable(eh_frame.data(), int(eh_frame["sh_addr"]), starts, offsets)


def load_unwind_table(stream: BinaryIO) -> UnwindTable | IndexedUnwindTable:
    """The unwind table of the ELF file in ``stream``: indexed by its ``.eh_frame_hdr`` (FDEs
    decoded on demand), else every FDE parsed (:func:`parse_unwind_table`)."""
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(stream)
        if elf.get_machine_arch() != "x64":
            return EMPTY
        indexed = _indexed(elf)
    except Exception:  # noqa: BLE001 - pyelftools raises many kinds on corrupt input
        return EMPTY
    if indexed is not None:
        return indexed
    stream.seek(0)
    return parse_unwind_table(stream)


def unwind_table_of_fd(fd: int) -> UnwindTable | IndexedUnwindTable:
    """:func:`load_unwind_table` of the file open as ``fd`` (read through a duplicate)."""
    try:
        with os.fdopen(os.dup(fd), "rb") as stream:
            return load_unwind_table(stream)
    except OSError:
        return EMPTY


def unwind_table_of_bytes(data: bytes) -> UnwindTable | IndexedUnwindTable:
    return load_unwind_table(io.BytesIO(data))
