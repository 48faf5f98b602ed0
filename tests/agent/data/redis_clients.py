"""redis-py clients for the Redis kernel tests, run as child processes (the tracer never traces its
own process).

``python redis_clients.py --port N --scenario NAME [--protocol 2|3] [--n N]`` (the password, if any, in
``REDIS_PASSWORD``: not on the command line, which the agent records with the process) connects (the
``midstream`` scenario also talks once), prints ``READY``, waits for a line on stdin (sent once the
tracer is attached), runs the scenario and prints one JSON line per command as the client saw it:
``{"cmd": [words...], "reply": <reply as redis-py returned it, bytes as latin-1 text>}``, then
exits. Replies are what the tests expect rows to show: they come from redis-py, not from pxq.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import redis


def plain(value: object) -> object:
    """A reply as JSON can carry it (bytes as latin-1 text, maps as [key, value] pairs in order)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict):
        return [[plain(k), plain(v)] for k, v in value.items()]
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, Exception):
        return {"error": str(value)}
    return value


def report(cmd: list[str], reply: object) -> None:
    print(json.dumps({"cmd": cmd, "reply": plain(reply)}), flush=True)


def run(r: redis.Redis, *cmd: str) -> None:
    """One command on the client's connection, its reply as the connection parsed it (no
    redis-py response callback: SET's +OK stays b"OK")."""
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command(*cmd)
        try:
            reply = conn.read_response()
        except redis.ResponseError as err:
            reply = err
    finally:
        r.connection_pool.release(conn)
    report(list(cmd), reply)


def basic(r: redis.Redis, args: argparse.Namespace) -> None:
    run(r, "SET", "foo", "bar")
    run(r, "GET", "foo")
    run(r, "HSET", "h", "f1", "v1", "f2", "v2")
    run(r, "HGETALL", "h")
    run(r, "GET", "missing")
    run(r, "LPUSH", "list", "a", "b")
    run(r, "GET", "list")  # WRONGTYPE
    run(r, "DEL", "foo", "h", "list")


def pipeline(r: redis.Redis, args: argparse.Namespace) -> None:
    pipe = r.pipeline(transaction=False)
    # Commands whose replies redis-py hands back as they came (no response callback).
    cmds = [("INCRBY", f"k{i // 2}", str(i)) if i % 2 == 0 else ("GET", f"k{i // 2}") for i in range(args.n)]
    for cmd in cmds:
        pipe.execute_command(*cmd)
    for cmd, reply in zip(cmds, pipe.execute(raise_on_error=False)):
        report(list(cmd), reply)


def transaction(r: redis.Redis, args: argparse.Namespace) -> None:
    pipe = r.pipeline(transaction=True)
    cmds = [("INCR", "counter"), ("INCRBY", "counter", "10"), ("GET", "counter")]
    for cmd in cmds:
        pipe.execute_command(*cmd)
    replies = pipe.execute()
    report(["MULTI"], "OK")
    for cmd in cmds:
        report(list(cmd), "QUEUED")
    report(["EXEC"], replies)


def pubsub(r: redis.Redis, args: argparse.Namespace) -> None:
    sub = r.pubsub()
    sub.subscribe("news")
    confirm = sub.get_message(timeout=5)
    report(["SUBSCRIBE", "news"], [confirm["type"], confirm["channel"], confirm["data"]])
    publisher = redis.Redis(host="127.0.0.1", port=args.port, password=os.environ.get("REDIS_PASSWORD"))
    run(publisher, "PUBLISH", "news", "hello")
    deadline = time.monotonic() + 5
    message = None
    while message is None and time.monotonic() < deadline:
        message = sub.get_message(timeout=1)
    assert message is not None
    report(["(pushed)"], [message["type"], message["channel"], message["data"]])
    sub.close()
    publisher.close()


def resp3(r: redis.Redis, args: argparse.Namespace) -> None:
    run(r, "HSET", "h3", "a", "1", "b", "2")
    run(r, "HGETALL", "h3")
    run(r, "SADD", "s3", "x")
    run(r, "SMEMBERS", "s3")
    run(r, "GET", "nothing")
    run(r, "DEL", "h3", "s3")


def auth(r: redis.Redis, args: argparse.Namespace) -> None:
    run(r, "SET", "guarded", "yes")
    run(r, "GET", "guarded")


def midstream(r: redis.Redis, args: argparse.Namespace) -> None:
    # Three commands answered in turn: the tracker's probation for a socket seen mid-stream.
    run(r, "SET", "later", "1")
    run(r, "INCR", "later")
    run(r, "GET", "later")


SCENARIOS = {f.__name__: f for f in (basic, pipeline, transaction, pubsub, resp3, auth, midstream)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--protocol", type=int, default=2)
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    # One connection, made when the scenario starts (so its handshake is traced), except for
    # midstream: made and used before the tracer attaches.
    r = redis.Redis(host="127.0.0.1", port=args.port, password=os.environ.get("REDIS_PASSWORD"), protocol=args.protocol,
                    max_connections=1 if args.scenario != "pubsub" else None)  # fmt: skip
    if args.scenario == "midstream":
        r.ping()
    print("READY", flush=True)
    sys.stdin.readline()
    SCENARIOS[args.scenario](r, args)
    r.close()


if __name__ == "__main__":
    main()
