#!/usr/bin/env bash
# Prepares the folder gpu/ that a device call carries (scripts/gpu/bench.sh and parity.sh run
# from it; the device machine has no cargo): peft-bench and peft-train built here with the
# LibTorch backend alone against the PyTorch 2.11 venv of scripts/torch-env.sh, stripped and
# gzipped, the profiler library beside them, and gpu/COMMIT naming the commit they were built
# from (a tree with changes not committed is refused unless PREPARE_DIRTY=1).
#
#   scripts/gpu/prepare.sh        # ~23 min on 2 cores from clean, a few minutes after
#
# Then, with the device tool, carry `gpu` and run
#   scripts/gpu/parity.sh; BENCH_BUDGET_S=380 BENCH_RUN_TIMEOUT_S=150 scripts/gpu/bench.sh
# The venv's torch must be a CUDA build (the default pip wheel is): the binaries then link
# libtorch_cuda, which the machine's own torch 2.11 provides. gpu/ is kept out of git through
# .git/info/exclude (written here).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
source scripts/torch-env.sh
[ -n "$TORCH_FEATURE" ] || { echo "prepare.sh: no PyTorch 2.11 venv (scripts/torch-env.sh; PEFT_TORCH_VENV)" >&2; exit 1; }
[ -f "$TORCH_LIB/libtorch_cuda.so" ] || {
    echo "prepare.sh: the venv's torch ($TORCH_LIB) is not a CUDA build; the device runs need one" >&2
    exit 1
}
if [ "${PREPARE_DIRTY:-0}" != 1 ] && [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "prepare.sh: the tree has changes not committed; commit them, or PREPARE_DIRTY=1" >&2
    exit 1
fi

exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qx '/gpu/' "$exclude" 2>/dev/null || echo '/gpu/' >> "$exclude"

# The device builds in a folder of its own, so that the default target/release (flex, for the
# README's first command) is left as it is.
target="${CARGO_TARGET_DIR:-$root/target}/gpu"
CARGO_TARGET_DIR="$target" cargo build --release -p peft-bench -p peft-train \
    --no-default-features --features tch

mkdir -p gpu
for binary in peft-bench peft-train; do
    # A binary that cannot start here (a library missing) would not start there either.
    "$target/release/$binary" --help > /dev/null
    strip -o "gpu/$binary" "$target/release/$binary"
    gzip -f "gpu/$binary"
done
gzip -c "$(scripts/torch-preload.sh scripts/profile/kineto.cpp target/profile/libkineto.so)" > gpu/libkineto.so.gz
git rev-parse HEAD > gpu/COMMIT
[ -z "$(git status --porcelain --untracked-files=no)" ] || echo "(with changes not committed)" >> gpu/COMMIT
ls -l gpu/
echo "prepare.sh: gpu/ holds the build of $(head -1 gpu/COMMIT); carry it with the device tool (carry: [\"gpu\"])"
