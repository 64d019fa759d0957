#!/usr/bin/env bash
# Install microvae and its dependencies into the current Python (3.11+).
#   bash scripts/install.sh          the pipeline
#   bash scripts/install.sh --test   plus the test tools and the SLURM executor plugin
# Without an NVIDIA GPU the CPU build of PyTorch is installed first (a plain `torch`
# requirement would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--test" ] && extras="[test,slurm]"
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "$PYTHON" -m pip install --quiet "torch>=2.4,<3"
    else
        "$PYTHON" -m pip install --quiet "torch==2.13.0" \
            || "$PYTHON" -m pip install --quiet "torch>=2.4,<3" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
"$PYTHON" -m pip install --quiet -e ".${extras}"
echo "microvae installed: $("$PYTHON" -c 'import microvae, torch; print(microvae.__version__, "torch", torch.__version__)')"
