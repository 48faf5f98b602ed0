"""Two code paths doing pure-Python work in a 2:1 ratio (Pixie's profiler test idea): main -> path_a -> leaf
with 2 units of work per round, main -> path_b -> leaf with 1. Prints "ready", waits for one byte on stdin,
runs for argv[1] seconds, then prints its own CPU time (time.process_time) and waits for another byte before
exiting (so that its code objects can still be read)."""

import os
import sys
import time


def leaf(units):
    total = 0
    for step in range(units * 20_000):
        total += step
    return total


def path_a():
    return leaf(2)


def path_b():
    return leaf(1)


def main(duration):
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    os.read(0, 1)
    start_cpu, deadline = time.process_time(), time.monotonic() + duration
    while time.monotonic() < deadline:
        path_a()
        path_b()
    sys.stdout.write(f"{time.process_time() - start_cpu}\n")
    sys.stdout.flush()
    os.read(0, 1)


if __name__ == "__main__":
    main(float(sys.argv[1]))
