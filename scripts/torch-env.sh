# Sourced by scripts/test.sh and .ci/run: when a venv with PyTorch 2.11 is found at
# $PEFT_TORCH_VENV (default ~/.cache/peft-rs/venv), exports what building and running the
# LibTorch (`tch`) backend against it needs and sets TORCH_FEATURE=tch; else TORCH_FEATURE="".
# PEFT_NO_TCH=1 leaves tch out.
TORCH_VENV="${PEFT_TORCH_VENV:-$HOME/.cache/peft-rs/venv}"
TORCH_FEATURE=""
if [ "${PEFT_NO_TCH:-0}" != 1 ] && "$TORCH_VENV/bin/python" -c 'import torch; assert torch.__version__.startswith("2.11.")' 2>/dev/null; then
    # tch 0.22 asks for libtorch 2.9; 2.11 builds and runs with the version check bypassed.
    TORCH_LIB="$("$TORCH_VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
    export PATH="$TORCH_VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1
    export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    TORCH_FEATURE=tch
fi
