"""Starting the test servers (pxq/testing/ports.py's serve_on_free_port, behind nginx, redis-server,
PostgreSQL and MariaDB in pxq/testing/servers): a port another process took first is detected (a connection
to it succeeds, yet the listener is not the server's) and another port is tried; a server that
fails for another reason is an error quoting its own words."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pxq.testing import ports
from pxq.testing.ports import LOOPBACK, listens
from pxq.testing.servers.dnsmasq import DnsmasqServer
from pxq.testing.servers.mariadb import mariadb_server
from pxq.testing.servers.nginx import NginxError, echo_nginx, nginx_process
from pxq.testing.servers.postgres import postgres_server
from pxq.testing.servers.redis import RedisServerError, redis_server


def test_listens_names_the_process_holding_the_listener():
    with socket.create_server((LOOPBACK, 0)) as server:
        port = server.getsockname()[1]
        assert listens(os.getpid(), port)
        other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        try:
            assert not listens(other.pid, port)  # the same network namespace, not its socket
        finally:
            other.communicate(b"")
    assert not listens(os.getpid(), port)  # closed


@pytest.fixture
def first_port_taken(monkeypatch):
    """The first port free_port hands out is one this test listens on (another process winning the
    race for a free port); the later ones are really free. Yields that port."""
    with socket.create_server((LOOPBACK, 0)) as taken:
        taken_port = taken.getsockname()[1]
        handed_out = iter([taken_port])
        real_free_port = ports.free_port
        monkeypatch.setattr(ports, "free_port", lambda: next(handed_out, None) or real_free_port())
        yield taken_port


@pytest.mark.servers
def test_nginx_gets_a_port_of_its_own(first_port_taken):
    with echo_nginx() as server:
        assert server.port != first_port_taken
        with urllib.request.urlopen(f"http://{LOOPBACK}:{server.port}/who?x=1", timeout=10) as response:
            assert response.read() == b"/who?x=1\n"  # nginx's echo of the request target
        assert f"bind() to {LOOPBACK}:{first_port_taken} failed (98: Address already in use)" in server.error_log()


@pytest.mark.servers
def test_redis_gets_a_port_of_its_own(first_port_taken):
    import redis

    with redis_server() as server:
        assert server.port != first_port_taken
        client = redis.Redis(host=LOOPBACK, port=server.port, socket_timeout=10)
        try:
            assert client.ping() is True
            assert client.info("server")["tcp_port"] == server.port
        finally:
            client.close()


@pytest.mark.servers
def test_postgres_gets_a_port_of_its_own(first_port_taken):
    import psycopg

    with postgres_server() as server:
        assert server.port != first_port_taken
        with psycopg.connect(server.conninfo(), connect_timeout=10) as conn:
            assert conn.execute("SHOW port").fetchone() == (str(server.port),)


@pytest.mark.servers
def test_mariadb_gets_a_port_of_its_own(first_port_taken):
    import pymysql

    with mariadb_server() as server:
        assert server.port != first_port_taken
        conn = pymysql.connect(host=LOOPBACK, port=server.port, user="root", connect_timeout=10)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT @@port")
                assert cursor.fetchone() == (server.port,)
        finally:
            conn.close()


@pytest.mark.servers
def test_a_configuration_nginx_refuses_is_an_error_with_its_words(tmp_path: Path):
    def write_conf(port: int) -> Path:
        conf = tmp_path / "nginx.conf"
        conf.write_text(f"daemon off;\nno_such_directive on;\nevents {{}}\n# port {port}\n")
        return conf

    with pytest.raises(NginxError, match='unknown directive "no_such_directive"'), nginx_process(tmp_path, write_conf):
        pass


@pytest.mark.servers
def test_dnsmasq_on_a_taken_port_is_an_error_not_another_processs_server():
    """dnsmasq takes the port it is given (no retry): one another process listens on is refused
    with dnsmasq's own words, not answered by that other process."""
    with socket.create_server((LOOPBACK, 0)) as taken:
        server = DnsmasqServer(port=taken.getsockname()[1])
        try:
            with pytest.raises(RuntimeError, match="Address already in use"):
                server.start()
        finally:
            server.stop()


@pytest.mark.servers
def test_a_port_lost_at_every_attempt_is_an_error_with_the_servers_words(monkeypatch):
    with socket.create_server((LOOPBACK, 0)) as taken:
        monkeypatch.setattr(ports, "free_port", lambda: taken.getsockname()[1])
        expected = r"(?s)could not bind a free loopback port in 2 attempts:.*Address already in use"
        with pytest.raises(RedisServerError, match=expected), redis_server(attempts=2):
            pass
