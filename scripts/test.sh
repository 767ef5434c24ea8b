#!/usr/bin/env bash
# The test suite: every crate, every check on each CPU backend compiled in.
#
# flex and ndarray always; LibTorch (tch) too when a venv with PyTorch 2.11 is found at
# $PEFT_TORCH_VENV (default ~/.cache/peft-rs/venv) — .ci/run creates one. All backends go into
# one build, since each feature set of Burn is a full rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VENV="${PEFT_TORCH_VENV:-$HOME/.cache/peft-rs/venv}"
features=ndarray
if [ "${PEFT_NO_TCH:-0}" != 1 ] && "$TORCH_VENV/bin/python" -c 'import torch; assert torch.__version__.startswith("2.11.")' 2>/dev/null; then
    # tch 0.22 asks for libtorch 2.9; 2.11 builds and runs with the version check bypassed.
    TORCH_LIB="$("$TORCH_VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
    export PATH="$TORCH_VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1
    export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    features=ndarray,tch
    echo "testing on flex, ndarray and tch (PyTorch from $TORCH_VENV)"
else
    echo "testing on flex and ndarray (no PyTorch 2.11 venv at $TORCH_VENV: tch skipped)"
fi
exec cargo test --workspace --features "$features" "$@"
