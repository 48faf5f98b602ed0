"""``python -m pxq.agent.python PID``: every thread's Python stack of a live CPython process, read from its
memory (no ptrace stop, no code run in it), printed like a traceback: outermost frame first."""

from __future__ import annotations

import sys

from pxq.agent.python.process import PythonAttachError, attach


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m pxq.agent.python PID", file=sys.stderr)
        return 2
    pid = int(argv[0])
    try:
        process = attach(pid)
    except PythonAttachError as error:
        print(f"pxq: {error} ({error.reason})", file=sys.stderr)
        return 1
    try:
        print(f"process {pid}: CPython {process.layout.label} in {process.binary}")
        for tid, frames in process.stacks().items():
            print(f"Thread {tid} (most recent call last):")
            for frame in reversed(frames):
                if frame is None:
                    print("  <unreadable frame>")
                else:
                    print(f'  File "{frame.filename}", line {frame.line}, in {frame.qualname}')
        for reason, count in sorted(process.reasons.items()):
            print(f"{reason}: {count}", file=sys.stderr)
    finally:
        process.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
