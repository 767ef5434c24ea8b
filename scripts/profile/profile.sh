#!/usr/bin/env bash
# Where one training step's time goes, by operator, from PyTorch's own profiler (Kineto): on
# a GPU each kernel's device time, credited to the operator that launched it; on the CPU each
# operator's own host time. For `peft-bench train --device tch|tch-cuda` (the profiler
# preloaded: kineto.cpp) and scripts/reference/bench_peft.py (which starts it itself), both
# of which take --warmup and --steps.
#
#   scripts/profile/profile.sh NAME COMMAND...
#
# runs COMMAND with 1 warm-up and 2, then 4 timed steps, writes the traces to NAME-2.json.gz
# and NAME-4.json.gz (Chrome traces: Perfetto or chrome://tracing open them; PROFILE_SHAPES=1
# adds the operands' shapes, at a cost in host time per operator) and prints one step of it
# (summary.py: half the difference of the two runs). Two sides side by side:
#
#   scripts/profile/profile.sh target/profile/ours target/release/peft-bench train --device tch ...
#   scripts/profile/profile.sh target/profile/peft python3 scripts/reference/bench_peft.py train ...
#   python3 scripts/profile/summary.py peft-rs=target/profile/ours-2.json.gz,target/profile/ours-4.json.gz \
#       PEFT=target/profile/peft-2.json.gz,target/profile/peft-4.json.gz
#
# Needs the PyTorch 2.11 the command runs on: here the venv of scripts/torch-env.sh, against
# which scripts/torch-preload.sh builds the preloaded library on first use (5 s); on the device
# machine the machine's own (scripts/gpu/common.sh), with PROFILE_LIBRARY naming the library
# built here.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
[ $# -ge 2 ] || { sed -n '2,23p' "$0"; exit 2; }
name="$1"
shift
mkdir -p "$(dirname "$name")"
library="${PROFILE_LIBRARY:-}"
if [ -z "$library" ]; then
    library="$("$root/scripts/torch-preload.sh" "$root/scripts/profile/kineto.cpp" "$root/target/profile/libkineto.so")"
    # The command runs on the same PyTorch (its libraries, python3 with torch and peft).
    source "$root/scripts/torch-env.sh"
fi
preload="$library"
case "$(basename "$1")" in python*) preload="" ;; esac
for steps in 2 4; do
    trace="$name-$steps.json"
    rm -f "$trace" "$trace.gz"
    PROFILE_TRACE="$trace" LD_PRELOAD="$preload" "$@" --warmup 1 --steps "$steps" \
        > "$name-$steps.log" 2>&1 \
        || { echo "profile.sh: the command failed; its output is $name-$steps.log" >&2; exit 1; }
    [ -s "$trace" ] || { echo "profile.sh: no trace written; the command's output is $name-$steps.log" >&2; exit 1; }
    gzip -f "$trace"
done
python3 "$root/scripts/profile/summary.py" "$(basename "$name")=$name-2.json.gz,$name-4.json.gz"
