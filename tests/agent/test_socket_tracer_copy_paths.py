"""The kernel's copy paths, byte for byte: a real process writes HTTP requests over loopback TCP
with writev() of 1 to 6 iovecs (empty ones among them) and reads them with readv() or recv(),
and the data events the tracer reads from its ring buffer hold exactly the bytes the process
wrote and read, one event per call up to MAX_DATA bytes.

The calls take different paths in bpf/socket_trace.c: one buffer (write/recv), a few iovecs whose
bytes fit one event (copied without the walk), more iovecs or more bytes than one event (the walk).
Sizes sit on each side of the limits: FEW_IOV iovecs, MAX_DATA bytes.

Needs root and bcc (kernel tests).
"""

from __future__ import annotations

import json
import random

import pytest

from pxq.agent.bpf_program import header_constants
from pxq.agent.conn_tracker import EGRESS, EV_DATA, F_FILLER, INGRESS
from pxq.testing.kernel import require_bpf
from pxq.testing.retry import wait_for
from tests.agent.tracer_events import traced_child

pytestmark = pytest.mark.kernel

_H = header_constants("socket_trace.h")
SYS_WRITE, SYS_WRITEV = _H["PXQ_SYS_WRITE"], _H["PXQ_SYS_WRITEV"]
SYS_READV, SYS_RECVFROM = _H["PXQ_SYS_READV"], _H["PXQ_SYS_RECVFROM"]
MAX_DATA = 16384  # SocketTracerOptions' default: bytes per event
FEW_IOV = 4  # bpf/socket_trace.c: iovecs copied without the walk

# One process: a client socket writes each request with one writev() of the given iovec lengths
# (or write() for a single buffer: "write"), and the accepted socket reads it all back (readv()
# into three buffers, or recv()), before the next. It prints what each call moved, as it saw it.
CHILD = r"""
import json, os, socket, sys
plan = json.loads(sys.stdin.readline())
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
for s in (client, server):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("READY", flush=True)
sys.stdin.readline()
report = []
for call in plan:
    pieces = [bytes.fromhex(p) for p in call["pieces"]]
    total = sum(map(len, pieces))
    if call["send"] == "write":
        sent = os.write(client.fileno(), pieces[0])
    else:
        sent = os.writev(client.fileno(), pieces)
    assert sent == total, (sent, total)
    got = []
    while sum(map(len, got)) < total:
        if call["receive"] == "readv":
            sizes = [7, 300, 70000]
            buffers = [bytearray(n) for n in sizes]
            n = os.readv(server.fileno(), buffers)
            assert n > 0
            joined = b"".join(buffers)[:n]
        else:
            joined = server.recv(70000)
            assert joined
        got.append(joined)
    report.append([len(g) for g in got])
    assert b"".join(got) == b"".join(pieces)
print(json.dumps(report), flush=True)
"""


def request(index: int, total: int, rng: random.Random) -> bytes:
    """An HTTP request of exactly ``total`` bytes (head and a body of random bytes)."""
    for body_len in range(total, -1, -1):
        head = f"POST /c{index} HTTP/1.1\r\nHost: t\r\nContent-Length: {body_len}\r\n\r\n".encode()
        if len(head) + body_len == total:
            return head + rng.randbytes(body_len)
    raise ValueError(f"no request of {total} bytes")


def split(data: bytes, lengths: list[int]) -> list[bytes]:
    """``data`` cut into pieces of ``lengths`` (the last takes the rest)."""
    pieces, at = [], 0
    for n in lengths[:-1]:
        pieces.append(data[at : at + n])
        at += n
    return pieces + [data[at:]]


def plan() -> list[dict]:
    """The calls: (how sent, iovec lengths but the last, total, how received)."""
    rng = random.Random(14)
    shapes = [
        ("write", [], 120, "recv"),
        ("writev", [60], 200, "recv"),  # nginx's shape: headers, then body
        ("writev", [60, 0], 511, "readv"),  # an empty iovec among them
        ("writev", [70, 100], 512, "recv"),
        ("writev", [80, 1, 0], 513, "readv"),  # FEW_IOV iovecs
        ("writev", [90, 1, 2, 3], 700, "recv"),  # FEW_IOV + 1: the walk
        ("writev", [100, 2, 3, 4, 5], 2049, "readv"),
        ("writev", [300], MAX_DATA - 1, "recv"),
        ("writev", [300, 4000], MAX_DATA, "readv"),  # exactly one full event
        ("writev", [300, 4000], MAX_DATA + 1, "recv"),  # one byte beyond: the walk, two events
        ("writev", [0, 50], 3000, "recv"),  # an empty first iovec
        ("write", [], MAX_DATA, "recv"),
        ("write", [], MAX_DATA + 1, "readv"),
    ]
    calls = []
    for i, (send, cuts, total, receive) in enumerate(shapes):
        pieces = split(request(i, total, rng), [*cuts, 0])
        assert sum(map(len, pieces)) == total and len(pieces) == len(cuts) + 1
        calls.append({"send": send, "pieces": [p.hex() for p in pieces], "receive": receive})
    return calls


def test_each_calls_bytes_arrive_exactly_as_the_process_wrote_and_read_them():
    require_bpf()
    calls = plan()
    with traced_child(CHILD, first_line=json.dumps(calls)) as (child, tracer, seen):
        wait_for(lambda: tracer.poll(50) is not None and child.poll() is not None, 60, "the child's calls")
        received_chunks = json.loads(child.stdout.readline())
        sent_total = sum(len(bytes.fromhex(p)) for c in calls for p in c["pieces"])

        def data_bytes(direction: int) -> int:
            tracer.poll(0)
            return sum(e.size for e in seen if e.kind == EV_DATA and e.pid == child.pid and e.direction == direction
                       and not e.flags & F_FILLER)  # fmt: skip

        wait_for(lambda: data_bytes(EGRESS) >= sent_total and data_bytes(INGRESS) >= sent_total, 30, "the events")
        drops = tracer.kernel_drops()
    assert child.returncode == 0
    assert not any(drops.values()), drops

    data = [e for e in seen if e.kind == EV_DATA and e.pid == child.pid]
    assert all(e.data_len == len(e.data) and not e.flags & F_FILLER for e in data)
    sent = [b"".join(bytes.fromhex(p) for p in c["pieces"]) for c in calls]

    # Egress: one event per call of at most MAX_DATA bytes, the call's bytes in order.
    egress = sorted((e for e in data if e.direction == EGRESS), key=lambda e: e.pos)
    assert b"".join(e.data for e in egress) == b"".join(sent)
    assert [e.pos for e in egress] == [sum(e2.data_len for e2 in egress[:i]) for i in range(len(egress))]
    expected_events = []
    for call, payload in zip(calls, sent):
        syscall = SYS_WRITE if call["send"] == "write" else SYS_WRITEV
        for at in range(0, len(payload), MAX_DATA):
            expected_events.append((syscall, len(payload), payload[at : at + MAX_DATA]))
    assert [(e.syscall, e.size, e.data) for e in egress] == expected_events

    # Ingress: each read's bytes (the child reports how many each read took), in order.
    ingress = sorted((e for e in data if e.direction == INGRESS), key=lambda e: e.pos)
    assert b"".join(e.data for e in ingress) == b"".join(sent)
    reads = [(c["receive"], n) for c, chunks in zip(calls, received_chunks) for n in chunks]
    expected_reads = []
    for receive, n in reads:
        syscall = SYS_READV if receive == "readv" else SYS_RECVFROM
        expected_reads += [(syscall, n, min(MAX_DATA, n - at)) for at in range(0, n, MAX_DATA)]
    assert [(e.syscall, e.size, e.data_len) for e in ingress] == expected_reads
