"""Network address functions.

``nslookup(addr)``: the host name of an IP address by a reverse lookup through the system's
resolver (``getnameinfo`` with ``NI_NAMEREQD``: /etc/hosts, then DNS), as Pixie's ``nslookup``
(``src/carnot/funcs/net/dns.h``, ``DNSLookup``): the address itself when it has no name, the
resolver's error text when the lookup fails otherwise. Pixie reads IPv4 only; pxq takes IPv6 too,
and gives text that is not an address back unchanged (Pixie would look up 0.0.0.0). Results are
cached per address for the life of the process (Pixie: an LRU of 1024), and each distinct address
is looked up once per call. The answer depends on the machine's resolver, so it is not folded at
compile time and a replay elsewhere may name addresses differently.
"""

from __future__ import annotations

import functools
import ipaddress
import socket

import pyarrow as pa

from pxq.funcs._common import STRING, Value, map_distinct, param, udf
from pxq.funcs.registry import ExecContext

NSLOOKUP_CACHE = 1024


@functools.lru_cache(maxsize=NSLOOKUP_CACHE)
def reverse_lookup(addr: str) -> str:
    """The host name of ``addr`` (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr
    try:
        host, _ = socket.getnameinfo((str(ip), 0), socket.NI_NAMEREQD)
    except socket.gaierror as exc:
        return addr if exc.errno == socket.EAI_NONAME else str(exc.strerror)
    return host


@udf(
    "nslookup",
    (param("addr", STRING),),
    STRING,
    "The host name of an IP address (reverse lookup by the system's resolver); the address when it has none.",
    foldable=False,
)
def _nslookup(ctx: ExecContext, addr: Value) -> Value:
    return map_distinct(addr, reverse_lookup, pa.string())
