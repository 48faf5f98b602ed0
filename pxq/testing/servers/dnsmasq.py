"""dnsmasq on 127.0.0.1, a free port, in the foreground, with its own configuration only (no
/etc/resolv.conf, no /etc/hosts, no upstream but the dead one below): the DNS server of the tests.

Names it answers (``DnsmasqServer.zone``), all authoritative under the local domain ``.test``:

* ``www.test``: A ``192.0.2.10`` and ``192.0.2.11``, AAAA ``2001:db8::10``
* ``alias.test``: CNAME ``mid.test``, which is a CNAME of ``www.test`` (a chain of two)
* ``missing.test`` (any name under ``.test`` not listed): NXDOMAIN
* ``dead.example``: forwarded to an upstream that never answers (a loopback port nothing listens
  on); dnsmasq gives up on it, which is how a query without a response is made.

No SERVFAIL: dnsmasq stays silent while its only upstream is dead (above), and passes an upstream's
REFUSED on as REFUSED (tried with a second instance as the upstream); SERVFAIL and REFUSED answers
are covered by the parser's unit tests instead.

::

    with DnsmasqServer() as server:
        dig @127.0.0.1 -p {server.port} www.test
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from pxq.testing.ports import LOOPBACK, free_port, wait_until_listening

DNSMASQ = "dnsmasq"
A_RECORDS = {"www.test": ("192.0.2.10", "192.0.2.11")}
AAAA_RECORDS = {"www.test": ("2001:db8::10",)}
CNAME_CHAIN = ("alias.test", "mid.test", "www.test")  # each a CNAME of the next
NXDOMAIN_NAME = "missing.test"
UNANSWERED_NAME = "dead.example"


class DnsmasqServer:
    """A dnsmasq process serving the zone above on ``127.0.0.1:port`` over UDP and TCP."""

    def __init__(self, port: int | None = None, host: str = LOOPBACK, a_records: tuple[str, ...] | None = None) -> None:
        """``a_records``: www.test's IPv4 addresses instead of A_RECORDS' (two servers that answer
        differently)."""
        self.host = host
        self.a_records = a_records or A_RECORDS[CNAME_CHAIN[-1]]
        self.port = port or free_port(host)
        self.dead_upstream_port = free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def config(self) -> str:
        www = CNAME_CHAIN[-1]
        lines = [
            f"port={self.port}",
            f"listen-address={self.host}",
            "bind-interfaces",
            "no-resolv",  # never /etc/resolv.conf
            "no-hosts",  # never /etc/hosts
            "no-negcache",
            "local=/test/",  # names under .test not listed below: NXDOMAIN, never forwarded
            *(f"host-record={www},{addr}" for addr in self.a_records + AAAA_RECORDS[www]),
            *(f"cname={alias},{target}" for alias, target in zip(CNAME_CHAIN, CNAME_CHAIN[1:], strict=False)),
            f"server=/{UNANSWERED_NAME}/{self.host}#{self.dead_upstream_port}",
            "user=root",  # keep the test's user (it may not be allowed to become nobody)
            "pid-file=",  # no pid file
            "log-facility=-",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> DnsmasqServer:
        exe = shutil.which(DNSMASQ) or shutil.which(DNSMASQ, path="/usr/sbin:/sbin")
        if exe is None:
            raise RuntimeError("dnsmasq is not installed (tools/setup.sh installs it)")
        self._dir = tempfile.TemporaryDirectory(prefix="pxq-dnsmasq-")
        conf = Path(self._dir.name) / "dnsmasq.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            [exe, "--keep-in-foreground", f"--conf-file={conf}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_until_listening(self.proc, self.port, self.host, timeout):  # itself: not a process holding the port
            err = b""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read()
            self.stop()
            raise RuntimeError(f"dnsmasq did not start on {self.host}:{self.port}: {err.decode(errors='replace')}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> DnsmasqServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
