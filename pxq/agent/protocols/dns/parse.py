"""DNS messages from wire bytes (dnspython), in the shape of Pixie's ``dns_events`` columns.

Pixie (``src/stirling/source_connectors/socket_tracer/protocols/dns/stitcher.cc``,
``HeaderToJSONString``, ``ProcessReq``, ``ProcessResp``) shows a message as two JSON texts:

* the header: ``{"txid", "qr", "opcode", "aa", "tc", "rd", "ra", "ad", "cd", "rcode",
  "num_queries", "num_answers", "num_auth", "num_addl"}`` (the header's counts, as on the wire);
* the body: a query's ``{"queries": [{"name", "type"}]}``, a response's ``{"answers": [...]}``
  with one entry per A, AAAA or CNAME answer record (``{"name", "type": "A", "addr"}`` or
  ``{"name", "type": "CNAME", "cname"}``): Pixie's DNS parser reports those record types only.

Names are shown without the final dot, as Pixie does (``pixie.ai``). A question's type is the
record type's mnemonic (Pixie names A and AAAA and leaves other types empty; here every type has
its name, e.g. ``MX``).

The messages nearly all traffic is made of (a query, its answer of A, AAAA or CNAME records,
perhaps EDNS) are read without building dnspython's message, RRset, rdata and name objects (most
of the agent's DNS cost when they were built), with ``dns.message.from_wire``'s steps and checks:
the fixed-size fields with ``struct``, a name of plain letters, digits and hyphens as its labels
(what dnspython's ``to_text`` shows of them), every other name, the addresses and EDNS with
dnspython's decoders. Every other message, and any these steps reject, goes to ``from_wire``;
the tests check both ways give the same texts.
"""

from __future__ import annotations

import functools
import re
import struct
from json.encoder import encode_basestring_ascii as _json_text
from typing import NamedTuple

import dns.exception
import dns.flags
import dns.ipv4
import dns.ipv6
import dns.message
import dns.name
import dns.opcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.wire

# The DNS header is 12 bytes (RFC 1035 4.1.1); a question adds at least 5 (root name, type, class).
HEADER_BYTES = 12
MIN_QUERY_BYTES = HEADER_BYTES + 5
# Over TCP every message is preceded by its length in two bytes, big-endian (RFC 1035 4.2.2).
TCP_LENGTH_BYTES = 2

_A = int(dns.rdatatype.A)
_AAAA = int(dns.rdatatype.AAAA)
_CNAME = int(dns.rdatatype.CNAME)
_OPT = int(dns.rdatatype.OPT)
_IN = int(dns.rdataclass.IN)
_QR = int(dns.flags.QR)
# What dnspython may raise on bytes that are not a DNS message (its own errors and a few from
# the rdata decoders).
PARSE_ERRORS = (dns.exception.DNSException, ValueError, IndexError, KeyError, UnicodeError, TypeError, OverflowError)


class DnsMessage(NamedTuple):
    """One parsed message: what pairing needs, and the JSON texts of its row columns."""

    txid: int
    is_response: bool
    question: tuple[tuple[str, int], ...]  # (name, type) of each question, for pairing
    header: str  # JSON, Pixie's HeaderToJSONString
    body: str  # JSON, Pixie's ProcessReq / ProcessResp
    rcode: int
    ts_ns: int


_new_message = tuple.__new__


def _name(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


# An answer as Pixie shows it: (owner name, "A" | "AAAA" | "CNAME", "addr" | "cname", value), the
# value a text (or the number class CH's A record has).
Answer = tuple[str, str, str, str | int]
# What a message is reduced to before its JSON texts are built, whichever way it was read: (txid,
# header flags, questions as (name, type), answers, and the answer, authority and additional counts
# as dnspython counts them).
Fields = tuple[int, int, tuple[tuple[str, int], ...], tuple[Answer, ...], int, int, int]

_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")  # type, class
_RR_HEADER = struct.Struct("!HHIH")  # type, class, ttl, rdata length
_OPCODE_BITS = 0x7800
_TYPE_NAMES: dict[int, str] = {}


def _type_name(rdtype: int) -> str:
    text = _TYPE_NAMES.get(rdtype)
    if text is None:
        text = _TYPE_NAMES[rdtype] = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))
    return text


def header_json(txid: int, flags: int, num_queries: int, num_answers: int, num_auth: int, num_addl: int) -> str:
    """Pixie's HeaderToJSONString: the header's flags, its rcode's 4 bits (no EDNS extension) and
    the sections' record counts."""
    key = (flags, num_queries, num_answers, num_auth, num_addl)
    rest = _HEADER_RESTS.get(key)
    if rest is None:  # the text after the id: a few per conversation (a query's, its answer's)
        if len(_HEADER_RESTS) >= _MAX_HEADER_RESTS:
            _HEADER_RESTS.clear()
        rest = _HEADER_RESTS[key] = (
            f',"qr":{flags >> 15 & 1},"opcode":{flags >> 11 & 0xF},"aa":{flags >> 10 & 1},'
            f'"tc":{flags >> 9 & 1},"rd":{flags >> 8 & 1},"ra":{flags >> 7 & 1},"ad":{flags >> 5 & 1},'
            f'"cd":{flags >> 4 & 1},"rcode":{flags & 0xF},"num_queries":{num_queries},'
            f'"num_answers":{num_answers},"num_auth":{num_auth},"num_addl":{num_addl}}}'
        )
    return f'{{"txid":{txid}{rest}'


_HEADER_RESTS: dict[tuple[int, int, int, int, int], str] = {}
_MAX_HEADER_RESTS = 4096


def queries_json(question: tuple[tuple[str, int], ...]) -> str:
    if len(question) == 1:  # nearly every query
        ((name, rdtype),) = question
        return f'{{"queries":[{{"name":{_json_text(name)},"type":"{_type_name(rdtype)}"}}]}}'
    queries = ",".join(f'{{"name":{_json_text(name)},"type":"{_type_name(rdtype)}"}}' for name, rdtype in question)
    return f'{{"queries":[{queries}]}}'


def _json_value(value: str | int) -> str:
    return _json_text(value) if isinstance(value, str) else str(value)


def answers_json(answers: tuple[Answer, ...]) -> str:
    if len(answers) == 1:  # an answer of one address
        ((name, kind, key, value),) = answers
        return f'{{"answers":[{{"name":{_json_text(name)},"type":"{kind}","{key}":{_json_value(value)}}}]}}'
    entries = ",".join(
        f'{{"name":{_json_text(name)},"type":"{kind}","{key}":{_json_value(value)}}}'
        for name, kind, key, value in answers
    )
    return f'{{"answers":[{entries}]}}'


def parse_message(wire: bytes, ts_ns: int) -> DnsMessage:
    """One whole message; raises one of :data:`PARSE_ERRORS` when it is not one."""
    return _new_message(DnsMessage, (*_parsed(wire), ts_ns))  # tuple.__new__: a message per event


# When both ends of a conversation are traced, each message crosses the tracer twice with the same
# bytes (the client's send, the server's receive): the parse runs once for both. Bounded; a message
# that fails to parse raises each time (not cached).
@functools.lru_cache(maxsize=4096)
def _parsed(wire: bytes) -> tuple[int, bool, tuple[tuple[str, int], ...], str, str, int]:
    fields = _common_fields(wire)
    if fields is None:
        fields = message_fields(dns.message.from_wire(wire, ignore_trailing=False, one_rr_per_rrset=False))
    txid, flags, question, answers, num_answers, num_auth, num_addl = fields
    is_response = bool(flags & _QR)
    body = answers_json(answers) if is_response else queries_json(question)
    header = header_json(txid, flags, len(question), num_answers, num_auth, num_addl)
    return txid, is_response, question, header, body, flags & 0xF


def message_fields(msg: dns.message.Message) -> Fields:
    """What a message dnspython read shows: its answers of types A, AAAA and CNAME (Pixie's
    parser reports those only), and the counts of its sections as dnspython groups them (into
    RRsets, the EDNS OPT and TSIG records apart from the additional section, counted back here)."""
    question = tuple((_name(q.name), int(q.rdtype)) for q in msg.question)
    answers: list[Answer] = []
    for rrset in msg.answer:
        name = _name(rrset.name)
        # dnspython decodes A and AAAA of class IN only (another class's are opaque bytes).
        if rrset.rdtype == _CNAME:
            answers += ((name, "CNAME", "cname", _name(rd.target)) for rd in rrset if hasattr(rd, "target"))
        elif rrset.rdtype in (_A, _AAAA):
            kind = "A" if rrset.rdtype == _A else "AAAA"
            answers += ((name, kind, "addr", rd.address) for rd in rrset if hasattr(rd, "address"))
    additional = sum(len(rrset) for rrset in msg.additional)
    additional += (1 if msg.opt is not None else 0) + (1 if msg.tsig is not None else 0)
    num_answers = sum(len(rrset) for rrset in msg.answer)
    num_auth = sum(len(rrset) for rrset in msg.authority)
    return msg.id, int(msg.flags), question, tuple(answers), num_answers, num_auth, additional


# Bytes a name's labels may hold for its text to be the bytes themselves: dnspython's to_text
# escapes the others (``"().;\@$``, spaces, controls, non-ASCII) and so they go to it. (Dots are
# the separators here: a dot inside a label is counted apart.)
_NOT_PLAIN = re.compile(rb"[^A-Za-z0-9_.\-]")
# RFC 1035 3.1: a name takes at most 255 bytes on the wire (dnspython's NameTooLong).
_MAX_NAME_BYTES = 255


def _read_name(wire: bytes, pos: int, end: int, names_at: dict[int, str]) -> tuple[str, int]:
    """The name at ``pos`` (not past ``end``), as text, and where it ends. ``names_at``: the names
    of this message read so far that were whole in place (no compression pointer), by where they
    start; a pointer to one of them (a response's answer names the question it repeats) is that
    name (what dnspython checks of a pointer, that it points before the name, holds for them). A
    name whole in place whose labels are plain letters, digits, hyphens and underscores is its
    labels joined by dots (what dnspython's ``to_text`` makes of them); any other is read by
    dnspython's ``from_wire_parser``. A name read whole is added to ``names_at``."""
    if pos >= end:
        raise dns.exception.FormError
    length = wire[pos]
    if length >= 0xC0 and pos + 2 <= end:
        known = names_at.get((length & 0x3F) << 8 | wire[pos + 1])
        if known is not None:
            return known, pos + 2
    labels = []
    at = pos
    while 0 < length < 0x40:
        at += 1 + length
        if at >= end:
            break
        labels.append(wire[at - length : at])
        length = wire[at]
    if length == 0 and labels and at < end and at + 1 - pos <= _MAX_NAME_BYTES:
        text = b".".join(labels)
        if _NOT_PLAIN.search(text) is None and text.count(b".") == len(labels) - 1:
            names_at[pos] = decoded = text.decode("ascii")
            return decoded, at + 1
    # A pointer, an escape, the root, a bad label or a name running past the end: dnspython's.
    parser = dns.wire.Parser(wire[:end], pos)
    name = dns.name.from_wire_parser(parser)
    text_ = name.to_text(omit_final_dot=True)
    labels_ = name.labels
    if parser.current - pos == len(labels_) + sum(map(len, labels_)):  # its bytes: no pointer followed
        names_at[pos] = text_
    return text_, parser.current


# The question sections of recent messages whose names were whole in place, by transaction id:
# an answer repeats its query's question byte for byte, so it is read once per transaction.
# (wire[HEADER_BYTES:end], the questions, their names by offset, end.)
_RecentQuestion = tuple[bytes, tuple[tuple[str, int], ...], dict[int, str], int]
_RECENT_QUESTIONS: dict[int, _RecentQuestion] = {}
_MAX_RECENT_QUESTIONS = 4096


def _common_fields(wire: bytes) -> Fields | None:
    """The fields of :func:`message_fields` for the messages nearly all DNS traffic is made of,
    without building dnspython's message: opcode QUERY, answers of class IN and types A, AAAA or
    CNAME, no authority records, at most an EDNS OPT record in the additional section. Read in
    the order and with the checks of ``dns.message.from_wire`` (the fixed-size fields with
    ``struct``, names as :func:`_read_name` says, addresses and the OPT record with dnspython's
    decoders), and grouped the way its RRsets group records (the same owner name, in any case,
    and type: one record per value, a CNAME's latest only). None for any other message, or one
    this reading rejects: :func:`dns.message.from_wire` decides those."""
    try:
        n = len(wire)
        if n < HEADER_BYTES:
            return None
        txid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
        if flags & _OPCODE_BITS or nscount or arcount > 1:
            return None
        recent = _RECENT_QUESTIONS.get(txid)
        if recent is not None and len(recent[1]) == qdcount and wire.startswith(recent[0], HEADER_BYTES):
            # The same bytes, names without pointers (into a header that differs): the same questions.
            question, names_at, pos = recent[1], dict(recent[2]), recent[3]
        else:
            names_at = {}
            questions = []
            pos = HEADER_BYTES
            for _ in range(qdcount):
                qname, pos = _read_name(wire, pos, n, names_at)
                rdtype, _rdclass = _QUESTION_TAIL.unpack_from(wire, pos)
                pos += 4
                questions.append((qname, rdtype))
            question = tuple(questions)
            if len(names_at) == qdcount:
                if len(_RECENT_QUESTIONS) >= _MAX_RECENT_QUESTIONS:
                    _RECENT_QUESTIONS.clear()
                _RECENT_QUESTIONS[txid] = (wire[HEADER_BYTES:pos], question, dict(names_at), pos)
        answers: list[Answer] = []
        # dnspython's RRsets, by (owner in lower case, type): the first record's owner, the records.
        rrsets: dict[tuple[str, int], tuple[str, list[Answer]]] = {}
        for _ in range(ancount):
            owner, pos = _read_name(wire, pos, n, names_at)
            rdtype, rdclass, _ttl, rdlen = _RR_HEADER.unpack_from(wire, pos)
            pos += 10
            end = pos + rdlen
            if rdclass != _IN or end > n:
                return None
            if rdtype == _A and rdlen == 4:
                answer: Answer = (owner, "A", "addr", dns.ipv4.inet_ntoa(wire[pos:end]))
            elif rdtype == _AAAA and rdlen == 16:
                answer = (owner, "AAAA", "addr", dns.ipv6.inet_ntoa(wire[pos:end]))
            elif rdtype == _CNAME:
                target, after = _read_name(wire, pos, end, names_at)
                if after != end:
                    return None  # the name does not fill its record: from_wire refuses it
                answer = (owner, "CNAME", "cname", target)
            else:
                return None
            pos = end
            if ancount == 1:
                answers.append(answer)
                break
            # Names compare ASCII case-insensitively, the first one's shown; a value once; of a
            # CNAME (a singleton type) only the latest.
            first_owner, records = rrsets.setdefault((owner.lower(), rdtype), (owner, []))
            if rdtype == _CNAME:
                records.clear()
            if not any(record[3] == answer[3] for record in records):
                records.append((first_owner, answer[1], answer[2], answer[3]))
        if rrsets:
            answers = [record for _, records in rrsets.values() for record in records]
        num_addl = 0
        if arcount:  # the EDNS OPT record only: owned by the root, its options valid
            parser = dns.wire.Parser(wire, pos)
            owner_name = parser.get_name(None, True)
            rdtype, rdclass, _ttl, rdlen = _RR_HEADER.unpack(parser.get_bytes(10))
            if rdtype != _OPT or owner_name != dns.name.root:
                return None
            with parser.restrict_to(rdlen):
                dns.rdata.from_wire_parser(rdclass, rdtype, parser, None)
            num_addl = 1
            pos = parser.current
        if pos != n:
            return None  # trailing bytes: from_wire refuses them
    except (*PARSE_ERRORS, struct.error):
        return None
    return txid, flags, question, tuple(answers), len(answers), 0, num_addl


def _plausible(wire: bytes, response: bool) -> bool:
    """Whether ``wire`` (one whole message) is a query (or a response) of opcode QUERY with at
    least one question, as dnspython reads it."""
    if len(wire) < MIN_QUERY_BYTES:
        return False
    try:
        msg = dns.message.from_wire(wire)
    except PARSE_ERRORS:
        return False
    return bool(msg.flags & dns.flags.QR) == response and msg.opcode() == dns.opcode.QUERY and len(msg.question) >= 1


def looks_like_query_datagram(first: bytes) -> bool:
    """Inference over UDP: a datagram that is a whole DNS query (QR=0, opcode QUERY, a question)."""
    return _plausible(first, response=False)


def looks_like_response_datagram(first: bytes) -> bool:
    return _plausible(first, response=True)


def _first_framed(first: bytes) -> bytes | None:
    """The first length-prefixed message of a TCP stream's first bytes when they hold it whole."""
    if len(first) < TCP_LENGTH_BYTES + MIN_QUERY_BYTES:
        return None
    length = int.from_bytes(first[:TCP_LENGTH_BYTES], "big")
    end = TCP_LENGTH_BYTES + length
    if length < MIN_QUERY_BYTES or end > len(first):
        return None
    return first[TCP_LENGTH_BYTES:end]


def head_incomplete(first: bytes) -> bool:
    """A TCP stream's first bytes that could be the start of a length-prefixed DNS message
    (a plausible length, and a header that is a query or response so far) but do not hold it whole."""
    if len(first) < TCP_LENGTH_BYTES:
        return True
    length = int.from_bytes(first[:TCP_LENGTH_BYTES], "big")
    if length < MIN_QUERY_BYTES or len(first) >= TCP_LENGTH_BYTES + length:
        return False
    header = first[TCP_LENGTH_BYTES : TCP_LENGTH_BYTES + 12]
    # Opcode QUERY (bits 11-14 of the flags) where the flags are there; a question where the count is.
    if len(header) >= 4 and (header[2] >> 3) & 0x0F != 0:
        return False
    return len(header) < 6 or int.from_bytes(header[4:6], "big") >= 1


def looks_like_query_stream(first: bytes) -> bool:
    """Inference over TCP: the stream's first bytes hold a length-prefixed DNS query. (A query
    longer than the bytes inference sees is not recognised: DNS queries are short.)"""
    wire = _first_framed(first)
    return wire is not None and _plausible(wire, response=False)


def looks_like_response_stream(first: bytes) -> bool:
    wire = _first_framed(first)
    return wire is not None and _plausible(wire, response=True)
