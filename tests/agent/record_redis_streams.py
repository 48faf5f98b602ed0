"""Record the byte streams in pxq/agent/protocols/redis/streams/ from a real redis-server.

    PYTHONPATH=. .venv/bin/python tests/agent/record_redis_streams.py

Each conversation runs a real client (redis-py, or a raw socket for inline commands) through a
small recording proxy on loopback that forwards every byte unchanged and keeps each chunk as it
was read, with its direction and a monotonic timestamp. The format is the HTTP streams' (see
tests/agent/record_streams.py and pxq/testing/streams.py): ``chunks`` is a list of
``[direction, ns_since_first_chunk, data]``, direction ``"req"`` (client to server) or
``"resp"``, data as latin-1 text. Re-recording changes timings and ids, not what tests assert.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from pxq.agent.protocols.redis import RECORDED_STREAMS
from pxq.testing.ports import LOOPBACK
from pxq.testing.servers.redis import RedisServer, redis_server

# A password made for the recording: the ``auth`` stream holds it (the row tests check it is
# redacted); it guards nothing.
RECORDING_PASSWORD = "recorded-fake-password"
# Kept out of streams/ (see tests/agent/test_redis_protocol.py APART): inline commands never make a
# connection Redis, pub/sub pushes answer no request.
APART = {name: Path(__file__).parent / "data" / f"redis_{name}_stream.json" for name in ("inline", "pubsub")}


class RecordingTcpProxy:
    """Forward one client connection to ``port`` and keep its chunks: (direction, ns, bytes)."""

    def __init__(self, port: int) -> None:
        self.upstream_port = port
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.chunks: list[tuple[str, int, bytes]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection((LOOPBACK, self.upstream_port))
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pumps = [
            threading.Thread(target=self._pump, args=(client, upstream, "req"), daemon=True),
            threading.Thread(target=self._pump, args=(upstream, client, "resp"), daemon=True),
        ]
        for p in pumps:
            p.start()
        for p in pumps:
            p.join()
        client.close()
        upstream.close()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (dst, src):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                return
            with self.lock:
                self.chunks.append((direction, time.monotonic_ns(), data))
            dst.sendall(data)

    def finish(self) -> list[tuple[str, int, bytes]]:
        self.thread.join(timeout=10)
        self.listener.close()
        return self.chunks


def basic(port: int) -> None:
    r = redis.Redis(host=LOOPBACK, port=port, protocol=2, max_connections=1)
    r.set("foo", "bar")
    r.get("foo")
    r.hset("h", mapping={"f1": "v1", "f2": "v2"})
    r.hgetall("h")
    r.get("missing")
    r.rpush("list", "a", "b")
    with contextlib.suppress(redis.ResponseError):  # WRONGTYPE
        r.get("list")
    r.delete("foo", "h", "list")
    r.close()


def pipeline(port: int) -> None:
    r = redis.Redis(host=LOOPBACK, port=port, protocol=2, max_connections=1)
    pipe = r.pipeline(transaction=False)
    for i in range(10):
        pipe.incrby(f"k{i}", i)
        pipe.get(f"k{i}")
    pipe.execute()
    r.delete(*[f"k{i}" for i in range(10)])
    r.close()


def pipeline_separate_writes(port: int, proxy: RecordingTcpProxy) -> None:
    """A raw socket pipelining one command per write, each read by the proxy on its own before
    the next is sent, none answered yet: a BLPOP on an empty list with a timeout blocks the
    connection, and Redis keeps the commands sent meanwhile until it is answered. Then the
    answers, then two commands one at a time (the depth of requests in flight changes)."""
    commands = [["BLPOP", "pxq-empty", "0.3"]]
    for i in range(4):
        commands += [["SET", f"sep{i}", f"value-{i}"], ["GET", f"sep{i}"]]
    with socket.create_connection((LOOPBACK, port)) as s:
        for n, words in enumerate(commands, 1):
            s.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words))
            _wait_until(lambda n=n: sum(d == "req" for d, _, _ in proxy.chunks) >= n)
        replies = b""
        while replies.count(b"\r\n") < 1 + 4 + 8:  # BLPOP's null array, 4 OKs, 4 bulk strings
            replies += s.recv(65536)
        for words, expected_lines in ((["GET", "sep3"], 2), (["DEL", "sep0", "sep1", "sep2", "sep3"], 1)):
            s.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words))
            reply = b""
            while reply.count(b"\r\n") < expected_lines:
                reply += s.recv(65536)


def _wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the recording proxy did not read the command")
        time.sleep(0.001)


def multi_exec(port: int) -> None:
    r = redis.Redis(host=LOOPBACK, port=port, protocol=2, max_connections=1)
    pipe = r.pipeline(transaction=True)
    pipe.incr("counter")
    pipe.incrby("counter", 10)
    pipe.get("counter")
    pipe.execute()
    r.delete("counter")
    r.close()


def pubsub(port: int, upstream_port: int) -> None:
    """The subscriber's connection: SUBSCRIBE to two channels, two pushed messages (published
    from another connection, not recorded), UNSUBSCRIBE of every channel."""
    r = redis.Redis(host=LOOPBACK, port=port, protocol=2, max_connections=1)
    sub = r.pubsub()
    sub.subscribe("news", "sport")
    for _ in range(2):
        sub.get_message(timeout=5)
    publisher = redis.Redis(host=LOOPBACK, port=upstream_port, protocol=2)
    publisher.publish("news", "hello")
    publisher.publish("sport", "goal")
    got = 0
    deadline = time.monotonic() + 5
    while got < 2 and time.monotonic() < deadline:
        if sub.get_message(timeout=1) is not None:
            got += 1
    sub.unsubscribe()
    for _ in range(2):
        sub.get_message(timeout=5)
    sub.close()
    publisher.close()


def resp3(port: int) -> None:
    r = redis.Redis(host=LOOPBACK, port=port, protocol=3, max_connections=1)
    r.hset("h3", mapping={"a": "1", "b": "2"})
    r.hgetall("h3")
    r.sadd("s3", "x")
    r.smembers("s3")
    r.get("nothing")
    r.delete("h3", "s3")
    r.close()


def auth(port: int, protocol: int = 2) -> None:
    r = redis.Redis(host=LOOPBACK, port=port, password=RECORDING_PASSWORD, protocol=protocol, max_connections=1)
    r.set("guarded", "yes")
    r.get("guarded")
    r.close()


def hello_auth(port: int) -> None:
    """RESP3: the password goes in HELLO 3 AUTH default <password>."""
    auth(port, protocol=3)


def inline(port: int) -> None:
    """Commands typed as lines (telnet style), quotes included."""
    with socket.create_connection((LOOPBACK, port)) as s:
        for line in (b"PING\r\n", b'SET greeting "hello world"\r\n', b"GET greeting\r\n", b"DEL greeting\r\n"):
            s.sendall(line)
            s.recv(65536)


CONVERSATIONS: list[tuple[str, str, Callable[..., None], bool]] = [
    (
        "basic",
        "redis-py (RESP2): SET, GET, HSET, HGETALL, GET of a missing key, RPUSH, a WRONGTYPE error, DEL.",
        basic,
        False,
    ),
    (
        "pipeline",
        "redis-py (RESP2): a pipeline of 20 commands (INCRBY and GET) in one write, then DEL.",
        pipeline,
        False,
    ),
    (
        "pipeline_separate_writes",
        "A raw socket pipelining 9 commands (a BLPOP that times out, then SET and GET) one per write before "
        "any reply, then GET and DEL one at a time.",
        pipeline_separate_writes,
        False,
    ),
    (
        "multi_exec",
        "redis-py (RESP2): MULTI, INCR, INCRBY, GET (each QUEUED), EXEC's array, then DEL.",
        multi_exec,
        False,
    ),
    (
        "pubsub",
        "redis-py subscriber (RESP2): SUBSCRIBE news sport, two pushed messages, UNSUBSCRIBE of all.",
        pubsub,
        False,
    ),
    (
        "resp3",
        "redis-py with protocol=3: HELLO 3, HSET, HGETALL's map, SADD, SMEMBERS' set, a null, DEL.",
        resp3,
        False,
    ),
    ("auth", f"redis-py (RESP2) on a server with requirepass {RECORDING_PASSWORD!r}: AUTH, SET, GET.", auth, True),
    (
        "hello_auth",
        "redis-py with protocol=3 on the same server: HELLO 3 AUTH default <password>, SET, GET.",
        hello_auth,
        True,
    ),
    ("inline", "A raw socket typing inline commands: PING, SET with a quoted value, GET, DEL.", inline, False),
]


def record(name: str, doc: str, run: Callable[..., None], server: RedisServer) -> None:
    proxy = RecordingTcpProxy(server.port)
    if run is pubsub:
        run(proxy.port, server.port)
    elif run is pipeline_separate_writes:
        run(proxy.port, proxy)
    else:
        run(proxy.port)
    chunks = proxy.finish()
    t0 = chunks[0][1]
    version = redis.Redis(host=LOOPBACK, port=server.port, password=server.password).info("server")["redis_version"]
    data = {
        "name": name,
        "server": f"redis-server {version}",
        "description": doc,
        "chunks": [[d, ts - t0, chunk.decode("latin-1")] for d, ts, chunk in chunks],
    }
    path = APART.get(name, Path(RECORDED_STREAMS) / f"{name}.json")
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{path}: {len(chunks)} chunks", file=sys.stderr)


def main(only: list[str]) -> None:
    """Record every conversation, or those named on the command line."""
    Path(RECORDED_STREAMS).mkdir(exist_ok=True)
    with redis_server() as plain, redis_server(password=RECORDING_PASSWORD) as guarded:
        for name, doc, run, needs_password in CONVERSATIONS:
            if not only or name in only:
                record(name, doc, run, guarded if needs_password else plain)


if __name__ == "__main__":
    main(sys.argv[1:])
