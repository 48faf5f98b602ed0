"""A known Python call chain for the frame-walker tests, runnable on CPython 3.8+.

main -> path_a (recursing 3 times) -> through_generator -> generator body -> Worker.method ->
outer.<locals>.inner -> élan_leaf, which reports the interpreter's own view of its stack (qualname, filename,
line per frame, innermost first, built by walking sys._getframe() as traceback.extract_stack does) and then
blocks in os.read, a C call, on the same line, so the stack stays exactly as reported while the test reads
it. A second thread does the same on a pipe. Each report is one JSON line on stdout; one byte on stdin ends
the program. os.getpid() on the reporting line is the uprobe anchor for the BPF walker test; with --hold, both
threads first wait (in os.read) until one byte arrives on stdin, after printing "held", so that the test can
register the threads before they run the chain."""

import json
import os
import sys
import threading

RELEASE_READ, RELEASE_WRITE = os.pipe()
HOLD_READ, HOLD_WRITE = os.pipe()
LOCK = threading.Lock()


def own_view():
    frame, frames = sys._getframe(1), []
    while frame is not None:
        code = frame.f_code
        frames.append([getattr(code, "co_qualname", code.co_name), code.co_filename, frame.f_lineno])
        frame = frame.f_back
    return frames


def report(frames):
    with LOCK:
        record = {"tid": threading.get_native_id(), "frames": frames}
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def élan_leaf(fd):
    os.getpid(); report(own_view()); os.read(fd, 1)  # fmt: skip  # noqa: E702 (one line: one sync point)


def outer(fd):
    def inner():
        élan_leaf(fd)

    inner()


class Worker:
    def method(self, fd):
        outer(fd)


def generator(fd):
    Worker().method(fd)
    yield 1


def through_generator(fd):
    for _ in generator(fd):
        pass


def path_a(depth, fd):
    if depth:
        return path_a(depth - 1, fd)
    return through_generator(fd)


def side_thread(hold):
    if hold:
        os.read(HOLD_READ, 1)
    path_a(1, RELEASE_READ)


def main():
    hold = "--hold" in sys.argv
    thread = threading.Thread(target=side_thread, args=(hold,), name="side")
    thread.start()
    if hold:
        sys.stdout.write("held\n")
        sys.stdout.flush()
        os.read(0, 1)
        os.write(HOLD_WRITE, b"x")
    path_a(3, 0)
    os.write(RELEASE_WRITE, b"x")
    thread.join()


if __name__ == "__main__":
    main()
