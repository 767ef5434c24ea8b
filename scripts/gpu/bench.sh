#!/usr/bin/env bash
# The GPU benchmark, for the lent device machine: peft-bench on LibTorch CUDA against Hugging
# Face PEFT (PyTorch eager, and torch.compile where asked) on the same card, in one call. Every
# run prints one JSON line (the schema of `peft-bench` and scripts/reference/bench_peft.py),
# with the card's peak memory while it ran added as `gpu_peak_mib` (nvidia-smi, sampled every
# 100 ms); they are collected in $OUT/gpu.jsonl, the card's name in $OUT/gpu.txt, and a
# Markdown table pairing the two implementations in $OUT/gpu.md (scripts/gpu/table.py).
#
# Prepare here (x86-64; the device machine has no cargo): scripts/gpu/prepare.sh builds
# peft-bench and peft-train with the LibTorch backend alone against the venv's CUDA build of
# torch 2.11 and packs them, with the profiler's library, into the ignored folder gpu/ (~23 min
# on 2 cores from clean; 30 MB together; gpu/COMMIT names the commit); then, with the device
# tool, carry `gpu` and run
#   scripts/gpu/parity.sh; BENCH_BUDGET_S=380 BENCH_RUN_TIMEOUT_S=150 scripts/gpu/bench.sh
# (parity.sh checks first that the GPU computes what the CPU does). The binaries link the
# machine's own torch 2.11 (its `lib` is put on LD_LIBRARY_PATH here). The first run, on an
# H200, is in BENCHMARKS.md; its records in docs/gpu/.
#
# The cases run in the order of BENCH_CASES, most important first, and no new case starts once
# BENCH_BUDGET_S seconds (default 420) have passed, so that the call ends inside the device
# time with what it measured. A case is `mode:model:method:BATCHxSEQ:dtype`:
#   train — training steps, both implementations; `+compile` after the dtype adds PEFT under
#           torch.compile (~90 s of compilation), `+decomposed` adds peft-rs with Burn's own
#           attention, LayerNorm and GELU (`--attention decomposed --layers decomposed`),
#           `+phases` adds runs of both that time the forward pass (with the loss), the
#           backward pass and the optimizer's update alone (`--time-phases`), peft-rs with
#           peft-train's AdamW and with Burn's;
#   compiled — PEFT alone under torch.compile, joining the `train` row of the same shape (last
#           in the list: its compilation is the slowest run);
#   infer — prefill and 64 KV-cached new tokens, both implementations;
#   mixed — peft-rs only: 8 requests with 8 different adapters in one batch, against the same
#           batch with one adapter and one batch per adapter;
#   attention — peft-rs only: GPT-2 small's attention operation alone (12 heads of 64), forward
#           and forward + backward, told its mask is causal (PyTorch's causal kernels, no mask
#           operand), causal with padding, or a bias without structure (the mask as an operand);
#           `prompt` gives SEQ + 20 queries, `prefix` SEQ queries after 20 prefix keys;
#   loss — peft-rs only: the LM head and cross-entropy alone, forward and backward, over
#           BATCH × SEQ positions, in the chunks the training step uses on the device and in
#           the 128-row chunks of earlier runs (METHOD `full` also computes the head's gradient);
#   profile — where a training step's time goes on the device, both implementations, under
#           PyTorch's profiler (scripts/profile/: each kernel's time, credited to the operator
#           that launched it, one step as half the difference of runs of 2 and 4 steps, and
#           the step's time against the device's busy time); the two side by side are added to
#           $OUT/profile.txt (the traces stay on the machine: $OUT takes 8 files).
# Other knobs: BENCH_STEPS (10), BENCH_RUN_TIMEOUT_S (300, one process's limit),
# BENCH_DEVICE (tch-cuda) and BENCH_TORCH_DEVICE (cuda) — tch / cpu try the whole script on a
# CPU, with tiny BENCH_CASES.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-target/bench}"
mkdir -p "$out"
records="$out/gpu.jsonl"
: > "$records"
# What need not come back (the device tool returns 8 files of $OUT): the memory samples, the
# last run's errors, the profiler's traces.
scratch="$(mktemp -d)"
rm -f "$out/profile.txt"

source scripts/gpu/common.sh
bench="$(unpack peft-bench "${PEFT_BENCH:-}")" || exit 1
# The profiler's library, for `profile` cases only.
kineto="$(unpack libkineto.so "${PROFILE_LIBRARY:-}" 2> /dev/null)" || kineto=""
export PYTHONUNBUFFERED=1

device="${BENCH_DEVICE:-tch-cuda}"
torch_device="${BENCH_TORCH_DEVICE:-cuda}"
steps="${BENCH_STEPS:-10}"
budget="${BENCH_BUDGET_S:-420}"
run_timeout="${BENCH_RUN_TIMEOUT_S:-300}"
# The default order: first the cases that were behind PEFT on the H200 (2026-11-28), each
# profiled and timed, then those that were ahead.
cases="${BENCH_CASES:-profile:gpt2:prompt:32x128:bf16 profile:gpt2:full:32x512:bf16 \
train:gpt2:full:32x512:bf16 train:gpt2:prompt:32x128:bf16 profile:gpt2:prefix:8x1004:bf16 \
train:gpt2:prefix:8x1004:bf16 profile:llama-3.2-1b:prompt:8x256:bf16 train:llama-3.2-1b:prompt:8x256:bf16 \
loss:gpt2:prompt:32x512:bf16 train:gpt2:full:8x1004:bf16 train:gpt2:prompt:32x512:f32 \
train:gpt2:prompt:32x512:bf16+decomposed train:gpt2:prefix:32x512:bf16 \
train:gpt2:prompt:8x1004:bf16 attention:gpt2:prefix:8x1004:bf16 infer:gpt2:prompt:32x128:bf16 \
mixed:gpt2:prompt:8x16:bf16 compiled:gpt2:prompt:32x512:bf16 \
train:gpt2-medium:prompt:16x512:bf16}"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    python3 -c 'import torch, transformers, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")'
} > "$out/gpu.txt"
cat "$out/gpu.txt"

# One run: its last JSON line, with the card's peak memory added, goes to the records; a
# failure is recorded, not fatal.
record() {
    local sampler="" line peak
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 \
            > "$scratch/memory.txt" 2> /dev/null &
        sampler=$!
    fi
    line="$(timeout "$run_timeout" "$@" 2> "$scratch/last-error.txt" | grep '^{' | tail -n 1)"
    if [ -n "$sampler" ]; then
        kill "$sampler" 2> /dev/null
        wait "$sampler" 2> /dev/null
        peak="$(sort -n "$scratch/memory.txt" | tail -n 1)"
    fi
    if [ -n "$line" ]; then
        echo "$line" | python3 -c 'import json, sys
record = json.loads(sys.stdin.read())
record["gpu_peak_mib"] = float(sys.argv[1]) if sys.argv[1] else None
print(json.dumps(record))' "${peak:-}" | tee -a "$records"
    else
        local why
        why="$(tail -n 3 "$scratch/last-error.txt" | tr '"\n\\' "' /")"
        echo "{\"failed\": \"$*\", \"error\": \"$why\"}" | tee -a "$records"
    fi
}

started=$SECONDS
for case in $cases; do
    if (( SECONDS - started > budget )); then
        echo "budget of ${budget} s spent: not started: $case" | tee -a "$out/gpu.txt"
        continue
    fi
    IFS=: read -r mode model method shape dtype <<< "$case"
    compile=0
    decomposed=0
    phases=0
    case "$dtype" in
        *+compile) compile=1 ;;
        *+decomposed) decomposed=1 ;;
        *+phases) phases=1 ;;
    esac
    dtype="${dtype%+*}"
    batch="${shape%x*}"
    seq="${shape#*x}"
    common=(--model "$model" --method "$method" --batch "$batch" --seq "$seq" --dtype "$dtype")
    case "$mode" in
        train)
            record "$bench" train "${common[@]}" --steps "$steps" --device "$device"
            if [ "$decomposed" = 1 ]; then
                record "$bench" train "${common[@]}" --steps "$steps" --device "$device" \
                    --attention decomposed --layers decomposed
            fi
            if [ "$phases" = 1 ]; then
                for optimizer in fused burn; do
                    record "$bench" train "${common[@]}" --steps "$steps" --device "$device" \
                        --time-phases --optimizer "$optimizer"
                done
            fi
            record python3 scripts/reference/bench_peft.py train "${common[@]}" --steps "$steps" \
                --device "$torch_device"
            if [ "$phases" = 1 ]; then
                record python3 scripts/reference/bench_peft.py train "${common[@]}" \
                    --steps "$steps" --device "$torch_device" --time-phases
            fi
            if [ "$compile" = 1 ]; then
                record python3 scripts/reference/bench_peft.py train "${common[@]}" \
                    --steps "$steps" --device "$torch_device" --compile
            fi
            ;;
        compiled)
            record python3 scripts/reference/bench_peft.py train "${common[@]}" --steps "$steps" \
                --device "$torch_device" --compile
            ;;
        infer)
            record "$bench" infer "${common[@]}" --new-tokens 64 --device "$device"
            record python3 scripts/reference/bench_peft.py infer "${common[@]}" --new-tokens 64 \
                --device "$torch_device"
            ;;
        mixed)
            record "$bench" mixed "${common[@]}" --new-tokens 32 --device "$device"
            ;;
        attention)
            if [ "$method" = prefix ]; then
                shape_args=(--seq "$seq" --prefix 20)
            else
                shape_args=(--seq "$((seq + 20))")
            fi
            for masking in causal padded bias; do
                record "$bench" attention --batch "$batch" "${shape_args[@]}" --dtype "$dtype" \
                    --masking "$masking" --device "$device"
            done
            ;;
        loss)
            head=()
            [ "$method" = full ] && head=(--train-head)
            case "$model" in
                gpt2) vocab=(--vocab 50257 --width 768) ;;
                llama-3.2-1b) vocab=(--vocab 128256 --width 2048) ;;
                *) echo "loss: no vocabulary known for $model" >&2; continue ;;
            esac
            for chunk in default 128; do
                chunk_args=()
                [ "$chunk" != default ] && chunk_args=(--chunk-rows "$chunk")
                record "$bench" loss --rows "$((batch * seq))" "${vocab[@]}" "${head[@]}" \
                    "${chunk_args[@]}" --dtype "$dtype" --device "$device"
            done
            ;;
        profile)
            echo "## $case" >> "$out/profile.txt"
            if [ -z "$kineto" ]; then
                echo "not profiled: carry gpu/libkineto.so.gz (see this script's header)" \
                    | tee -a "$out/profile.txt"
                continue
            fi
            sides=()
            for side in peft-rs PEFT; do
                if [ "$side" = peft-rs ]; then
                    command=("$bench" train "${common[@]}" --device "$device")
                else
                    command=(python3 scripts/reference/bench_peft.py train "${common[@]}" --device "$torch_device")
                fi
                if PROFILE_LIBRARY="$kineto" timeout "$((2 * run_timeout))" \
                    scripts/profile/profile.sh "$scratch/$side" "${command[@]}" > /dev/null \
                    2> "$scratch/last-error.txt"; then
                    sides+=("$side=$scratch/$side-2.json.gz,$scratch/$side-4.json.gz")
                else
                    echo "$side failed: $(tail -n 3 "$scratch/last-error.txt")" >> "$out/profile.txt"
                fi
            done
            if [ ${#sides[@]} -gt 0 ]; then
                python3 scripts/profile/summary.py "${sides[@]}" >> "$out/profile.txt" 2>&1
            fi
            echo >> "$out/profile.txt"
            echo "profiled: $case"
            ;;
        *) echo "unknown mode in case $case" >&2 ;;
    esac
done
python3 scripts/gpu/table.py "$records" > "$out/gpu.md" && cat "$out/gpu.md"
echo "records: $records"
