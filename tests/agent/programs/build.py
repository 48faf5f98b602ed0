"""Build and run the profiler's test programs (C sources beside this file, compiled with gcc)."""

from __future__ import annotations

import contextlib
import select
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
FRAME_POINTERS = ("-O2", "-fno-omit-frame-pointer")
NO_FRAME_POINTERS = ("-O2", "-fomit-frame-pointer")
BUSY_PY = HERE / "busy.py"


def compile_c(source: str, out_dir: Path, flags: tuple[str, ...], name: str | None = None) -> Path:
    """``gcc FLAGS -o OUT_DIR/NAME HERE/SOURCE``; fails the test with gcc's message if gcc fails."""
    import pytest

    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.fail("the profiler tests compile C programs: install gcc", pytrace=False)
    out = out_dir / (name or Path(source).stem)
    done = subprocess.run([gcc, *flags, "-o", str(out), str(HERE / source)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"gcc failed for {source}: {done.stderr}", pytrace=False)
    return out


def without_eh_frame(binary: Path) -> Path:
    """A copy of ``binary`` with its call-frame information removed (``.eh_frame``,
    ``.eh_frame_hdr``): the unwinder then has no rule for its code."""
    import pytest

    objcopy = shutil.which("objcopy")
    if objcopy is None:
        pytest.fail("the profiler tests need objcopy (binutils)", pytrace=False)
    out = binary.with_name(binary.name + "_no_eh_frame")
    done = subprocess.run(
        [objcopy, "--remove-section", ".eh_frame", "--remove-section", ".eh_frame_hdr", str(binary), str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"objcopy failed for {binary}: {done.stderr}", pytrace=False)
    return out


def read_line(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"{proc.args} said nothing for {timeout}s")
    return proc.stdout.readline()


@contextlib.contextmanager
def running(argv: list[str]):
    """A child process that has printed its first line (it is running its workload), killed at the end."""
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        read_line(proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def python_busy(seconds: float) -> list[str]:
    return [sys.executable, str(BUSY_PY), str(seconds)]


def marked_line(path: Path, marker: str) -> int:
    """The 1-based number of the line of ``path`` holding ``# MARKER``."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if f"# {marker}" in line:
            return number
    raise AssertionError(f"no '# {marker}' in {path}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far, in seconds."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
