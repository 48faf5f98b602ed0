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

Everything about the wire format is dnspython's (``dns.message.from_wire``): this module never
decodes a message by hand.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rdatatype

# The DNS header is 12 bytes (RFC 1035 4.1.1); a question adds at least 5 (root name, type, class).
HEADER_BYTES = 12
MIN_QUERY_BYTES = HEADER_BYTES + 5
# Over TCP every message is preceded by its length in two bytes, big-endian (RFC 1035 4.2.2).
TCP_LENGTH_BYTES = 2

_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
_CNAME = dns.rdatatype.CNAME
# What dnspython may raise on bytes that are not a DNS message (its own errors and a few from
# the rdata decoders).
PARSE_ERRORS = (dns.exception.DNSException, ValueError, IndexError, KeyError, UnicodeError, TypeError, OverflowError)


@dataclass(frozen=True)
class DnsMessage:
    """One parsed message: what pairing needs, and the JSON texts of its row columns."""

    txid: int
    is_response: bool
    question: tuple[tuple[str, int], ...]  # (name, type) of each question, for pairing
    header: str  # JSON, Pixie's HeaderToJSONString
    body: str  # JSON, Pixie's ProcessReq / ProcessResp
    rcode: int
    ts_ns: int


def _name(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)


def header_json(msg: dns.message.Message) -> str:
    flags = msg.flags
    # The wire's counts: dnspython groups records into RRsets and keeps the EDNS OPT and TSIG
    # records apart from the additional section, so they are counted back here.
    additional = sum(len(rrset) for rrset in msg.additional)
    additional += (1 if msg.opt is not None else 0) + (1 if msg.tsig is not None else 0)
    return json.dumps(
        {
            "txid": msg.id,
            "qr": int(bool(flags & dns.flags.QR)),
            "opcode": int(msg.opcode()),
            "aa": int(bool(flags & dns.flags.AA)),
            "tc": int(bool(flags & dns.flags.TC)),
            "rd": int(bool(flags & dns.flags.RD)),
            "ra": int(bool(flags & dns.flags.RA)),
            "ad": int(bool(flags & dns.flags.AD)),
            "cd": int(bool(flags & dns.flags.CD)),
            "rcode": flags & 0xF,  # the header's 4 bits, as Pixie shows them (no EDNS extension)
            "num_queries": len(msg.question),
            "num_answers": sum(len(rrset) for rrset in msg.answer),
            "num_auth": sum(len(rrset) for rrset in msg.authority),
            "num_addl": additional,
        },
        separators=(",", ":"),
    )


def queries_json(msg: dns.message.Message) -> str:
    queries = [{"name": _name(q.name), "type": dns.rdatatype.to_text(q.rdtype)} for q in msg.question]
    return json.dumps({"queries": queries}, separators=(",", ":"))


def answers_json(msg: dns.message.Message) -> str:
    answers: list[dict[str, str]] = []
    for rrset in msg.answer:
        name = _name(rrset.name)
        # dnspython decodes A and AAAA of class IN only (another class's are opaque bytes).
        if rrset.rdtype == _CNAME:
            answers += (
                {"name": name, "type": "CNAME", "cname": _name(rd.target)} for rd in rrset if hasattr(rd, "target")
            )
        elif rrset.rdtype in (_A, _AAAA):
            kind = "A" if rrset.rdtype == _A else "AAAA"
            answers += ({"name": name, "type": kind, "addr": rd.address} for rd in rrset if hasattr(rd, "address"))
    return json.dumps({"answers": answers}, separators=(",", ":"))


def parse_message(wire: bytes, ts_ns: int) -> DnsMessage:
    """One whole message; raises one of :data:`PARSE_ERRORS` when it is not one."""
    return DnsMessage(*_parsed(wire), ts_ns)


# When both ends of a conversation are traced, each message crosses the tracer twice with the same
# bytes (the client's send, the server's receive): dnspython's parse, most of the agent's DNS cost,
# runs once for both. Bounded; a message that fails to parse raises each time (not cached).
@functools.lru_cache(maxsize=4096)
def _parsed(wire: bytes) -> tuple[int, bool, tuple[tuple[str, int], ...], str, str, int]:
    msg = dns.message.from_wire(wire, ignore_trailing=False, one_rr_per_rrset=False)
    is_response = bool(msg.flags & dns.flags.QR)
    question = tuple((_name(q.name), int(q.rdtype)) for q in msg.question)
    body = answers_json(msg) if is_response else queries_json(msg)
    return msg.id, is_response, question, header_json(msg), body, msg.rcode() & 0xF


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
