"""ConnTracker on synthetic kernel event sequences (no kernel needed): identity and generations,
role inference, reassembly, gaps, buffer bounds, protocol inference, rows."""

from __future__ import annotations

import dataclasses
import json
import socket

import pyarrow as pa
from hypothesis import example, given, settings, strategies as st

from pxq.agent.conn_tracker import (
    EGRESS,
    EV_CLOSE,
    EV_DATA,
    EV_OPEN,
    EV_PROC_EXIT,
    F_FILLER,
    F_REMOTE,
    F_TUPLE,
    INGRESS,
    PROBATION_EXCHANGES,
    PROBE_TRIES,
    ROLE_CLIENT,
    ROLE_SERVER,
    ROLE_UNKNOWN,
    ConnTracker,
    SockEvent,
)
from pxq.agent.protocols import registry
from pxq.agent.protocols.http1 import RECORDED_STREAMS, HttpRows
from pxq.tables import CATALOG
from pxq.testing.streams import load_stream

PID = 4242
LOCAL = socket.inet_aton("127.0.0.1") + bytes(12)
REMOTE = socket.inet_aton("10.1.2.3") + bytes(12)
REQ = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
STREAMS = RECORDED_STREAMS


class Stream:
    """Builds the events the kernel would send for one connection, keeping stream offsets."""

    def __init__(self, fd: int = 7, gen: int = 1, pid: int = PID, role: int = ROLE_UNKNOWN) -> None:
        self.fd, self.gen, self.pid, self.role = fd, gen, pid, role
        self.pos = [0, 0]
        self.ts = 1_000_000

    def _event(self, kind: int, **kw) -> SockEvent:
        self.ts += kw.pop("dt", 1000)
        fields = dict(
            ts_ns=self.ts, pos=0, size=0, pid=self.pid, fd=self.fd, gen=self.gen, data_len=0, kind=kind,
            flags=0, direction=0, role=self.role, family=0, lport=0, rport=0, syscall=0, reserved=0,
            laddr=bytes(16), raddr=bytes(16), data=b"",
        )  # fmt: skip
        fields.update(kw)
        return SockEvent(**fields)

    def open(self, role: int) -> SockEvent:
        self.role = role
        return self._event(EV_OPEN, flags=F_REMOTE, family=socket.AF_INET, rport=80, raddr=REMOTE)

    def data(self, direction: int, data: bytes, *, tuple_: bool = False, skip: int = 0, dt: int = 1000) -> SockEvent:
        """A data event; ``skip`` bytes before it are lost (never sent)."""
        self.pos[direction] += skip
        pos = self.pos[direction]
        self.pos[direction] += len(data)
        extra = (
            dict(flags=F_TUPLE, family=socket.AF_INET, lport=5555, rport=80, laddr=LOCAL, raddr=REMOTE)
            if tuple_
            else {}
        )
        return self._event(
            EV_DATA, pos=pos, size=len(data), data_len=len(data), direction=direction, data=data, dt=dt, **extra
        )

    def filler(self, direction: int, size: int) -> SockEvent:
        pos = self.pos[direction]
        self.pos[direction] += size
        return self._event(EV_DATA, pos=pos, size=size, direction=direction, flags=F_FILLER)

    def close(self) -> SockEvent:
        return self._event(EV_CLOSE)

    def exit(self) -> SockEvent:
        return self._event(EV_PROC_EXIT, fd=-1, gen=0)


class RowsWithConnections(HttpRows):
    """The tracker's ``http_events`` rows, and the connection each row came from (its fd and
    generation are no columns), so that the tests read what the tracker produces."""

    def __init__(self) -> None:
        super().__init__()
        self.connections: list = []
        self.taken_connections: list = []

    def add_pairs(self, conn, pairs, clock_offset_ns=0) -> None:
        self.connections += [conn] * len(pairs)
        super().add_pairs(conn, pairs, clock_offset_ns)

    def table(self) -> pa.Table:
        self.taken_connections, self.connections = self.connections, []
        return super().table()


class Row:
    """One ``http_events`` row, read with the names of a transaction's fields."""

    def __init__(self, row: dict) -> None:
        self.__dict__.update(row)
        self.resp_headers = json.loads(row["resp_headers"])
        self.latency_ns = row["latency"]
        self.resp_end_ns = row["time_"]


def tracker(**kw) -> tuple[ConnTracker, list, list]:
    disabled, forgotten = [], []
    http = dataclasses.replace(registry.HTTP, make_rows=lambda _options: RowsWithConnections())
    t = ConnTracker(
        protocols=[http], disable=lambda *a: disabled.append(a), forget=lambda *a: forgotten.append(a), **kw
    )
    return t, disabled, forgotten


def take(t: ConnTracker) -> list[tuple]:
    """The rows completed since the last take, each with its connection."""
    table = t.take_tables()["http_events"]
    table = table.set_column(table.schema.get_field_index("time_"), "time_", table["time_"].cast(pa.int64()))
    return list(zip(t.rows["http"].taken_connections, map(Row, table.to_pylist()), strict=True))


def feed(t: ConnTracker, *events: SockEvent) -> None:
    t.handle_all(events)


def paths(t: ConnTracker) -> list[tuple]:
    return [(c.fd, c.gen, c.role, tx.req_path, tx.resp_status) for c, tx in take(t)]


def no_drops(t: ConnTracker) -> bool:
    return all(n == 0 for n in t.drop_counts().values())


def in_step(s: Stream, request_direction: int) -> list[SockEvent]:
    """Two more exchanges answered in turn, /y and /z: after a restart (a loss, a socket seen
    mid-stream) the tracker lets rows through once PROBATION_EXCHANGES (3) were answered in step."""
    response_direction = INGRESS + EGRESS - request_direction
    events = []
    for path in (b"/y", b"/z"):
        events += [s.data(request_direction, REQ.replace(b"/a", path)), s.data(response_direction, RESP)]
    return events


def confirmed(fd: int, gen: int, role: int) -> list[tuple]:
    """The rows of :func:`in_step`'s exchanges."""
    return [(fd, gen, role, "/y", 200), (fd, gen, role, "/z", 200)]


# -- identity, roles ------------------------------------------------------------------------------
def test_client_connection_one_transaction_with_latency_and_addresses():
    t, _, _ = tracker(clock_offset_ns=10**18)
    s = Stream()
    feed(t, s.open(ROLE_CLIENT), s.data(EGRESS, REQ, tuple_=True, dt=5), s.data(INGRESS, RESP, dt=7000))
    done = take(t)
    assert len(done) == 1
    conn, tx = done[0]
    assert (conn.role, conn.laddr, conn.lport, conn.raddr, conn.rport) == (
        ROLE_CLIENT,
        "127.0.0.1",
        5555,
        "10.1.2.3",
        80,
    )
    assert (tx.req_method, tx.req_path, tx.resp_status, tx.resp_body) == ("GET", "/a", 200, "hello")
    assert tx.latency_ns == 7000
    assert tx.resp_end_ns > 10**18  # epoch time
    assert no_drops(t)


def test_server_role_from_accept_with_messages_split_across_events():
    t, _, _ = tracker()
    s = Stream()
    events = [s.open(ROLE_SERVER)]
    events += [s.data(INGRESS, REQ[i : i + 5]) for i in range(0, len(REQ), 5)]
    events += [s.data(EGRESS, RESP[:20]), s.data(EGRESS, RESP[20:])]
    feed(t, *events, s.close())
    assert paths(t) == [(7, 1, ROLE_SERVER, "/a", 200)]
    assert no_drops(t) and not t.conns


def test_role_inferred_from_first_bytes_when_open_was_not_seen():
    t, _, _ = tracker()
    server = Stream(fd=3, gen=1)  # accepted before the tracer attached
    client = Stream(fd=4, gen=2)  # connected before the tracer attached
    feed(t, server.data(INGRESS, REQ), server.data(EGRESS, RESP), client.data(EGRESS, REQ), client.data(INGRESS, RESP),
         *in_step(server, INGRESS), *in_step(client, EGRESS))  # fmt: skip
    assert sorted(paths(t)) == sorted([(3, 1, ROLE_SERVER, "/a", 200), *confirmed(3, 1, ROLE_SERVER),
                                       (4, 2, ROLE_CLIENT, "/a", 200), *confirmed(4, 2, ROLE_CLIENT)])  # fmt: skip


def test_response_seen_first_sets_the_role_and_waits_for_the_next_request():
    t, _, _ = tracker()
    s = Stream()  # attached while a request was in flight: its response comes first
    feed(
        t, s.data(EGRESS, RESP), s.data(INGRESS, REQ.replace(b"/a", b"/b")), s.data(EGRESS, RESP), *in_step(s, INGRESS)
    )
    assert paths(t) == [(7, 1, ROLE_SERVER, "/b", 200), *confirmed(7, 1, ROLE_SERVER)]


def test_fd_reuse_with_a_new_generation_never_stitches_two_connections():
    t, _, _ = tracker()
    old = Stream(fd=9, gen=1)
    new = Stream(fd=9, gen=2)
    # The old connection's request is answered only after the fd was reused (its close missed):
    # its response bytes must not complete the new connection's request, nor the other way.
    feed(
        t,
        old.open(ROLE_CLIENT),
        old.data(EGRESS, REQ),
        new.open(ROLE_CLIENT),
        new.data(EGRESS, REQ.replace(b"/a", b"/new")),
        old.data(INGRESS, RESP),  # a late event of generation 1: ignored
        new.data(INGRESS, RESP),
    )
    assert paths(t) == [(9, 2, ROLE_CLIENT, "/new", 200)]
    drops = t.drop_counts()
    assert drops["late_event"] == 1
    assert drops["unmatched"] == 1  # the old request never got its answer
    assert set(t.conns) == {(PID, 9, 2)}


def test_close_then_late_data_is_ignored():
    t, _, _ = tracker()
    s = Stream()
    feed(t, s.open(ROLE_CLIENT), s.data(EGRESS, REQ), s.data(INGRESS, RESP), s.close(), s.data(INGRESS, b"junk"))
    assert len(paths(t)) == 1
    assert t.drop_counts()["late_event"] == 1 and not t.conns


def test_process_exit_ends_its_connections_and_forgets_them_in_the_kernel():
    t, _, forgotten = tracker()
    a, b = Stream(fd=5, gen=1), Stream(fd=6, gen=2)
    other = Stream(fd=5, gen=3, pid=PID + 1)
    close_delimited = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    feed(t, a.open(ROLE_CLIENT), a.data(EGRESS, REQ), a.data(INGRESS, close_delimited),
         b.open(ROLE_SERVER), other.open(ROLE_SERVER), a.exit())  # fmt: skip
    done = take(t)
    assert [(c.fd, tx.resp_body) for c, tx in done] == [(5, "until the end")]  # completed by the exit
    assert sorted(forgotten) == [(PID, 5, 1), (PID, 6, 2)]
    assert set(t.conns) == {(PID + 1, 5, 3)}


# -- reassembly, gaps, bounds ---------------------------------------------------------------------
def test_out_of_order_events_are_reassembled():
    t, _, _ = tracker()
    s = Stream()
    open_ev = s.open(ROLE_CLIENT)
    req = s.data(EGRESS, REQ)
    first, second = s.data(INGRESS, RESP[:10]), s.data(INGRESS, RESP[10:])
    feed(t, open_ev, req, second, first)
    assert paths(t) == [(7, 1, ROLE_CLIENT, "/a", 200)]
    assert no_drops(t)


def test_lost_bytes_are_a_gap_and_parsing_restarts_at_the_next_request():
    t, _, _ = tracker()
    s = Stream()
    feed(t, s.open(ROLE_CLIENT), s.data(EGRESS, REQ))
    feed(t, s.data(INGRESS, RESP[15:], skip=15))  # the response's first 15 bytes never arrived
    assert t.conns[(PID, 7, 1)].stream.held_bytes > 0  # held: the hole may still fill
    assert t.drop_counts()["data_gap"] == 0
    feed(t)  # a second batch without the missing bytes: they are lost
    assert t.drop_counts()["data_gap"] == 1
    feed(t, s.data(EGRESS, REQ.replace(b"/a", b"/b")), s.data(INGRESS, RESP), *in_step(s, EGRESS))
    assert paths(t) == [(7, 1, ROLE_CLIENT, "/b", 200), *confirmed(7, 1, ROLE_CLIENT)]


def test_socket_opened_before_attach_that_lost_its_first_response_is_a_gap_not_a_shift():
    t, _, _ = tracker()
    s = Stream()  # a keep-alive connection accepted before the tracer attached: no OPEN
    s.data(EGRESS, RESP)  # the answer to /a: its event was lost (ring buffer full)
    not_found = RESP.replace(b"200 OK", b"404 Not Found")
    feed(t, s.data(INGRESS, REQ), s.data(INGRESS, REQ.replace(b"/a", b"/b")), s.data(EGRESS, not_found))
    feed(t)
    feed(t)  # the kernel counts every direction of a connection from 0: the first bytes are missing
    assert t.drop_counts()["data_gap"] == 1
    feed(t, s.data(INGRESS, REQ.replace(b"/a", b"/c")), s.data(EGRESS, RESP), *in_step(s, INGRESS))
    assert paths(t) == [(7, 1, ROLE_SERVER, "/c", 200), *confirmed(7, 1, ROLE_SERVER)]  # never /a with /b's 404


def test_connection_ended_by_the_tracker_is_picked_up_where_its_stream_is():
    t, _, _ = tracker(idle_ns=10**9)
    s = Stream()
    feed(t, s.open(ROLE_SERVER), s.data(INGRESS, REQ), s.data(EGRESS, RESP))
    other = Stream(fd=8)
    feed(t, other.open(ROLE_SERVER), other.data(INGRESS, REQ, dt=20 * 10**9))  # fd 7 idles out
    assert (PID, 7, 1) not in t.conns
    feed(t, s.data(INGRESS, REQ.replace(b"/a", b"/d")), s.data(EGRESS, RESP), *in_step(s, INGRESS))  # same generation
    assert (7, 1, ROLE_SERVER, "/d", 200) in paths(t)
    assert t.drop_counts()["data_gap"] == 0


def test_reorder_buffer_overflow_is_counted():
    t, _, _ = tracker(reorder_limit=1000)
    s = Stream()
    feed(t, s.open(ROLE_SERVER), s.data(INGRESS, REQ))
    events = [s.data(EGRESS, b"x" * 400, skip=100 if i == 0 else 0) for i in range(3)]  # 1200 bytes held
    feed(t, *events)
    drops = t.drop_counts()
    assert drops["buffer_overflow"] == 1 and drops["data_gap"] == 1
    assert t.conns[(PID, 7, 1)].stream.held_bytes == 0
    feed(t, s.data(INGRESS, REQ.replace(b"/a", b"/c")), s.data(EGRESS, RESP), *in_step(s, INGRESS))
    assert paths(t) == [(7, 1, ROLE_SERVER, "/c", 200), *confirmed(7, 1, ROLE_SERVER)]


def test_sendfile_filler_counts_body_bytes():
    t, _, _ = tracker()
    s = Stream()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n"
    feed(t, s.open(ROLE_SERVER), s.data(INGRESS, REQ), s.data(EGRESS, head), s.filler(EGRESS, 3000),
         s.data(INGRESS, REQ), s.data(EGRESS, RESP))  # fmt: skip
    done = take(t)
    assert [(tx.resp_body_size, tx.resp_status) for _, tx in done] == [(3000, 200), (5, 200)]
    assert done[0][1].resp_body == "<not captured: 3000 bytes>"  # unknown, not NUL bytes
    assert no_drops(t)


def test_a_filler_over_a_mib_keeps_its_row_and_the_next_one():
    size = 3 << 20
    t, _, _ = tracker()
    s = Stream()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
    feed(t, s.open(ROLE_SERVER), s.data(INGRESS, REQ), s.data(EGRESS, head + b"0123"), s.filler(EGRESS, size - 4),
         s.data(INGRESS, REQ.replace(b"/a", b"/b")), s.data(EGRESS, RESP))  # fmt: skip
    done = [(tx.req_path, tx.resp_body_size, tx.resp_body) for _, tx in take(t)]
    assert done == [("/a", size, f"0123<not captured: {size - 4} bytes>"), ("/b", 5, "hello")]
    assert no_drops(t) and t.counts["filler_bytes"] == size - 4


def test_a_filler_that_arrives_behind_a_hole_waits_its_turn():
    t, _, _ = tracker()
    s = Stream()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n"
    opened, req, resp_head, filler = (
        s.open(ROLE_SERVER),
        s.data(INGRESS, REQ),
        s.data(EGRESS, head),
        s.filler(EGRESS, 3000),
    )
    feed(t, opened, req, filler)  # the head's event comes later (another CPU)
    assert take(t) == []
    feed(t, resp_head, s.data(INGRESS, REQ), s.data(EGRESS, RESP))
    assert [(tx.resp_body_size, tx.resp_body) for _, tx in take(t)] == [
        (3000, "<not captured: 3000 bytes>"),
        (5, "hello"),
    ]
    assert no_drops(t)


def test_a_filler_running_past_a_body_keeps_that_row_and_gives_up_the_pipelining_connection():
    t, disabled, _ = tracker()
    s = Stream()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n"
    feed(t, s.open(ROLE_SERVER), s.data(INGRESS, REQ), s.data(EGRESS, head),
         s.data(INGRESS, REQ.replace(b"/a", b"/b")), s.filler(EGRESS, 3000 + len(RESP)),  # body + /b's answer
         s.data(INGRESS, REQ.replace(b"/a", b"/c")), s.data(EGRESS, RESP), *in_step(s, INGRESS))  # fmt: skip
    done = [(tx.req_path, tx.resp_body_size, tx.resp_body) for _, tx in take(t)]
    # /b was sent before /a's answer ended (pipelining): after the loss, answers to requests
    # not seen could be on their way, so the connection is not parsed any more.
    assert done == [("/a", 3000, "<not captured: 3000 bytes>")]
    assert t.drop_counts()["data_gap"] == 1 and t.drop_counts()["out_of_step_after_loss"] == 1
    assert disabled == [(PID, 7, 1)]


def test_a_filler_where_a_head_should_be_is_a_gap_and_parsing_restarts():
    t, _, _ = tracker()
    s = Stream()
    feed(t, s.open(ROLE_SERVER), s.data(INGRESS, REQ), s.filler(EGRESS, len(RESP)),
         s.data(INGRESS, REQ.replace(b"/a", b"/b")), s.data(EGRESS, RESP), *in_step(s, INGRESS))  # fmt: skip
    assert [(tx.req_path, tx.resp_body) for _, tx in take(t)] == [("/b", "hello"), ("/y", "hello"), ("/z", "hello")]
    assert t.drop_counts()["data_gap"] == 1


# -- protocol inference ---------------------------------------------------------------------------
def test_not_http_is_switched_off_in_the_kernel():
    t, disabled, _ = tracker()
    s = Stream()
    feed(t, s.open(ROLE_CLIENT), s.data(EGRESS, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40)))
    assert disabled == [(PID, 7, 1)]
    feed(t, s.data(EGRESS, REQ), s.data(INGRESS, RESP))
    assert paths(t) == []
    assert t.counts["other_connections"] == 1


def test_short_first_write_waits_for_more_bytes():
    t, disabled, _ = tracker()
    s = Stream()
    feed(t, s.open(ROLE_CLIENT), s.data(EGRESS, REQ[:3]), s.data(EGRESS, REQ[3:]), s.data(INGRESS, RESP))
    assert paths(t) == [(7, 1, ROLE_CLIENT, "/a", 200)] and not disabled


def test_socket_seen_mid_message_gets_a_few_tries():
    t, disabled, _ = tracker()
    s = Stream()  # no open: picked up inside a request body
    feed(
        t,
        s.data(INGRESS, b"rest of an earlier body" * 3),
        s.data(EGRESS, RESP),
        s.data(INGRESS, REQ),
        s.data(EGRESS, RESP),
        *in_step(s, INGRESS),
    )
    assert paths(t) == [(7, 1, ROLE_SERVER, "/a", 200), *confirmed(7, 1, ROLE_SERVER)] and not disabled
    u = Stream(fd=8, gen=5)
    feed(t, *[u.data(INGRESS, b"\x00\x01binary protocol bytes") for _ in range(PROBE_TRIES)])
    assert disabled == [(PID, 8, 5)]


# -- rows -----------------------------------------------------------------------------------------
def test_rows_have_the_catalog_schema_and_per_connection_columns():
    t, _, _ = tracker()
    a = Stream(fd=5, gen=1)
    b = Stream(fd=6, gen=2)
    v6 = socket.inet_pton(socket.AF_INET6, "::1")
    feed(
        t,
        a.open(ROLE_CLIENT), a.data(EGRESS, REQ, tuple_=True), a.data(INGRESS, RESP),
        b.open(ROLE_SERVER),
        b._event(EV_DATA, pos=0, size=len(REQ), data_len=len(REQ), direction=INGRESS, data=REQ, flags=F_TUPLE,
                 family=socket.AF_INET6, lport=8080, rport=40000, laddr=v6, raddr=v6),
        b.data(EGRESS, RESP),
    )  # fmt: skip
    table = t.take_tables()["http_events"]
    assert table.schema.equals(CATALOG["http_events"].arrow_schema())
    rows = table.to_pylist()
    assert [(r["trace_role"], r["local_addr"], r["local_port"], r["remote_addr"], r["remote_port"]) for r in rows] == [
        (1, "127.0.0.1", 5555, "10.1.2.3", 80),
        (2, "::1", 8080, "::1", 40000),
    ]
    assert all(r["upid"].startswith(f"0:{PID}:") for r in rows)
    assert t.take_tables()["http_events"].num_rows == 0


def test_requests_in_flight_when_the_tracer_stops_are_not_losses():
    t, _, forgotten = tracker()
    s = Stream()
    close_delimited = b"HTTP/1.0 200 OK\r\n\r\nall of it"
    waiting = Stream(fd=8, gen=2)
    feed(t, s.open(ROLE_CLIENT), s.data(EGRESS, REQ), s.data(INGRESS, close_delimited),
         waiting.open(ROLE_CLIENT), waiting.data(EGRESS, REQ))  # fmt: skip
    t.close_all()
    assert [(c.fd, tx.resp_body) for c, tx in take(t)] == [(7, "all of it")]
    assert no_drops(t) and not t.conns and not forgotten


def _keepalive_events(s: Stream, count: int, role: int, split_at: int = 0, head_every: int = 0) -> list[SockEvent]:
    """``count`` sequential keep-alive transactions on one connection of ``role``: request
    /p<i>, answered by a body that names it (so a mis-paired row shows; every response also
    says it in an X-For header). ``split_at``: every response is written in two pieces, cut
    that many bytes in (0: one piece). ``head_every``: every so many requests are HEAD (their
    responses have a Content-Length and no body)."""
    sent, received = (EGRESS, INGRESS) if role == ROLE_CLIENT else (INGRESS, EGRESS)
    events = [s.open(role)]
    for i in range(count):
        body = f"answer to /p{i}".encode()
        head = head_every and i % head_every == head_every - 1
        events.append(s.data(sent, f"{'HEAD' if head else 'GET'} /p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
        response = b"HTTP/1.1 200 OK\r\nX-For: /p%d\r\nContent-Length: %d\r\n\r\n%s" % (
            i,
            len(body),
            b"" if head else body,
        )
        if 0 < split_at < len(response):
            events.append(s.data(received, response[:split_at]))
            events.append(s.data(received, response[split_at:]))
        else:
            events.append(s.data(received, response))
    return events


def _feed_losing(events: list[SockEvent], lost: set[int], batch: int) -> tuple[ConnTracker, list]:
    """Feed ``events`` but those at the indexes ``lost`` (ring buffer full), ``batch`` per poll,
    then two empty polls (holes are given up); the rows, each checked to pair a request with
    its own response (the body names the path)."""
    t, _, _ = tracker()
    kept = [ev for i, ev in enumerate(events) if i not in lost]
    for start in range(0, len(kept), batch):
        feed(t, *kept[start : start + batch])
    feed(t)
    feed(t)
    rows = [tx for _, tx in take(t)]
    for tx in rows:
        assert tx.resp_headers["X-For"] == tx.req_path, "a request paired with another's response"
        assert tx.resp_body == ("" if tx.req_method == "HEAD" else f"answer to {tx.req_path}")
    return t, rows


@settings(max_examples=60, deadline=None)
@given(
    role=st.sampled_from([ROLE_SERVER, ROLE_CLIENT]),
    lost=st.sets(st.integers(1, 400), max_size=12),
    batch=st.integers(1, 40),
    split_at=st.sampled_from([0, 5, 38, 60]),
    head_every=st.sampled_from([0, 3, 7]),
)
@example(role=ROLE_SERVER, lost={41, 80, 121, 200, 333}, batch=8, split_at=0, head_every=0)
def test_a_lost_event_costs_the_transactions_around_it_and_never_mispairs(role, lost, batch, split_at, head_every):
    """Ring buffer full: single events are lost. While a hole waits to be declared lost (two
    batches), the other direction's bytes wait with it, so that resynchronising costs the
    transaction whose bytes were lost (and the one in flight), not every transaction parsed
    meanwhile (nor, after the restart, those held on probation, discarded when another loss
    comes first); and no row ever pairs a request with another request's response."""
    t, rows = _feed_losing(_keepalive_events(Stream(), 200, role, split_at, head_every), lost, batch)
    gaps = t.drop_counts()["data_gap"]
    assert gaps <= len(lost) and (gaps > 0 or not lost or max(lost) >= 398)  # the last ones: no later bytes show them
    assert len(rows) >= 200 - (2 + PROBATION_EXCHANGES - 1) * len(lost)


def test_a_lost_response_on_a_sequential_connection_costs_only_its_transaction():
    """Once a connection has answered each request before the next began, the response found
    after lost response bytes answers the latest request before it (by time): only the request
    whose response was lost goes, counted as unmatched; the one in flight is kept."""
    for role in (ROLE_SERVER, ROLE_CLIENT):
        t, _, _ = tracker()
        events = _keepalive_events(Stream(), 50, role)
        lost = {2 * 20 + 2}  # the response to /p20
        for ev in (ev for i, ev in enumerate(events) if i not in lost):
            feed(t, ev)
        feed(t)
        feed(t)
        rows = [tx for _, tx in take(t)]
        assert [tx.req_path for tx in rows] == [f"/p{i}" for i in range(50) if i != 20]
        assert all(tx.resp_body == f"answer to {tx.req_path}" for tx in rows)
        drops = t.drop_counts()
        assert (drops["data_gap"], drops["unmatched"], drops["parse_error"]) == (1, 1, 0)


def test_a_status_line_inside_a_body_after_a_hole_is_not_taken_for_a_response():
    """A sequential connection: the answer to /b lost its head (or part of its body), and the
    next bytes seen, from a later call, begin with text that reads as a status line (a body
    that quotes HTTP, say). Every request before /b was answered whole, so the lost bytes were
    /b's answer's and these are the rest of it: /b is not paired with a "response" made of its
    own body's bytes; parsing starts over at the next request."""
    inner = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nfake"
    body = b"x" * 3000 + inner + b"y" * 3000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    for role in (ROLE_CLIENT, ROLE_SERVER):
        sent, received = (EGRESS, INGRESS) if role == ROLE_CLIENT else (INGRESS, EGRESS)
        for seen_before_hole in (len(head) + 1000, 0):  # part of the body lost; the head and all
            t, _, _ = tracker()
            s = Stream()
            feed(t, s.open(role), s.data(sent, REQ), s.data(received, RESP), s.data(sent, REQ.replace(b"/a", b"/b")))
            if seen_before_hole:
                feed(t, s.data(received, (head + body)[:seen_before_hole]))
            lost = len(head) + 3000 - seen_before_hole
            # The rest of the answer from a later call, and the client's next request after it.
            feed(t, s.data(received, body[3000:], skip=lost), s.data(sent, REQ.replace(b"/a", b"/c")))
            feed(t)
            feed(t)
            feed(t, s.data(received, RESP), *in_step(s, sent), s.close())
            rows = [(tx.req_path, tx.resp_status, tx.resp_body) for _, tx in take(t)]
            assert rows == [("/a", 200, "hello"), ("/c", 200, "hello"), ("/y", 200, "hello"), ("/z", 200, "hello")], (
                role,
                seen_before_hole,
            )
            assert t.drop_counts()["data_gap"] == 1


def test_requests_read_together_after_a_lost_response_are_not_paired_by_time():
    """Found live (tests/agent/test_http1_pairing_live.py): nginx reads a pipelining client's
    requests one at a time, each after it answered the one before, so its end of the connection
    looks sequential; the answer to /p5 was lost (ring buffer full), and nginx's next read held
    /p6../p9 at once. The answer after the hole is /p6's, not /p9's (the latest request that
    began before it): requests that arrived in one read were in flight together, which no loss
    explains, so pairing by time is not to be trusted; parsing starts over."""
    for role in (ROLE_SERVER, ROLE_CLIENT):
        sent, received = (EGRESS, INGRESS) if role == ROLE_CLIENT else (INGRESS, EGRESS)
        for together in (2, 4):
            t, _, _ = tracker()
            s = Stream()
            events = _keepalive_events(s, 6, role)
            events[-1:] = []  # the answer to /p5: lost
            s.pos[received] += 60
            requests = [f"GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(6, 6 + together)]
            events.append(s.data(sent, b"".join(requests)))
            for i in range(6, 6 + together):
                body = f"answer to /p{i}".encode()
                events.append(s.data(received, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)))
            feed(t, *events)
            feed(t, s.data(sent, b"GET /p99 HTTP/1.1\r\nHost: x\r\n\r\n"))  # the client goes on
            feed(t)
            feed(t, s.close())
            rows = [(tx.req_path, tx.resp_body) for _, tx in take(t)]
            assert all(body == f"answer to {path}" for path, body in rows), (role, together, rows)
            assert [path for path, _ in rows][:5] == [f"/p{i}" for i in range(5)]
            assert t.drop_counts()["data_gap"] == 1


def test_bytes_waiting_behind_a_hole_are_not_rescanned_per_event():
    """While a hole waits, every later event of the connection waits too; trying to release them
    all at each new event made overload quadratic (2 s for one 32,768-event batch). Only the
    event that fills the hole may start a release."""
    t, _, _ = tracker()
    s = Stream()
    events = _keepalive_events(s, 1000, ROLE_SERVER)
    lost_response = events[2]
    waiting = events[:2] + events[3:]
    calls = []
    release = t._release
    t._release = lambda conn, lost=False: (calls.append(lost), release(conn, lost))[1]
    feed(t, *waiting)  # one batch: the hole stays open, nearly 2,000 events wait behind it
    assert t.conns[(PID, 7, 1)].stream.held_bytes > 0
    assert calls == []
    feed(t, lost_response)  # it was only late: everything goes through, in one release
    assert calls == [False]
    rows = [tx for _, tx in take(t)]
    assert len(rows) == 1000 and no_drops(t)
    assert all(tx.resp_body == f"answer to {tx.req_path}" for tx in rows)


def _pipelined_events(s: Stream, count: int) -> list[SockEvent]:
    """Server side of a pipelining client: two requests in one read, then both responses."""
    events = [s.open(ROLE_SERVER)]
    for i in range(0, count, 2):
        events.append(s.data(INGRESS, b"".join(f"GET /p{j} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for j in (i, i + 1))))
        for j in (i, i + 1):
            body = f"answer to /p{j}".encode()
            events.append(
                s.data(EGRESS, b"HTTP/1.1 200 OK\r\nX-For: /p%d\r\nContent-Length: %d\r\n\r\n%s" % (j, len(body), body))
            )
    return events


@settings(max_examples=40, deadline=None)
@given(lost=st.sets(st.integers(1, 300), max_size=8), batch=st.integers(1, 30))
def test_lost_events_on_a_pipelining_connection_never_mispair(lost, batch):
    """A connection seen pipelining is not restarted after a loss (answers to requests never seen
    may be on their way): its rows are those completed before the first loss, each right."""
    t, rows = _feed_losing(_pipelined_events(Stream(), 200), lost, batch)
    if not lost:
        assert len(rows) == 200 and no_drops(t)
    else:
        groups_before_loss = (min(lost) - 1) // 3  # event 0 opens; then 3 events per 2 requests
        assert len(rows) >= 2 * groups_before_loss - 2


def _piled_up_events(s: Stream, reads: list[int], role: int = ROLE_SERVER) -> list[SockEvent]:
    """Server side of a pipelining client as nginx reads it: the next request only once it has
    answered the one before, so one request a read while it keeps up and several in one read
    when they piled up meanwhile (``reads``: requests per read); each answer in its own write.
    (Client side: a client that sends in turn, and now and then several requests in one write.)"""
    sent, received = (EGRESS, INGRESS) if role == ROLE_CLIENT else (INGRESS, EGRESS)
    events, n = [s.open(role)], 0
    for count in reads:
        events.append(s.data(sent, b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % (n + k) for k in range(count))))
        for k in range(n, n + count):
            body = b"answer to /p%d" % k
            head = b"HTTP/1.1 200 OK\r\nX-For: /p%d\r\nContent-Length: %d\r\n\r\n" % (k, len(body))
            events.append(s.data(received, head + body))
        n += count
    return events


@settings(max_examples=60, deadline=None)
@given(
    reads=st.lists(st.sampled_from([1, 1, 1, 2, 4]), min_size=5, max_size=60),
    lost=st.sets(st.integers(1, 200), max_size=8),
    batch=st.integers(1, 30),
    role=st.sampled_from([ROLE_SERVER, ROLE_CLIENT]),
)
# The answer to /p5 lost, then /p6../p9 in one read (the live test's nginx): /p9 got /p6's answer.
@example(reads=[1] * 6 + [4, 1], lost={12}, batch=4, role=ROLE_SERVER)
@example(reads=[1, 1, 2, 1, 1], lost={4}, batch=2, role=ROLE_CLIENT)
def test_lost_answers_with_requests_piled_up_in_one_read_never_mispair(reads, lost, batch, role):
    """A pipelining client's server end that looks sequential while the server keeps up (or a
    client that sends in turn, but for a few requests written together): after a lost answer,
    pairing by time must not take the requests of one read for requests sent in turn (each row
    is checked by _feed_losing)."""
    t, rows = _feed_losing(_piled_up_events(Stream(), reads, role), lost, batch)
    if not lost or min(lost) > 2 * sum(reads):
        assert len(rows) == sum(reads) and no_drops(t)


# -- a close or exit in the same batch as a hole ----------------------------------------------------
def _recorded_events_with_a_hole(s: Stream, role: int, cut_path: bytes) -> tuple[list[SockEvent], list[str]]:
    """The server's or client's kernel events for the keep-alive exchange recorded from nginx
    (pxq/agent/protocols/http1/streams/keepalive_mix.json), where the call carrying the response to
    ``cut_path`` moved more bytes than were copied: only its first 100 bytes arrive, the rest
    is a hole. Also every request path the client sent, in order (the recorded stream's)."""
    stream = load_stream(STREAMS / "keepalive_mix.json")
    sent, received = (EGRESS, INGRESS) if role == ROLE_CLIENT else (INGRESS, EGRESS)
    events, last_request, paths = [s.open(role)], b"", []
    for direction, _ts, data in stream.chunks:
        if direction == "req":
            last_request = data
            paths.append(data.split(b" ", 2)[1].decode())
            events.append(s.data(sent, data))
        elif last_request.split(b" ", 2)[1] == cut_path and data.startswith(b"HTTP/"):
            events.append(s.data(received, data[:100]))
            s.pos[received] += len(data) - 100  # never copied: a hole
        else:
            events.append(s.data(received, data))
    return events, paths


def test_close_in_the_same_batch_as_a_hole_keeps_the_transactions_after_it():
    """A keep-alive connection whose second response lost bytes, closed before the tracker's next
    batch: the close says the missing bytes are not coming, so the hole is skipped and the
    transactions after it are parsed, as at the end of a capture; only the cut one is lost."""
    for role in (ROLE_SERVER, ROLE_CLIENT):
        for end in ("close", "exit"):
            t, _, _ = tracker()
            s = Stream()
            events, sent_paths = _recorded_events_with_a_hole(s, role, b"/api/items")
            feed(t, *events, s.close() if end == "close" else s.exit())
            done = take(t)
            assert [tx.req_path for _, tx in done] == [p for p in sent_paths if p != "/api/items"], (role, end)
            assert {c.role for c, _ in done} == {role}
            drops = t.drop_counts()
            assert (drops["data_gap"], drops["unmatched"], drops["parse_error"]) == (1, 1, 0), (role, end, drops)
            assert not t.conns


def test_a_response_older_than_the_next_request_is_counted_unmatched_not_paired():
    """A server that answered twice (or a request whose bytes the tracer never saw): the extra
    answer is not paired with the next request, and counts as unmatched."""
    t, _, _ = tracker()
    s = Stream()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n%s"
    feed(t, s.open(ROLE_SERVER), s.data(INGRESS, REQ), s.data(EGRESS, answer % b"/a" + answer % b"/x"),
         s.data(INGRESS, REQ.replace(b"/a", b"/b")), s.data(EGRESS, answer % b"/b"), s.close())  # fmt: skip
    assert [(tx.req_path, tx.resp_body) for _, tx in take(t)] == [("/a", "/a"), ("/b", "/b")]
    drops = t.drop_counts()
    assert (drops["unmatched"], drops["parse_error"]) == (1, 0)


def test_a_loss_counted_mid_connection_stays_counted_when_the_window_ends():
    # A reply whose command was lost (ringbuf_full) is counted when it arrives; the window's end
    # drops only what is left unfinished at that end, not the losses counted before it.
    t = ConnTracker(protocols=[registry.REDIS])
    s = Stream()
    ping, pong = b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"
    for ev in (s.open(ROLE_CLIENT), s.data(EGRESS, ping), s.data(INGRESS, pong), s.data(INGRESS, pong)):
        t.handle(ev)
    t.end_batch()
    assert t.drop_counts()["unmatched"] == 1
    t.close_all()
    assert t.drop_counts()["unmatched"] == 1
    assert t.take_tables()["redis_events"].num_rows == 1
