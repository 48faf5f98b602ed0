"""Fuzz PxL: generated and mutated scripts through parse, compile, optimize, explain, split,
execution over four small captures (normal, empty, all-null, partly null) and rendering.

    PYTHONPATH=$PWD .venv/bin/python bench/fuzz_pxl.py --programs 20000 --seed 1 --jobs 2 --out fuzz-report/

Prints programs run, ok / diagnostic / finding counts (tracebacks, diagnostics without line:col,
hangs over 20 s, memory over 4 GiB, worker crashes), the slowest program, the peak worker RSS and
each finding class with its shortest reproducer; ``--out`` also gets summary.txt, findings.json
and one reproducer .pxl per class. Exits 1 when there is any finding. Program i of seed s is the
same on every run (``pxq.testing.fuzz.program(s, i)``), so ``--start I --programs 1`` replays one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pxq.testing.fuzz import (  # noqa: E402 (after the sys.path entry that finds this checkout's pxq)
    MEMORY_LIMIT_BYTES,
    WALL_LIMIT_S,
    FuzzRunner,
    Oracle,
    format_markdown,
    format_summary,
    minimize,
    reproducer_programs,
    write_report,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", type=int, default=20000, help="how many programs (default 20000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0, help="first program index (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out", metavar="DIR", help="write summary.txt, findings.json and reproducers here")
    parser.add_argument("--wall-limit", type=float, default=WALL_LIMIT_S, help="seconds per program (default 20)")
    parser.add_argument("--memory-limit-gib", type=float, default=MEMORY_LIMIT_BYTES / 2**30)
    parser.add_argument(
        "--no-conformance",
        action="store_true",
        help="mutate only the repository's scripts (not Pixie's, from PXQ_CONFORMANCE_DIR)",
    )
    parser.add_argument("--no-render", action="store_true", help="skip rendering (faster)")
    parser.add_argument(
        "--reproducers", action="store_true", help="also run tests/fuzz/reproducers/*.pxl (the committed findings)"
    )
    parser.add_argument(
        "--minimize",
        action="store_true",
        help="shrink each class's reproducers by deleting lines while the finding persists",
    )
    parser.add_argument("--markdown", metavar="FILE", help="also write the finding classes as Markdown here")
    args = parser.parse_args(argv)

    requests = [{"index": i} for i in range(args.start, args.start + args.programs)]
    if args.reproducers:
        requests += [{"index": p.index, "text": p.text, "origin": p.origin} for p in reproducer_programs()]
    last_print = [time.monotonic()]

    def progress(result, summary) -> None:
        if result.outcome.is_finding:
            o = result.outcome
            print(
                f"#{result.index} {o.kind}: {o.exc_type} at {o.frame} ({o.stage}): {o.message[:160]}",
                file=sys.stderr,
                flush=True,
            )
        if time.monotonic() - last_print[0] > 30:
            last_print[0] = time.monotonic()
            print(
                f"... {summary.programs}/{len(requests)} programs, {summary.findings} findings in "
                f"{len(summary.classes)} classes",
                file=sys.stderr,
                flush=True,
            )
            if args.out:
                write_report(summary, args.out)

    runner = FuzzRunner(
        args.seed,
        jobs=args.jobs,
        wall_limit=args.wall_limit,
        memory_limit=int(args.memory_limit_gib * 2**30),
        include_conformance=not args.no_conformance,
        render=not args.no_render,
        on_result=progress,
    )
    try:
        summary = runner.run(requests)
        if args.minimize and summary.classes:
            oracle = Oracle(runner.captures)
            for key, cls in summary.classes.items():
                for rank, example in enumerate(cls.examples):  # the shortest gets the most time
                    example.text = minimize(
                        example.text,
                        key,
                        oracle,
                        vis=example.vis,
                        attempt_limit_s=5.0,
                        budget_s=40.0 if rank == 0 else 10.0,
                    )
                cls.examples.sort(key=lambda r: (len(r.text), r.index))
    finally:
        runner.close()
    print(format_summary(summary))
    if args.out:
        write_report(summary, args.out)
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(summary) + "\n", encoding="utf-8")
    return 1 if summary.findings else 0


if __name__ == "__main__":
    sys.exit(main())
