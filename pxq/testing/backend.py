"""A small real HTTP backend (``http.server``) for nginx to proxy to.

Run as ``python -m pxq.testing.backend [--port N]``; it prints ``READY <port>`` on stdout once it
listens on 127.0.0.1 (port 0 = let the kernel pick). Endpoints:

=================  ==========================================================
``GET /``          200, a small HTML page
``GET /api/items`` 200, a JSON list
``GET /api/slow``  200 JSON after sleeping ``SLOW_SECONDS`` (150 ms)
``GET /missing``   404 (so is any other unknown path)
``GET /api/error`` 500, a JSON error
``POST /api/echo`` 200, JSON echoing the request body and its size
``GET /api/stream`` 200, a JSON body sent with ``Transfer-Encoding: chunked``
``GET /legacy``    200, a body without Content-Length ended by closing the connection
``GET /ws``        with ``Upgrade``: 101 Switching Protocols, then echoes raw bytes until EOF
=================  ==========================================================

Given ``--pg-conninfo`` (a PostgreSQL with :data:`SCHEMA_SQL` applied) and ``--redis-port``, it
also answers from a database, with the SQL and Redis calls below (module constants: the demo's
tests expect exactly these strings); without them these paths answer 503:

=========================  ==========================================================
``GET /api/users/<id>``    Redis ``GET user:<id>``; on a miss the user's row by a server-side
                           prepared statement (:data:`USER_BY_ID_SQL`), then ``SET ... EX``;
                           200 JSON (``"cache": "hit"`` or ``"miss"``), 404 for no such user
``GET /api/users``         200, the number of users (:data:`USER_COUNT_SQL`, a simple query)
``GET /api/report``        200 after a slow query (:data:`REPORT_SQL`, ``pg_sleep``)
``GET /api/db-error``      500: :data:`BROKEN_SQL` fails (no such table), JSON with its SQLSTATE
=========================  ==========================================================

It speaks HTTP/1.1 with keep-alive and sends Content-Length except where noted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLOW_SECONDS = 0.15
ITEMS = [{"id": i, "name": f"item-{i}", "price_cents": 100 * i + 99} for i in range(1, 6)]

# The database the demo's backend reads: applied once by whoever starts the server.
USERS = 100  # the ids SCHEMA_SQL inserts: 1..USERS
SCHEMA_SQL = (
    "CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL)",
    f"INSERT INTO users SELECT g, 'user-' || g, 'user' || g || '@example.com' FROM generate_series(1, {USERS}) AS g",
)
# The SQL the backend sends, as psycopg is given it (%s: a bound parameter).
USER_BY_ID_SQL = "SELECT id, name, email FROM users WHERE id = %s"
USER_COUNT_SQL = "SELECT count(*) FROM users"
REPORT_SECONDS = 0.2
REPORT_SQL = f"SELECT count(*), pg_sleep({REPORT_SECONDS}) FROM users"  # pg_sleep runs once: one output row
BROKEN_SQL = "SELECT total FROM orders"  # there is no orders table: SQLSTATE 42P01
# Redis: a user's JSON under this key, for this long (short, so misses keep coming).
CACHE_KEY = "user:{id}"
CACHE_SECONDS = 2

INDEX_HTML = (
    "<!doctype html><html><head><title>pxq test backend</title></head>"
    "<body><h1>pxq test backend</h1><p>Real traffic for pxq's tests.</p></body></html>"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pxq-test-backend/1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle plus delayed ACKs add
    # 40 ms to some responses, which would blur the slow endpoint in latency tests.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass  # quiet: tests read the traffic, not the log

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/api/users" or path.startswith("/api/users/") or path in ("/api/report", "/api/db-error"):
            self._database_path(path)
        elif path == "/":
            self._send(200, INDEX_HTML.encode(), "text/html; charset=utf-8")
        elif path == "/api/items":
            self._json(200, {"items": ITEMS})
        elif path == "/api/slow":
            time.sleep(SLOW_SECONDS)
            self._json(200, {"slow": True, "slept_ms": int(SLOW_SECONDS * 1000)})
        elif path == "/api/error":
            self._json(500, {"error": "the backend failed on purpose"})
        elif path == "/api/stream":
            self._chunked([b'{"part": 1}', b', {"part": 2}', b', {"part": 3}'])
        elif path == "/legacy":
            self._close_delimited(b"an old-style body, ended by closing the connection\n")
        elif path == "/ws" and "upgrade" in self.headers.get("Connection", "").lower():
            self._upgrade()
        else:
            self._json(404, {"error": "not found", "path": path})

    def _database_path(self, path: str) -> None:
        database: Database | None = getattr(self.server, "database", None)
        if database is None:
            self._json(503, {"error": "no database configured (--pg-conninfo, --redis-port)"})
            return
        if path == "/api/users":
            self._json(200, {"users": database.user_count()})
        elif path == "/api/report":
            self._json(200, {"users": database.report()})
        elif path == "/api/db-error":
            import psycopg

            try:
                database.broken_query()
            except psycopg.Error as e:
                self._json(500, {"error": "the query failed", "sqlstate": e.sqlstate})
            else:
                self._json(200, {"error": None})  # only if someone created the table
        else:
            user_id = path.removeprefix("/api/users/")
            if not user_id.isdigit():
                self._json(404, {"error": "not found", "path": path})
                return
            user, cache = database.user(int(user_id))
            if user is None:
                self._json(404, {"error": "no such user", "id": int(user_id)})
            else:
                self._json(200, {"user": user, "cache": cache})

    def _chunked(self, parts: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _close_delimited(self, body: bytes) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _upgrade(self) -> None:
        """Switch to a trivial echo protocol: whatever arrives goes back, until EOF (bounded)."""
        self.close_connection = True
        self.send_response(101, "Switching Protocols")
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", self.headers.get("Upgrade", "echo"))
        self.end_headers()
        self.wfile.flush()
        for _ in range(1000):
            data = self.rfile.read1(4096)  # read1: bytes already buffered come first
            if not data:
                break
            self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.split("?", 1)[0] == "/api/echo":
            self._json(200, {"echo": body.decode("utf-8", errors="replace"), "size": len(body)})
        else:
            self._json(404, {"error": "not found", "path": self.path})


class Database:
    """The backend's PostgreSQL and Redis. Each request opens its own PostgreSQL connection (as a
    pool would after its connections' lifetime): a capture that starts at any moment then sees the
    Parse of each prepared statement, not only Executes of statements prepared before it began.
    One Redis client (redis-py's thread-safe pool) serves every request."""

    def __init__(self, conninfo: str, redis_port: int) -> None:
        import redis

        self.conninfo = conninfo
        self.redis = redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=10, decode_responses=True)

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)

    def user(self, user_id: int) -> tuple[dict[str, Any] | None, str]:
        """The user and where it came from ("hit": Redis, "miss": PostgreSQL, then cached)."""
        key = CACHE_KEY.format(id=user_id)
        cached = self.redis.get(key)
        if cached is not None:
            return json.loads(cached), "hit"
        with self._connect() as conn:
            # prepare=True: a named server-side statement (Parse, then Bind/Execute) at once.
            row = conn.execute(USER_BY_ID_SQL, (user_id,), prepare=True).fetchone()
        if row is None:
            return None, "miss"
        user = {"id": row[0], "name": row[1], "email": row[2]}
        self.redis.set(key, json.dumps(user), ex=CACHE_SECONDS)
        return user, "miss"

    def user_count(self) -> int:
        with self._connect() as conn:
            # No parameters and prepare=False: psycopg sends a simple Query message.
            return int(conn.execute(USER_COUNT_SQL, prepare=False).fetchone()[0])

    def report(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(REPORT_SQL, prepare=False).fetchone()[0])

    def broken_query(self) -> None:
        with self._connect() as conn:
            conn.execute(BROKEN_SQL, prepare=False)

    def close(self) -> None:
        self.redis.close()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # http.server's default backlog is 5
    database: Database | None = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--pg-conninfo", help="a libpq connection string to a PostgreSQL holding SCHEMA_SQL")
    ap.add_argument("--redis-port", type=int, help="a redis-server on 127.0.0.1 at this port")
    args = ap.parse_args(argv)
    if (args.pg_conninfo is None) != (args.redis_port is None):
        ap.error("--pg-conninfo and --redis-port go together")
    server = Server(("127.0.0.1", args.port), Handler)
    if args.pg_conninfo is not None:
        server.database = Database(args.pg_conninfo, args.redis_port)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if server.database is not None:
            server.database.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
