"""px.nslookup: reverse lookups by the system resolver, as Pixie's (src/carnot/funcs/net/dns.h)."""

from __future__ import annotations

import socket

from pxq.types import DataType
from tests.funcs.funcs_support import SCALARS, call, col, values

S = DataType.STRING


def test_nslookup_names_an_address_the_resolver_knows_and_gives_back_anything_else():
    # The reference: libc's gethostbyaddr for loopback (/etc/hosts names it on any machine).
    loopback_name = socket.gethostbyaddr("127.0.0.1")[0]
    rows = ["127.0.0.1", None, "not an address", "", "127.0.0.1"]
    assert values(call("nslookup", col(rows, S))) == [loopback_name, None, "not an address", "", loopback_name]
    assert not SCALARS["nslookup"].foldable  # the machine's resolver answers, at run time only
