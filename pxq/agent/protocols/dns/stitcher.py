"""Pairing DNS queries with their responses, over UDP (one datagram, one message) and over TCP
(each message behind its two-byte length, RFC 1035 4.2.2, split over reads or several in one).

Pixie (``protocols/dns/stitcher.cc``, ``StitchFrames``) matches response-led: each response
pairs with the earliest waiting query of the same transaction id that began before it. The same
here, and the question must agree too when both carry one (a resolver reuses ids across names).
Connections are per peer (the tracker keys a UDP socket's traffic by its peer address), so an id
only competes with queries to or from the same peer.

A query without a response is not lost: when it has waited ``query_timeout_ns`` (by the clock of
later traffic on the connection) or the connection ends, it becomes a pair with no response, a row
whose response columns are empty (Pixie's ``include_respless_dns_requests`` does this with a
zeroed response header and a latency of its timeout; here the response columns are empty and the
latency 0). A response that pairs with nothing is counted (``response_without_request``), as is
a message dnspython cannot parse (``invalid_message``).
"""

from __future__ import annotations

from collections import Counter

from pxq.agent.protocols.dns.parse import PARSE_ERRORS, TCP_LENGTH_BYTES, DnsMessage, parse_message

# Resolvers give up on a server after a few seconds (glibc's default timeout is 5 s, dig's 5 s).
DEFAULT_QUERY_TIMEOUT_NS = 5 * 10**9
# Queries waiting on one connection: beyond this the oldest is given up (a row without response).
MAX_WAITING = 1024

# A query and its response (None: unanswered).
DnsPair = tuple[DnsMessage, DnsMessage | None]


class DnsStitcher:
    """Both directions of one DNS conversation (one TCP connection, or one UDP peer).

    ``datagrams``: each :meth:`feed_messages` call is one whole UDP datagram; otherwise the bytes
    are a TCP stream of length-prefixed messages.
    """

    def __init__(self, *, datagrams: bool, query_timeout_ns: int = DEFAULT_QUERY_TIMEOUT_NS) -> None:
        self.errors: Counter[str] = Counter()
        self.upgraded = False
        self.out_of_step, self.exchanges = False, 0  # paired by id: never read (pairs_in_order False)
        self.datagrams = datagrams
        self.query_timeout_ns = query_timeout_ns
        self._waiting: list[DnsMessage] = []  # queries in arrival order
        self._buffers = {True: bytearray(), False: bytearray()}  # TCP: bytes of a message not whole yet
        self._buffer_ts = {True: 0, False: 0}
        self.unanswered = 0  # queries that became rows without a response (not a loss)

    # -- Stitcher -----------------------------------------------------------------------------
    def feed_messages(self, request: bool, data: bytes, ts_ns: int) -> list[DnsPair]:
        done: list[DnsPair] = []
        if self.datagrams:
            self._message(bytes(data), ts_ns, done)
        else:
            buf = self._buffers[request]
            if not buf:
                self._buffer_ts[request] = ts_ns
            buf += data
            while len(buf) >= TCP_LENGTH_BYTES:
                end = TCP_LENGTH_BYTES + int.from_bytes(buf[:TCP_LENGTH_BYTES], "big")
                if len(buf) < end:
                    break
                # A message's time is when its first byte came (a request's start, as for HTTP).
                self._message(bytes(buf[TCP_LENGTH_BYTES:end]), self._buffer_ts[request], done)
                del buf[:end]
                self._buffer_ts[request] = ts_ns
        self._expire(ts_ns, done)
        return done

    def skip_messages(self, request: bool, n: int, ts_ns: int) -> tuple[list[DnsPair], int]:
        # DNS messages are small and framing needs every byte: nothing can be skipped.
        return [], n

    def close_messages(self, ts_ns: int) -> list[DnsPair]:
        for request, buf in self._buffers.items():
            if buf:
                self.errors["request_incomplete_at_close" if request else "response_incomplete_at_close"] += 1
                buf.clear()
        done: list[DnsPair] = [(query, None) for query in self._waiting]
        self.unanswered += len(done)
        self._waiting.clear()
        return done

    def response_gap(self, ts_ns: int) -> bool:
        # Over TCP the lost bytes held a length: the framing is gone. Start over at a query.
        return False

    # -- pairing ------------------------------------------------------------------------------
    def _message(self, wire: bytes, ts_ns: int, done: list[DnsPair]) -> None:
        try:
            msg = parse_message(wire, ts_ns)
        except PARSE_ERRORS:
            self.errors["invalid_message"] += 1
            return
        if not msg.is_response:
            self._waiting.append(msg)
            if len(self._waiting) > MAX_WAITING:
                done.append((self._waiting.pop(0), None))
                self.unanswered += 1
            return
        for i, query in enumerate(self._waiting):
            if query.ts_ns > ts_ns:
                break  # later queries cannot be what this answers
            if query.txid == msg.txid and (not msg.question or not query.question or msg.question == query.question):
                del self._waiting[i]
                done.append((query, msg))
                return
        self.errors["response_without_request"] += 1

    def _expire(self, now_ns: int, done: list[DnsPair]) -> None:
        """Queries that waited longer than the timeout: rows without a response."""
        waiting = self._waiting
        cutoff = now_ns - self.query_timeout_ns
        expired = 0
        while expired < len(waiting) and waiting[expired].ts_ns < cutoff:
            expired += 1
        if expired:
            done += ((query, None) for query in waiting[:expired])
            self.unanswered += expired
            del waiting[:expired]
