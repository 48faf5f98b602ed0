#!/usr/bin/env bash
# Static checks: ruff's lint rules and formatting, then mypy --strict, each over the paths pyproject.toml configures
# ([tool.ruff] extend-exclude, [tool.mypy] files). Exits non-zero on any finding. Runs from any
# directory; the tools come from the project's virtualenv (the `test` extra installs them).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PXQ_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
status=0
echo "== ruff check"
"$PY" -m ruff check || status=1
echo "== ruff format --check"
"$PY" -m ruff format --check || status=1
echo "== mypy"
"$PY" -m mypy || status=1
exit $status
