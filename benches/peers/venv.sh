#!/usr/bin/env bash
# Creates (once) the Python venv with CPU PyTorch used by the peer benchmarks and prints the
# path of its python. The venv is cached under ~/.cache/seglab-torch-venv.
set -euo pipefail
VENV="${SEGLAB_TORCH_VENV:-$HOME/.cache/seglab-torch-venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet "torch==2.15.*" numpy >&2
fi
echo "$VENV/bin/python"
