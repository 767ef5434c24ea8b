#!/usr/bin/env bash
# The test suite: every crate, every check on each CPU backend compiled in.
#
# flex and ndarray always; LibTorch (tch) too when a venv with PyTorch 2.11 is found at
# $PEFT_TORCH_VENV (default ~/.cache/peft-rs/venv) — .ci/run creates one. All backends go into
# one build, since each feature set of Burn is a full rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/torch-env.sh
if [ -n "$TORCH_FEATURE" ]; then
    features=ndarray,tch
    echo "testing on flex, ndarray and tch (PyTorch from $TORCH_VENV)"
else
    features=ndarray
    echo "testing on flex and ndarray (no PyTorch 2.11 venv at $TORCH_VENV: tch skipped)"
fi
exec cargo test --workspace --features "$features" "$@"
