#!/usr/bin/env bash
# One-command setup on a fresh Debian machine: system packages for GPAW (and Chromium for the report's browser test),
# a virtual environment in .venv, torch first, then atomtune with CHGNet, SevenNet, MACE and GPAW in one environment.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  need=""
  for pkg in build-essential pkg-config libxc-dev libopenblas-dev libfftw3-dev chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  if [ -n "$need" ]; then
    echo "[setup] apt-get install$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  fi
else
  echo "[setup] not root or no apt-get: install build-essential pkg-config libxc-dev libopenblas-dev libfftw3-dev yourself for GPAW"
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"

# torch first, pinned: 2.13.0 is a local CPU build on these machines; any other spec pulls several GB of CUDA wheels.
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || $PIP install -q torch==2.13.0

# GPAW builds from source: the siteconfig links FFTW and OpenBLAS (without openblas it silently builds without BLAS).
export GPAW_CONFIG="$PWD/.ci/gpaw_siteconfig.py"
if ! .venv/bin/python -c "import atomtune, gpaw, chgnet, sevenn" 2>/dev/null; then
  $PIP install -q -e ".[gpaw,test]"
fi
# mace-torch pins e3nn==0.4.4, which breaks SevenNet 0.13 and fails to import under torch>=2.6: install it without its
# dependencies (the rest of its requirements are atomtune's own dependencies; e3nn stays at the pinned 0.5.1).
.venv/bin/python -c "import mace" 2>/dev/null || $PIP install -q --no-deps mace-torch==0.3.16
.venv/bin/python -c "import e3nn, sevenn, chgnet, mace, gpaw; assert e3nn.__version__ == '0.5.1', e3nn.__version__"
# Family environments (NequIP/Allegro, PET, …) named in ATOMTUNE_BUILD_ENVS, e.g. "nequip" (CI builds the ones its tests
# use). `atomtune env build` is idempotent: environments are cached under $ATOMTUNE_ENV_DIR (~/.cache/atomtune/envs),
# keyed by the hash of their pinned spec, so a second run on the same machine only checks.
for family in ${ATOMTUNE_BUILD_ENVS:-}; do
  OMP_NUM_THREADS=1 .venv/bin/atomtune env build "$family"
done
echo "[setup] ready: .venv/bin/atomtune"
