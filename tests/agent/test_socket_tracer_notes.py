"""The calls whose data waits for their syscall exit leave nothing behind: bpf/socket_trace.c
counts the threads with a call noted in `active` (notes_held), and every syscall exit of the host
that has a program (sys_exit_recvfrom runs for every recvfrom of every process) ends at once while
that count is 0. A note made and never taken would leave it above 0 (every such exit then looks in
task storage again), one taken twice would wrap it: after a real process's UDP recvfrom, recvmsg,
MSG_PEEK and reads that find nothing, a TCP connect and a splice into a socket, the count is 0
again and the data came.

Needs root and bcc (kernel tests).
"""

from __future__ import annotations

import ctypes as ct

import pytest

from pxq.agent.conn_tracker import EV_DATA, EV_OPEN, F_DATAGRAM, INGRESS
from pxq.testing.kernel import require_bpf
from pxq.testing.retry import wait_for
from tests.agent.tracer_events import traced_child

pytestmark = pytest.mark.kernel

CHILD = r"""
import os, socket, sys
receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
receiver.bind(("127.0.0.1", 0))
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
print("READY", flush=True)
sys.stdin.readline()
receiver.settimeout(10)  # a read that should find something fails instead of hanging
sender.sendto(b"datagram one", receiver.getsockname())
assert receiver.recv(100, socket.MSG_PEEK) == b"datagram one"  # noted, then dropped at the exit
assert receiver.recvfrom(100)[0] == b"datagram one"
sender.connect(receiver.getsockname())  # not TCP: remembered as the peer, nothing noted
sender.send(b"datagram two")
assert receiver.recvmsg(100)[0] == b"datagram two"
receiver.setblocking(False)
for read in (lambda: receiver.recv(100), lambda: receiver.recvmsg(100)):
    try:  # nothing there (EAGAIN): nothing noted, no event
        read()
        raise AssertionError("a datagram nobody sent")
    except BlockingIOError:
        pass
client = socket.create_connection(listener.getsockname())  # TCP connect: noted at SYN_SENT
server, _ = listener.accept()
read_end, write_end = os.pipe()
request = b"GET /spliced HTTP/1.1\r\nHost: t\r\n\r\n"
os.write(write_end, request)
assert os.splice(read_end, client.fileno(), 64) == len(request)  # splice into a socket: noted
assert server.recv(100).startswith(b"GET /spliced")
for s in (client, server, sender, receiver, listener):
    s.close()
print("DONE", flush=True)
"""


def test_every_call_noted_for_its_exit_is_taken_there():
    require_bpf()
    with traced_child(CHILD) as (child, tracer, seen):
        assert child.stdout.readline().strip() == "DONE"
        child.wait(timeout=30)

        def datagrams_received() -> list[bytes]:
            tracer.poll(0)
            return [e.data for e in seen if e.kind == EV_DATA and e.flags & F_DATAGRAM and e.direction == INGRESS]

        wait_for(lambda: len(datagrams_received()) >= 2, 30, "the received datagrams' events")
        received = datagrams_received()
        notes_held = tracer._bpf[b"notes_held"][ct.c_int(0)].value
    assert child.returncode == 0
    assert received == [b"datagram one", b"datagram two"]  # recvfrom's, recvmsg's (the peek sent none)
    assert any(e.kind == EV_OPEN and e.pid == child.pid for e in seen)  # the TCP connect's (and accept's)
    assert notes_held == 0
