#!/usr/bin/env bash
# All GPU numbers in one call: every predict / fine-tune / batched-relaxation benchmark with --device cuda within
# 8 minutes (benchmarks/gpu_suite.py: per-benchmark time caps; gpu.json + gpu.md in --out-dir, default
# benchmarks/results). Extra options go to gpu_suite.py, e.g. --out-dir "$OUT" --budget-s 420 --only predict_chgnet.
#
#   bash benchmarks/gpu.sh                       # from the repository root, on a machine with a CUDA GPU
#   PYTHON=python3 bash benchmarks/gpu.sh --out-dir /tmp/gpu
#
# Python: $PYTHON, else .venv/bin/python when it exists, else python3. Packages the machine lacks can come as wheels in
# .whl/ (see docs/performance.md, "GPU in one call"): they are installed into /tmp/site, without network, first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # atomtune from this checkout, installed or not
export PYTHONUNBUFFERED=1

"$PYTHON" - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"benchmarks/gpu.sh: torch {torch.__version__} sees no CUDA device; run gpu_suite.py --device cpu instead")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
EOF
exec "$PYTHON" benchmarks/gpu_suite.py --device cuda "$@"
