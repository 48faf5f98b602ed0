"""Shared helpers of the Python frame tests: the installed CPythons and a running python_chain.py whose
threads have reported their own stacks and are blocked at the synchronisation point."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

PYENV = Path("/root/.pyenv/versions")
VERSIONS = ["3.8.18", "3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0"]
# Debian's python3.11: a static interpreter (no libpython) stripped of .symtab, exporting its symbols in .dynsym.
SYSTEM_STATIC = "system-3.11"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
CHAIN_SCRIPT = Path(__file__).parent / "data" / "python_chain.py"
SYSCALL_READ = 0  # x86-64


def missing(reason: str) -> None:
    """A prerequisite is missing: in CI a failure with the reason (tools/setup.sh installs gdb, and the
    machine's pyenv holds the CPythons), elsewhere a skip that says it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI runs every Python frame test)", pytrace=False)
    pytest.skip(reason)


def interpreter(version: str) -> str:
    path = SYSTEM_PYTHON if version == SYSTEM_STATIC else PYENV / version / "bin" / "python"
    if not path.exists():
        missing(f"CPython {version} is not installed under {PYENV}")
    return str(path)


@dataclass
class ChainTarget:
    process: subprocess.Popen[bytes]
    reports: dict[int, list[tuple[str, str, int]]]  # tid -> (qualname, filename, line), innermost first

    @property
    def pid(self) -> int:
        return self.process.pid


def _blocked_in_read(pid: int, tid: int) -> bool:
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as handle:
            return handle.read().split()[0] == str(SYSCALL_READ)
    except (OSError, IndexError):
        return False


def wait_for_reports(process: subprocess.Popen[bytes], timeout: float = 20.0) -> ChainTarget:
    """The two threads' reports, once both threads are blocked in os.read at the sync point."""
    assert process.stdout is not None
    reports = {}
    for _ in range(2):
        record = json.loads(process.stdout.readline())
        reports[record["tid"]] = [tuple(frame) for frame in record["frames"]]
    deadline = time.monotonic() + timeout
    while not all(_blocked_in_read(process.pid, tid) for tid in reports):
        assert time.monotonic() < deadline, "the target's threads never blocked at the sync point"
        time.sleep(0.01)
    return ChainTarget(process, reports)


@contextmanager
def chain_target(version: str, timeout: float = 20.0, env: dict[str, str] | None = None) -> Iterator[ChainTarget]:
    """python_chain.py running under one CPython, both threads reported and blocked in os.read."""
    with chain_process(version, env=env) as process:
        yield wait_for_reports(process, timeout)


@contextmanager
def held_chain_process(version: str) -> Iterator[subprocess.Popen[bytes]]:
    """python_chain.py --hold: both threads exist and wait before the chain; write one byte to stdin to
    let them run it, then wait_for_reports."""
    with chain_process(version, "--hold") as process:
        assert process.stdout is not None
        assert process.stdout.readline() == b"held\n"
        yield process


@contextmanager
def chain_process(
    version: str, *arguments: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [interpreter(version), str(CHAIN_SCRIPT), *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.write(b"xx")  # the hold and the sync point, whichever remain
                process.stdin.close()
                process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                os.kill(process.pid, 9)
                process.wait()
