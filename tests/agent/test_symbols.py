"""Symbolization in user space (pxq.agent.symbols): maps parsing, frame text, kallsyms lookup, ELF
symbol tables, and snapshots that keep resolving after the process exited. No eBPF needed: the
addresses come from real processes (the test program prints its own function addresses)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pxq.agent.symbols import (
    ElfInfo,
    KernelSymbols,
    Mapping,
    ProcessMaps,
    Symbolizer,
    UserFrame,
    demangle,
    module_offset,
    parse_elf,
    parse_kallsyms,
    parse_maps,
    parse_perf_map,
    read_elf_file,
    stack_is_truncated,
)
from pxq.testing.retry import wait_for
from tests.agent.programs.build import FRAME_POINTERS, compile_c, running

MAPS = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1311 /usr/bin/spin
55d0c0a01000-55d0c0a02000 r-xp 00001000 fd:01 1311 /usr/bin/spin
55d0c1f6b000-55d0c1f8c000 rw-p 00000000 00:00 0                          [heap]
7f3a10000000-7f3a10021000 rw-p 00000000 00:00 0
7f3a12026000-7f3a1217b000 r-xp 00026000 fd:01 2242 /usr/lib/x86_64-linux-gnu/libc.so.6
7f3a13000000-7f3a13001000 r-xp 00000000 fd:01 99 /tmp/old lib.so (deleted)
7f3a14000000-7f3a14002000 r-xp 00000000 00:00 0 [anon:v8 jit]
7ffd6b9e4000-7ffd6b9e6000 r-xp 00000000 00:00 0                          [vdso]
garbage line
"""

KALLSYMS = b"""\
ffffffff81000000 T _stext
ffffffff81001000 t do_one_initcall
ffffffff81002000 D some_data
ffffffff81003000 T do_syscall_64
ffffffff81003400 W __x64_sys_getppid
ffffffffc0001000 t ext4_fill_super\t[ext4]
ffffffffc0000000 t jbd2_journal_start\t[jbd2]
"""


# -- maps and frame text ------------------------------------------------------------------------
def test_parse_maps_fields_and_modules():
    maps = parse_maps(MAPS)
    assert len(maps) == 8  # the garbage line is skipped
    exe = maps[1]
    assert (exe.start, exe.end, exe.perms, exe.offset, exe.dev, exe.inode) == (
        0x55D0C0A01000,
        0x55D0C0A02000,
        "r-xp",
        0x1000,
        "fd:01",
        1311,
    )
    assert exe.executable and exe.is_file and exe.module == "spin"
    assert [m.module for m in maps] == [
        "spin",
        "spin",
        "[heap]",
        "[anon]",
        "libc.so.6",
        "old lib.so",
        "[anon:v8 jit]",
        "[vdso]",
    ]
    assert not maps[2].executable and not maps[2].is_file
    assert [m.start for m in maps] == sorted(m.start for m in maps)


def test_module_offset_text():
    assert module_offset("libc.so.6", 0x2A1B4) == "libc.so.6+0x2a1b4"
    assert module_offset("[anon]", 0) == "[anon]+0x0"


def test_addresses_without_symbols_are_never_bare_hex():
    maps = parse_maps(MAPS)
    snap = ProcessMaps(1, 1, "spin", "/usr/bin/spin", maps, files={})
    resolve = Symbolizer._resolve
    assert resolve(snap, 0x7F3A10000040).text == "[anon]+0x40"
    assert resolve(snap, 0x55D0C1F6B010).text == "[heap]+0x10"
    assert resolve(snap, 0x7F3A14000123).text == "[anon:v8 jit]+0x123"
    outside = resolve(snap, 0x1234)
    assert outside.text == "[unknown]" and not outside.mapped


def test_perf_map_names_jit_code():
    jit = parse_perf_map("7f3a14000100 40 py::leaf:/app/x.py\n7f3a14000000 100 LazyCompile:foo\nbad\n")
    assert jit == [(0x7F3A14000000, 0x100, "LazyCompile:foo"), (0x7F3A14000100, 0x40, "py::leaf:/app/x.py")]
    snap = ProcessMaps(1, 1, "node", "/usr/bin/node", parse_maps(MAPS), files={}, jit=jit)
    assert Symbolizer._resolve(snap, 0x7F3A14000010).text == "LazyCompile:foo"
    assert Symbolizer._resolve(snap, 0x7F3A14000120).text == "py::leaf:/app/x.py"
    assert Symbolizer._resolve(snap, 0x7F3A14001000).text == "[anon:v8 jit]+0x1000"


# -- kernel symbols -----------------------------------------------------------------------------
def test_kallsyms_lookup():
    table = parse_kallsyms(KALLSYMS)
    names = [table.name_at(i) for i in range(len(table))]
    assert names == [
        "_stext",
        "do_one_initcall",
        "do_syscall_64",
        "__x64_sys_getppid",
        "jbd2_journal_start",
        "ext4_fill_super",
    ]  # data symbols left out, sorted by address
    assert table.lookup(0xFFFFFFFF81003000) == ("do_syscall_64", 0)
    assert table.lookup(0xFFFFFFFF810030FF) == ("do_syscall_64", 0xFF)
    assert table.lookup(0xFFFFFFFF81003401) == ("__x64_sys_getppid", 1)
    assert table.lookup(0xFFFFFFFFC0001010) == ("ext4_fill_super", 0x10)  # module symbol, name without [ext4]
    assert table.lookup(0xFFFFFFFF80000000) is None
    kernel = KernelSymbols(data=KALLSYMS)
    assert kernel.frame(0xFFFFFFFF81003010) == "do_syscall_64_[k]"
    assert kernel.frame(0x10) == "[unknown]_[k]"


def test_kallsyms_with_hidden_addresses_is_empty():
    assert len(parse_kallsyms(b"0000000000000000 T _stext\n0000000000000000 T do_syscall_64\n")) == 0


def test_real_kallsyms_names_a_syscall_entry():
    text = Path("/proc/kallsyms").read_bytes()
    kernel = KernelSymbols(data=text)
    if not len(kernel.table):
        pytest.skip("/proc/kallsyms shows no addresses here (kptr_restrict, or not root)")
    for line in text.decode().splitlines():
        address, kind, name = line.split()[:3]
        if name == "do_syscall_64" and kind in "tT":
            assert kernel.name(int(address, 16) + 3) == "do_syscall_64"
            break
    else:
        pytest.fail("no do_syscall_64 in /proc/kallsyms")


# -- ELF ----------------------------------------------------------------------------------------
def test_segment_translation():
    info = ElfInfo(segments=[(0, 0, 0x500), (0x1000, 0x401000, 0x800)])
    assert info.vaddr(0x1010) == 0x401010
    assert info.vaddr(0x100) == 0x100
    assert info.vaddr(0x9000) == 0x9000  # in no segment: the file offset itself


def test_parse_elf_rejects_non_elf():
    assert parse_elf(b"#!/bin/sh\necho hello\n" + bytes(64)) is None


def _nm(path: Path) -> dict[str, int]:
    out = subprocess.run(["nm", str(path)], capture_output=True, text=True, check=True).stdout
    return {parts[2]: int(parts[0], 16) for parts in (line.split() for line in out.splitlines()) if len(parts) == 3}


def test_elf_symbols_match_nm(tmp_path):
    binary = compile_c("spin.c", tmp_path, FRAME_POINTERS)
    info = read_elf_file(binary)
    assert info is not None and info.has_symtab and len(info.build_id) == 40
    nm = _nm(binary)
    for name in ("main", "outer_loop", "spin_leaf"):
        assert info.symbols.lookup(nm[name]) == (name, 0)
        assert info.symbols.lookup(nm[name] + 3) == (name, 3)


def test_libc_symbols_come_from_its_debug_file_when_installed():
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    if not libc.exists():
        pytest.skip("no glibc at /lib/x86_64-linux-gnu")
    info = read_elf_file(libc)
    assert info is not None and len(info.symbols) > 1000
    debug = Path("/usr/lib/debug/.build-id") / info.build_id[:2] / f"{info.build_id[2:]}.debug"
    if debug.exists():  # libc6-dbg: local functions such as __libc_start_call_main are named
        assert info.has_symtab
        names = {info.symbols.name_at(i) for i in range(len(info.symbols))}
        assert {"__libc_start_call_main", "start_thread", "clone3"} <= names


def test_demangle():
    assert (
        demangle("_ZNSt6vectorIiSaIiEE9push_backERKi")
        == "std::vector<int, std::allocator<int> >::push_back(int const&)"
    )
    assert demangle("main") == "main"
    assert demangle("_Znot_valid") == "_Znot_valid"


# -- live processes -----------------------------------------------------------------------------
def _addresses(line: str) -> dict[str, int]:
    words = line.split()
    assert words[0] == "ready", line
    return dict(zip(("main", "outer_loop", "spin_leaf"), (int(w, 16) for w in words[1:4])))


def _spin(binary: Path):
    proc = subprocess.Popen([str(binary), "60"], stdout=subprocess.PIPE, text=True)
    return proc, _addresses(proc.stdout.readline())


def test_symbols_resolve_after_the_process_exited(tmp_path):
    binary = compile_c("spin.c", tmp_path, FRAME_POINTERS)
    proc, where = _spin(binary)
    symbolizer = Symbolizer()
    try:
        assert symbolizer.snapshot(proc.pid) is not None
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert not Path(f"/proc/{proc.pid}").exists()
    assert not symbolizer.is_current(proc.pid)
    leaf_first = [where["spin_leaf"] + 5, where["outer_loop"] + 9, where["main"] + 2]
    frames, truncated = symbolizer.user_stack(proc.pid, leaf_first)
    assert frames == ["main", "outer_loop", "spin_leaf"]
    assert truncated  # main is not an entry point: the frames below it are missing
    symbolizer.close()


def test_deleted_binary_still_resolves_through_map_files(tmp_path):
    binary = compile_c("spin.c", tmp_path, FRAME_POINTERS, name="spin_deleted")
    proc, where = _spin(binary)
    try:
        binary.unlink()
        symbolizer = Symbolizer()
        snap = symbolizer.snapshot(proc.pid)
        assert any(m.path.endswith("spin_deleted (deleted)") for m in snap.mappings)
        frames, _ = symbolizer.user_stack(proc.pid, [where["spin_leaf"]])
        assert frames == ["spin_leaf"]
        symbolizer.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_stripped_binary_frames_are_module_plus_elf_address(tmp_path):
    binary = compile_c("spin.c", tmp_path, FRAME_POINTERS)
    vaddr = _nm(binary)["spin_leaf"]
    stripped = tmp_path / "spin_stripped"
    shutil.copy(binary, stripped)
    subprocess.run(["strip", "--strip-all", str(stripped)], check=True)
    proc, where = _spin(stripped)
    try:
        symbolizer = Symbolizer()
        symbolizer.snapshot(proc.pid)
        frames, truncated = symbolizer.user_stack(proc.pid, [where["spin_leaf"] + 4])
        # The ELF address (what nm and addr2line take), not the run-time one.
        assert frames == [f"spin_stripped+0x{vaddr + 4:x}"]
        assert truncated
        symbolizer.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_vdso_frames_are_named():
    symbolizer = Symbolizer()
    snap = symbolizer.snapshot(os.getpid())
    vdso = next((m for m in snap.mappings if m.path == "[vdso]"), None)
    if vdso is None:
        pytest.skip("no vDSO mapped here")
    info = symbolizer._vdso_file().info()
    names = {info.symbols.name_at(i): int(info.symbols.addresses[i]) for i in range(len(info.symbols))}
    assert "__vdso_clock_gettime" in names
    frame = Symbolizer._resolve(snap, vdso.start + names["__vdso_clock_gettime"] + 1)
    assert frame.text == "__vdso_clock_gettime"
    symbolizer.close()


def _exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:  # mid-exec or gone
        return ""


def test_python_detection():
    symbolizer = Symbolizer()
    assert symbolizer.snapshot(os.getpid()).is_python
    with running(["sh", "-c", "echo ready; exec sleep 60"]) as proc:
        # "ready" comes before the exec: snapshot sleep itself, not sh mid-exec (maps empty then).
        wait_for(lambda: _exe_name(proc.pid) == "sleep", 30, "sh to exec sleep")
        snap = symbolizer.snapshot(proc.pid)
        assert snap is not None and not snap.is_python
    symbolizer.close()


# -- truncation ---------------------------------------------------------------------------------
def _frames(*names: str | None, mapped: bool = True) -> list[UserFrame]:
    return [UserFrame(n or "libc.so.6+0x10", n, mapped) for n in names]


@pytest.mark.parametrize(
    ("frames", "truncated"),
    [
        (_frames("__libc_start_call_main", "main", "outer_loop", "spin_leaf"), False),
        (_frames("_start", "__libc_start_main", "main"), False),
        (_frames("clone3", "start_thread", "worker"), False),
        (_frames("runtime.goexit.abi0", "main.main"), False),
        (_frames("spin_leaf"), True),  # one frame: no frame pointers
        (_frames(None, "spin_leaf"), True),  # outermost frame without a symbol
        (_frames("main", "outer_loop"), True),
        (_frames("__libc_start_call_main", "main", mapped=False), True),  # ran through unmapped memory
        ([], False),  # no user stack at all (a kernel thread)
    ],
)
def test_stack_is_truncated(frames, truncated):
    assert stack_is_truncated(frames) is truncated


def test_mapping_is_a_value():
    m = Mapping(1, 2, "r-xp", 0, "00:00", 0, "")
    assert m.module == "[anon]" and not m.is_file
