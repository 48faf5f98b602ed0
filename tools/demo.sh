#!/usr/bin/env bash
# The pxq demo: set the machine up, record real HTTP traffic on loopback, and show it with the
# bundled http_data script. Extra arguments go to `pxq run` (e.g. `-o json`, `-- --num_head=5`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/setup.sh

CAPTURE=$(mktemp -d -t pxq-demo-XXXXXX)
trap 'rm -rf "$CAPTURE"' EXIT

cat >&2 <<'MSG'

demo: Live eBPF capture lands in the next milestone. Until then this demo replays a capture of
demo: REAL traffic: nginx (Debian's) in front of a small Python backend on 127.0.0.1, driven by a
demo: bounded client mix, and recorded by pxq's recording proxy (a user-space TCP proxy feeding
demo: pxq's HTTP/1.x parser), not by the kernel.

MSG
.venv/bin/python -m pxq.testing.make_capture "$CAPTURE" --requests 40 --seconds 30
echo "demo: .venv/bin/pxq run http_data --from $CAPTURE $*" >&2
.venv/bin/pxq run http_data --from "$CAPTURE" "$@"
