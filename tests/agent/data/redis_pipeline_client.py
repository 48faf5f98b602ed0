"""A redis-py client pipelining SET/GET pairs with unique keys and values, for the pairing test
under induced ring buffer drops (tests/agent/test_pairing_live.py), run as a child process (the
tracer never traces its own process).

``python redis_pipeline_client.py --port N --out F``: opens the first two connections of
:data:`PLAN` (each answers a PING) before it prints ``READY`` (the tracer picks them up
mid-stream), waits for a line on stdin, then, connection by connection, sends its pipelines of
SET k v / GET k pairs (one write each, redis-py's pipeline), closes it, prints ``DONE`` and waits
for a line on stdin (the test drains the ring buffer meanwhile). Writes to ``F`` one JSON line per
GET as the client saw it: ``{"key": k, "value": v}``.
"""

from __future__ import annotations

import argparse
import json
import sys

import redis

# (pipelines, SET/GET pairs per pipeline, value bytes) per connection: small ones that fit in the
# test's ring buffer, then large ones whose writes cannot (events are lost).
PLAN = [(3, 2, 400)] * 4 + [(3, 24, 3000)] * 4
EARLY = 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    def connect() -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=args.port, protocol=2, max_connections=1)

    early = [connect() for _ in range(EARLY)]
    for r in early:
        r.ping()  # connected before the tracer looks
    print("READY", flush=True)
    sys.stdin.readline()
    with open(args.out, "w") as out:
        for c, (pipelines, depth, size) in enumerate(PLAN):
            r = early[c] if c < EARLY else connect()
            for p in range(pipelines):
                pipe = r.pipeline(transaction=False)
                keys = [f"pairing:{c}:{p}:{i}" for i in range(depth)]
                for i, key in enumerate(keys):
                    # Unique values, each naming its key.
                    pipe.set(key, (f"{key}=" + chr(ord("a") + (c + p + i) % 26) * size)[:size])
                    pipe.get(key)
                replies = pipe.execute()
                for key, value in zip(keys, replies[1::2], strict=True):
                    out.write(json.dumps({"key": key, "value": value.decode()}) + "\n")
            r.close()
            print("DONE", flush=True)
            sys.stdin.readline()


if __name__ == "__main__":
    main()
