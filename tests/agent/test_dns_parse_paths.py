"""The DNS parser's two ways of reading a message give the same columns.

Common messages (a query; its answer of A, AAAA or CNAME records; EDNS) are read with dnspython's
wire reader without building its message objects, every other one with ``dns.message.from_wire``.
Here the expected texts come from ``dns.message.from_wire`` alone, turned into Pixie's JSON by a
reference written for this test (``json.dumps`` of the fields Pixie's ``HeaderToJSONString``,
``ProcessReq`` and ``ProcessResp`` show), over messages dnspython builds (names in mixed case, with
escapes, repeated and interleaved records, other types and sections) and their damaged copies:
either both refuse a message or both give the same texts.
"""

from __future__ import annotations

import json
import os

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from pxq.agent.protocols.dns import RECORDED_DATAGRAMS, RECORDED_STREAMS, parse, parse_message
from pxq.testing.streams import load_stream

EXAMPLES = int(os.environ.get("PXQ_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=3 * EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the reference: dnspython's message, Pixie's fields ---------------------------------------------
def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


def reference(wire: bytes) -> tuple | None:
    """(txid, is_response, question, header, body, rcode) from dns.message.from_wire; None when it refuses."""
    try:
        msg = dns.message.from_wire(wire)
    except Exception:
        return None
    flags = int(msg.flags)
    bit = lambda mask: int(bool(flags & mask))  # noqa: E731
    additional = sum(len(r) for r in msg.additional) + (msg.opt is not None) + (msg.tsig is not None)
    header = {
        "txid": msg.id, "qr": bit(dns.flags.QR), "opcode": int(msg.opcode()), "aa": bit(dns.flags.AA),
        "tc": bit(dns.flags.TC), "rd": bit(dns.flags.RD), "ra": bit(dns.flags.RA), "ad": bit(dns.flags.AD),
        "cd": bit(dns.flags.CD), "rcode": flags & 0xF, "num_queries": len(msg.question),
        "num_answers": sum(len(r) for r in msg.answer), "num_auth": sum(len(r) for r in msg.authority),
        "num_addl": additional,
    }  # fmt: skip
    is_response = bool(flags & dns.flags.QR)
    if is_response:
        answers = []
        for rrset in msg.answer:
            for rd in rrset:
                if rrset.rdtype == dns.rdatatype.CNAME:
                    answers.append({"name": _text(rrset.name), "type": "CNAME", "cname": _text(rd.target)})
                elif rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and hasattr(rd, "address"):
                    kind = dns.rdatatype.to_text(rrset.rdtype)
                    answers.append({"name": _text(rrset.name), "type": kind, "addr": rd.address})
        body = {"answers": answers}
    else:
        body = {"queries": [{"name": _text(q.name), "type": dns.rdatatype.to_text(q.rdtype)} for q in msg.question]}
    question = tuple((_text(q.name), int(q.rdtype)) for q in msg.question)
    dumps = lambda v: json.dumps(v, separators=(",", ":"))  # noqa: E731
    return msg.id, is_response, question, dumps(header), dumps(body), flags & 0xF


def parsed(wire: bytes) -> tuple | None:
    parse._parsed.cache_clear()  # read it now, not from an earlier example's result
    try:
        return tuple(parse_message(wire, 0))[:6]
    except parse.PARSE_ERRORS:
        return None


def read_by_dnspython_message(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record each message handed to dns.message.from_wire."""
    seen: list[bytes] = []
    real = dns.message.from_wire

    def recording(wire, *args, **kwargs):
        seen.append(wire)
        return real(wire, *args, **kwargs)

    monkeypatch.setattr(dns.message, "from_wire", recording)
    return seen


# -- messages built by dnspython ------------------------------------------------------------------
LABELS = st.sampled_from(
    [b"www", b"WWW", b"test", b"Test", b"a", b"x-y_z", b"dots.in", b'q"t', b"\\b", b"\x00\xff", b"1"]
)
NAMES = st.lists(LABELS, min_size=0, max_size=3).map(lambda labels: dns.name.Name([*labels, b""]))
ADDRESSES = st.sampled_from(["192.0.2.1", "192.0.2.2", "10.0.0.1"])
ADDRESSES6 = st.sampled_from(["2001:db8::1", "::1", "::ffff:192.0.2.1"])


@st.composite
def records(draw) -> tuple[dns.name.Name, dns.rdata.Rdata]:
    name = draw(NAMES)
    kind = draw(st.sampled_from(["A", "A", "AAAA", "CNAME", "CNAME", "MX", "TXT", "A_CH"]))
    if kind == "A":
        return name, dns.rdata.from_text("IN", "A", draw(ADDRESSES))
    if kind == "AAAA":
        return name, dns.rdata.from_text("IN", "AAAA", draw(ADDRESSES6))
    if kind == "CNAME":
        return name, dns.rdata.from_text("IN", "CNAME", draw(NAMES).to_text())
    if kind == "MX":
        return name, dns.rdata.from_text("IN", "MX", f"10 {draw(NAMES).to_text()}")
    if kind == "TXT":
        return name, dns.rdata.from_text("IN", "TXT", '"hello"')
    return name, dns.rdata.from_text("CH", "A", f"{draw(NAMES).to_text()} 1234")


@st.composite
def messages(draw) -> bytes:
    query = dns.message.make_query(
        draw(NAMES), draw(st.sampled_from(["A", "AAAA", "MX", "TXT"])), use_edns=draw(st.sampled_from([None, 0])),
        options=draw(st.sampled_from([[], [dns.edns.GenericOption(10, b"cookie12")]])),
    )  # fmt: skip
    query.id = draw(st.integers(0, 0xFFFF))
    query.set_opcode(draw(st.sampled_from([dns.opcode.QUERY] * 4 + [dns.opcode.STATUS, dns.opcode.NOTIFY])))
    if not draw(st.booleans()):
        return query.to_wire()
    response = dns.message.make_response(query)
    response.set_rcode(draw(st.sampled_from([0, 0, 2, 3])))
    # One RRset per record, so the wire order is the drawn one (repeats and interleaving included).
    for name, rd in draw(st.lists(records(), max_size=6)):
        response.answer.append(dns.rrset.from_rdata(name, 60, rd))
    for name, rd in draw(st.lists(records(), max_size=2)):
        (response.authority if draw(st.booleans()) else response.additional).append(dns.rrset.from_rdata(name, 60, rd))
    return response.to_wire()


def damaged(wire: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """``wire`` with a byte set, one removed, or the end cut, for each (kind, at, value)."""
    out = bytearray(wire)
    for kind, at, value in edits:
        at %= len(out) + 1
        if kind == 0 and at < len(out):
            out[at] = value
        elif kind == 1 and at < len(out):
            del out[at]
        elif kind == 2:
            del out[at:]
    return bytes(out)


# -- the tests ------------------------------------------------------------------------------------
@SETTINGS
@given(wire=messages())
@example(wire=bytes.fromhex("30390100000100000000000001610000010001"))  # a.: one label, no EDNS
# Two CNAMEs of one owner in different cases: one RRset, the first case shown, the latest target.
@example(
    wire=bytes.fromhex(
        "000081000001000200000000014100000100010141000005000100000000000301620001610000050001000000000003016300"
    )
)
# Class CH's A record (a domain and a number): dnspython's from_wire reads it, the address a number.
@example(wire=bytes.fromhex("000081000001000100000000000001000100000100030000003c0003000298"))
def test_a_message_dnspython_builds_gives_the_texts_of_from_wire(wire):
    assert parsed(wire) == reference(wire)


@SETTINGS
@given(wire=messages(), edits=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 600), st.integers(0, 255)),
                                       min_size=1, max_size=3))  # fmt: skip
# The answer's owner pointer moved one byte into the question name: a name starting mid-label.
@example(wire=bytes.fromhex("303981800001000100000000037777770474657374000001000101c00d000100010000003c0004c0000201"),
         edits=[(0, 0, 0x30)])  # fmt: skip
def test_a_damaged_message_is_refused_by_both_or_read_alike(wire, edits):
    bad = damaged(wire, edits)
    assert parsed(bad) == reference(bad)


def recorded_messages() -> list[bytes]:
    wires = [chunk for _, _, chunk in load_stream(RECORDED_DATAGRAMS / "udp_four_queries.json").chunks]
    for path in sorted(RECORDED_STREAMS.glob("*.json")):
        stream = b"".join(chunk for direction, _, chunk in load_stream(path).chunks if direction == "req")
        stream += b"".join(chunk for direction, _, chunk in load_stream(path).chunks if direction == "resp")
        while len(stream) >= 2:
            end = 2 + int.from_bytes(stream[:2], "big")
            wires.append(stream[2:end])
            stream = stream[end:]
    return wires


def test_recorded_dnsmasq_messages_are_read_without_a_dnspython_message(monkeypatch):
    wires = recorded_messages()
    assert len(wires) >= 8
    expected = [reference(w) for w in wires]
    built = read_by_dnspython_message(monkeypatch)
    assert [parsed(w) for w in wires] == expected
    assert built == []  # the common shape: each read once, without from_wire's message, RRsets and rdata


@pytest.mark.parametrize("qname", ["Once.test", "On$ce.test"])  # plain labels; one dnspython escapes
def test_an_answer_repeats_its_querys_question_which_is_read_once(monkeypatch, qname):
    query = dns.message.make_query(qname, "A")
    response = dns.message.make_response(query)
    address = dns.rdata.from_text("IN", "A", "192.0.2.7")
    response.answer.append(dns.rrset.from_rdata(query.question[0].name, 60, address))
    expected = [reference(query.to_wire()), reference(response.to_wire())]
    names_read: list[int] = []
    real_read = parse._read_name
    monkeypatch.setattr(parse, "_read_name", lambda wire, pos, *a: names_read.append(pos) or real_read(wire, pos, *a))
    by_dnspython: list[int] = []
    real = dns.name.from_wire_parser
    monkeypatch.setattr(dns.name, "from_wire_parser", lambda p, *a: by_dnspython.append(p.current) or real(p, *a))
    assert [parsed(query.to_wire()), parsed(response.to_wire())] == expected
    # The query's question only: the answer's is the same bytes, its owner a pointer to it.
    assert names_read.count(12) == 1
    assert by_dnspython == ([] if qname == "Once.test" else [12])  # a plain name is its labels


def test_names_at_the_length_limit_are_read_as_dnspython_reads_them():
    # RFC 1035's 255 bytes: 3 labels of 63 and one of 61 (with their length bytes and the root's)
    # are a name; one more byte is not (dnspython: NameTooLong, the message refused).
    for last in (61, 62):
        labels = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * last]
        qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
        wire = bytes.fromhex("123401000001000000000000") + qname + b"\x00\x01\x00\x01"  # one question, A IN
        expected = reference(wire)
        assert (expected is None) == (last == 62)
        assert parsed(wire) == expected


def test_a_response_whose_question_differs_from_the_last_with_its_id_is_read_in_full():
    first = dns.message.make_query("one.test", "A")
    other = dns.message.make_query("two.test", "A", id=first.id)
    response = dns.message.make_response(other)
    response.answer.append(dns.rrset.from_text("two.test.", 60, "IN", "A", "192.0.2.8"))
    assert parsed(first.to_wire()) == reference(first.to_wire())
    got = parsed(response.to_wire())
    assert got == reference(response.to_wire())
    assert json.loads(got[4]) == {"answers": [{"name": "two.test", "type": "A", "addr": "192.0.2.8"}]}


def test_a_question_name_pointing_into_the_header_is_not_taken_from_another_message():
    # The same id and question bytes, a pointer to offset 2 (the flags): with RD set there is the
    # one-label name "\\000" (length 1, byte 0, then the root), without it the root name.
    pointer_question = bytes.fromhex("c00200010001")
    with_rd = bytes.fromhex("010101000001000000000000") + pointer_question
    without_rd = bytes.fromhex("010100000001000000000000") + pointer_question
    first, second = parsed(with_rd), parsed(without_rd)
    assert (first, second) == (reference(with_rd), reference(without_rd))
    assert first is not None and second is not None and first[2] != second[2]
