"""conn_stats from the connection tracker on synthetic kernel event sequences (no kernel needed):
Pixie's aggregation (per upid and remote endpoint, the server's remote port 0), cumulative
counters, when rows are written, and connections of no parsed protocol. The live tests are in
tests/agent/test_conn_stats_live.py."""

from __future__ import annotations

import socket

from pxq.agent.conn_stats import ConnStats
from pxq.agent.conn_tracker import (
    EGRESS,
    EV_CLOSE,
    EV_DATA,
    EV_OPEN,
    EV_PROC_EXIT,
    F_FILLER,
    F_REMOTE,
    INGRESS,
    ROLE_CLIENT,
    ROLE_SERVER,
    ConnTracker,
    SockEvent,
)
from pxq.tables import CATALOG

PID = 4242
UPID = f"0:{PID}:0"  # the process is gone (never existed): start time 0
SECOND = 10**9
REQ = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def event(kind: int, fd: int, gen: int, ts_ns: int, **kw) -> SockEvent:
    fields = dict(
        ts_ns=ts_ns, pos=0, size=0, pid=PID, fd=fd, gen=gen, data_len=0, kind=kind, flags=0, direction=0, role=0,
        family=0, lport=0, rport=0, syscall=0, reserved=0, laddr=bytes(16), raddr=bytes(16), data=b"",
    )  # fmt: skip
    fields.update(kw)
    return SockEvent(**fields)


class Conn:
    """One connection's kernel events, with the kernel's byte totals kept as it keeps them."""

    def __init__(self, fd: int, gen: int, role: int, remote: str, rport: int) -> None:
        self.fd, self.gen, self.role = fd, gen, role
        self.remote, self.rport = remote, rport
        self.totals = [0, 0]  # egress, ingress

    def open(self, ts: int) -> SockEvent:
        raddr = socket.inet_aton(self.remote) + bytes(12)
        return event(EV_OPEN, self.fd, self.gen, ts, role=self.role, flags=F_REMOTE, family=socket.AF_INET,
                     rport=self.rport, raddr=raddr)  # fmt: skip

    def data(self, ts: int, direction: int, data: bytes) -> SockEvent:
        pos = self.totals[direction]
        self.totals[direction] += len(data)
        return event(EV_DATA, self.fd, self.gen, ts, role=self.role, pos=pos, size=len(data), data_len=len(data),
                     direction=direction, data=data)  # fmt: skip

    def filler(self, ts: int, direction: int, size: int) -> SockEvent:
        pos = self.totals[direction]
        self.totals[direction] += size
        return event(EV_DATA, self.fd, self.gen, ts, role=self.role, pos=pos, size=size, direction=direction,
                     flags=F_FILLER)  # fmt: skip

    def uncopied(self, direction: int, size: int) -> None:
        """Bytes the kernel counted without an event (the connection's data is switched off)."""
        self.totals[direction] += size

    def close(self, ts: int) -> SockEvent:
        return event(EV_CLOSE, self.fd, self.gen, ts, role=self.role, pos=self.totals[0], size=self.totals[1])


def tracker(kernel: dict | None = None, **kw) -> tuple[ConnTracker, list]:
    """A tracker keeping conn_stats; ``kernel``: (pid, fd, gen) -> Conn, what the kernel's map holds."""
    disabled: list = []

    def kernel_counts(pid: int, fd: int, gen: int):
        conn = (kernel or {}).get((pid, fd, gen))
        return None if conn is None else tuple(conn.totals)

    stats = ConnStats(kernel_counts, SECOND)
    return ConnTracker(disable=lambda *a: disabled.append(a), conn_stats=stats, **kw), disabled


def rows(t: ConnTracker, times: list | None = None) -> list[dict]:
    """The rows reported since the last call, without time_ (put in ``times`` as ns)."""
    table = t.take_tables()["conn_stats"]
    assert table.schema.equals(CATALOG["conn_stats"].arrow_schema())
    if times is not None:
        times += table.column("time_").cast("int64").to_pylist()
    return [{k: v for k, v in r.items() if k != "time_"} for r in table.to_pylist()]


def opening(remote: str, rport: int, role: int, before: tuple[int, int, int, int] = (0, 0, 0, 0),
            protocol: int = 0) -> dict:  # fmt: skip
    """The row written when an endpoint gets a connection after having none: its counters just
    before (``before``: opens, closes, sent, received of the endpoint so far), the protocol its
    last connection had (none: 0)."""
    opened, closed, sent, recv = before
    return row(remote, rport, role, protocol, opened, closed, sent, recv)


def row(remote: str, rport: int, role: int, protocol: int, opened: int, closed: int, sent: int, recv: int) -> dict:
    return dict(upid=UPID, remote_addr=remote, remote_port=rport, trace_role=role, addr_family=2, protocol=protocol,
                ssl=False, conn_open=opened, conn_close=closed, conn_active=opened - closed, bytes_sent=sent,
                bytes_recv=recv)  # fmt: skip


def test_client_connections_to_one_endpoint_add_up_in_one_row():
    t, _ = tracker()
    a = Conn(5, 1, ROLE_CLIENT, "10.1.2.3", 80)
    b = Conn(6, 2, ROLE_CLIENT, "10.1.2.3", 80)
    c = Conn(7, 3, ROLE_CLIENT, "10.9.9.9", 8080)
    events = [a.open(1), b.open(2), c.open(3)]
    for conn in (a, b, c):
        events += [conn.data(10, EGRESS, REQ), conn.data(20, INGRESS, RESP)]
    events += [a.data(30, EGRESS, REQ), a.filler(40, INGRESS, 100_000)]  # a sendfile'd answer: counted
    events += [a.close(50), b.close(51), c.close(52)]
    t.handle_all(events)
    t.report_conn_stats(SECOND)
    times: list = []
    assert rows(t, times) == [
        opening("10.1.2.3", 80, ROLE_CLIENT),  # b joins a live endpoint: no row of its own
        opening("10.9.9.9", 8080, ROLE_CLIENT),
        row("10.1.2.3", 80, ROLE_CLIENT, 1, 2, 2, 3 * len(REQ), 2 * len(RESP) + 100_000),
        row("10.9.9.9", 8080, ROLE_CLIENT, 1, 1, 1, len(REQ), len(RESP)),
    ]
    assert times == [1, 3, SECOND, SECOND]  # at the OPEN events, then at the report


def test_a_servers_clients_from_one_address_are_one_row_with_remote_port_0():
    """Pixie's BuildAggKey: the remote port of a server's connection is 0 in the key."""
    conns = [Conn(10 + i, 10 + i, ROLE_SERVER, "127.0.0.1", 40000 + i) for i in range(3)]
    t, _ = tracker({(PID, c.fd, c.gen): c for c in conns})
    t.handle_all([c.open(1) for c in conns] + [c.data(5, INGRESS, REQ) for c in conns])
    t.handle_all([c.data(6, EGRESS, RESP) for c in conns] + [conns[0].close(7)])
    t.report_conn_stats(SECOND)
    assert rows(t) == [
        opening("127.0.0.1", 0, ROLE_SERVER),
        row("127.0.0.1", 0, ROLE_SERVER, 1, 3, 1, 3 * len(RESP), 3 * len(REQ)),
    ]


def test_a_live_connection_is_reported_every_interval_with_cumulative_counts_then_once_after_close():
    kernel: dict = {}
    t, _ = tracker(kernel)
    a = Conn(5, 1, ROLE_CLIENT, "10.1.2.3", 80)
    kernel[(PID, 5, 1)] = a
    t.handle_all([a.open(1), a.data(2, EGRESS, REQ), a.data(3, INGRESS, RESP)])
    t.report_conn_stats(1 * SECOND)
    assert rows(t) == [
        opening("10.1.2.3", 80, ROLE_CLIENT),
        row("10.1.2.3", 80, ROLE_CLIENT, 1, 1, 0, len(REQ), len(RESP)),
    ]
    t.report_conn_stats(2 * SECOND)  # nothing moved: still reported, the connection is live
    assert rows(t) == [row("10.1.2.3", 80, ROLE_CLIENT, 1, 1, 0, len(REQ), len(RESP))]
    t.handle_all([a.data(SECOND * 2 + 1, EGRESS, REQ)])
    t.report_conn_stats(3 * SECOND)
    assert rows(t) == [row("10.1.2.3", 80, ROLE_CLIENT, 1, 1, 0, 2 * len(REQ), len(RESP))]
    t.handle_all([a.close(SECOND * 3 + 1)])
    t.report_conn_stats(4 * SECOND)
    assert rows(t) == [row("10.1.2.3", 80, ROLE_CLIENT, 1, 1, 1, 2 * len(REQ), len(RESP))]
    t.report_conn_stats(5 * SECOND)
    assert rows(t) == []  # no connection of it any more: quiet
    b = Conn(6, 2, ROLE_CLIENT, "10.1.2.3", 80)  # ... until it has one again
    t.handle_all([b.open(SECOND * 5 + 1), b.data(SECOND * 5 + 2, EGRESS, REQ), b.close(SECOND * 5 + 3)])
    t.report_conn_stats(6 * SECOND)
    assert rows(t) == [
        opening("10.1.2.3", 80, ROLE_CLIENT, (1, 1, 2 * len(REQ), len(RESP)), protocol=1),
        row("10.1.2.3", 80, ROLE_CLIENT, 1, 2, 2, 3 * len(REQ), len(RESP)),
    ]


def test_an_unknown_protocol_is_switched_off_and_its_bytes_still_count():
    """The kernel stops sending a disabled connection's data but counts it; the CLOSE carries the
    totals, so every byte is in conn_stats."""
    t, disabled = tracker()
    a = Conn(5, 7, ROLE_CLIENT, "10.1.2.3", 6000)
    t.handle_all([a.open(1), a.data(2, EGRESS, b"\x00\x01binary protocol hello\x00\xff")])
    assert disabled == [(PID, 5, 7)]
    a.uncopied(EGRESS, 1_000_000)
    a.uncopied(INGRESS, 2_500_000)
    t.handle_all([a.close(3)])
    t.report_conn_stats(SECOND)
    assert rows(t) == [
        opening("10.1.2.3", 6000, ROLE_CLIENT),
        row("10.1.2.3", 6000, ROLE_CLIENT, 0, 1, 1, 1_000_000 + 25, 2_500_000),
    ]
    assert t.counts["other_connections"] == 1


def test_conn_stats_alone_parses_nothing_and_switches_each_connection_off_at_first_sight():
    disabled: list = []
    t = ConnTracker(protocols=(), disable=lambda *a: disabled.append(a), conn_stats=ConnStats(None, SECOND))
    a = Conn(5, 1, ROLE_CLIENT, "10.1.2.3", 80)
    t.handle_all([a.open(1), a.data(2, EGRESS, REQ), a.data(3, INGRESS, RESP), a.close(4)])
    assert disabled == [(PID, 5, 1)]
    t.report_conn_stats(SECOND)
    assert rows(t) == [
        opening("10.1.2.3", 80, ROLE_CLIENT),
        row("10.1.2.3", 80, ROLE_CLIENT, 0, 1, 1, len(REQ), len(RESP)),
    ]
    assert t.take_tables().keys() == {"conn_stats"}


def test_process_exit_closes_with_the_kernels_totals_and_the_window_end_closes_nothing():
    kernel: dict = {}
    t, _ = tracker(kernel)
    a = Conn(5, 1, ROLE_CLIENT, "10.1.2.3", 80)
    b = Conn(6, 2, ROLE_CLIENT, "10.2.2.2", 80)
    kernel.update({(PID, 5, 1): a, (PID, 6, 2): b})
    t.handle_all([a.open(1), b.open(2), a.data(3, EGRESS, REQ), b.data(4, EGRESS, REQ)])
    a.uncopied(INGRESS, 777)  # read by the kernel after the last event the tracker took
    t.handle_all([event(EV_PROC_EXIT, -1, 0, 5)])
    t.report_conn_stats(SECOND)
    assert rows(t) == [
        opening("10.1.2.3", 80, ROLE_CLIENT),
        opening("10.2.2.2", 80, ROLE_CLIENT),
        row("10.1.2.3", 80, ROLE_CLIENT, 1, 1, 1, len(REQ), 777),
        row("10.2.2.2", 80, ROLE_CLIENT, 1, 1, 1, len(REQ), 0),
    ]
    c = Conn(7, 3, ROLE_CLIENT, "10.3.3.3", 80)
    kernel[(PID, 7, 3)] = c
    t.handle_all([c.open(SECOND + 1), c.data(SECOND + 2, EGRESS, REQ)])
    t.report_conn_stats(2 * SECOND)
    t.close_all()  # the capture window ends: c is still open
    t.report_conn_stats(3 * SECOND)
    assert (
        rows(t) == [opening("10.3.3.3", 80, ROLE_CLIENT)] + [row("10.3.3.3", 80, ROLE_CLIENT, 1, 1, 0, len(REQ), 0)] * 2
    )


def test_a_script_asking_for_conn_stats_alone_runs_the_socket_tracer_parsing_nothing():
    from pxq.agent.collector import AgentOptions
    from pxq.agent.collectors import build_collector, check_collectable
    from pxq.lang import parse
    from pxq.plan.compile import compile as compile_script
    from pxq.plan.split import split

    text = "#px:set socket_tracer.conn_stats_interval_s=0.25\nimport px\npx.display(px.DataFrame('conn_stats'))\n"
    manifest = split(compile_script(parse(text, "conns.pxl"), now_ns=10**18)).manifest
    check_collectable(manifest)  # collectable live now
    (request,) = manifest.collectors
    assert (request.name, request.tables, request.protocols) == ("socket_tracer", ("conn_stats",), ())
    collector = build_collector(request, AgentOptions(keep_secrets=True))
    tracker = collector.tracer._tracker
    assert collector.tables == ("conn_stats",) and tracker.protocols == ()
    assert tracker.conn_stats is not None and tracker.conn_stats.interval_ns == 250_000_000
    assert tracker.parse_options.keep_secrets is True


def test_the_socket_tracer_keeps_no_conn_stats_unless_asked_and_no_secrets_by_default():
    from pxq.agent.socket_tracer import SocketTracer

    tracer = SocketTracer()
    assert tracer._tracker.conn_stats is None and "conn_stats" not in tracer.drain_tables()
    assert tracer._tracker.parse_options.keep_secrets is False


def test_keep_secrets_is_an_explicit_flag_of_run_and_capture_that_states_its_risk(capsys):
    """(The flag's effect, end to end through `pxq capture`: tests/agent/test_secrets_live.py.)"""
    from tests.cli_support import run_main

    for command in ("run", "capture"):
        code, out, _ = run_main(capsys, command, "--help")
        text = " ".join(out.split())
        assert code == 0 and "--keep-secrets" in text and "RISK" in text and "'<redacted>'" in text, command


def test_a_mid_stream_socket_of_no_protocol_is_the_server_when_its_process_listens_on_its_port():
    """No OPEN event (opened before the tracer attached), bytes no protocol recognises: the role
    comes from the process's listening ports, and nothing is left out."""
    from pxq.agent.conn_tracker import F_TUPLE

    stats = ConnStats(None, SECOND, listening=lambda pid: {7000} if pid == PID else set())
    t = ConnTracker(conn_stats=stats)
    laddr, raddr = socket.inet_aton("10.0.0.1") + bytes(12), socket.inet_aton("10.0.0.2") + bytes(12)
    blob = b"\x00\x01binary protocol hello\x00\xff"
    for fd, lport, rport in ((5, 7000, 40001), (6, 40002, 9000)):  # served on 7000; a client of :9000
        tuple_ = dict(flags=F_TUPLE, family=socket.AF_INET, lport=lport, rport=rport, laddr=laddr, raddr=raddr)
        t.handle(event(EV_DATA, fd, fd, 1, size=len(blob), data_len=len(blob), direction=INGRESS, data=blob, **tuple_))
    t.report_conn_stats(SECOND)
    got = [(r["remote_port"], r["trace_role"], r["conn_open"]) for r in rows(t)]
    assert got == [(0, ROLE_SERVER, 0), (9000, ROLE_CLIENT, 0), (0, ROLE_SERVER, 1), (9000, ROLE_CLIENT, 1)]
    assert stats.unaddressed == 0


def test_listening_ports_are_read_from_proc():
    import os

    from pxq.agent.conn_stats import listening_ports

    with socket.socket() as listener, socket.socket() as unbound:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        unbound.bind(("127.0.0.1", 0))  # bound, not listening
        ports = listening_ports(os.getpid())
        assert listener.getsockname()[1] in ports and unbound.getsockname()[1] not in ports


def test_socket_tracer_settings_are_checked_where_the_script_writes_them():
    """A bad socket_tracer setting is a positioned error at compile time, not a failure of the
    collector once the window runs (int('abc') there, before this check existed)."""
    import pytest

    from pxq.errors import CompileError
    from pxq.lang import parse
    from pxq.plan.compile import compile as compile_script

    for setting, hint in (
        ("socket_tracer.conn_stats_interval_s=0", "0.01 to 3600"),
        ("socket_tracer.body_limit=abc", "a whole number of bytes"),
        ("socket_tracer.conn_stats_interval=1", "did you mean 'socket_tracer.conn_stats_interval_s'?"),
    ):
        text = f"#px:set {setting}\nimport px\npx.display(px.DataFrame('conn_stats'))\n"
        with pytest.raises(CompileError) as caught:
            compile_script(parse(text, "s.pxl"), now_ns=10**18)
        assert ":1:1:" in caught.value.render() and hint in caught.value.render(), setting
