"""Starting nginx for tests (pxq/testing/servers/nginx.py's nginx_process, behind echo_nginx and the
workload's nginx_server): a port another process took is detected and another one tried, and a
configuration nginx refuses is an error quoting nginx's own words."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from pxq.testing.ports import LOOPBACK
from pxq.testing.servers import nginx
from pxq.testing.servers.nginx import NginxError, echo_nginx, nginx_process

pytestmark = pytest.mark.servers


def test_a_port_taken_by_another_process_is_not_taken_for_nginx(monkeypatch):
    """The first port handed out is one this test listens on (another process winning the race for
    a free port): connecting to it succeeds, yet it is not nginx's; nginx fails to bind it, and the
    next attempt gets a port of its own."""
    with socket.create_server((LOOPBACK, 0)) as taken:
        taken_port = taken.getsockname()[1]
        handed_out = iter([taken_port])
        real_free_port = nginx.free_port
        monkeypatch.setattr(nginx, "free_port", lambda: next(handed_out, None) or real_free_port())
        with echo_nginx() as server:
            assert server.port != taken_port
            with urllib.request.urlopen(f"http://{LOOPBACK}:{server.port}/who?x=1", timeout=10) as response:
                assert response.read() == b"/who?x=1\n"  # nginx's echo of the request target
            assert f"bind() to {LOOPBACK}:{taken_port} failed (98: Address already in use)" in server.error_log()


def test_a_configuration_nginx_refuses_is_an_error_with_its_words(tmp_path: Path):
    def write_conf(port: int) -> Path:
        conf = tmp_path / "nginx.conf"
        conf.write_text(f"daemon off;\nno_such_directive on;\nevents {{}}\n# port {port}\n")
        return conf

    with pytest.raises(NginxError, match='unknown directive "no_such_directive"'):
        with nginx_process(tmp_path, write_conf):
            pass
