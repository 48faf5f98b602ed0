"""Unwinding one sample: from the user registers at the interruption and a copy of the user stack
from sp, the return addresses of the caller frames, leaf first, and why the walk stopped.

Each step finds the CFI row in force at the frame's address (the caller frames' at ``address - 1``,
inside their call instruction), computes the CFA, reads the return address (and the saved rbp)
from the copy, and moves up: ``ip = return address, sp = CFA``. Where a file has no CFI at all
(stripped of ``.eh_frame``, JIT code), the frame-pointer chain is followed instead, but only while
rbp points into the copied stack above sp. Nothing proves that such code keeps a frame pointer (in
code built without one, rbp may point at any saved frame higher up, and the walk would skip the
frames between): a stack that took such a step is never called complete (``guessed``).

Stop reasons (:data:`STOP_REASONS`): ``outermost`` (the CFI says the return address is undefined,
as at glibc's ``_start`` and ``clone3``, or it is 0): the stack is complete. Every other reason
leaves the stack truncated: ``copy_short`` (the caller's frame lies beyond the copied bytes: the
stack is deeper than the copy), ``no_cfi`` (no rule for an address, no frame pointer to follow),
``bad_cfa`` (a CFA that does not move up the stack, or points outside the mapped stack),
``cfa_expression`` (a DWARF expression rule other than the PLT one), ``unmapped`` (a return
address outside every executable mapping: dropped, never shown), ``max_depth``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pxq.agent.unwind.cfi import (
    CFA_PLT,
    CFA_RBP,
    CFA_RSP,
    RA_AT_CFA,
    RA_UNDEFINED,
    RBP_AT_CFA,
    RBP_SAME,
    UnwindTable,
)

MAX_DEPTH = 128
OUTERMOST = "outermost"
COPY_SHORT = "copy_short"
NO_CFI = "no_cfi"
BAD_CFA = "bad_cfa"
CFA_EXPRESSION = "cfa_expression"
UNMAPPED = "unmapped"
TOO_DEEP = "max_depth"
STOP_REASONS = (OUTERMOST, COPY_SHORT, NO_CFI, BAD_CFA, CFA_EXPRESSION, UNMAPPED, TOO_DEEP)

# locate(address) -> None when the address is in no executable mapping, else (the mapping's unwind
# table, or None for anonymous code; the address as an ELF virtual address in that file)
Locator = Callable[[int], "tuple[UnwindTable | None, int] | None"]


@dataclass(frozen=True, slots=True)
class Registers:
    ip: int
    sp: int
    bp: int | None


@dataclass(frozen=True, slots=True)
class UnwindResult:
    addresses: list[int]  # leaf first: the interrupted ip, then return addresses
    reason: str  # one of STOP_REASONS
    guessed: bool = False  # a frame was found by frame pointer in code without CFI

    @property
    def complete(self) -> bool:
        return self.reason == OUTERMOST and not self.guessed


def unwind(regs: Registers, stack: bytes, locate: Locator, copy_full: bool, max_depth: int = MAX_DEPTH) -> UnwindResult:
    """Unwind one sample. ``stack`` is the user stack copied from ``regs.sp``; ``copy_full``: the
    copy is as long as asked (so an address past its end may be real stack, just not copied),
    else it ended where the stack's mapping ends."""
    base, size = regs.sp, len(stack)

    def read(address: int) -> int | None:
        offset = address - base
        if 0 <= offset <= size - 8:
            return int.from_bytes(stack[offset : offset + 8], "little")
        return None

    def past_copy(address: int) -> str:
        return COPY_SHORT if copy_full and address - base >= size - 7 else BAD_CFA

    ip, sp, bp = regs.ip, regs.sp, regs.bp
    addresses = [ip]
    guessed = False
    while True:
        if len(addresses) > max_depth:
            return UnwindResult(addresses, guessed=guessed, reason=TOO_DEEP)
        found = locate(ip if len(addresses) == 1 else ip - 1)
        if found is None:
            if len(addresses) > 1:
                addresses.pop()  # a "return address" in no code: a wrong frame, never shown
            return UnwindResult(addresses, guessed=guessed, reason=UNMAPPED)
        table, vaddr = found
        row = table.row(vaddr) if table is not None else None
        if row is None:
            if table is not None and len(table):
                return UnwindResult(addresses, guessed=guessed, reason=NO_CFI)  # a gap in a file that has CFI
            # No CFI in this file at all: follow rbp, while it points up into the copy.
            if bp is None or bp < sp:
                return UnwindResult(addresses, guessed=guessed, reason=NO_CFI)
            ra, saved_bp = read(bp + 8), read(bp)
            if ra is None or saved_bp is None:
                return UnwindResult(addresses, guessed=guessed, reason=NO_CFI)
            cfa, new_bp = bp + 16, saved_bp
            guessed = True
        else:
            if row.ra_kind == RA_UNDEFINED:
                return UnwindResult(addresses, guessed=guessed, reason=OUTERMOST)
            if row.ra_kind != RA_AT_CFA:
                return UnwindResult(addresses, guessed=guessed, reason=CFA_EXPRESSION)
            if row.cfa_kind == CFA_RSP:
                cfa = sp + row.cfa_offset
            elif row.cfa_kind == CFA_RBP:
                if bp is None:
                    return UnwindResult(addresses, guessed=guessed, reason=BAD_CFA)
                cfa = bp + row.cfa_offset
            elif row.cfa_kind == CFA_PLT:
                cfa = sp + 8 + (8 if (ip & 15) >= row.cfa_offset else 0)
            else:
                return UnwindResult(addresses, guessed=guessed, reason=CFA_EXPRESSION)
            ra = read(cfa + row.ra_offset)
            if ra is None:
                reason = past_copy(cfa + row.ra_offset) if cfa > sp else BAD_CFA
                return UnwindResult(addresses, guessed=guessed, reason=reason)
            if row.rbp_kind == RBP_AT_CFA:
                new_bp = read(cfa + row.rbp_offset)
            elif row.rbp_kind == RBP_SAME:
                new_bp = bp
            else:
                new_bp = None
        if cfa <= sp:  # the caller's frame must lie above this one
            return UnwindResult(addresses, guessed=guessed, reason=BAD_CFA)
        if ra == 0:
            return UnwindResult(addresses, guessed=guessed, reason=OUTERMOST)
        addresses.append(ra)
        ip, sp, bp = ra, cfa, new_bp
