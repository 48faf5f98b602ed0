"""Group-by with quantiles over 1M http_events rows: pxq vs DuckDB on the same Parquet file,
measured alternately in one run (target: pxq <= 1.5x DuckDB's time).

Both read the file, filter on status, group by (req_path, req_method) and compute count, mean
latency, max response size and latency quantiles (t-digest in pxq, DuckDB's approx_quantile).

    .venv/bin/python bench/bench_groupby.py [--rows 1000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import duckdb

from pxq.api import run_script
from pxq.library import Script
from pxq.replay import open_capture, write_capture
from pxq.testing.synthetic import synthetic_http_events, synthetic_processes

START_NS = 1_764_115_200_000_000_000
SPAN_NS = 300_000_000_000
TARGET_RATIO = 1.5

PXL = """
import px
df = px.DataFrame(table='http_events', select=['req_path', 'req_method', 'resp_status', 'latency', 'resp_body_size'])
df = df[df.resp_status != 204]
df = df.groupby(['req_path', 'req_method']).agg(
    n=('latency', px.count),
    mean_latency=('latency', px.mean),
    max_size=('resp_body_size', px.max),
    q=('latency', px.quantiles),
)
px.display(df, 'stats')
"""

SQL = """
SELECT req_path, req_method, count(latency) AS n, avg(latency) AS mean_latency,
       max(resp_body_size) AS max_size,
       approx_quantile(latency, [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]) AS q
FROM read_parquet(?) WHERE resp_status != 204 GROUP BY req_path, req_method
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        table = synthetic_http_events(opts.rows, seed=1, start_ns=START_NS, span_ns=SPAN_NS)
        write_capture(
            directory,
            {"http_events": table},
            host="bench",
            start_time_ns=START_NS,
            end_time_ns=START_NS + SPAN_NS,
            processes=synthetic_processes(),
        )
        path = f"{directory}/http_events.parquet"
        script = Script("bench", PXL, "bench.pxl")
        con = duckdb.connect()

        def run_pxq():
            _, results = run_script(script, source=open_capture(directory))
            return results.tables["stats"].num_rows

        def run_duckdb():
            return len(con.execute(SQL, [path]).fetchall())

        assert run_pxq() == run_duckdb()  # warm-up, and both see the same groups
        pxq_times, duck_times = [], []
        for _ in range(opts.repeats):
            for fn, sink in ((run_pxq, pxq_times), (run_duckdb, duck_times)):
                start = time.perf_counter()
                fn()
                sink.append(time.perf_counter() - start)
        p, d = statistics.median(pxq_times), statistics.median(duck_times)
        ratio = p / d
        print(
            f"rows={opts.rows} pxq median {p * 1000:.1f} ms, duckdb median {d * 1000:.1f} ms, "
            f"ratio {ratio:.2f} (target <= {TARGET_RATIO}): {'OK' if ratio <= TARGET_RATIO else 'OVER'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
