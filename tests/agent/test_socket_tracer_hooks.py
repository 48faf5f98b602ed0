"""Where the socket tracer's programs run: on socket calls, never on every syscall of the host.

Up to 2026-12-07 the tracer hooked the raw sys_enter/sys_exit tracepoints, so two of its programs
ran on every syscall of every process (bench phase 5b: +177 ns on a getppid). The BPF programs'
own run counts (BPF_ENABLE_STATS, run_cnt in the program fd's fdinfo) say how often each ran.

Needs root and bcc (kernel tests).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pxq.agent.socket_tracer import SocketTracer
from pxq.testing.kernel import require_bpf

pytestmark = pytest.mark.kernel

SYS_BPF = 321  # x86-64
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
CALLS = 1_000_000


@contextlib.contextmanager
def _bpf_stats():
    """Programs' run counts counted while the block runs (the BPF_ENABLE_STATS fd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(BPF_STATS_RUN_TIME.to_bytes(4, "little"), 128)
    fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, attr, 128)
    assert fd >= 0, f"BPF_ENABLE_STATS refused: {os.strerror(ctypes.get_errno())}"
    try:
        yield
    finally:
        os.close(fd)


def _run_counts(tracer: SocketTracer) -> dict[str, int]:
    counts = {}
    for name, fn in tracer._bpf.funcs.items():  # every program the tracer loaded, by function name
        info = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        counts[name.decode()] = int(fields.get("run_cnt", "0").strip())
    return counts


def test_no_program_runs_for_each_syscall_that_is_no_sockets():
    """A child makes a million getppid() calls (and a few others) while the tracer is attached
    for it: no program of the tracer ran anywhere near a million times. Other processes' socket
    calls meanwhile (other tests on the host) run the sock programs too, hence the margin; the
    raw sys_enter program ran at least once per call of the host."""
    require_bpf()
    child = subprocess.Popen(
        [sys.executable, "-c", f"import os, sys\nsys.stdin.readline()\nfor _ in range({CALLS}): os.getppid()"],
        stdin=subprocess.PIPE,
    )
    try:
        with _bpf_stats():
            tracer = SocketTracer(pids=[child.pid]).start()
            try:
                before = _run_counts(tracer)
                child.communicate(b"go\n", timeout=120)
                after = _run_counts(tracer)
            finally:
                tracer.stop()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    ran = {name: after[name] - before.get(name, 0) for name in after}
    assert ran, "no programs found"
    assert all(n < CALLS // 2 for n in ran.values()), ran
