#!/usr/bin/env bash
# Set the machine up (tools/setup.sh), then run the whole test suite. Arguments go to pytest;
# the exit code is pytest's.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tools/setup.sh
exec .venv/bin/python -m pytest "$@"
