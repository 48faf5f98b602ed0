"""DNS clients for the socket tracer's live tests, in a child process: started, they print READY
and wait for a line on stdin (so the tracer, attached meanwhile, sees every call), then run their
scenario and print one JSON line per query with what dnspython itself reports of the answer.

    dns_clients.py dnspython PORT        dns.query.udp / dns.query.tcp and a dns.resolver.Resolver
    dns_clients.py two-servers PORT_A PORT_B
                                         one unconnected UDP socket, the same query (same id) to
                                         two servers, answers read in whatever order they come
    dns_clients.py noise PORT N M        N datagrams that are not DNS to PORT, SENT, a line on
                                         stdin, then M more
"""

from __future__ import annotations

import json
import socket
import sys

import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

HOST = "127.0.0.1"


def report(how: str, query: dns.message.Message, response: dns.message.Message, port: int) -> None:
    answers = []
    for rrset in response.answer:
        for rd in rrset:
            entry = {"name": rrset.name.to_text(omit_final_dot=True), "type": dns.rdatatype.to_text(rrset.rdtype)}
            if rrset.rdtype == dns.rdatatype.CNAME:
                entry["cname"] = rd.target.to_text(omit_final_dot=True)
            else:
                entry["addr"] = rd.address
            answers.append(entry)
    question = [{"name": q.name.to_text(omit_final_dot=True), "type": dns.rdatatype.to_text(q.rdtype)}
                for q in query.question]  # fmt: skip
    print(json.dumps({"how": how, "port": port, "id": response.id, "rcode": response.rcode(), "question": question,
                      "answers": answers}), flush=True)  # fmt: skip


def dnspython(port: int) -> None:
    for how, name, rdtype in (("udp", "www.test", "A"), ("udp", "www.test", "AAAA"), ("tcp", "alias.test", "A"),
                              ("udp", "missing.test", "A"), ("tcp", "missing.test", "AAAA")):  # fmt: skip
        query = dns.message.make_query(name, rdtype, use_edns=False)
        send = dns.query.udp if how == "udp" else dns.query.tcp
        report(how, query, send(query, HOST, port=port, timeout=5), port)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [HOST]
    resolver.port = port
    resolver.use_edns(False)
    answer = resolver.resolve("alias.test", "A", search=False)
    query = dns.message.make_query("alias.test", "A")
    report("resolver", query, answer.response, port)


def two_servers(port_a: int, port_b: int) -> None:
    """The same query, id and all, to two servers over one unconnected socket (sendto/recvfrom)."""
    query = dns.message.make_query("www.test", "A", id=4242, use_edns=False)
    wire = query.to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(wire, (HOST, port_a))
        s.sendto(wire, (HOST, port_b))
        for _ in range(2):
            data, (_, port) = s.recvfrom(65535)
            report("two-servers", query, dns.message.from_wire(data), port)


NOISE = b"not a dns message, just some bytes"


def noise(port: int, first: int, then: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(first):
            s.sendto(NOISE, (HOST, port))
        print("SENT", len(NOISE), flush=True)
        sys.stdin.readline()
        for _ in range(then):
            s.sendto(NOISE, (HOST, port))


def main() -> None:
    mode, *ports = sys.argv[1:]
    print("READY", flush=True)
    sys.stdin.readline()
    if mode == "dnspython":
        dnspython(int(ports[0]))
    elif mode == "two-servers":
        two_servers(int(ports[0]), int(ports[1]))
    elif mode == "noise":
        noise(int(ports[0]), int(ports[1]), int(ports[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
