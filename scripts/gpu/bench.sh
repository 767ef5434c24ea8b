#!/usr/bin/env bash
# The GPU benchmark, for the lent device machine: peft-bench on LibTorch CUDA against Hugging
# Face PEFT (PyTorch eager, optionally torch.compile) on the same card, in one call. Every run
# prints one JSON line (the schema of `peft-bench` and scripts/reference/bench_peft.py); they
# are collected in $OUT/gpu.jsonl, with the card's name in $OUT/gpu.txt.
#
# Prepare here (x86-64; the device machine has no cargo): with the environment of
# scripts/test.sh (LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1, a venv with the CUDA
# build of torch 2.11 on PATH),
#   cargo build --release -p peft-bench --no-default-features --features tch
#   echo /gpu/ >> .git/info/exclude && mkdir -p gpu
#   strip -o gpu/peft-bench target/release/peft-bench && gzip -f gpu/peft-bench
# then, with the device tool, carry `gpu` and run `scripts/gpu/bench.sh`. The binary links the
# machine's own torch 2.11 (its `lib` is put on LD_LIBRARY_PATH here).
#
# Knobs (environment): BENCH_MODELS ("gpt2 llama-3.2-1b": GPT-2 small and a Llama-3.2-1B-shaped
# model, both random weights; presets of peft-bench and bench_peft.py),
# BENCH_SHAPES ("8x256 32x512"), BENCH_DTYPES ("f32 bf16"),
# BENCH_METHODS ("prompt prefix full"), BENCH_STEPS (10), BENCH_COMPILE (0: set 1 to add the
# torch.compile peer for prompt and prefix, ~90 s of compilation each), BENCH_DEVICE (tch-cuda)
# and BENCH_TORCH_DEVICE (cuda) — tch / cpu try the whole script on a CPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-target/bench}"
mkdir -p "$out"
records="$out/gpu.jsonl"
: > "$records"

bench="${PEFT_BENCH:-/tmp/peft-bench}"
if [ ! -x "$bench" ]; then
    gunzip -c gpu/peft-bench.gz > "$bench" && chmod +x "$bench" || {
        echo "no peft-bench: carry gpu/peft-bench.gz (see this script's header)" >&2
        exit 1
    }
fi
torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || exit 1
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

device="${BENCH_DEVICE:-tch-cuda}"
torch_device="${BENCH_TORCH_DEVICE:-cuda}"
steps="${BENCH_STEPS:-10}"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    python3 -c 'import torch, transformers, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")'
} > "$out/gpu.txt"
cat "$out/gpu.txt"

# One run: its last JSON line goes to the records; a failure is recorded, not fatal.
record() {
    local line
    if line="$(timeout 300 "$@" 2>"$out/last-error.txt" | grep '^{' | tail -n 1)" && [ -n "$line" ]; then
        echo "$line" | tee -a "$records"
    else
        local why
        why="$(tail -n 3 "$out/last-error.txt" | tr '"\n\\' "' /")"
        echo "{\"failed\": \"$*\", \"error\": \"$why\"}" | tee -a "$records"
    fi
}

for model in ${BENCH_MODELS:-gpt2 llama-3.2-1b}; do
for shape in ${BENCH_SHAPES:-8x256 32x512}; do
    batch="${shape%x*}"
    seq="${shape#*x}"
    for dtype in ${BENCH_DTYPES:-f32 bf16}; do
        for method in ${BENCH_METHODS:-prompt prefix full}; do
            common=(train --model "$model" --method "$method" --batch "$batch" --seq "$seq"
                --dtype "$dtype" --steps "$steps")
            record "$bench" "${common[@]}" --device "$device"
            record python3 scripts/reference/bench_peft.py "${common[@]}" --device "$torch_device"
            if [ "${BENCH_COMPILE:-0}" = 1 ] && [ "$method" != full ]; then
                record python3 scripts/reference/bench_peft.py "${common[@]}" \
                    --device "$torch_device" --compile
            fi
        done
    done
done
done
echo "records: $records"
