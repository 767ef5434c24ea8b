#!/usr/bin/env bash
# The GPU's numbers against the CPU's, for the lent device machine, before scripts/gpu/bench.sh
# times anything: `peft-train` on LibTorch CUDA (`--device tch-cuda`) must compute what the
# same binary computes on LibTorch CPU (`--device tch`), which the test suite holds to Hugging
# Face's numbers.
#   eval  — the shipped PEFT adapters (GPT-2; Llama, Qwen2, Qwen3) scored on both devices:
#           per-example losses within 1e-4 in f32; bf16 on the GPU is reported, not held;
#   train — prompt tuning (from text) of GPT-2 and of a Llama, and GPT-2's full fine-tuning,
#           trained two epochs on each device (the fused attention's, LayerNorm's and
#           RMSNorm's backward run on the GPU's kernels), then both results scored on the CPU:
#           losses within 1e-4.
# Prints one line per check and `parity: PASS` or `parity: FAIL` last; records in $OUT/parity.txt.
#
# Prepare as scripts/gpu/bench.sh's header says (it packs peft-train too). BENCH_DEVICE
# (tch-cuda) and BENCH_DEVICE_REFERENCE (tch) pick the two devices; tch / tch runs the script
# on a CPU.
# PARITY_CHECKS ("eval train") picks the checks.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-target/bench}"
mkdir -p "$out"
work="$(mktemp -d)"
log="$out/parity.txt"
: > "$log"

source scripts/gpu/common.sh
train="$(unpack peft-train "${PEFT_TRAIN:-}")" || exit 1

gpu="${BENCH_DEVICE:-tch-cuda}"
cpu="${BENCH_DEVICE_REFERENCE:-tch}"
data=fixtures/data/text.jsonl
failed=0
checks="${PARITY_CHECKS:-eval train}"
wants() { [[ " $checks " == *" $1 "* ]]; }

# compare NAME TOLERANCE A.json B.json: the largest per-example loss difference of two eval
# reports; over TOLERANCE (or "report" for none) fails the run.
compare() {
    python3 - "$@" << 'EOF' | tee -a "$log" || failed=1
import json, sys
name, tolerance, a, b = sys.argv[1:5]
left, right = (json.load(open(p)) for p in (a, b))
losses = lambda r: [e["loss"] for e in r["examples"]]
diff = max(abs(x - y) for x, y in zip(losses(left), losses(right)))
diff = max(diff, abs(left["mean_loss"] - right["mean_loss"]))
verdict = "reported" if tolerance == "report" else ("ok" if diff <= float(tolerance) else "FAIL")
print(f"{name}: mean loss {left['mean_loss']:.6f} vs {right['mean_loss']:.6f}, "
      f"max |diff| {diff:.2e} ({verdict}, tolerance {tolerance})")
sys.exit(verdict == "FAIL")
EOF
}

# run LABEL COMMAND...: a failed command fails the parity check, with its last words.
run() {
    local label="$1"
    shift
    if ! "$@" > "$work/$label.log" 2>&1; then
        echo "$label: command failed: $*: $(tail -n 3 "$work/$label.log")" | tee -a "$log"
        failed=1
        return 1
    fi
}

for case in $(wants eval && echo tiny-gpt2:prompt tiny-gpt2:prefix tiny-gpt2:prefix-projection \
    tiny-llama:tiny-llama-prefix-projection tiny-qwen2:tiny-qwen2-prompt \
    tiny-qwen3:tiny-qwen3-prefix); do
    model="${case%%:*}"
    adapter="${case#*:}"
    reports=()
    for device in "$cpu:f32" "$gpu:f32" "$gpu:bf16"; do
        report="$work/eval-$adapter-${device/:/-}.json"
        run "eval-$adapter-${device/:/-}" "$train" eval --model "fixtures/$model" \
            --adapter "fixtures/adapters/$adapter" --data "$data" --output "$report" \
            --device "${device%:*}" --dtype "${device#*:}" && reports+=("$report")
    done
    if [ "${#reports[@]}" = 3 ]; then
        compare "eval $adapter f32, $gpu vs $cpu" 1e-4 "${reports[1]}" "${reports[0]}"
        compare "eval $adapter bf16 vs f32, $gpu" report "${reports[2]}" "${reports[1]}"
    fi
done

# Both runs must start from the same weights, and a seed does not give them: random inits come
# from the device's generator, which draws other numbers on CUDA than on the CPU (as in
# PyTorch). So prompt tuning starts from text and full fine-tuning from the checkpoint, with
# the checkpoint's dropout (which full fine-tuning runs, drawing from that generator) set to
# zero; both send every gradient through the fused attention's backward.
no_dropout="$work/tiny-gpt2-no-dropout"
if wants train; then
    cp -r fixtures/tiny-gpt2 "$no_dropout"
    python3 - "$no_dropout/config.json" << 'EOF'
import json, sys
config = json.load(open(sys.argv[1]))
config.update({key: 0.0 for key in config if key.endswith("pdrop")})
json.dump(config, open(sys.argv[1], "w"), indent=2)
EOF
fi
for method in $(wants train && echo prompt llama-prompt full); do
    model=fixtures/tiny-gpt2
    [ "$method" = llama-prompt ] && model=fixtures/tiny-llama
    flags=(--model "$model" --method prompt --num-virtual-tokens 4 --prompt-init text --prompt-init-text "The food")
    if [ "$method" = full ]; then
        flags=(--method full --model "$no_dropout")
    fi
    trained=()
    for side in reference gpu; do
        device="$cpu"
        [ "$side" = gpu ] && device="$gpu"
        dir="$work/train-$method-$side"
        score=(--model "$model" --adapter "$dir/adapter")
        [ "$method" = full ] && score=(--model "$dir/model")
        run "train-$method-$side" "$train" train "${flags[@]}" \
            --data "$data" --valid-data "$data" --output-dir "$dir" \
            --epochs 2 --batch-size 4 --lr 0.01 --seed 7 --device "$device" &&
            run "score-$method-$side" "$train" eval "${score[@]}" --data "$data" \
                --output "$dir/score.json" --device "$cpu" && trained+=("$dir/score.json")
    done
    if [ "${#trained[@]}" = 2 ]; then
        compare "train $method 2 epochs, $gpu vs $cpu" 1e-4 "${trained[1]}" "${trained[0]}"
    fi
done

if [ "$failed" = 0 ]; then
    echo "parity: PASS" | tee -a "$log"
else
    echo "parity: FAIL" | tee -a "$log"
fi
rm -rf "$work"
exit "$failed"
