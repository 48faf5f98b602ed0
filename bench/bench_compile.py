"""Parse + compile + optimize time of each bundled script, after imports (target: <= 50 ms each).

.venv/bin/python bench/bench_compile.py
"""

from __future__ import annotations

import statistics
import time

from pxq.lang import parse
from pxq.library import bundled_scripts
from pxq.plan.compile import compile
from pxq.plan.optimize import optimize
from pxq.plan.split import split

TARGET_MS = 50.0


def main(repeats: int = 20) -> int:
    scripts = bundled_scripts()
    # Warm-up: grammar construction and function registry loading happen once per process.
    for s in scripts:
        split(optimize(compile(parse(s.text), now_ns=time.time_ns(), name=s.name, vis=s.vis)))
    worst = 0.0
    print(f"{'script':28} {'median ms':>10} {'max ms':>8}")
    for s in scripts:
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            split(optimize(compile(parse(s.text), now_ns=time.time_ns(), name=s.name, vis=s.vis)))
            samples.append((time.perf_counter() - start) * 1000)
        median = statistics.median(samples)
        worst = max(worst, median)
        print(f"{s.name:28} {median:10.2f} {max(samples):8.2f}")
    print(f"worst median {worst:.2f} ms (target <= {TARGET_MS:.0f} ms): {'OK' if worst <= TARGET_MS else 'OVER'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
