"""Record the byte streams in pxq/agent/protocols/mysql/streams/ from a real MariaDB on loopback.

    PYTHONPATH=$PWD .venv/bin/python tests/agent/record_mysql_streams.py

Each conversation below runs a real client (PyMySQL, or a hand-written binary-protocol client for
prepared statements) against a fresh MariaDB (:func:`pxq.testing.servers.mariadb.mariadb_server`)
through :class:`TcpRecorder`, a byte-for-byte forwarding proxy that keeps every chunk as it was
read from a socket, with its direction and timestamp. Saved in the streams format
(:mod:`pxq.testing.streams`): ``chunks`` is ``[direction, ns_since_first_chunk, latin-1 data]``.
The tests also use :class:`TcpRecorder` and the conversations directly (no kernel needed).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pymysql

from pxq.agent.protocols.mysql import RECORDED_STREAMS
from pxq.testing.ports import LOOPBACK
from pxq.testing.servers.mariadb import CLIENT, MariaDB, mariadb_server

Chunk = tuple[str, int, bytes]


class TcpRecorder:
    """Forwards one TCP connection at a time from a loopback port to ``upstream`` and records
    every chunk read on either side: ``conversations`` holds one list of chunks per connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.conversations: list[list[Chunk]] = []
        self.ended = 0  # conversations whose sockets both closed
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            chunks: list[Chunk] = []
            self.conversations.append(chunks)
            self._pump(client, server, chunks)
            self.ended += 1

    def _pump(self, client: socket.socket, server: socket.socket, chunks: list[Chunk]) -> None:
        peers = {client: (server, "req"), server: (client, "resp")}
        open_ = {client, server}
        while open_ and not self._stop:
            ready, _, _ = select.select(list(open_), [], [], 0.1)
            for sock in ready:
                data = sock.recv(1 << 20)
                other, direction = peers[sock]
                if not data:
                    open_.clear()
                    break
                chunks.append((direction, time.monotonic_ns(), data))
                other.sendall(data)
        client.close()
        server.close()

    def wait_idle(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` conversations were recorded and the last one ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.conversations) >= count and self.ended == len(self.conversations):
                return
            time.sleep(0.01)
        raise AssertionError(f"recorded {len(self.conversations)} of {count} conversations")

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def recording(server: MariaDB) -> Iterator[TcpRecorder]:
    recorder = TcpRecorder((server.host, server.port))
    try:
        yield recorder
    finally:
        recorder.close()


def relative(chunks: list[Chunk]) -> list[Chunk]:
    """Timestamps as ns since the first chunk."""
    if not chunks:
        return []
    first = chunks[0][1]
    return [(d, ts - first, data) for d, ts, data in chunks]


# -- a hand-written client for the binary protocol (PyMySQL prepares nothing on the server) ---------
class BinaryProtocolClient:
    """COM_STMT_PREPARE / COM_STMT_EXECUTE / COM_STMT_CLOSE over a PyMySQL connection's socket,
    written by hand from the MySQL manual: PyMySQL has no server-side prepared statements, and
    mysql-connector-python is not a dependency. PyMySQL does the handshake; this sends the
    commands and reads the packets of their responses."""

    def __init__(self, conn: pymysql.connections.Connection) -> None:
        self.conn = conn

    def _send(self, payload: bytes) -> None:
        self.conn._sock.sendall(struct.pack("<I", len(payload))[:3] + b"\x00" + payload)

    def _packet(self) -> bytes:
        head = self._read(4)
        return self._read(int.from_bytes(head[:3], "little"))

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            got = self.conn._sock.recv(n - len(data))
            if not got:
                raise ConnectionError("server closed")
            data += got
        return data

    def prepare(self, sql: str) -> tuple[int, int, int]:
        """(statement id, columns, parameters)."""
        self._send(b"\x16" + sql.encode())
        first = self._packet()
        if first[0] == 0xFF:
            raise RuntimeError(first[9:].decode())
        stmt_id, columns, params = struct.unpack_from("<IHH", first, 1)
        deprecate_eof = bool(self.conn.server_capabilities & self.conn.client_flag & (1 << 24))
        for count in (params, columns):
            for _ in range(count):
                self._packet()
            if count and not deprecate_eof:
                self._packet()  # EOF
        return stmt_id, columns, params

    def execute(self, stmt_id: int, params: list[tuple[int, bool, bytes | None]]) -> list[bytes]:
        """Execute with parameters given as (type, unsigned, encoded value or None for NULL);
        returns the response's packets."""
        bitmap = bytearray((len(params) + 7) // 8)
        for i, (_, _, value) in enumerate(params):
            if value is None:
                bitmap[i // 8] |= 1 << (i % 8)
        body = struct.pack("<BIBI", 0x17, stmt_id, 0, 1)
        if params:
            body += bytes(bitmap) + b"\x01"
            body += b"".join(bytes([t, 0x80 if unsigned else 0]) for t, unsigned, _ in params)
            body += b"".join(v for _, _, v in params if v is not None)
        self._send(body)
        return self._read_result()

    def _read_result(self) -> list[bytes]:
        packets = [self._packet()]
        if packets[0][0] in (0x00, 0xFF):
            return packets
        columns = packets[0][0]
        for _ in range(columns):
            packets.append(self._packet())
        deprecate_eof = bool(self.conn.server_capabilities & self.conn.client_flag & (1 << 24))
        if not deprecate_eof:
            packets.append(self._packet())
        while True:
            p = self._packet()
            packets.append(p)
            if p[0] == 0xFF or (p[0] == 0xFE and len(p) < 0xFFFFFF):
                return packets

    def query(self, sql: str) -> list[bytes]:
        """COM_QUERY, reading the response's packets here (PyMySQL cannot read them when
        CLIENT_DEPRECATE_EOF was negotiated)."""
        self._send(b"\x03" + sql.encode())
        return self._read_result()

    def close_statement(self, stmt_id: int) -> None:
        self._send(struct.pack("<BI", 0x19, stmt_id))


def lenenc_str(value: bytes) -> bytes:
    assert len(value) < 251
    return bytes([len(value)]) + value


# -- conversations --------------------------------------------------------------------------------
def connect(port: int, **kwargs: object) -> pymysql.connections.Connection:
    args: dict[str, object] = {"host": LOOPBACK, "port": port, "user": "root", "database": "test"}
    args.update(kwargs)
    return pymysql.connect(**args)  # type: ignore[arg-type]


def queries(port: int) -> dict[str, object]:
    """PyMySQL: CREATE TABLE, INSERT of 3 rows, SELECT of them, an error, COM_INIT_DB, COM_PING,
    COM_QUIT. Returns what the client saw, for the tests' expected values."""
    seen: dict[str, object] = {}
    conn = connect(port)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20), price DOUBLE)")
        seen["insert"] = cur.execute("INSERT INTO items VALUES (1,'apple',1.5),(2,'pear',2.25),(3,'fig',NULL)")
        seen["select"] = cur.execute("SELECT id, name, price FROM items ORDER BY id")
        seen["rows"] = cur.fetchall()
        try:
            cur.execute("SELECT * FROM no_such_table")
        except pymysql.err.ProgrammingError as exc:
            seen["error"] = exc.args
    conn.select_db("mysql")
    conn.ping(reconnect=False)
    conn.close()
    return seen


def prepared(port: int) -> dict[str, object]:
    """Server-side prepared statements by hand: a SELECT with parameters of common types, an
    INSERT, a NULL parameter, then COM_STMT_CLOSE."""
    seen: dict[str, object] = {}
    conn = connect(port)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (i BIGINT, s VARCHAR(20), d DOUBLE, dt DATETIME)")
        cur.execute("INSERT INTO t VALUES (7,'seven',7.5,'2024-01-02 03:04:05'),(8,'eight',8.5,NULL)")
    client = BinaryProtocolClient(conn)
    stmt, columns, params = client.prepare("SELECT i, s FROM t WHERE i >= ? AND s <> ? AND d > ? AND dt < ?")
    seen["select_prepare"] = (columns, params)
    packets = client.execute(
        stmt,
        [
            (0x08, False, struct.pack("<q", 7)),  # LONGLONG
            (0xFE, False, lenenc_str(b"zzz")),  # STRING
            (0x05, False, struct.pack("<d", 1.25)),  # DOUBLE
            (0x0C, False, bytes([7]) + struct.pack("<HBBBBB", 2025, 6, 30, 12, 0, 1)),  # DATETIME
        ],
    )
    seen["select_rows"] = sum(1 for p in packets[1 + 2 :] if p[0] == 0x00)
    insert, _, _ = client.prepare("INSERT INTO t (i, s) VALUES (?, ?)")
    client.execute(insert, [(0x03, False, struct.pack("<i", -42)), (0xFE, False, None)])
    client.close_statement(stmt)
    client.close_statement(insert)
    with conn.cursor() as cur:  # a COM_QUERY after the silent COM_STMT_CLOSEs pairs with its own answer
        seen["count"] = cur.execute("SELECT * FROM t")
    conn.close()
    return seen


def auth(port: int, user: str, password: str) -> None:
    """A user with a password logs in (the auth response must not be kept) and runs a query."""
    conn = connect(port, user=user, password=password)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    conn.close()


def multi(port: int) -> dict[str, object]:
    """A multi-statement COM_QUERY: two result sets and an OK."""
    conn = connect(port, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 UNION SELECT 2; SELECT 'a'; DO 1")
        cur.nextset()
        cur.nextset()
    conn.close()
    return {}


CLI_STATEMENTS = (
    "CREATE TABLE c (n INT); INSERT INTO c VALUES (1),(2),(3),(4); SELECT n FROM c WHERE n > 1; "
    "SELECT 1/0, NULL; SELECT * FROM c WHERE n > 10; SELECT nope;"
)


def cli(port: int) -> dict[str, object]:
    """The mariadb command-line client (libmariadb: CLIENT_DEPRECATE_EOF) runs a few statements;
    the last one fails, which ends the client."""
    server_args = ["--no-defaults", "--protocol=TCP", "-h", LOOPBACK, "-P", str(port), "-u", "root", "--skip-ssl"]
    done = subprocess.run([CLIENT, *server_args, "test", "-e", CLI_STATEMENTS], capture_output=True, timeout=30)
    return {"returncode": done.returncode, "stdout": done.stdout.decode(), "stderr": done.stderr.decode()}


def deprecate_eof(port: int) -> dict[str, object]:
    """CLIENT_DEPRECATE_EOF negotiated (PyMySQL's handshake with the flag added; the commands sent
    and read by hand): result sets with and without rows, a prepared statement with parameters
    and columns, its execution, an error."""
    conn = connect(port, client_flag=1 << 24)
    client = BinaryProtocolClient(conn)
    client.query("CREATE TABLE d (k INT, v VARCHAR(10))")
    client.query("INSERT INTO d VALUES (1,'one'),(2,'two'),(3,'three')")
    client.query("SELECT k, v FROM d ORDER BY k")
    client.query("SELECT k FROM d WHERE k > 100")
    stmt, _, _ = client.prepare("SELECT v FROM d WHERE k = ? OR v = ?")
    client.execute(stmt, [(0x08, False, struct.pack("<q", 2)), (0xFE, False, lenenc_str(b"three"))])
    client.query("SELECT * FROM missing")
    client.close_statement(stmt)
    conn.close()
    return {}


CONVERSATIONS: dict[str, tuple[str, Callable[[int], object]]] = {
    "deprecate_eof": (
        "CLIENT_DEPRECATE_EOF: result sets (rows, none), a prepared statement and its execution, an error.",
        deprecate_eof,
    ),
    "cli": ("The mariadb client (CLIENT_DEPRECATE_EOF): CREATE, INSERT, SELECTs (rows, none), an error.", cli),
    "queries": ("PyMySQL: CREATE, INSERT 3 rows, SELECT 3 rows, an error, COM_INIT_DB, COM_PING, COM_QUIT.", queries),
    "prepared": ("Hand-written binary protocol: COM_STMT_PREPARE/EXECUTE with typed parameters, CLOSE.", prepared),
    "multi_statement": ("One COM_QUERY of three statements: two result sets and an OK.", multi),
}


def record_all(out: Path = RECORDED_STREAMS) -> None:
    with mariadb_server() as server:
        version = server.sql("SELECT VERSION();").split()[-1]
        server.create_user("app", "s3cret-pw")
        todo: list[tuple[str, str, Callable[[int], object]]] = [(n, d, f) for n, (d, f) in CONVERSATIONS.items()]
        todo.append(("auth", "A user with a password logs in (mysql_native_password), runs SELECT 1.",
                     lambda port: auth(port, "app", "s3cret-pw")))  # fmt: skip
        for name, description, run in todo:
            with recording(server) as recorder:
                run(recorder.port)
                recorder.wait_idle(1)
            chunks = relative(recorder.conversations[0])
            record = {
                "name": name,
                "server": f"MariaDB {version}",
                "description": description,
                "chunks": [[d, ts, data.decode("latin-1")] for d, ts, data in chunks],
            }
            (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
            print(f"{name}: {len(chunks)} chunks")


def run_client(name: str, port: int, *extra: str) -> None:
    """A child process for the live tests: prints READY, waits for a line on stdin, runs one
    conversation (with ``extra`` arguments: a user and password for ``auth``; ``midstream``
    connects before READY), prints what the client saw as JSON."""
    if name == "sleep":  # a query the server never answers: the test kills the server meanwhile
        conn = connect(port)
        print("READY", flush=True)
        sys.stdin.readline()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT SLEEP(60)")
            seen = {"error": None}
        except pymysql.err.OperationalError as exc:
            seen = {"error": exc.args[0]}
    elif name == "big":  # a query over 16 MB (two packets), then a query about it
        print("READY", flush=True)
        sys.stdin.readline()
        conn = connect(port)
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE big (v LONGTEXT)")
            inserted = cur.execute("INSERT INTO big VALUES (%s)", ("q" * (20 << 20),))
            cur.execute("SELECT LENGTH(v) FROM big")
            seen = {"inserted": inserted, "length": cur.fetchall()[0][0]}
        conn.close()
    elif name == "midstream":
        conn = connect(port)
        print("READY", flush=True)
        sys.stdin.readline()
        seen: object = {}
        # Three commands answered: the tracer pairs a socket met mid-life once three exchanges
        # went in step (its probation: pxq.agent.conn_tracker).
        with conn.cursor() as cur:
            seen = {"select": cur.execute("SELECT 1 UNION SELECT 2 UNION SELECT 3")}
        conn.ping(reconnect=False)
        with conn.cursor() as cur:
            seen["after_ping"] = cur.execute("SELECT 42")
        conn.close()
    else:
        print("READY", flush=True)
        sys.stdin.readline()
        if name == "auth":
            auth(port, extra[0], extra[1])
            seen = {}
        else:
            seen = CONVERSATIONS[name][1](port)
    print(json.dumps(seen, default=str), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        run_client(sys.argv[2], int(sys.argv[3]), *sys.argv[4:])
    else:
        record_all(Path(sys.argv[1]) if len(sys.argv) > 1 else RECORDED_STREAMS)
