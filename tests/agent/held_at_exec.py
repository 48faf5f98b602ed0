"""A program held by the kernel right after its exec, before its dynamic loader has mapped a library: how a
profiler meets a Python at the start of its life (between exec and the loader mapping libpython). Built on
programs/exec_when_told.c, which spins (so that a profiler samples it) until told, then asks to be traced
(PTRACE_TRACEME) and execs: the kernel stops the new program with SIGTRAP after the exec."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.agent.programs.build import compile_c, read_line

PTRACE_DETACH = 17
_libc = ctypes.CDLL(None, use_errno=True)


def build_launcher(out_dir: Path) -> Path:
    return compile_c("exec_when_told.c", out_dir, ("-O2",))


@contextmanager
def launched(launcher: Path, argv: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """The launcher spinning (it printed ``ready``), argv not exec'd yet; killed at the end."""
    process = subprocess.Popen(
        [str(launcher), *map(str, argv)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert read_line(process).strip() == "ready"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def exec_and_hold(process: subprocess.Popen[str]) -> None:
    """Let the launcher exec; returns once the kernel holds the new program (stopped after its exec)."""
    assert process.stdin is not None
    process.stdin.write("go\n")
    process.stdin.flush()
    _, status = os.waitpid(process.pid, 0)  # this process is the tracer: the stop is reported here
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP, status


def release(process: subprocess.Popen[str]) -> None:
    """Let the held program run on (untraced)."""
    if _libc.ptrace(PTRACE_DETACH, process.pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), f"PTRACE_DETACH of {process.pid} failed")


def mapped_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as handle:
        return {line.split(None, 5)[5].strip() for line in handle if len(line.split(None, 5)) == 6}
