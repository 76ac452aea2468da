#!/usr/bin/env bash
# Installs the right PyTorch build into the current Python environment:
#   - a machine with an NVIDIA GPU (nvidia-smi answers) gets the normal CUDA build;
#   - a machine without one gets the CPU wheel (no multi-GB CUDA download).
# Override the version with TORCH_VERSION, or the choice with TORCH_FLAVOUR=cpu|cuda.
set -euo pipefail
PY=${PYTHON:-python}
VER=${TORCH_VERSION:-2.13.0}
flavour=${TORCH_FLAVOUR:-}
if [ -z "$flavour" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    flavour=cuda
  else
    flavour=cpu
  fi
fi
if "$PY" -c "import torch, sys; v=torch.__version__; sys.exit(0 if v.startswith('$VER') and (('+cpu' in v) == ('$flavour' == 'cpu')) else 1)" 2>/dev/null; then
  echo "torch $VER ($flavour) already installed"
  exit 0
fi
echo "installing torch==$VER for $flavour"
if [ "$flavour" = cuda ]; then
  "$PY" -m pip install "torch==$VER"
else
  # The +cpu wheel: from a local wheel cache or mirror when pip is configured with one,
  # else from the PyTorch CPU index.
  "$PY" -m pip install "torch==$VER+cpu" 2>/dev/null \
    || "$PY" -m pip install "torch==$VER" --index-url https://download.pytorch.org/whl/cpu
fi
