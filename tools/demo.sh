#!/usr/bin/env bash
# The pxq demo: set the machine up, start a small real workload on loopback (nginx in front of a
# Python backend, and a client loop with 2xx, 404, 500 and a slow endpoint), trace it live with
# `pxq run http_data` (eBPF, embedded agent), then stop the workload.
# Extra arguments go to `pxq run` (e.g. `-o json`, `-- --num_head=20`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/setup.sh

WINDOW=${PXQ_DEMO_WINDOW:-10}
WORK=$(mktemp -d -t pxq-demo-XXXXXX)
WORKLOAD_PID=""
cleanup() {
    if [ -n "$WORKLOAD_PID" ] && kill -0 "$WORKLOAD_PID" 2>/dev/null; then
        kill "$WORKLOAD_PID" 2>/dev/null || true
        wait "$WORKLOAD_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The workload runs a little longer than the capture window, so traffic flows the whole time.
.venv/bin/python -m pxq.testing.demo_workload --seconds $((WINDOW + 15)) --ready-file "$WORK/ready" &
WORKLOAD_PID=$!
for _ in $(seq 1 100); do
    [ -s "$WORK/ready" ] && break
    kill -0 "$WORKLOAD_PID" 2>/dev/null || { echo "demo: the workload did not start" >&2; exit 1; }
    sleep 0.1
done
[ -s "$WORK/ready" ] || { echo "demo: the workload did not start in time" >&2; exit 1; }

echo "demo: .venv/bin/pxq run http_data --for ${WINDOW}s $*" >&2
.venv/bin/pxq run http_data --for "${WINDOW}s" "$@"
