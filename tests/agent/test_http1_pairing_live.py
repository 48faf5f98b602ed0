"""No wrong HTTP/1 pairing under induced ring buffer drops, on the running kernel (issue 12, "Bad
input": pipelined requests cut by a ring-buffer drop). A real nginx whose every response names its
request (the body of ``/echo/...`` is its own target; ``/files/NAME?...`` is file NAME, whose bytes
the test wrote; a missing file is a 404), and a raw-socket client (its responses framed by
httptools) sending GETs on several connections, two of them opened before the tracer attached:
all requests of a burst in one write, one write each without waiting, four in flight at a time
(one more per answer), or in turn. Traced (nginx's master and workers, and the client) through
a 64 KiB ring buffer that the large bursts cannot fit through: events are lost. The client
pauses between bursts (and in the middle of a window) while the test empties the ring buffer, so
holes open at known places and traffic goes on being seen after them; on a few connections the
tracer polls as it likes instead. Every http_events row that comes out, from either end, must
show the status and body the client itself got for that row's request; every request that no
loss could touch must be a row at both ends; and the losses are counted by reason."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pxq.agent.conn_tracker import PROBATION_EXCHANGES
from pxq.agent.socket_tracer import SocketTracer, SocketTracerOptions
from pxq.testing.kernel import require_bpf
from pxq.testing.servers.nginx import echo_nginx

pytestmark = [pytest.mark.kernel, pytest.mark.servers]

CLIENT = Path(__file__).parent / "data" / "http1_pipeline_client.py"
RING_PAGES = 16  # 64 KiB
LINE_TIMEOUT_S = 60
BODY_LIMIT = 8192  # the small files whole in the rows
ROLE_CLIENT, ROLE_SERVER = 1, 2

# 32 distinct small files of 2,000 to 4,999 bytes and 4 big ones of 20,000 to 38,000 (answered in
# several events, and in the rows cut at BODY_LIMIT), each starting with its own name.
FILES = {f"f{n}.txt": (f"file f{n}.txt " + chr(ord("a") + n % 26) * 5000)[: 2000 + n * 373 % 3000].encode()
         for n in range(32)}  # fmt: skip
FILES |= {f"big{n}.txt": (f"big file {n} " + chr(ord("A") + n) * 40000)[: 20000 + 6000 * n].encode() for n in range(4)}
# And 4 of 96 KiB that quote HTTP: a status line every 16 KiB (where nginx's writes and the
# kernel's events split a body), which after a hole must not be taken for the start of a response.
QUOTE_BLOCK = 16384
FILES |= {f"quoting{n}.txt": b"".join(
    (b"HTTP/1.1 299 Quoted\r\nContent-Length: 13\r\n\r\nquoted %5d\n" % (n * 10 + k)).ljust(QUOTE_BLOCK, b"q")
    for k in range(6)) for n in range(4)}  # fmt: skip
KINDS = {kind: [name for name in FILES if name.startswith(kind)] for kind in ("f", "big", "quoting")}
# Bytes a transaction may cost in the ring buffer beyond its response body, at one end: the
# request (under 100 bytes), nginx's response head (under 250) and 404 page (153), and a record header
# (under 100 bytes) for each event, a response read in up to four.
OVERHEAD_BOUND = 1000


def _burst(c: int, b: int, mode: str, size: int, kind: str = "f") -> list[Any]:
    """``size`` unique targets: echoes, files (of ``kind``: small, big or quoting), and every
    eighth a missing file, interleaved so that answers next to each other always differ."""
    targets = []
    for i in range(size):
        if i % 2 == 0:
            targets.append(f"/echo/{c}/{b}/{i}?n={i}")
        elif i % 8 == 7:
            targets.append(f"/files/missing-{c}-{b}-{i}.txt")
        else:
            files = KINDS[kind]
            targets.append(f"/files/{files[(c * 7 + b * 3 + i) % len(files)]}?c={c}&b={b}&i={i}")
    return [mode, targets]


def body_bytes(targets: list[str]) -> int:
    return sum(len(expected_answer(t)[1]) for t in targets)


def fits(targets: list[str]) -> bool:
    """The burst cannot lose anything: its bytes, copied at both ends, fit in the empty ring
    buffer with room to spare."""
    return 2 * (body_bytes(targets) + OVERHEAD_BOUND * len(targets)) <= RING_PAGES * 4096


def overflows(targets: list[str]) -> bool:
    """The burst must lose something: its response bodies alone, copied at both ends, are more
    than the ring buffer holds."""
    return 2 * body_bytes(targets) > RING_PAGES * 4096


SMALL, LARGE = 6, 32


def _connection(
    c: int, bursts: list[tuple[Any, ...]], early: bool = False, poll_during: bool = False
) -> dict[str, Any]:
    return {"early": early, "pause": not poll_during, "poll_during": poll_during,
            "bursts": [_burst(c, b, *burst) for b, burst in enumerate(bursts)]}  # fmt: skip


def plan() -> list[dict[str, Any]]:
    """Connections in order; the ring buffer is emptied before each burst (the client pauses)
    but on the ``poll_during`` ones (the tracer polls as it likes while they run: holes open
    and close anywhere). Every burst either fits in the empty ring buffer or must overflow
    it (:func:`fits`, :func:`overflows`): small ones (6 requests) fit, large ones (32 requests,
    or 8 with big files) lose their tail. A window burst (four requests in flight, one more sent
    per answer) pauses in its middle too, with requests in flight: 64 requests, so that a hole
    opens in its first half and the second half is seen going on after it, with answers to
    requests lost still coming. Two connections are met mid-stream (``early``)."""
    one, per, turn, window = "one_write", "per_write", "in_turn", "window"
    small_pipelines = [(one, SMALL), (per, SMALL)]
    large_pipelines = [(one, SMALL), (one, LARGE), (per, SMALL), (per, LARGE), (one, SMALL)]
    bursts = [
        ([(turn, 3), (turn, 3), *small_pipelines], True, False),
        ([(turn, 3), (one, LARGE), (turn, SMALL)], True, False),
        (small_pipelines, False, False),
        ([*small_pipelines[::-1], (turn, SMALL)], False, False),
        (large_pipelines, False, False),
        ([(turn, SMALL), (turn, LARGE), (turn, 3), (turn, SMALL), (turn, LARGE), (turn, SMALL)], False, False),
        ([(turn, SMALL), (turn, 8, "big"), (turn, 3), (turn, SMALL), (one, 8, "big"), (turn, SMALL)], False, False),
        ([(per, LARGE), (turn, SMALL), (one, SMALL)], False, False),
        *[([(window, SMALL), (window, 2 * LARGE), (turn, SMALL)], False, False)] * 3,
        ([(window, SMALL), (window, 16, "big"), (turn, SMALL)], False, False),
        (large_pipelines, False, True),
        ([(turn, 2 * LARGE)] * 3, False, True),
        ([(window, 2 * LARGE)] * 2, False, True),
        ([(turn, 2 * LARGE, "quoting")] * 2, False, True),
        (small_pipelines, False, False),
    ]
    connections = [_connection(c, b, early, poll) for c, (b, early, poll) in enumerate(bursts)]
    for spec in connections:
        for mode, targets in spec["bursts"]:
            assert fits(targets) or overflows(targets), (mode, targets)
            if mode == window and spec["pause"] and not fits(targets):
                assert overflows(targets[: len(targets) // 2]), targets
    return connections


def rows_certain(spec: dict[str, Any]) -> list[str]:
    """The targets of a connection (with ``pause``) that must be rows at both ends: what no
    loss can have touched, by the rules of pxq.agent.conn_tracker (its module docstring).

    A connection seen opening is parsed as it goes: its bursts that fit, until the first that
    overflows, whose tail is lost. One seen pipelining before that loss is given up (with no
    request ids, answers to requests never seen could be what it pairs); one answering in turn
    starts over on probation, like one met mid-stream: its pairs are let through once
    PROBATION_EXCHANGES exchanges were seen in turn, and it is given up as soon as it pipelines.
    After a hole the first exchange may go too: its request was parsed before the hole in the
    answers showed, and the parser starts over at the next request. Which end lost what of an
    overflowing burst is timing: this is what holds at both."""
    if spec["poll_during"]:
        return []
    targets: list[str] = []
    held: list[str] = []
    trusted, pipelined, after_loss, in_turn_seen = not spec["early"], False, False, 0
    for mode, burst in spec["bursts"]:
        lossless = fits(burst)
        pipelined |= mode != "in_turn"
        if trusted and lossless:
            targets += burst
        elif trusted and not pipelined:
            trusted, after_loss = False, True  # on probation after the loss
        elif trusted or mode != "in_turn" or not lossless:
            break  # given up, or lost again: nothing more is certain
        else:
            certain = burst[1:] if after_loss else burst
            held += certain
            in_turn_seen += len(certain)
            after_loss = False
            if in_turn_seen >= PROBATION_EXCHANGES:
                targets += held
                held = []
    return targets


@pytest.fixture(autouse=True)
def _bpf():
    require_bpf()


def _wait_line(proc: subprocess.Popen[str], tracer: SocketTracer, poll_during: bool) -> str:
    """The client's next line; polling the tracer meanwhile if ``poll_during``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + LINE_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0 if poll_during else 1.0)
        if ready:
            return proc.stdout.readline().strip()
        if proc.poll() is not None:
            break
        if poll_during:
            tracer.poll(10)
    raise AssertionError(f"no line from the client (exit code {proc.poll()})")


def expected_answer(target: str) -> tuple[int, str]:
    """What nginx answers ``target`` with, from its configuration and the files written."""
    if target.startswith("/echo/"):
        return 200, target + "\n"
    name = target.removeprefix("/files/").split("?")[0]
    if name in FILES:
        return 200, FILES[name].decode()
    return 404, ""  # nginx's own page: only the status is checked (OVERHEAD_BOUND counts it)


def test_pipelined_http1_cut_by_ring_buffer_drops_is_never_paired_wrongly(tmp_path):
    connections = plan()
    plan_file, seen_by_client = tmp_path / "plan.json", tmp_path / "client_view.jsonl"
    plan_file.write_text(json.dumps(connections))
    with echo_nginx(FILES) as nginx:
        nginx_pids = nginx.pids()
        args = [sys.executable, str(CLIENT), "--port", str(nginx.port), "--plan", str(plan_file),
                "--out", str(seen_by_client)]  # fmt: skip
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY"
            options = SocketTracerOptions(ring_pages=RING_PAGES)
            tracer = SocketTracer(pids={*nginx_pids, proc.pid}, body_limit=BODY_LIMIT, options=options)
            tracer.start()
            try:
                for spec in connections:
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                    # The client waits once it said STEP or DONE: one poll then takes all it caused
                    # from the ring buffer, and its next burst starts with it empty.
                    while (line := _wait_line(proc, tracer, spec["poll_during"])) == "STEP":
                        tracer.poll(0)
                        proc.stdin.write("go\n")
                        proc.stdin.flush()
                    assert line == "DONE"
                    tracer.poll(0)
                proc.stdin.write("go\n")
                proc.stdin.flush()
                assert proc.wait(timeout=LINE_TIMEOUT_S) == 0
            finally:
                tracer.stop()  # takes what is left in the ring buffer
            rows = tracer.drain().to_pylist()
            drops = tracer.drops()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # The client's own view, checked against nginx's configuration and the files: the oracle.
    client_view = {}
    for line in map(json.loads, seen_by_client.read_text().splitlines()):
        status, body = expected_answer(line["target"])
        assert line["status"] == status and (status == 404 or line["body"] == body), line
        # As a row keeps it: the body's first BODY_LIMIT bytes (all ASCII), and its size.
        client_view[line["target"]] = (line["status"], line["body"][:BODY_LIMIT], len(line["body"]))
    assert len(client_view) == sum(len(burst) for spec in connections for _, burst in spec["bursts"])

    roles = {ROLE_CLIENT: [r for r in rows if r["trace_role"] == ROLE_CLIENT],
             ROLE_SERVER: [r for r in rows if r["trace_role"] == ROLE_SERVER]}  # fmt: skip
    assert len(rows) == len(roles[ROLE_CLIENT]) + len(roles[ROLE_SERVER])
    wrong = [(r["trace_role"], r["req_path"], r["resp_status"], r["resp_body"][:40]) for r in rows
             if client_view.get(r["req_path"]) != (r["resp_status"], r["resp_body"], r["resp_body_size"])]  # fmt: skip
    assert wrong == [], f"{len(wrong)} of {len(rows)} rows paired with another request's response: {wrong[:10]}"
    twice = [key for key, n in Counter((r["trace_role"], r["req_path"]) for r in rows).items() if n > 1]
    assert twice == [], twice

    for role, role_rows in roles.items():
        seen = {r["req_path"] for r in role_rows}
        print(
            f"role {role}, rows per burst:",
            [[sum(t in seen for t in b) for _, b in spec["bursts"]] for spec in connections],
        )
    print("requests per burst:", [[len(b) for _, b in spec["bursts"]] for spec in connections])
    print(f"{len(rows)} rows of {2 * len(client_view)} requests seen from both ends; drops: {drops}")

    # The test means something: events were lost (the bursts that overflow cannot fit), and the
    # tracker met the holes they left, gave up connections seen pipelining before a loss, and
    # counted the requests left without answers.
    assert drops["ringbuf_full"] > 0, drops
    assert drops["data_gap"] > 0 and drops["out_of_step_after_loss"] > 0 and drops["unmatched"] > 0, drops
    # Nothing that no loss could touch was lost: those requests are rows at both ends.
    must = {target for spec in connections for target in rows_certain(spec)}
    for role, role_rows in roles.items():
        missing = sorted(must - {r["req_path"] for r in role_rows})
        assert missing == [], (role, len(missing), missing[:10], drops)
