#!/usr/bin/env python3
"""One training step's time by operator, from PyTorch profiler traces (profile.sh writes them).

    summary.py NAME=TRACE_2,TRACE_4 [NAME=TRACE_2,TRACE_4]

Each side is two Chrome traces of the same command run with 2 and with 4 timed steps, so
that half their difference is one step, free of start-up, loading and warm-up. With device
events in the traces (a GPU run: CUPTI's kernels, copies and fills) a step's time is the
device's: each kernel's time goes to the operator that launched it. Without (a CPU run) it
is the host's: each operator's own time, its nested operators' taken out. Two sides print
side by side, the operators of both in one list, and the first's time less the second's in a
last column. The step's time as the command measured it (its median, from the log beside the
trace) heads the figures: against the device's busy time it says how much of a step the
device waited for the host.
"""

import collections
import gzip
import json
import re
import signal
import sys

DEVICE_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}

# What an operator is for, by its name (the innermost ATen operator around the work).
CATEGORIES = [
    ("matrix products", r"aten::(mm|addmm|bmm|baddbmm|matmul|linear|_scaled_mm|dot|addmv|mv)\b"),
    ("attention", r"attention|_flash|_efficient|_cudnn_attention"),
    ("norms", r"layer_norm|rms_norm"),
    ("softmax and loss", r"softmax|nll_loss|cross_entropy"),
    ("copies and fills", r"aten::(copy_|fill_|zero_|zeros|ones|full|cat|clone|index_put_|"
                         r"slice_backward|select_backward|narrow_copy|_to_copy|contiguous|"
                         r"embedding_dense_backward|index_select|embedding)\b|Memcpy|Memset"),
]


def category(name):
    for label, pattern in CATEGORIES:
        if re.search(pattern, name):
            return label
    return None


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt") as file:
            return json.load(file)["traceEvents"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        sys.exit(f"summary.py: {path} is no trace of PyTorch's profiler ({error}); profile.sh writes them")


def union_length(intervals):
    """The time covered by `intervals` (start, end), overlaps counted once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def own_times(ops):
    """Each host operator's own time: its duration less its nested operators' (same thread)."""
    by_thread = collections.defaultdict(list)
    for op in ops:
        by_thread[op["tid"]].append(op)
    own = {}
    for thread_ops in by_thread.values():
        thread_ops.sort(key=lambda op: (op["ts"], -op["dur"]))
        open_ops = []
        for op in thread_ops:
            while open_ops and open_ops[-1]["ts"] + open_ops[-1]["dur"] <= op["ts"]:
                open_ops.pop()
            own[id(op)] = op["dur"]
            if open_ops:
                own[id(open_ops[-1])] -= op["dur"]
            open_ops.append(op)
    return own


def tally(path):
    """One trace, by operator name: [time in µs, calls], and the intervals of the host's
    operators and of the device's work credited to each name."""
    events = [e for e in load(path) if e.get("ph") == "X"]
    ops = [e for e in events if e.get("cat") == "cpu_op"]
    device = [e for e in events if e.get("cat") in DEVICE_CATEGORIES]
    rows = collections.defaultdict(lambda: [0.0, 0])
    kernels = collections.defaultdict(lambda: [0.0, 0])
    host = collections.defaultdict(list)
    for op in ops:
        host[op["name"]].append((op["ts"], op["ts"] + op["dur"]))
    busy = collections.defaultdict(list)
    if device:
        op_names = {o["args"].get("External id"): o["name"] for o in ops}
        for kernel in device:
            name = op_names.get(kernel.get("args", {}).get("External id"), "(no operator)")
            if kernel["cat"] != "kernel":
                name += " [" + kernel["name"].split(" ")[0] + "]"
            rows[name][0] += kernel["dur"]
            rows[name][1] += 1
            kernels[kernel_name(kernel["name"])][0] += kernel["dur"]
            kernels[kernel_name(kernel["name"])][1] += 1
            busy[name].append((kernel["ts"], kernel["ts"] + kernel["dur"]))
    else:
        own = own_times(ops)
        for op in ops:
            rows[op["name"]][0] += own[id(op)]
            rows[op["name"]][1] += 1
    return rows, kernels, host, busy


def kernel_name(name):
    """A device kernel's name without the namespaces that every one of PyTorch's repeats."""
    for noise in ("void ", "at::native::", "(anonymous namespace)::", "std::"):
        name = name.replace(noise, "")
    return name


def one_step(spec):
    """(label, rows, totals) for one step of `LABEL=TRACE_2,TRACE_4`: half the difference.
    What ran as often in both runs (loading, initialisation, the warm-up's one-offs) is no
    part of a step, and is left out of the rows and of the totals alike."""
    label, _, paths = spec.partition("=")
    two, four = paths.split(",")
    (rows_2, kernels_2, host_2, busy_2), (rows_4, kernels_4, host_4, busy_4) = tally(two), tally(four)
    per_step = {n for n in set(rows_4) | set(host_4) if calls(rows_4, host_4, n) != calls(rows_2, host_2, n)}
    rows = difference(rows_2, rows_4, per_step)
    kernels = difference(kernels_2, kernels_4, {n for n in kernels_4 if kernels_4[n][1] != kernels_2.get(n, (0, 0))[1]})
    half_difference_ms = lambda by_name_2, by_name_4: (
        union_length(i for n in per_step for i in by_name_4.get(n, ()))
        - union_length(i for n in per_step for i in by_name_2.get(n, ()))) / 2 / 1000
    totals = {"step, ms (the command's median)": step_median(four),
              "host time in operators, ms": half_difference_ms(host_2, host_4)}
    if busy_4:
        totals["device kernels"] = sum(calls for _, calls in rows.values())
        totals["device busy, ms"] = half_difference_ms(busy_2, busy_4)
        totals["device time in kernels, ms"] = sum(time for time, _ in rows.values())
    return label, rows, kernels, totals


def difference(rows_2, rows_4, names):
    """Half the difference, in ms and calls, of the rows of `names`."""
    one_step = {}
    for name in names & (set(rows_2) | set(rows_4)):
        (time_2, calls_2), (time_4, calls_4) = rows_2.get(name, (0, 0)), rows_4.get(name, (0, 0))
        one_step[name] = ((time_4 - time_2) / 2 / 1000, (calls_4 - calls_2) / 2)
    return one_step


def step_median(trace):
    """The median step the command itself timed, from the JSON line ending the log that
    profile.sh keeps beside the trace (`step_ms_median`), or NaN without one."""
    log = re.sub(r"\.json(\.gz)?$", ".log", trace)
    try:
        lines = [line for line in open(log) if line.startswith("{")]
        return float(json.loads(lines[-1])["step_ms_median"])
    except (OSError, IndexError, KeyError, TypeError, ValueError):
        return float("nan")


def calls(rows, host, name):
    """How often `name` ran (on the host) or was credited work (on the device)."""
    return (len(host.get(name, ())), rows[name][1] if name in rows else 0)


OTHERS = "other: element-wise, reductions (and views, on the host)"
WIDTH = 16


def print_rows(title, sides, rows_of, limit):
    """`limit` rows of the sides' tables, the most time on either side first; with two sides,
    the first's time less the second's last (where the first spends more, positive)."""
    print(f"\n{title}")
    names = set().union(*(rows_of(side) for side in sides))
    ranked = sorted(names, key=lambda n: -max(rows_of(side).get(n, (0, 0))[0] for side in sides))
    for name in ranked[:limit]:
        cells = []
        for side in sides:
            time, calls = rows_of(side).get(name, (0, 0))
            cells.append(f"{time:9.2f} ({calls:4.0f})" if calls or time else "")
        if len(sides) == 2:
            times = [rows_of(side).get(name, (0, 0))[0] for side in sides]
            cells.append(f"{times[0] - times[1]:+9.2f}")
        print(f"  {name[:58]:<58}" + "".join(f"{cell:>{WIDTH}}" for cell in cells))


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the listing quietly
    if len(sys.argv) < 2 or any("=" not in spec or "," not in spec for spec in sys.argv[1:]):
        sys.exit(__doc__)
    sides = [one_step(spec) for spec in sys.argv[1:]]
    for label, rows, _, _ in sides:
        if not rows:
            print(f"{label}: no PyTorch operator ran per step: is the command on LibTorch "
                  "(peft-bench --device tch or tch-cuda)?")
    on_device = any(kernels for _, _, kernels, _ in sides)
    labels = [label for label, _, _, _ in sides] + (["difference"] if len(sides) == 2 else [])
    print(f"{'one step':<60}" + "".join(f"{label:>{WIDTH}}" for label in labels))
    keys = ["device kernels", "device busy, ms", "device time in kernels, ms"] if on_device else []
    for key in ["step, ms (the command's median)"] + keys + ["host time in operators, ms"]:
        values = [t.get(key, 0) for _, _, _, t in sides]
        if len(values) == 2:
            values.append(values[0] - values[1])
        print(f"{key:<60}" + "".join(f"{value:>{WIDTH}.1f}" for value in values))
    what = "device ms (kernels)" if on_device else "host ms, own time (calls)"
    by_kind = []
    for _, rows, _, _ in sides:
        kinds = collections.defaultdict(lambda: [0.0, 0.0])
        for name, (time, calls) in rows.items():
            kind = category(name) or OTHERS
            kinds[kind][0] += time
            kinds[kind][1] += calls
        by_kind.append(kinds)
    print_rows(f"by kind of operator: {what}", by_kind, lambda kinds: kinds, len(CATEGORIES) + 1)
    print_rows(f"by operator, the most time first: {what}", sides, lambda side: side[1], 40)
    if on_device:
        print_rows(f"by kernel, the most time first: {what}", sides, lambda side: side[2], 30)


if __name__ == "__main__":
    main()
