"""DNS over UDP and TCP: everything the socket tracer needs for one protocol, in one folder.

* :mod:`.parse`: messages from wire bytes with dnspython, as Pixie's JSON header and body texts,
  and protocol inference on a datagram or a TCP stream's first bytes.
* :mod:`.stitcher`: queries paired with responses by transaction id and question
  (:class:`DnsStitcher`; over UDP one datagram per message, over TCP length-prefixed messages).
* :mod:`.rows`: the ``dns_events`` row builder (:class:`DnsRows`).
* ``streams/``: DNS over TCP recorded from a real dnsmasq (the streams format of
  :mod:`pxq.testing.streams`); ``streams/datagrams/``: UDP conversations, one chunk per datagram.
"""

from pathlib import Path

from pxq.agent.protocols.dns.parse import (
    DnsMessage,
    head_incomplete,
    looks_like_query_datagram,
    looks_like_query_stream,
    looks_like_response_datagram,
    looks_like_response_stream,
    parse_message,
)
from pxq.agent.protocols.dns.rows import DnsRecord, DnsRows, dns_events_schema, dns_record
from pxq.agent.protocols.dns.stitcher import DEFAULT_QUERY_TIMEOUT_NS, DnsPair, DnsStitcher

RECORDED_STREAMS = Path(__file__).resolve().parent / "streams"
RECORDED_DATAGRAMS = RECORDED_STREAMS / "datagrams"

__all__ = [
    "DEFAULT_QUERY_TIMEOUT_NS", "RECORDED_DATAGRAMS", "RECORDED_STREAMS", "DnsMessage", "DnsPair", "DnsRecord",
    "DnsRows", "DnsStitcher", "dns_events_schema", "dns_record", "head_incomplete", "looks_like_query_datagram",
    "looks_like_query_stream", "looks_like_response_datagram", "looks_like_response_stream", "parse_message",
]  # fmt: skip
