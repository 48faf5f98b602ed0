"""The agent's native unwinder without a kernel: call-frame tables checked against binutils'
``readelf --debug-dump=frames-interp`` (an independent decoder of the same sections), and
unwinding of hand-built stacks whose frames the test lays out itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pxq.agent.unwind.cfi import (
    CFA_EXPRESSION,
    CFA_PLT,
    CFA_RBP,
    CFA_RSP,
    END,
    RA_AT_CFA,
    RA_UNDEFINED,
    RA_UNSUPPORTED,
    RBP_AT_CFA,
    RBP_SAME,
    RBP_UNKNOWN,
    IndexedUnwindTable,
    UnwindTable,
    load_unwind_table,
    parse_unwind_table,
)
from pxq.agent.unwind.unwinder import (
    BAD_CFA,
    COPY_SHORT,
    NO_CFI,
    OUTERMOST,
    TOO_DEEP,
    UNMAPPED,
    Registers,
    unwind,
)
from tests.agent.programs.build import NO_FRAME_POINTERS, compile_c, without_eh_frame

LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
_FDE = re.compile(r"^[0-9a-f]+ [0-9a-f]+ [0-9a-f]+ FDE cie=([0-9a-f]+) pc=([0-9a-f]+)\.\.([0-9a-f]+)")
_CIE = re.compile(r"^([0-9a-f]+) [0-9a-f]+ [0-9a-f]+ CIE ")


def readelf_rows(path: Path) -> list[tuple[int, int, dict[str, str]]]:
    """(address, FDE end, {column: rule text}) for every row readelf prints for .eh_frame; an FDE
    without instructions of its own gets its CIE's initial row."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.fail("these tests compare against readelf (binutils)", pytrace=False)
    # readelf exits 1 on libc.so.6 after printing every FDE (an opcode it warns about): the
    # output is what counts.
    text = subprocess.run([readelf, "--debug-dump=frames-interp", str(path)], capture_output=True, text=True).stdout
    cie_rows: dict[int, dict[str, str]] = {}
    out: list[tuple[int, int, dict[str, str]]] = []
    current: tuple[str, int, int, int] | None = None  # ("cie", offset) or ("fde", cie, start, end)
    columns: list[str] = []
    rows_seen = 0

    def close():
        if current is not None and current[0] == "fde" and rows_seen == 0 and current[1] in cie_rows:
            out.append((current[2], current[3], cie_rows[current[1]]))

    for line in text.splitlines():
        if m := _CIE.match(line):
            close()
            current, rows_seen = ("cie", int(m.group(1), 16), 0, 0), 0
        elif m := _FDE.match(line):
            close()
            current, rows_seen = ("fde", int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16)), 0
        elif line.strip().startswith("LOC"):
            columns = line.split()[1:]
        elif current is not None and re.match(r"^[0-9a-f]{16} ", line):
            values = re.findall(r"r\d+ \(\w+\)|\S+", line)  # "r10 (r10)": one rule, another register
            rule = dict(zip(columns, values[1:]))
            rows_seen += 1
            if current[0] == "cie":
                cie_rows.setdefault(current[1], rule)
            else:
                out.append((int(values[0], 16), current[3], rule))
    close()
    return out


def assert_matches_readelf(table, rows) -> int:
    """Check every row readelf printed; returns how many FDEs had no rule (pyelftools could not
    decode them: they must be counted as unsupported)."""
    undecoded = set()
    for address, end, rule in rows:
        row = table.row(address)
        if row is None:
            undecoded.add(end)
            continue
        cfa = rule["CFA"]
        if cfa == "exp":
            assert row.cfa_kind in (CFA_PLT, CFA_EXPRESSION), (hex(address), rule, row)
        elif not cfa.startswith(("rsp+", "rbp+")):  # rdi+0 in setcontext: unsupported, stops there
            assert row.cfa_kind == CFA_EXPRESSION, (hex(address), rule, row)
            continue  # the other columns are never used
        else:
            register, offset = re.fullmatch(r"(rsp|rbp)\+(\d+)", cfa).groups()
            assert (row.cfa_kind, row.cfa_offset) == ({"rsp": CFA_RSP, "rbp": CFA_RBP}[register], int(offset)), (
                hex(address),
                rule,
                row,
            )
        rbp = rule.get("rbp", "u")
        if re.fullmatch(r"c[+-]\d+", rbp):
            assert (row.rbp_kind, row.rbp_offset) == (RBP_AT_CFA, int(rbp[1:])), (hex(address), rule, row)
        elif rbp == "u":
            assert row.rbp_kind in (RBP_SAME, RBP_UNKNOWN), (hex(address), rule, row)
        else:  # an expression or another register: rbp is unknown from there on
            assert row.rbp_kind == RBP_UNKNOWN, (hex(address), rule, row)
        ra = rule["ra"]
        if ra == "u":
            assert row.ra_kind == RA_UNDEFINED, (hex(address), rule, row)
        elif re.fullmatch(r"c[+-]\d+", ra):
            assert (row.ra_kind, row.ra_offset) == (RA_AT_CFA, int(ra[1:])), (hex(address), rule, row)
        else:
            assert row.ra_kind == RA_UNSUPPORTED, (hex(address), rule, row)
        if end > address + 1:
            assert table.row(end - 1) is not None  # the FDE covers up to its end
    assert len(undecoded) <= table.unsupported, sorted(map(hex, undecoded))[:10]
    return len(undecoded)


@pytest.fixture(scope="module")
def ratio_nofp(tmp_path_factory):
    return compile_c("ratio.c", tmp_path_factory.mktemp("unwind"), NO_FRAME_POINTERS, "ratio_nofp")


def test_tables_match_readelf_for_a_program_and_libc(ratio_nofp):
    for path in (ratio_nofp, LIBC):
        rows = readelf_rows(path)
        assert len(rows) > 10
        with open(path, "rb") as stream:
            indexed = load_unwind_table(stream)
        with open(path, "rb") as stream:
            full = parse_unwind_table(stream)
        assert isinstance(indexed, IndexedUnwindTable) and isinstance(full, UnwindTable)
        assert assert_matches_readelf(indexed, rows) == assert_matches_readelf(full, rows) <= 1


def test_addresses_outside_every_fde_find_no_rule(ratio_nofp):
    with open(ratio_nofp, "rb") as stream:
        table = load_unwind_table(stream)
    covered = [(a, e) for a, e, _ in readelf_rows(ratio_nofp)]
    highest = max(e for _, e in covered)
    assert table.row(highest) is None and table.row(highest + 0x1000) is None
    assert table.row(0) is None


def test_a_binary_without_or_with_corrupt_eh_frame_loads_without_a_crash(ratio_nofp, tmp_path):
    stripped = without_eh_frame(ratio_nofp)
    with open(stripped, "rb") as stream:
        table = load_unwind_table(stream)
    assert len(table) == 0 and table.row(0x1400) is None
    # Garbage in place of .eh_frame (and its index): rules are missing, counted; nothing raises.
    from elftools.elf.elffile import ELFFile

    data = bytearray(ratio_nofp.read_bytes())
    with open(ratio_nofp, "rb") as stream:
        elf = ELFFile(stream)
        sections = [elf.get_section_by_name(n) for n in (".eh_frame", ".eh_frame_hdr")]
        spans = [(s["sh_offset"], s["sh_size"]) for s in sections]
    for number, (offset, size) in enumerate(spans):
        data[offset + 12 * number : offset + size] = bytes((i * 37 + 11) & 0xFF for i in range(size - 12 * number))
    corrupt = tmp_path / "corrupt"
    corrupt.write_bytes(bytes(data))
    with open(corrupt, "rb") as stream:
        table = load_unwind_table(stream)
    for address in range(0x1000, 0x1600, 7):
        table.row(address)  # None or a rule: never an exception
    result = unwind(Registers(0x1400, 0x7000, None), bytes(64), lambda a: (table, a), copy_full=True)
    assert result.addresses[0] == 0x1400 and not result.complete


# -- unwinding hand-built stacks ----------------------------------------------------------------
def synthetic_table(rows: list[tuple[int, int, int, int, int, int, int]]) -> UnwindTable:
    return UnwindTable(*zip(*rows))


def stack_bytes(words: dict[int, int], base: int, size: int) -> bytes:
    out = bytearray(size)
    for address, value in words.items():
        out[address - base : address - base + 8] = value.to_bytes(8, "little")
    return bytes(out)


# Three functions in one "file" mapped at 0x400000 (vaddr = address - 0x400000):
#   leaf   0x1000..0x1100: CFA = rsp + 24, rbp unchanged, RA at CFA - 8
#   middle 0x1100..0x1200: CFA = rsp + 48, rbp saved at CFA - 16, RA at CFA - 8
#   start  0x1200..0x1300: the outermost frame (RA undefined)
TABLE = synthetic_table([
    (0x1000, CFA_RSP, 24, RBP_SAME, 0, RA_AT_CFA, -8),
    (0x1100, CFA_RSP, 48, RBP_AT_CFA, -16, RA_AT_CFA, -8),
    (0x1200, CFA_RSP, 8, RBP_SAME, 0, RA_UNDEFINED, 0),
    (0x1300, END, 0, 0, 0, 0, 0),
])  # fmt: skip
BASE = 0x400000


def locate(address):
    if BASE + 0x1000 <= address < BASE + 0x1300:
        return TABLE, address - BASE
    return None


def test_a_hand_built_stack_unwinds_to_the_outermost_frame():
    sp = 0x7FFF0000
    # leaf's frame: 24 bytes; its return address (into middle) at sp + 16.
    # middle's frame: 48 bytes from sp + 24; saved rbp at its CFA - 16, return address at CFA - 8.
    words = {sp + 16: BASE + 0x1150, sp + 24 + 32: 0xABCD, sp + 24 + 40: BASE + 0x1250}
    stack = stack_bytes(words, sp, 256)
    result = unwind(Registers(BASE + 0x1010, sp, None), stack, locate, copy_full=False)
    assert result.addresses == [BASE + 0x1010, BASE + 0x1150, BASE + 0x1250]
    assert result.reason == OUTERMOST and result.complete


def test_a_stack_deeper_than_the_copy_stops_with_copy_short():
    sp = 0x7FFF0000
    stack = stack_bytes({sp + 16: BASE + 0x1150}, sp, 40)  # middle's RA would be at sp + 64
    result = unwind(Registers(BASE + 0x1010, sp, None), stack, locate, copy_full=True)
    assert result.addresses == [BASE + 0x1010, BASE + 0x1150] and result.reason == COPY_SHORT
    # The same bytes, but the copy ended where the stack's mapping ends: that CFA is bogus.
    short = unwind(Registers(BASE + 0x1010, sp, None), stack, locate, copy_full=False)
    assert short.reason == BAD_CFA and not short.complete


def test_a_return_address_in_no_mapping_is_dropped_not_shown():
    sp = 0x7FFF0000
    stack = stack_bytes({sp + 16: 0xDEAD0000}, sp, 256)
    result = unwind(Registers(BASE + 0x1010, sp, None), stack, locate, copy_full=True)
    assert result.addresses == [BASE + 0x1010] and result.reason == UNMAPPED


def test_a_cfa_below_sp_stops_as_bad_cfa():
    table = synthetic_table([(0x1000, CFA_RSP, -8, RBP_SAME, 0, RA_AT_CFA, -8), (0x1100, END, 0, 0, 0, 0, 0)])
    result = unwind(Registers(BASE + 0x1010, 0x1000, None), bytes(64), lambda a: (table, a - BASE), True)
    assert result.reason == BAD_CFA and result.addresses == [BASE + 0x1010]


def test_rbp_based_cfa_without_a_known_rbp_stops():
    table = synthetic_table([(0x1000, CFA_RBP, 16, RBP_AT_CFA, -16, RA_AT_CFA, -8), (0x1100, END, 0, 0, 0, 0, 0)])
    result = unwind(Registers(BASE + 0x1010, 0x1000, None), bytes(64), lambda a: (table, a - BASE), True)
    assert result.reason == BAD_CFA


def test_frame_pointers_where_there_is_no_cfi_are_never_called_complete():
    sp, bp = 0x7FFF0000, 0x7FFF0040
    # JIT-like code without CFI at 0x900000, called from middle: [bp] = saved rbp, [bp + 8] = RA.
    stack = stack_bytes({bp: 0x7FFF00F0, bp + 8: BASE + 0x1250}, sp, 512)

    def locate_jit(address):
        if 0x900000 <= address < 0x901000:
            return None, 0
        return locate(address)

    result = unwind(Registers(0x900010, sp, bp), stack, locate_jit, copy_full=True)
    assert result.addresses == [0x900010, BASE + 0x1250] and result.reason == OUTERMOST
    assert result.guessed and not result.complete
    # An rbp below sp is no frame pointer: stop, no guess.
    assert unwind(Registers(0x900010, sp, sp - 64), stack, locate_jit, True).reason == NO_CFI


def test_a_gap_between_fdes_has_no_rule():
    result = unwind(Registers(BASE + 0x1300 - 0x1000 + 0x2000, 0x1000, None), bytes(64), locate, True)
    assert result.reason == UNMAPPED  # outside the file entirely
    table = synthetic_table([(0x1000, CFA_RSP, 8, RBP_SAME, 0, RA_AT_CFA, -8), (0x1010, END, 0, 0, 0, 0, 0)])
    gap = unwind(Registers(BASE + 0x1020, 0x1000, None), bytes(64), lambda a: (table, a - BASE), True)
    assert gap.reason == NO_CFI and gap.addresses == [BASE + 0x1020]


def test_the_plt_expression_gives_its_two_cfas():
    # binutils' PLT rule: CFA = rsp + 8, + 8 more from byte 11 of each 16-byte entry on.
    table = synthetic_table([(0x1000, CFA_PLT, 11, RBP_SAME, 0, RA_AT_CFA, -8), (0x1100, END, 0, 0, 0, 0, 0)])
    sp = 0x7FFF0000
    stack = stack_bytes({sp: 0x1111, sp + 8: 0x2222}, sp, 64)
    seen = {}

    def plt(address):
        if address + 1 in (0x1111, 0x2222):  # a caller frame is looked up inside its call
            seen[address + 1] = True
            return None
        return table, address - BASE

    early = unwind(Registers(BASE + 0x1003, sp, None), stack, plt, True)  # (ip & 15) = 3 < 11
    late = unwind(Registers(BASE + 0x100C, sp, None), stack, plt, True)  # 12 >= 11
    assert seen == {0x1111: True, 0x2222: True}
    assert early.reason == late.reason == UNMAPPED


def test_a_recursive_stack_stops_at_the_depth_limit():
    # A function calling itself, 16-byte frames, RA at CFA - 8 pointing back into it.
    table = synthetic_table([(0x1000, CFA_RSP, 16, RBP_SAME, 0, RA_AT_CFA, -8), (0x1100, END, 0, 0, 0, 0, 0)])
    sp = 0x7FFF0000
    words = {sp + 8 + 16 * i: BASE + 0x1050 for i in range(300)}
    result = unwind(
        Registers(BASE + 0x1050, sp, None),
        stack_bytes(words, sp, 16 * 300 + 64),
        lambda a: (table, a - BASE),
        True,
        max_depth=50,
    )
    assert result.reason == TOO_DEEP and len(result.addresses) == 51


def test_a_copy_stripped_of_eh_frame_keeps_its_build_id_but_not_the_tables(ratio_nofp):
    """Tables are shared by build id, but a copy with sections removed keeps the build id: it
    must get its own (empty) table, not the original's rules."""
    import os

    from pxq.agent.symbols.elf import map_file, parse_elf
    from pxq.agent.unwind.cache import unwind_table_for

    stripped = without_eh_frame(ratio_nofp)
    build_id = parse_elf(ratio_nofp.read_bytes()).build_id
    assert build_id and parse_elf(stripped.read_bytes()).build_id == build_id
    tables = []
    for path in (ratio_nofp, stripped):
        fd = os.open(path, os.O_RDONLY)
        try:
            mapped = map_file(fd)
            assert mapped is not None
            tables.append(unwind_table_for(mapped, build_id))
        finally:
            os.close(fd)
    assert len(tables[0]) > 0 and len(tables[1]) == 0
