#!/usr/bin/env bash
# Builds the library profile.sh preloads (kineto.cpp) against the PyTorch 2.11 of
# scripts/torch-env.sh into target/profile/libkineto.so, unless built already from this
# kineto.cpp, and prints its path (5 s). For the device machine, copy it into gpu/ with the
# binaries (scripts/gpu/bench.sh's header).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
source "$root/scripts/torch-env.sh"
[ -n "$TORCH_FEATURE" ] || { echo "build.sh: no PyTorch 2.11 venv (scripts/torch-env.sh)" >&2; exit 1; }
torch_dir="$(dirname "$TORCH_LIB")"
library="$root/target/profile/libkineto.so"
mkdir -p "$(dirname "$library")"
if [ ! -f "$library" ] || [ "$root/scripts/profile/kineto.cpp" -nt "$library" ]; then
    # libtorch_cuda linked, where this PyTorch has it, so that CUDA is known when it starts.
    cuda=()
    [ -f "$TORCH_LIB/libtorch_cuda.so" ] && cuda=(-Wl,--no-as-needed -ltorch_cuda -Wl,--as-needed)
    g++ -O1 -shared -fPIC -std=c++17 -I"$torch_dir/include" \
        -I"$torch_dir/include/torch/csrc/api/include" "$root/scripts/profile/kineto.cpp" \
        -L"$TORCH_LIB" "${cuda[@]}" -ltorch_cpu -lc10 -Wl,-rpath,"$TORCH_LIB" -o "$library"
fi
echo "$library"
