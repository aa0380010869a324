#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the default test suite (slow end-to-end tests deselected unless ATOMTUNE_SLOW=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
if [ "${ATOMTUNE_SLOW:-0}" = 1 ]; then
  exec .venv/bin/python -m pytest -q "$@"
else
  exec .venv/bin/python -m pytest -q -m "not slow" "$@"
fi
