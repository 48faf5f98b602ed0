"""bcc on the running kernel: compile, load and attach a tracepoint program, and read real events.

Needs root. Fails (never skips silently) when eBPF is unavailable, unless PXQ_ALLOW_NO_BPF=1.
"""

from __future__ import annotations

import ctypes as ct
import subprocess
import sys
import time

import pytest

from pxq.testing.kernel import require_bpf

pytestmark = pytest.mark.kernel

MAX_DATA = 64

# One event per write(2) by the target process: the fd, the byte count, and the first bytes,
# read from user memory through the tracepoint's own arguments (no kernel struct reads: the
# headers bcc compiles with are older than this kernel).
PROGRAM = r"""
struct event_t {
    u32 pid;
    u32 fd;
    u64 count;
    u32 len;
    char data[MAX_DATA];
};
BPF_RINGBUF_OUTPUT(events, 16);

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != TARGET_PID)
        return 0;
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e)
        return 0;
    e->pid = pid;
    e->fd = args->fd;
    e->count = args->count;
    u32 n = args->count < MAX_DATA ? args->count : MAX_DATA;
    e->len = bpf_probe_read_user(e->data, n, (void *)args->buf) == 0 ? n : 0;
    events.ringbuf_submit(e, 0);
    return 0;
}
"""


class Event(ct.Structure):
    _fields_ = [
        ("pid", ct.c_uint32),
        ("fd", ct.c_uint32),
        ("count", ct.c_uint64),
        ("len", ct.c_uint32),
        ("data", ct.c_char * MAX_DATA),
    ]


MARKER = b"pxq-bcc-smoke: hello from the child\n"

# The child waits for a line on stdin (sent once the probe is attached), writes the marker to
# /dev/null and exits.
CHILD = (
    "import os, sys\n"
    "sys.stdin.readline()\n"
    "fd = os.open('/dev/null', os.O_WRONLY)\n"
    f"os.write(fd, {MARKER!r})\n"
    "os.close(fd)\n"
)


def test_tracepoint_ringbuf_sees_a_child_process_write():
    require_bpf()
    from bcc import BPF

    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE)
    b = None
    try:
        b = BPF(text=PROGRAM.encode(), cflags=[f"-DTARGET_PID={child.pid}", f"-DMAX_DATA={MAX_DATA}"])
        seen: list[tuple[int, int, int, bytes]] = []

        def on_event(_ctx, data, _size):
            e = ct.cast(data, ct.POINTER(Event)).contents
            raw = ct.string_at(ct.addressof(e) + Event.data.offset, e.len)
            seen.append((e.pid, e.fd, e.count, raw))

        b[b"events"].open_ring_buffer(on_event)
        child.stdin.write(b"go\n")
        child.stdin.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(MARKER in ev[3] for ev in seen):
            b.ring_buffer_poll(100)
        assert child.wait(timeout=10) == 0
        b.ring_buffer_consume()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if b is not None:
            b.cleanup()

    hits = [ev for ev in seen if ev[3] == MARKER]
    assert hits, f"the marker write never arrived; events seen: {seen!r}"
    pid, fd, count, _ = hits[0]
    assert pid == child.pid and count == len(MARKER) and fd > 2
    assert all(ev[0] == child.pid for ev in seen)  # the in-kernel pid filter held
