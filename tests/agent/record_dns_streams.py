"""Record real DNS conversations with dnsmasq (pxq.testing.servers.dnsmasq) into
pxq/agent/protocols/dns/streams/ (TCP: the streams format of pxq.testing.streams, what the client
sent and what dnsmasq answered, as the client's socket read them) and streams/datagrams/ (UDP:
one chunk per datagram).

    PYTHONPATH=$PWD python tests/agent/record_dns_streams.py

The bytes are dnsmasq's own; the queries are made with dnspython. Run again to re-record (the
transaction ids and timings change; the tests read the answers from the bytes, not from here).
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from pathlib import Path

import dns.message

from pxq.agent.protocols.dns import RECORDED_DATAGRAMS, RECORDED_STREAMS
from pxq.testing.servers.dnsmasq import DnsmasqServer

SERVER = "dnsmasq 2.90 (pxq.testing.servers.dnsmasq zone)"


def framed(name: str, rdtype: str, **kw) -> bytes:
    wire = dns.message.make_query(name, rdtype, **kw).to_wire()
    return len(wire).to_bytes(2, "big") + wire


def tcp_conversation(port: int, writes: list[bytes], answers: int) -> list[tuple[str, int, bytes]]:
    """Send each write, reading whatever comes back as it comes, until ``answers`` messages."""
    chunks: list[tuple[str, int, bytes]] = []
    got = b""
    with socket.create_connection(("127.0.0.1", port)) as s:
        for data in writes:
            s.sendall(data)
            chunks.append(("req", time.monotonic_ns(), data))
            time.sleep(0.01)  # a separate read per write on the server side, not a guess at an answer
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _messages(got) < answers:
            if select.select([s], [], [], 0.5)[0]:
                data = s.recv(65536)
                if not data:
                    break
                got += data
                chunks.append(("resp", time.monotonic_ns(), data))
    return chunks


def _messages(stream: bytes) -> int:
    n = 0
    while len(stream) >= 2 and len(stream) >= 2 + int.from_bytes(stream[:2], "big"):
        stream = stream[2 + int.from_bytes(stream[:2], "big") :]
        n += 1
    return n


def udp_conversation(port: int, queries: list[bytes]) -> list[tuple[str, int, bytes]]:
    chunks: list[tuple[str, int, bytes]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for wire in queries:
            s.sendto(wire, ("127.0.0.1", port))
            chunks.append(("req", time.monotonic_ns(), wire))
        for _ in queries:
            data, _ = s.recvfrom(65535)
            chunks.append(("resp", time.monotonic_ns(), data))
    return chunks


def save(folder: Path, name: str, description: str, chunks: list[tuple[str, int, bytes]]) -> None:
    t0 = chunks[0][1]
    record = {
        "name": name,
        "server": SERVER,
        "description": description,
        "chunks": [[d, ts - t0, data.decode("latin-1")] for d, ts, data in chunks],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{path}: {len(chunks)} chunks", file=sys.stderr)


def main() -> None:
    with DnsmasqServer() as server:
        port = server.port
        chain = "One query over TCP: alias.test A, a chain of two CNAMEs and two A records."
        save(RECORDED_STREAMS, "tcp_cname_chain", chain, tcp_conversation(port, [framed("alias.test", "A")], 1))
        pipelined = framed("www.test", "A") + framed("www.test", "AAAA") + framed("missing.test", "A")
        save(RECORDED_STREAMS, "tcp_pipelined", "Three queries in one write (A, AAAA, NXDOMAIN); three answers.",
             tcp_conversation(port, [pipelined], 3))  # fmt: skip
        split = framed("alias.test", "AAAA", use_edns=0)
        pieces = "A query written in three pieces (inside its length, inside its header, the rest); one answer."
        save(RECORDED_STREAMS, "tcp_split_query", pieces, tcp_conversation(port, [split[:1], split[1:7], split[7:]], 1))
        queries = [dns.message.make_query(n, t).to_wire() for n, t in
                   (("www.test", "A"), ("www.test", "AAAA"), ("alias.test", "A"), ("missing.test", "A"))]  # fmt: skip
        save(RECORDED_DATAGRAMS, "udp_four_queries", "Four queries over one UDP socket before any answer "
             "(A, AAAA, CNAME chain, NXDOMAIN), then the four answers.", udp_conversation(port, queries))  # fmt: skip


if __name__ == "__main__":
    main()
