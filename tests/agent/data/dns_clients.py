"""DNS clients for the socket tracer's live tests, in a child process: started, they print READY
and wait for a line on stdin (so the tracer, attached meanwhile, sees every call), then run their
scenario and print one JSON line per query with what dnspython itself reports of the answer.

    dns_clients.py dnspython PORT        dns.query.udp / dns.query.tcp and a dns.resolver.Resolver
    dns_clients.py two-servers PORT_A PORT_B
                                         one unconnected UDP socket, the same query (same id) to
                                         two servers, answers read in whatever order they come
    dns_clients.py connected PORT        a connect()ed UDP socket: send/recv, then write/read (no
                                         address in any call: the peer is the connect()'s)
    dns_clients.py mmsg PORT             two queries in one sendmmsg (each with its msg_name), the
                                         answers by recvmmsg (each with the address it came from)
    dns_clients.py noise PORT N M        N datagrams that are not DNS to PORT, SENT, a line on
                                         stdin, then M more
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import select
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


def connected(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.connect((HOST, port))
        for name, send, recv in (("www.test", s.send, s.recv), ("alias.test", None, None)):
            query = dns.message.make_query(name, "A", use_edns=False)
            if send is not None:
                send(query.to_wire())
                data = recv(65535)
            else:  # plain write(2)/read(2) on the socket
                os.write(s.fileno(), query.to_wire())
                select.select([s], [], [], 5)  # the socket is non-blocking (settimeout)
                data = os.read(s.fileno(), 65535)
            report("connected", query, dns.message.from_wire(data), port)


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32), ("msg_iov", ctypes.POINTER(Iovec)),
                ("msg_iovlen", ctypes.c_size_t), ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]  # fmt: skip


class Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]


def sockaddr_in(port: int) -> ctypes.Array:
    raw = socket.AF_INET.to_bytes(2, "little") + port.to_bytes(2, "big") + socket.inet_aton(HOST) + bytes(8)
    return ctypes.create_string_buffer(raw, len(raw))


def mmsg(port: int) -> None:
    """sendmmsg/recvmmsg through libc (Python's socket module has neither)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    queries = [dns.message.make_query("www.test", t, use_edns=False) for t in ("A", "AAAA")]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        keep = []
        out = (Mmsghdr * 2)()
        for i, query in enumerate(queries):
            wire = ctypes.create_string_buffer(query.to_wire(), len(query.to_wire()))
            name, iov = sockaddr_in(port), Iovec(ctypes.cast(wire, ctypes.c_void_p), len(wire))
            keep += [wire, name, iov]
            out[i].msg_hdr.msg_name, out[i].msg_hdr.msg_namelen = ctypes.cast(name, ctypes.c_void_p), 16
            out[i].msg_hdr.msg_iov, out[i].msg_hdr.msg_iovlen = ctypes.pointer(iov), 1
        if libc.sendmmsg(s.fileno(), out, 2, 0) != 2:
            raise OSError(ctypes.get_errno(), "sendmmsg")
        into = (Mmsghdr * 2)()
        got = 0
        while got < 2:  # both answers, in one call or two
            for i in range(2):
                buf, name = ctypes.create_string_buffer(4096), ctypes.create_string_buffer(16)
                iov = Iovec(ctypes.cast(buf, ctypes.c_void_p), 4096)
                keep += [buf, name, iov]
                into[i].msg_hdr.msg_name, into[i].msg_hdr.msg_namelen = ctypes.cast(name, ctypes.c_void_p), 16
                into[i].msg_hdr.msg_iov, into[i].msg_hdr.msg_iovlen = ctypes.pointer(iov), 1
            select.select([s], [], [], 5)  # the socket is non-blocking (settimeout)
            n = libc.recvmmsg(s.fileno(), into, 2 - got, 0, None)
            if n <= 0:
                raise OSError(ctypes.get_errno(), "recvmmsg")
            for i in range(n):
                base = ctypes.cast(into[i].msg_hdr.msg_iov[0].iov_base, ctypes.POINTER(ctypes.c_char))
                response = dns.message.from_wire(base[: into[i].msg_len])
                query = next(q for q in queries if q.id == response.id)
                report("mmsg", query, response, port)
            got += n


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
    elif mode == "connected":
        connected(int(ports[0]))
    elif mode == "mmsg":
        mmsg(int(ports[0]))
    elif mode == "noise":
        noise(int(ports[0]), int(ports[1]), int(ports[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
