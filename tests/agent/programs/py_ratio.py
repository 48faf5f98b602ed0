"""Two Python code paths doing pure-Python work in a known 2:1 ratio, for the profiler's accuracy tests (the
Python twin of ratio.c): main -> path_a -> leaf does 2 units of work per round, main -> path_b -> leaf 1.
A unit's size changes from round to round (the same for both paths of a round, from a fixed seed): with a
constant round, its length could come near a multiple of the sampling period, and periodic samples would
then land on the same phase of every round (aliasing: 2.5:1 was seen on CPython 3.13 at 499 Hz).

    py_ratio.py SECONDS           the 2:1 loop in the main thread
    py_ratio.py SECONDS thread    the same in a thread started only then (a thread the profiler has not seen)
    py_ratio.py SECONDS hold      after "done", waits for another line (or the end of stdin) before exiting,
                                  so that its code objects can still be read (words combine: thread hold)

Prints "ready" and waits for a line on stdin; then runs the loop for SECONDS of wall time, prints
"done LEAF_CALLS CPU_SECONDS" (as ratio.c: the work done, and its own CPU time, time.process_time) and exits.
Runs on CPython 3.7 and later."""

import random
import sys
import threading
import time

leaf_calls = 0


def leaf(units, size):
    global leaf_calls
    leaf_calls += units * size  # additions done: the throughput the overhead benchmark compares
    total = 0
    for step in range(units * size):
        total += step
    return total


def path_a(size):
    return leaf(2, size)


def path_b(size):
    return leaf(1, size)


def main(duration):
    sizes = random.Random(1)
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        size = sizes.randrange(10000, 30000)
        path_a(size)
        path_b(size)


if __name__ == "__main__":
    seconds = float(sys.argv[1])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    options = sys.argv[2:]
    if "thread" in options:
        worker = threading.Thread(target=main, args=(seconds,))
        worker.start()
        worker.join()
    else:
        main(seconds)
    sys.stdout.write("done %d %f\n" % (leaf_calls, time.process_time()))
    sys.stdout.flush()
    if "hold" in options:
        sys.stdin.readline()
