#!/usr/bin/env bash
# Installs tritonnet (editable) with what its tests and examples need.
#
# torch first: a machine that already has torch (a CUDA build on a GPU machine, say) keeps it. Otherwise we install
# a CPU build, because a plain `pip install torch` on Linux pulls a multi-GB CUDA build. TORCH_SPEC overrides what
# is installed (e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install --quiet ${TORCH_SPEC:-torch==2.13.0}
fi
"$PYTHON" -m pip install --quiet -e ".[test,images]"
"$PYTHON" - <<'PY'
import torch, triton
print(f"tritonnet setup: torch {torch.__version__}, triton {triton.__version__}, "
      f"CUDA {'available' if torch.cuda.is_available() else 'not available: kernels run in the Triton interpreter'}")
PY
