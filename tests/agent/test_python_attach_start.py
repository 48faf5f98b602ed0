"""Attaching to a CPython met at the start of its life, and to processes that only look like Pythons.

A profiler meets new processes at their exec (or first sample), possibly before the dynamic loader has mapped
libpython: that process is "starting" (python_starting, tried again), not "no CPython here" (python_not_found,
final: it went to py-spy). Expected values: the interpreter's own frames and sys.version_info (reported by the
target itself), readelf's view of an executable, never pxq's own output.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pxq.agent.proc_maps import parse_maps
from pxq.agent.python.elf_symbols import read_interpreter_elf
from pxq.agent.python.process import PythonAttachError, attach
from pxq.agent.python.resolver import PythonStacks
from pxq.agent.symbols.proc import ProcessMaps
from tests.agent.held_at_exec import build_launcher, exec_and_hold, launched, mapped_files, release
from tests.agent.python_targets import (
    CHAIN_SCRIPT,
    PYENV,
    SYSTEM_STATIC,
    VERSIONS,
    interpreter,
    missing,
    wait_for_reports,
)

PYTHON_STARTING = "python_starting"  # the reason's name, as counters and warnings show it
# Each pyenv CPython the walker reads (shared libpython), and the project's venv python (a symlink to one).
STARTING = [*VERSIONS, "venv"]


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> Path:
    return build_launcher(tmp_path_factory.mktemp("launcher"))


def python_path(version: str) -> str:
    return sys.executable if version == "venv" else interpreter(version)


def walked(process, tid: int) -> list[tuple[str, str, int | None] | None]:
    return [(frame.qualname, frame.filename, frame.line) if frame else None for frame in process.stacks()[tid]]


@pytest.mark.parametrize("version", STARTING)
def test_a_python_held_before_its_loader_ran_is_starting_then_read(launcher: Path, version: str) -> None:
    with launched(launcher, [python_path(version), CHAIN_SCRIPT]) as held:
        exec_and_hold(held)
        assert not any("libpython" in path for path in mapped_files(held.pid))  # the state the profiler met
        with pytest.raises(PythonAttachError) as caught:
            attach(held.pid)
        assert caught.value.reason == PYTHON_STARTING, caught.value
        stacks = PythonStacks()
        assert stacks.bpf_config(held.pid) is None and stacks.why_not(held.pid) == PYTHON_STARTING
        assert not stacks.retry(held.pid)  # still held: the same reason, counted once
        release(held)
        target = wait_for_reports(held)  # type: ignore[arg-type]  # JSON lines: text works as well
        assert stacks.retry(held.pid) and stacks.why_not(held.pid) is None
        assert stacks.counts()[PYTHON_STARTING] == 1
        process = attach(held.pid)
        try:
            for tid, expected in target.reports.items():
                assert walked(process, tid) == expected
        finally:
            process.close()
            stacks.close()


def test_a_static_python_held_before_it_ran_attaches_with_no_threads_yet(launcher: Path) -> None:
    """Debian's python3.11 has its interpreter in the executable: attachable at once, its thread list empty
    until the interpreter initialises (the profiler re-reads it when an unknown thread is sampled)."""
    with launched(launcher, [interpreter(SYSTEM_STATIC), CHAIN_SCRIPT]) as held:
        exec_and_hold(held)
        process = attach(held.pid)
        try:
            assert process.thread_states() == []
            release(held)
            target = wait_for_reports(held)  # type: ignore[arg-type]
            for tid, expected in target.reports.items():
                assert walked(process, tid) == expected
        finally:
            process.close()


@pytest.mark.parametrize(
    ("python", "other"),
    [
        # The case met live: a busy pytest on the venv's 3.11.7 whose profiler tests had pxq's symbolizer map
        # CPython 3.7's libpython read-only: attached as "version 3.7", it was handed to py-spy.
        ("venv", "3.7.16/lib/libpython3.7m.so.1.0"),
        (SYSTEM_STATIC, "3.12.1/lib/libpython3.12.so.1.0"),
    ],
)
def test_a_libpython_mapped_only_for_reading_is_not_the_interpreter(python: str, other: str) -> None:
    """pxq's symbolizer and py-spy map ELF files read-only to parse them. A Python process that maps another
    version's libpython that way runs its own interpreter: the one attach must read (its version, its
    frames), whatever the address order of the mappings."""
    library = PYENV / other
    if not library.exists():
        missing(f"{library} is not installed")
    code = (
        "import mmap, sys\n"
        f"f = open({str(library)!r}, 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
        "print(list(sys.version_info[:2]), flush=True); sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [python_path(python), "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        own_version = tuple(json.loads(process.stdout.readline()))
        assert str(library) in mapped_files(process.pid)
        attached = attach(process.pid)
        try:
            assert attached.layout.version == own_version
            assert "libpython" not in attached.binary or f"{own_version[0]}.{own_version[1]}" in attached.binary
        finally:
            attached.close()
    finally:
        process.kill()
        process.wait()


def test_a_read_only_libpython_does_not_make_a_process_python() -> None:
    maps = (
        "55d0c0a00000-55d0c0a10000 r-xp 00000000 08:01 100 /usr/bin/py-spy\n"
        "7f0000000000-7f0000400000 r--p 00000000 08:01 200 /usr/lib/libpython3.11.so.1.0\n"
    )
    spy = ProcessMaps(1, 1, "py-spy", "/usr/bin/py-spy", parse_maps(maps), files={}, jit=[])
    assert not spy.is_python
    running = maps.replace("r--p 00000000 08:01 200", "r-xp 00000000 08:01 200")
    embedding = ProcessMaps(1, 1, "app", "/usr/bin/app", parse_maps(running), files={}, jit=[])
    assert embedding.is_python


@pytest.mark.parametrize("binary", [str(PYENV / "3.11.7" / "bin" / "python3.11"), "/usr/bin/python3.11"])
def test_needed_libraries_are_readelfs(binary: str) -> None:
    readelf = shutil.which("readelf")
    if readelf is None or not Path(binary).exists():
        missing("readelf or the interpreter is missing")
    dynamic = subprocess.run([readelf, "-d", binary], capture_output=True, text=True, check=True).stdout
    expected = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    assert read_interpreter_elf(binary, frozenset()).needed == expected
