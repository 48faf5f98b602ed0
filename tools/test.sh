#!/usr/bin/env bash
# Set the machine up (tools/setup.sh), then run the whole test suite. Arguments go to pytest;
# the exit code is pytest's.
#   --fast  only the tests that need neither the kernel (eBPF, root) nor local servers (nginx, the
#           Python backend, traced sock_apps): the quick loop while editing; no set-up step.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ "${1:-}" = "--fast" ]; then
  shift
  PY=${PXQ_PYTHON:-$ROOT/.venv/bin/python}
  exec "$PY" -m pytest -m "not kernel and not servers" "$@"
fi
bash tools/setup.sh
exec .venv/bin/python -m pytest "$@"
