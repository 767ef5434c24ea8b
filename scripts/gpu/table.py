"""The Markdown table of a GPU benchmark run: scripts/gpu/bench.sh's records (JSON lines of
peft-bench and scripts/reference/bench_peft.py), peft-rs and Hugging Face PEFT side by side.

    python3 scripts/gpu/table.py target/bench/gpu.jsonl > target/bench/gpu.md
"""

import json
import sys


def fmt(value, digits=0):
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(ours, theirs):
    return "—" if not ours or not theirs else f"{ours / theirs:.2f}×"


def main(path):
    records = [json.loads(line) for line in open(path) if line.strip()]
    failed = [r for r in records if "failed" in r]
    attention = [r for r in records if r.get("mode") == "attention"]
    losses = [r for r in records if r.get("mode") == "loss"]
    # `+phases` runs (`--time-phases`): the step's phases timed alone, on a table of their own.
    phases = [r for r in records if r.get("forward_ms_median") is not None]
    runs = [r for r in records
            if "failed" not in r and r.get("mode") not in ("attention", "loss")
            and r.get("forward_ms_median") is None]
    cases = {}
    for r in runs:
        key = (r["mode"], r["model"], r["method"], r["batch"], r["seq"], r["dtype"])
        implementation = r["implementation"]
        # peft-rs with Burn's own attention, LayerNorm and GELU (`+decomposed` cases): the
        # fused operations' gain, on its own row.
        if r.get("attention") == "decomposed":
            implementation += "-decomposed"
        cases.setdefault(key, {})[implementation] = r

    print("| case | peft-rs tok/s | PEFT eager tok/s | ratio | PEFT compiled tok/s | ratio "
          "| GPU peak MiB peft-rs / PEFT eager |")
    print("|---|---|---|---|---|---|---|")
    for (mode, model, method, batch, seq, dtype), by in cases.items():
        ours, eager, compiled = by.get("peft-rs"), by.get("hf-peft"), by.get("hf-peft-compile")
        tok = lambda r: r and r["tokens_per_s"]
        peak = lambda r: r and r.get("gpu_peak_mib")
        name = f"{mode} {model} {method} {batch}×{seq} {dtype}"
        if mode == "infer":
            name += " (decode)"
        if mode == "mixed":
            single = ours and ours.get("single_adapter_tokens_per_s")
            apart = ours and ours.get("one_at_a_time_tokens_per_s")
            print(f"| {name}: mixed vs one adapter vs one batch per adapter | {fmt(tok(ours))} "
                  f"| {fmt(single)} (one adapter) | {ratio(tok(ours), single)} | {fmt(apart)} "
                  f"(one at a time) | {ratio(tok(ours), apart)} | {fmt(peak(ours))} |")
            continue
        print(f"| {name} | {fmt(tok(ours))} | {fmt(tok(eager))} | {ratio(tok(ours), tok(eager))} "
              f"| {fmt(tok(compiled))} | {ratio(tok(ours), tok(compiled))} "
              f"| {fmt(peak(ours))} / {fmt(peak(eager))} |")
        decomposed = by.get("peft-rs-decomposed")
        if decomposed:
            print(f"| {name}, peft-rs with decomposed attention and layers "
                  f"| {fmt(tok(decomposed))} | {fmt(tok(eager))} "
                  f"| {ratio(tok(decomposed), tok(eager))} | {fmt(tok(compiled))} "
                  f"| {ratio(tok(decomposed), tok(compiled))} "
                  f"| {fmt(peak(decomposed))} / {fmt(peak(eager))} |")
        if mode == "infer":
            prefill = lambda r: r and r.get("prefill_tokens_per_s")
            print(f"| {mode} {model} {method} {batch}×{seq} {dtype} (prefill) "
                  f"| {fmt(prefill(ours))} | {fmt(prefill(eager))} "
                  f"| {ratio(prefill(ours), prefill(eager))} | — | — | |")
    if attention:
        print("\n| attention alone (peft-rs) | masking | forward ms | forward + backward ms |")
        print("|---|---|---|---|")
        for r in attention:
            print(f"| {r['batch']}×{r['heads']}×{r['queries']}×{r['keys']}, head {r['head_dim']}, "
                  f"{r['dtype']} | {r['masking']} | {fmt(r['forward_ms_median'], 2)} "
                  f"| {fmt(r['training_ms_median'], 2)} |")
    if phases:
        print("\n| phases timed alone (device synchronised after each) | implementation "
              "| forward + loss ms | backward ms | optimizer ms | tok/s |")
        print("|---|---|---|---|---|---|")
        for r in phases:
            who = r["implementation"]
            if r.get("optimizer"):
                who += f" ({r['optimizer']} AdamW)"
            print(f"| {r['mode']} {r['model']} {r['method']} {r['batch']}×{r['seq']} {r['dtype']} "
                  f"| {who} | {fmt(r['forward_ms_median'], 1)} | {fmt(r['backward_ms_median'], 1)} "
                  f"| {fmt(r['optimizer_ms_median'], 1)} | {fmt(r['tokens_per_s'])} |")
    if losses:
        print("\n| LM loss alone (peft-rs) | head trained | rows per chunk | forward + backward ms "
              "| peak RSS MiB | GPU peak MiB |")
        print("|---|---|---|---|---|---|")
        for r in losses:
            print(f"| {r['rows']} rows × {r['vocab']:,} vocabulary, width {r['width']}, "
                  f"{r['dtype']} | {'yes' if r['train_head'] else 'no'} | {r['chunk_rows']} "
                  f"| {fmt(r['training_ms_median'], 2)} | {fmt(r['peak_rss_mib'])} "
                  f"| {fmt(r.get('gpu_peak_mib'))} |")
    for r in failed:
        print(f"\nfailed: `{r['failed']}`: {r['error']}")


if __name__ == "__main__":
    main(sys.argv[1])
