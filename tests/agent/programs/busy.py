"""A CPU-bound Python program with known hot functions for the profiler tests:
<module> -> outer -> middle -> leaf_work. Prints its pid once running; runs argv[1] seconds."""

import os
import sys
import time


def leaf_work(n):
    total = 0
    for i in range(n):
        total += i * i  # LEAF_LINE
    return total


def middle():
    return leaf_work(20000)  # MIDDLE_LINE


def outer(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        middle()  # OUTER_LINE


print(os.getpid(), flush=True)
outer(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0)
