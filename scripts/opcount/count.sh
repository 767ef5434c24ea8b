#!/usr/bin/env bash
# Kernels per training step of a LibTorch process: `peft-bench train --device tch` or
# scripts/reference/bench_peft.py (PEFT), which both take --warmup and --steps. A kernel is a
# PyTorch operator that does work of its own on more than a single value, not a view or an
# allocation (opcount.cpp): on a GPU each is a launch, and for element-wise work a pass over
# memory, so the count taken on the CPU tells where a GPU step spends launches. COMMAND runs
# with 2 and then 4 timed steps (1 warm-up each); the difference over 2 is one step, printed
# with the operators making it up: kernels, and the MB their operands and results hold (each
# tensor's distinct elements), the memory a GPU reads and writes for them — what bounds an
# element-wise kernel's time there.
# --trace NAMES (comma-separated operators) adds where each call of those came from: the
# enclosing operators and, for a Rust binary, the innermost functions of ours on the stack.
#
#   scripts/opcount/count.sh target/release/peft-bench train --device tch --method prompt --batch 2 --seq 16
#   scripts/opcount/count.sh python scripts/reference/bench_peft.py train --method prompt --batch 2 --seq 16
#   scripts/opcount/count.sh --trace aten::copy_,aten::fill_ target/release/peft-bench train ...
#
# Needs the PyTorch 2.11 venv (scripts/torch-env.sh) and g++; the preloaded library is built
# from the venv's headers into target/opcount on first use (5 s). The binary must be built
# with the `tch` feature and not stripped, for --trace to name its functions.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
trace=""
if [ "${1:-}" = --trace ]; then trace="$2"; shift 2; fi
[ $# -gt 0 ] || { sed -n '2,17p' "$0"; exit 2; }
out="$root/target/opcount"
library="$("$root/scripts/torch-preload.sh" "$root/scripts/opcount/opcount.cpp" "$out/libopcount.so")"
source "$root/scripts/torch-env.sh"
for steps in 2 4; do
    OPCOUNT_TRACE="$trace" OPCOUNT_OUT="$out/steps-$steps.tsv" LD_PRELOAD="$library" \
        "$@" --warmup 1 --steps "$steps" > "$out/steps-$steps.log" 2>&1 \
        || { echo "count.sh: the command failed; its output is $out/steps-$steps.log" >&2; exit 1; }
done
binary="$(command -v "$1")"
python3 - "$out/steps-2.tsv" "$out/steps-4.tsv" "$binary" <<'PY'
import re, signal, subprocess, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the listing quietly
def read(path):
    rows = {}
    for line in open(path):
        calls, kernels, bytes_, name = line.rstrip("\n").split("\t", 3)
        rows[name] = (int(calls), int(kernels), float(bytes_))
    return rows
two, four, binary = read(sys.argv[1]), read(sys.argv[2]), sys.argv[3]
per_step = lambda name, i: (four.get(name, (0, 0, 0))[i] - two.get(name, (0, 0, 0))[i]) / 2
MB = 1e6
print(f"{per_step('kernels in all', 1):.0f} kernels a step, {per_step('kernels in all', 2) / MB:,.1f} MB read and written")
if not four.get("kernels in all", (0, 0, 0))[1]:
    print("no PyTorch operator ran: is the command on LibTorch (peft-bench --device tch)?")
ops = sorted((per_step(n, 1), per_step(n, 2), n) for n in four
             if n != "kernels in all" and not n.startswith("TRACE"))
print("kernels        MB  operator")
for count, bytes_, name in reversed(ops):
    if count > 0:
        print(f"{count:7.0f} {bytes_ / MB:9.1f}  {name}")
traces = sorted(((per_step(n, 0), per_step(n, 2), n) for n in four if n.startswith("TRACE")),
                key=lambda row: (row[1], row[0]), reverse=True)
addresses = sorted({a for _, _, n in traces for a in re.findall(r"0x[0-9a-f]+", n)})
names = {}
if addresses and "python" not in binary:
    lines = subprocess.run(["addr2line", "-f", "-C", "-e", binary, *addresses],
                           capture_output=True, text=True).stdout.split("\n")
    for i, address in enumerate(addresses):
        function = lines[2 * i]
        while re.search(r"<[^<>]*>", function):
            function = re.sub(r"<[^<>]*>", "", function)
        function = re.sub(r"::h[0-9a-f]{16}$", "", function)
        names[address] = "::".join(function.split("::")[-2:])
if traces:
    print("\nthe traced operators by caller, most bytes first: calls a step, MB a step")
for count, bytes_, name in traces:
    if count > 0:
        head = name.split(" 0x")[0][len("TRACE "):]
        chain = " | ".join(names.get(a, a) for a in re.findall(r"0x[0-9a-f]+", name))
        print(f"{count:7.0f} {bytes_ / MB:9.1f}  {head}"
              + (f"\n                   {chain}" if chain and names else ""))
PY
