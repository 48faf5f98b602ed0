#!/usr/bin/env bash
# The pxq demo: set the machine up, start a small real workload on loopback (nginx in front of a
# Python backend that also queries a real PostgreSQL through a real Redis cache, and a client loop
# with 2xx, 404, 500 and slow requests), capture it live once with `pxq capture` (eBPF, embedded
# agent: HTTP, PostgreSQL and Redis tables), stop the workload, then show `http_data`,
# `pgsql_data` and `redis_data` from that same capture.
# Extra arguments go to each `pxq run` (e.g. `-o json`, `-- --num_head=20`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/setup.sh

WINDOW=${PXQ_DEMO_WINDOW:-10}
WORK=$(mktemp -d -t pxq-demo-XXXXXX)
WORKLOAD_PID=""
stop_workload() {
    # SIGTERM: the workload stops nginx, the backend, PostgreSQL and Redis before it exits.
    if [ -n "$WORKLOAD_PID" ] && kill -0 "$WORKLOAD_PID" 2>/dev/null; then
        kill "$WORKLOAD_PID" 2>/dev/null || true
        wait "$WORKLOAD_PID" 2>/dev/null || true
    fi
}
cleanup() {
    stop_workload
    rm -rf "$WORK"
}
trap cleanup EXIT

# The workload would send for longer than the capture takes; it is stopped once the capture is written.
.venv/bin/python -m pxq.testing.demo_workload --seconds $((WINDOW + 60)) --ready-file "$WORK/ready" &
WORKLOAD_PID=$!
# Up to 60 s: PostgreSQL's initdb alone takes seconds.
for _ in $(seq 1 600); do
    [ -s "$WORK/ready" ] && break
    kill -0 "$WORKLOAD_PID" 2>/dev/null || { echo "demo: the workload did not start" >&2; exit 1; }
    sleep 0.1
done
[ -s "$WORK/ready" ] || { echo "demo: the workload did not start in time" >&2; exit 1; }

# One live capture of the whole workload: its pid covers nginx, the backend, PostgreSQL's backends
# and Redis, all its descendants.
CAPTURE="$WORK/capture"
echo "demo: .venv/bin/pxq capture --out $CAPTURE --for ${WINDOW}s --tables http_events,pgsql_events,redis_events --pid $WORKLOAD_PID" >&2
.venv/bin/pxq capture --out "$CAPTURE" --for "${WINDOW}s" --tables http_events,pgsql_events,redis_events \
    --pid "$WORKLOAD_PID"
# The capture holds all there is to show: stop the workload before the scripts run.
stop_workload

for script in http_data pgsql_data redis_data; do
    echo >&2
    echo "=== demo: .venv/bin/pxq run $script --from $CAPTURE $* ===" >&2
    .venv/bin/pxq run "$script" --from "$CAPTURE" "$@"
done
