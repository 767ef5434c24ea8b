#!/usr/bin/env bash
# Builds a library to LD_PRELOAD into a LibTorch process (scripts/opcount/opcount.cpp,
# scripts/profile/kineto.cpp) against the PyTorch 2.11 of scripts/torch-env.sh, unless LIBRARY
# is already built from this SOURCE, and prints LIBRARY's path (5 s):
#
#   scripts/torch-preload.sh SOURCE.cpp LIBRARY.so
#
# libtorch_cuda is linked where this PyTorch has it, so that CUDA is known when the library
# starts (before main). For the device machine, copy the library into gpu/ with the binaries
# (scripts/gpu/bench.sh's header).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -eq 2 ] || { sed -n '2,10p' "$0"; exit 2; }
source="$1"
library="$2"
source "$root/scripts/torch-env.sh"
[ -n "$TORCH_FEATURE" ] || { echo "torch-preload.sh: no PyTorch 2.11 venv (scripts/torch-env.sh)" >&2; exit 1; }
torch_dir="$(dirname "$TORCH_LIB")"
mkdir -p "$(dirname "$library")"
if [ ! -f "$library" ] || [ "$source" -nt "$library" ]; then
    cuda=()
    [ -f "$TORCH_LIB/libtorch_cuda.so" ] && cuda=(-Wl,--no-as-needed -ltorch_cuda -Wl,--as-needed)
    # NDEBUG as PyTorch's own release build: its headers' debug-only checks stay out (one
    # refuses an operator's operands where the operator was recorded without them).
    g++ -O1 -DNDEBUG -shared -fPIC -std=c++17 -I"$torch_dir/include" \
        -I"$torch_dir/include/torch/csrc/api/include" "$source" \
        -L"$TORCH_LIB" "${cuda[@]}" -ltorch_cpu -lc10 -ldl -Wl,-rpath,"$TORCH_LIB" -o "$library"
fi
echo "$library"
