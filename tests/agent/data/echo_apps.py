"""A plain TCP echo server and a client driven line by line, speaking no protocol pxq parses, for
the conn_stats tests (tests/agent/test_conn_stats_live.py).

    echo_apps.py server             prints "PORT <n>", echoes every connection until EOF
    echo_apps.py cookie-server      prints "PORT <n>", answers every HTTP GET with 200 and the
                                    header "Set-Cookie: <$SET_COOKIE>"
    echo_apps.py client --port N    reads commands on stdin, one answer line each on stdout:
        open I         connect connection I                          -> "OK"
        send I N       send N bytes on I, read the N echoed back     -> "OK <sent> <received>" (I's totals)
        close I        close I                                       -> "OK"
        quit           exit

Every message starts with bytes no protocol inference takes for a request or a response.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import threading

PATTERN = b"\x00PXQ-ECHO\x01" + bytes(range(256))


def payload(n: int) -> bytes:
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def serve() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print(f"PORT {listener.getsockname()[1]}", flush=True)

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept_forever() -> None:
        while True:
            # Wait first, accept after: an accept() entered before the tracer attached is one it
            # cannot see open (the connection would look opened before the tracer started).
            select.select([listener], [], [])
            conn, _ = listener.accept()
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_forever, daemon=True).start()
    sys.stdin.read()  # until the test closes our stdin


def client(port: int) -> None:
    conns: dict[str, socket.socket] = {}
    totals: dict[str, list[int]] = {}
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        command, name = words[0], words[1]
        if command == "open":
            conns[name] = socket.create_connection(("127.0.0.1", port))
            totals[name] = [0, 0]
            print("OK", flush=True)
        elif command == "send":
            sock, n = conns[name], int(words[2])
            sock.sendall(payload(n))
            totals[name][0] += n
            got = 0
            while got < n:
                chunk = sock.recv(n - got)
                if not chunk:
                    raise SystemExit("the echo server closed the connection")
                got += len(chunk)
            totals[name][1] += got
            print(f"OK {totals[name][0]} {totals[name][1]}", flush=True)
        elif command == "close":
            conns.pop(name).close()
            print("OK", flush=True)


def cookie_server(cookie: str) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Set-Cookie", cookie)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {httpd.server_address[1]}", flush=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "client", "cookie-server"))
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.role == "server":
        serve()
    elif args.role == "client":
        client(args.port)
    else:
        cookie_server(os.environ["SET_COOKIE"])
