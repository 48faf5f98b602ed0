"""The DNS protocol without a kernel: Pixie's own test messages (captured with Wireshark, in
Pixie's protocols/dns/parse_test.cc) decoded into Pixie's JSON columns, pairing over UDP and TCP,
recorded dnsmasq conversations, and the connection tracker's UDP side fed synthetic datagram
events: one socket talking to several peers, datagrams in pieces, non-DNS sockets switched off,
unanswered queries as rows."""

from __future__ import annotations

import json
import socket

import dns.message
import dns.rcode
import dns.rrset
import pytest

from pxq.agent import conn_tracker
from pxq.agent.conn_tracker import (
    EGRESS,
    EV_CLOSE,
    EV_DATA,
    EV_PROC_EXIT,
    F_DATAGRAM,
    F_FILLER,
    INGRESS,
    ConnTracker,
    SockEvent,
)
from pxq.agent.protocols import registry
from pxq.agent.protocols.dns import (
    RECORDED_DATAGRAMS,
    RECORDED_STREAMS,
    DnsStitcher,
    dns_record,
    looks_like_query_datagram,
    looks_like_query_stream,
    looks_like_response_datagram,
    looks_like_response_stream,
)
from pxq.testing.streams import load_stream, replay

# Pixie's parse_test.cc: kReqFrame2 / kRespFrame2 (www.yahoo.com, a CNAME and four A records) and
# kQueryFrame (with an EDNS OPT record in the additional section).
PIXIE_QUERY = bytes([
    0xFE, 0xAE, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x77, 0x77, 0x77,
    0x05, 0x79, 0x61, 0x68, 0x6F, 0x6F, 0x03, 0x63, 0x6F, 0x6D, 0x00, 0x00, 0x01, 0x00, 0x01,
])  # fmt: skip
PIXIE_RESPONSE = bytes([
    0xFE, 0xAE, 0x81, 0x80, 0x00, 0x01, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x03, 0x77, 0x77, 0x77,
    0x05, 0x79, 0x61, 0x68, 0x6F, 0x6F, 0x03, 0x63, 0x6F, 0x6D, 0x00, 0x00, 0x01, 0x00, 0x01, 0xC0,
    0x0C, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x39, 0x00, 0x14, 0x0B, 0x6E, 0x65, 0x77, 0x2D,
    0x66, 0x70, 0x2D, 0x73, 0x68, 0x65, 0x64, 0x03, 0x77, 0x67, 0x31, 0x01, 0x62, 0xC0, 0x10, 0xC0,
    0x2B, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x39, 0x00, 0x04, 0x62, 0x89, 0x0B, 0xA4, 0xC0,
    0x2B, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x39, 0x00, 0x04, 0x4A, 0x06, 0xE7, 0x14, 0xC0,
    0x2B, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x39, 0x00, 0x04, 0x4A, 0x06, 0xE7, 0x15, 0xC0,
    0x2B, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x39, 0x00, 0x04, 0x62, 0x89, 0x0B, 0xA3,
])  # fmt: skip
PIXIE_EDNS_QUERY = bytes([
    0xC6, 0xFA, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x14, 0x69, 0x6E, 0x74,
    0x65, 0x6C, 0x6C, 0x69, 0x6A, 0x2D, 0x65, 0x78, 0x70, 0x65, 0x72, 0x69, 0x6D, 0x65, 0x6E, 0x74,
    0x73, 0x07, 0x61, 0x70, 0x70, 0x73, 0x70, 0x6F, 0x74, 0x03, 0x63, 0x6F, 0x6D, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0x29, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
])  # fmt: skip


def header(**fields: int) -> dict:
    """Pixie's HeaderToJSONString fields, zero unless given."""
    keys = ("txid", "qr", "opcode", "aa", "tc", "rd", "ra", "ad", "cd", "rcode", "num_queries", "num_answers",
            "num_auth", "num_addl")  # fmt: skip
    return {k: fields.get(k, 0) for k in keys}


def test_pixies_captured_query_and_response_in_pixies_json_shape():
    st = DnsStitcher(datagrams=True)
    assert st.feed_messages(True, PIXIE_QUERY, 1_000) == []
    (pair,) = st.feed_messages(False, PIXIE_RESPONSE, 5_000)
    record = dns_record(*pair)
    # The values Wireshark shows in parse_test.cc's comments.
    assert json.loads(record.req_header) == header(txid=0xFEAE, rd=1, num_queries=1)
    assert json.loads(record.req_body) == {"queries": [{"name": "www.yahoo.com", "type": "A"}]}
    assert json.loads(record.resp_header) == header(txid=0xFEAE, qr=1, rd=1, ra=1, num_queries=1, num_answers=5)
    cname = "new-fp-shed.wg1.b.yahoo.com"
    assert json.loads(record.resp_body) == {"answers": [
        {"name": "www.yahoo.com", "type": "CNAME", "cname": cname},
        *({"name": cname, "type": "A", "addr": a} for a in ("98.137.11.164", "74.6.231.20", "74.6.231.21",
                                                             "98.137.11.163")),
    ]}  # fmt: skip
    assert (record.time_ns, record.latency_ns) == (5_000, 4_000)
    # Pixie's JSON text itself: compact, its key order (stitcher_test.cc's expected strings).
    assert record.req_header == (
        '{"txid":65198,"qr":0,"opcode":0,"aa":0,"tc":0,"rd":1,"ra":0,"ad":0,"cd":0,"rcode":0,'
        '"num_queries":1,"num_answers":0,"num_auth":0,"num_addl":0}'
    )


def test_the_edns_opt_record_counts_in_num_addl_as_on_the_wire():
    st = DnsStitcher(datagrams=True)
    st.feed_messages(True, PIXIE_EDNS_QUERY, 1)
    (pair,) = st.close_messages(2)
    assert json.loads(dns_record(*pair).req_header) == header(txid=0xC6FA, rd=1, num_queries=1, num_addl=1)


def test_inference_by_transport():
    framed = len(PIXIE_QUERY).to_bytes(2, "big") + PIXIE_QUERY
    assert looks_like_query_datagram(PIXIE_QUERY) and not looks_like_response_datagram(PIXIE_QUERY)
    assert looks_like_response_datagram(PIXIE_RESPONSE) and not looks_like_query_datagram(PIXIE_RESPONSE)
    assert looks_like_query_stream(framed) and not looks_like_query_datagram(framed)
    assert not looks_like_query_stream(PIXIE_QUERY)
    assert looks_like_response_stream(len(PIXIE_RESPONSE).to_bytes(2, "big") + PIXIE_RESPONSE)
    for other in (b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 40, b"", PIXIE_QUERY[:11]):
        assert not any(f(other) for f in (looks_like_query_datagram, looks_like_response_datagram,
                                          looks_like_query_stream, looks_like_response_stream))  # fmt: skip


def make_query(name: str, rdtype: str = "A", txid: int = 7) -> dns.message.QueryMessage:
    return dns.message.make_query(name, rdtype, id=txid, use_edns=False)


def make_answer(query: dns.message.Message, *addrs: str) -> bytes:
    response = dns.message.make_response(query)
    if addrs:
        response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", *addrs))
    return response.to_wire(want_shuffle=False)


def test_responses_pair_by_id_and_question_in_any_order():
    st = DnsStitcher(datagrams=True)
    a, b = make_query("a.test", txid=1), make_query("b.test", txid=2)
    reuse = make_query("c.test", txid=1)  # the same id as a, another name
    for i, q in enumerate((a, b, reuse)):
        st.feed_messages(True, q.to_wire(), 10 + i)
    pairs = st.feed_messages(False, make_answer(reuse, "10.0.0.3"), 20)
    pairs += st.feed_messages(False, make_answer(b, "10.0.0.2"), 21)
    pairs += st.feed_messages(False, make_answer(a, "10.0.0.1"), 22)
    got = [(json.loads(dns_record(*p).req_body)["queries"][0]["name"],
            json.loads(dns_record(*p).resp_body)["answers"][0]["addr"]) for p in pairs]  # fmt: skip
    assert got == [("c.test", "10.0.0.3"), ("b.test", "10.0.0.2"), ("a.test", "10.0.0.1")]
    assert not st.errors


def test_a_response_before_its_query_or_without_one_is_counted_not_paired():
    st = DnsStitcher(datagrams=True)
    q = make_query("a.test")
    assert st.feed_messages(False, make_answer(q, "10.0.0.1"), 5) == []
    st.feed_messages(True, q.to_wire(), 10)
    assert st.feed_messages(False, make_answer(make_query("a.test", txid=8), "10.0.0.9"), 11) == []
    assert st.errors == {"response_without_request": 2}
    (pair,) = st.close_messages(12)
    assert pair[1] is None and st.unanswered == 1


def test_an_unanswered_query_becomes_a_row_after_the_timeout():
    st = DnsStitcher(datagrams=True, query_timeout_ns=1_000)
    st.feed_messages(True, make_query("slow.test", txid=1).to_wire(), 100)
    late = make_query("next.test", txid=2)
    (expired,) = st.feed_messages(True, late.to_wire(), 2_000)
    record = dns_record(*expired)
    assert (record.resp_header, record.resp_body, record.latency_ns, record.time_ns) == ("", "", 0, 100)
    (pair,) = st.feed_messages(False, make_answer(late, "10.0.0.2"), 2_100)
    assert dns_record(*pair).latency_ns == 100


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.NXDOMAIN, dns.rcode.REFUSED])
def test_error_responses_pair_and_show_their_rcode(rcode):
    st = DnsStitcher(datagrams=True)
    q = make_query("broken.test")
    response = dns.message.make_response(q)
    response.set_rcode(rcode)
    st.feed_messages(True, q.to_wire(), 1)
    (pair,) = st.feed_messages(False, response.to_wire(), 2)
    record = dns_record(*pair)
    assert json.loads(record.resp_header)["rcode"] == int(rcode)
    assert json.loads(record.resp_body) == {"answers": []}


def test_garbage_is_counted_and_the_conversation_goes_on():
    st = DnsStitcher(datagrams=True)
    q = make_query("a.test")
    st.feed_messages(True, b"\xff" * 30, 1)
    st.feed_messages(True, q.to_wire(), 2)
    st.feed_messages(False, b"\x00\x07\x81", 3)
    (pair,) = st.feed_messages(False, make_answer(q, "10.0.0.1"), 4)
    assert pair[1] is not None and st.errors == {"invalid_message": 2}


def tcp(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


def test_tcp_messages_split_anywhere_or_several_in_one_read():
    queries = [make_query(f"q{i}.test", txid=i) for i in range(3)]
    requests = b"".join(tcp(q.to_wire()) for q in queries)
    responses = b"".join(tcp(make_answer(q, f"10.0.0.{i}")) for i, q in enumerate(queries))
    for cut in range(len(requests) + 1):
        st = DnsStitcher(datagrams=False)
        st.feed_messages(True, requests[:cut], 1)
        st.feed_messages(True, requests[cut:], 2)
        pairs = st.feed_messages(False, responses[: cut % len(responses)], 3)
        pairs += st.feed_messages(False, responses[cut % len(responses) :], 4)
        assert [json.loads(dns_record(*p).resp_body)["answers"][0]["addr"] for p in pairs] == [
            "10.0.0.0", "10.0.0.1", "10.0.0.2"]  # fmt: skip
        assert not st.errors


def test_a_tcp_message_cut_by_the_close_is_counted():
    st = DnsStitcher(datagrams=False)
    st.feed_messages(True, tcp(make_query("a.test").to_wire())[:10], 1)
    assert st.close_messages(2) == []
    assert st.errors == {"request_incomplete_at_close": 1}


# -- recorded conversations with dnsmasq --------------------------------------------------------
def answers_in(wire: bytes) -> list[dict]:
    """A response's A/AAAA/CNAME records as dnspython reads them (independently of pxq's JSON)."""
    msg = dns.message.from_wire(wire)
    out = []
    for rrset in msg.answer:
        for rd in rrset:
            name = rrset.name.to_text(omit_final_dot=True)
            kind = dns.rdatatype.to_text(rrset.rdtype)
            value = {"cname": rd.target.to_text(omit_final_dot=True)} if kind == "CNAME" else {"addr": rd.address}
            out.append({"name": name, "type": kind, **value})
    return out


def split_tcp(stream: bytes) -> list[bytes]:
    out = []
    while stream:
        end = 2 + int.from_bytes(stream[:2], "big")
        out.append(stream[2:end])
        stream = stream[end:]
    return out


@pytest.mark.parametrize("path", sorted(RECORDED_STREAMS.glob("*.json")), ids=lambda p: p.stem)
def test_recorded_tcp_conversations(path):
    stream = load_stream(path)
    records, st = replay(stream.chunks, protocol="dns")
    responses = split_tcp(stream.side("resp"))
    assert len(records) == len(split_tcp(stream.side("req"))) == len(responses) > 0
    for record, wire in zip(records, responses, strict=True):
        assert json.loads(record.resp_body) == {"answers": answers_in(wire)}
        assert json.loads(record.resp_header)["txid"] == json.loads(record.req_header)["txid"]
        assert record.latency_ns > 0
    assert not st.errors


def test_recorded_udp_conversation():
    stream = load_stream(RECORDED_DATAGRAMS / "udp_four_queries.json")
    spec = registry.PROTOCOLS["dns"].datagrams
    assert spec is not None
    st = spec.make_stitcher(None)  # type: ignore[arg-type]
    pairs = []
    for direction, ts, data in stream.chunks:
        pairs += st.feed_messages(direction == "req", data, ts)
    responses = {dns.message.from_wire(d).id: d for kind, _, d in stream.chunks if kind == "resp"}
    assert len(pairs) == len(responses) == 4
    for req, resp in pairs:
        assert resp is not None and resp.txid == req.txid
        assert json.loads(resp.body) == {"answers": answers_in(responses[req.txid])}
    assert [json.loads(resp.header)["rcode"] for _, resp in pairs] == [0, 0, 0, 3]


# -- the tracker's UDP side ---------------------------------------------------------------------
PID = 5151


def dgram(fd: int, direction: int, pos: int, data: bytes, ts: int, peer: tuple[str, int] = ("10.1.1.1", 53), *,
          size: int | None = None, filler: bool = False, gen: int = 1, pid: int = PID) -> SockEvent:  # fmt: skip
    raddr = socket.inet_aton(peer[0]).ljust(16, b"\0")
    flags = F_DATAGRAM | (F_FILLER if filler else 0)
    return SockEvent(ts_ns=ts, pos=pos, size=len(data) if size is None else size, pid=pid, fd=fd, gen=gen,
                     data_len=0 if filler else len(data), kind=EV_DATA, flags=flags, direction=direction, role=0,
                     family=socket.AF_INET, lport=0, rport=peer[1], syscall=0, reserved=0, laddr=bytes(16),
                     raddr=raddr, data=b"" if filler else data)  # fmt: skip


def close(fd: int, ts: int, gen: int = 1) -> SockEvent:
    return SockEvent(ts, 0, 0, PID, fd, gen, 0, EV_CLOSE, 0, 0, 0, 0, 0, 0, 0, 0, bytes(16), bytes(16))


def tracker(**kw) -> tuple[ConnTracker, list]:
    disabled: list = []
    return ConnTracker(protocols=[registry.HTTP, registry.DNS], disable=lambda *a: disabled.append(a), **kw), disabled


def dns_rows(t: ConnTracker) -> list[dict]:
    return t.take_tables()["dns_events"].to_pylist()


def test_one_socket_two_servers_same_id_each_answer_pairs_with_its_own_peer():
    t, _ = tracker()
    q = make_query("www.test", txid=4242)
    wire = q.to_wire()
    one, two = ("10.0.0.53", 53), ("10.0.0.54", 5353)
    t.handle_all([
        dgram(3, EGRESS, 0, wire, 100, one),
        dgram(3, EGRESS, len(wire), wire, 110, two),
        dgram(3, INGRESS, 0, (a2 := make_answer(q, "192.0.2.2")), 150, two),  # the second server answers first
        dgram(3, INGRESS, len(a2), make_answer(q, "192.0.2.1"), 190, one),
    ])  # fmt: skip
    rows = {(r["remote_addr"], r["remote_port"]): r for r in dns_rows(t)}
    assert sorted(rows) == sorted([one, two])
    assert json.loads(rows[one]["resp_body"])["answers"][0]["addr"] == "192.0.2.1"
    assert json.loads(rows[two]["resp_body"])["answers"][0]["addr"] == "192.0.2.2"
    assert (rows[one]["latency"], rows[two]["latency"]) == (90, 40)
    assert {r["trace_role"] for r in rows.values()} == {1}


def test_a_server_socket_answering_two_clients_is_the_server():
    t, _ = tracker()
    qa, qb = make_query("a.test", txid=9), make_query("b.test", txid=9)
    ca, cb = ("127.0.0.1", 40001), ("127.0.0.1", 40002)
    t.handle_all([
        dgram(4, INGRESS, 0, qa.to_wire(), 10, ca),
        dgram(4, INGRESS, 100, qb.to_wire(), 11, cb),
        dgram(4, EGRESS, 0, make_answer(qb, "10.0.0.2"), 20, cb),
        dgram(4, EGRESS, 200, make_answer(qa, "10.0.0.1"), 21, ca),
    ])  # fmt: skip
    rows = {r["remote_port"]: r for r in dns_rows(t)}
    assert {p: json.loads(r["req_body"])["queries"][0]["name"] for p, r in rows.items()} == {
        40001: "a.test",
        40002: "b.test",
    }
    assert {p: json.loads(r["resp_body"])["answers"][0]["addr"] for p, r in rows.items()} == {
        40001: "10.0.0.1",
        40002: "10.0.0.2",
    }
    assert {r["trace_role"] for r in rows.values()} == {2}


def test_a_datagram_in_two_events_is_whole_and_one_with_uncopied_bytes_is_a_gap():
    t, _ = tracker()
    q = make_query("a.test")
    wire, answer = q.to_wire(), make_answer(q, "10.0.0.1")
    t.handle_all([
        dgram(5, EGRESS, 0, wire[:10], 1, size=len(wire)),  # the first event holds the datagram's length
        dgram(5, EGRESS, 10, wire[10:], 1, size=len(wire)),
        dgram(5, INGRESS, 0, answer[:20], 2, size=len(answer)),
        dgram(5, INGRESS, 20, b"", 2, size=len(answer) - 20, filler=True),  # the rest not copied
    ])  # fmt: skip
    assert t.drops["data_gap"] == 1
    t.handle_all([close(5, 3)])
    (row,) = dns_rows(t)
    assert json.loads(row["req_body"])["queries"][0]["name"] == "a.test"
    assert (row["resp_header"], row["latency"]) == ("", 0)  # its answer could not be read: unanswered
    assert t.drop_counts()["unmatched"] == 0


def test_a_udp_socket_that_never_carries_dns_is_switched_off():
    t, disabled = tracker()
    events = [dgram(6, EGRESS, i * 20, b"not dns at all, sorry", i, ("10.9.9.9", 9000 + i % 2)) for i in range(7)]
    t.handle_all(events)
    assert disabled == []
    t.handle_all([dgram(6, EGRESS, 200, b"still not dns, sorry", 50)])
    assert disabled == [(PID, 6, 1)]
    assert t.counts["other_connections"] == 1
    q = make_query("late.test")
    t.handle_all([dgram(6, EGRESS, 300, q.to_wire(), 60)])  # whatever still comes is ignored
    t.close_all()
    assert dns_rows(t) == []


def test_a_dns_socket_is_never_switched_off_by_a_noisy_peer():
    t, disabled = tracker()
    q = make_query("a.test")
    t.handle_all([dgram(7, EGRESS, 0, q.to_wire(), 1)])
    t.handle_all([dgram(7, INGRESS, i * 20, b"noise noise noise!!", 2 + i, ("10.7.7.7", 7)) for i in range(20)])
    assert disabled == []
    t.handle_all([dgram(7, INGRESS, 999, make_answer(q, "10.0.0.1"), 30)])
    (row,) = dns_rows(t)
    assert row["latency"] == 29


def test_close_and_process_exit_end_every_peer_with_unanswered_rows():
    t, _ = tracker()
    t.handle_all([dgram(8, EGRESS, 0, make_query("a.test").to_wire(), 1, ("10.0.0.1", 53)),
                  dgram(8, EGRESS, 40, make_query("b.test").to_wire(), 2, ("10.0.0.2", 53)),
                  dgram(9, EGRESS, 0, make_query("c.test").to_wire(), 3)])  # fmt: skip
    t.handle_all([close(8, 4)])
    assert sorted(json.loads(r["req_body"])["queries"][0]["name"] for r in dns_rows(t)) == ["a.test", "b.test"]
    # A late datagram of the closed socket's generation is not a new socket.
    t.handle_all([dgram(8, INGRESS, 0, make_answer(make_query("a.test"), "10.0.0.1"), 4, ("10.0.0.1", 53))])
    assert t.drops["late_event"] == 1 and (PID, 8) not in t.udp
    t.handle_all([SockEvent(5, 0, 0, PID, -1, 0, 0, EV_PROC_EXIT, 0, 0, 0, 0, 0, 0, 0, 0, bytes(16), bytes(16))])
    assert [json.loads(r["req_body"])["queries"][0]["name"] for r in dns_rows(t)] == ["c.test"]
    assert t.udp == {} and t.drop_counts()["unmatched"] == 0


def test_idle_peers_are_evicted_and_their_queries_become_rows():
    t, _ = tracker()
    t.handle_all([dgram(10, INGRESS, 0, make_query("idle.test").to_wire(), 1, ("127.0.0.1", 40000))])
    later = conn_tracker.UDP_IDLE_NS + conn_tracker.EVICT_EVERY_NS + 10
    t.handle_all([dgram(11, INGRESS, 0, make_query("busy.test").to_wire(), later, ("127.0.0.1", 40001))])
    (row,) = dns_rows(t)
    assert json.loads(row["req_body"])["queries"][0]["name"] == "idle.test" and row["trace_role"] == 2
    assert (PID, 10) not in t.udp and (PID, 11) in t.udp


def test_peers_beyond_the_limit_evict_the_least_recent(monkeypatch):
    monkeypatch.setattr(conn_tracker, "MAX_UDP_PEERS", 2)
    t, _ = tracker()
    t.handle_all([dgram(12, INGRESS, i * 40, make_query(f"p{i}.test").to_wire(), i, ("127.0.0.1", 41000 + i))
                  for i in range(3)])  # fmt: skip
    assert t.drops["conn_evicted"] == 1
    assert len(t.udp[(PID, 12)].flows) == 2
    (row,) = dns_rows(t)  # the evicted peer's query, unanswered
    assert json.loads(row["req_body"])["queries"][0]["name"] == "p0.test"


def test_a_response_without_its_query_is_unmatched_even_when_the_window_ends():
    t, _ = tracker()
    t.handle_all([dgram(13, INGRESS, 0, make_answer(make_query("orphan.test"), "10.0.0.1"), 1)])
    t.close_all()  # the window ends with the socket still open
    assert dns_rows(t) == []
    assert t.drop_counts()["unmatched"] == 1


def test_drain_gives_the_first_protocol_and_keeps_the_others_rows():
    # Regression: with two protocols traced, drain() raised (it unpacked exactly one table).
    from pxq.agent.socket_tracer import SocketTracer

    tracer = SocketTracer(pids={1})
    q = make_query("a.test")
    tracer._tracker.handle_all([dgram(3, EGRESS, 0, q.to_wire(), 1), dgram(3, INGRESS, 0, make_answer(q), 2)])
    assert tracer.drain().num_rows == 0  # http_events: nothing
    assert tracer.drain_tables()["dns_events"].num_rows == 1
