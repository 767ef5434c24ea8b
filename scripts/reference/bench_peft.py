#!/usr/bin/env python3
"""The Hugging Face PEFT side of `cargo xtask bench`: the same shapes as `peft-bench`,
through `transformers` + `peft` in PyTorch eager mode, printed as one JSON line in
`peft-bench`'s schema.

    python bench_peft.py train --method prompt --batch 4 --seq 128 --virtual-tokens 20
    python bench_peft.py infer --method prefix --batch 4 --seq 128 --new-tokens 32

Random weights (timing does not depend on their values); language modelling on every token
(`labels = input_ids`); AdamW over the trainable parameters only; the model in train mode,
as `Trainer` runs it.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
from peft import PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model
import pathlib

from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

PRESETS = {
    "gpt2": (12, 768, 12),
    "gpt2-medium": (24, 1024, 16),
    "gpt2-large": (36, 1280, 20),
    "gpt2-xl": (48, 1600, 25),
    "distilgpt2": (6, 768, 12),
}
# Llama-family shapes, shared with `peft-bench` (which reads the same file).
LLAMA_PRESETS = json.loads((pathlib.Path(__file__).parent / "llama_presets.json").read_text())


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["train", "infer"])
    parser.add_argument("--model", default="gpt2")
    parser.add_argument(
        "--method", default="prompt", choices=["prompt", "prefix", "prefix-direct", "full", "none"]
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--virtual-tokens", type=int, default=20)
    parser.add_argument("--prefix-hidden", type=int)
    parser.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--time-phases", action="store_true",
                        help="also time the forward pass with the loss, the backward pass and the "
                        "optimizer's update alone, the device synchronised after each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    return parser.parse_args()


def build_model(args):
    torch.manual_seed(args.seed)
    if args.model in LLAMA_PRESETS:
        preset = {k: v for k, v in LLAMA_PRESETS[args.model].items() if k != "model_type"}
        config = LlamaConfig(**preset)
        config.n_embd = config.hidden_size  # the prefix projection's default width below
        model = LlamaForCausalLM(config)
    else:
        if args.model in PRESETS:
            n_layer, n_embd, n_head = PRESETS[args.model]
            config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head)
        else:
            config = GPT2Config.from_pretrained(args.model)
        model = GPT2LMHeadModel(config)
    if args.method in ("full", "none"):
        return model, config
    common = dict(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=args.virtual_tokens)
    if args.method == "prompt":
        peft_config = PromptTuningConfig(**common)
    else:
        projection = args.method == "prefix"
        peft_config = PrefixTuningConfig(
            **common,
            prefix_projection=projection,
            encoder_hidden_size=(args.prefix_hidden or config.n_embd) if projection else None,
        )
    return get_peft_model(model, peft_config), config


def autocast(args):
    """bf16/f16 as PyTorch users run it: autocast over f32 weights."""
    if args.dtype == "f32":
        return torch.autocast(args.device, enabled=False)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    return torch.autocast(args.device, dtype=dtype)


def sync(args):
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def record(args, mode, trainable, step_seconds, tokens_per_step):
    ms = sorted(s * 1e3 for s in step_seconds)
    median = statistics.median(ms)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    device_peak = (
        torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None
    )
    return {
        "implementation": "hf-peft" + ("-compile" if args.compile else ""),
        "mode": mode,
        "backend": f"torch-{args.device}",
        "model": args.model,
        "method": args.method,
        "batch": args.batch,
        "seq": args.seq,
        "virtual_tokens": 0 if args.method in ("full", "none") else args.virtual_tokens,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "trainable_params": trainable,
        "timed_steps": len(ms),
        "step_ms_median": median,
        "step_ms_min": ms[0],
        "step_ms_max": ms[-1],
        "tokens_per_s": tokens_per_step / (median / 1e3),
        "prefill_tokens_per_s": None,
        "new_tokens": None,
        "peak_rss_mib": peak_rss,
        "device_peak_mib": device_peak,
    }


def bench_train(args, model, config):
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.01)
    step_fn = model
    if args.compile:
        step_fn = torch.compile(model)
    generator = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=generator)
    ids = ids.to(args.device)
    warmup = 2 if args.warmup is None else args.warmup
    times, losses, phases, marks = [], [], [], []

    def mark():
        # With --time-phases the device is synchronised after each phase, as peft-bench's
        # --time-phases does.
        if args.time_phases:
            sync(args)
            marks.append(time.perf_counter())

    for step in range(warmup + args.steps):
        started = time.perf_counter()
        marks[:] = [started]
        with autocast(args):
            loss = step_fn(input_ids=ids, labels=ids).loss
        mark()
        loss.backward()
        mark()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mark()
        value = loss.item()
        sync(args)
        if not torch.isfinite(torch.tensor(value)):
            sys.exit(f"step {step}: loss is {value}")
        losses.append(value)
        if step >= warmup:
            times.append(time.perf_counter() - started)
            if args.time_phases:
                phases.append([(end - start) * 1e3 for start, end in zip(marks, marks[1:])])
    count = sum(p.numel() for p in trainable)
    out = record(args, "train", count, times, args.batch * args.seq)
    if args.time_phases:
        for name, times_ms in zip(("forward", "backward", "optimizer"), zip(*phases)):
            out[f"{name}_ms_median"] = statistics.median(times_ms)
    # As peft-bench reports them: the loss before any update, and the last step's.
    out["first_loss"], out["last_loss"] = losses[0], losses[-1]
    return out


@torch.no_grad()
def bench_infer(args, model, config):
    model.eval()
    generator = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=generator)
    ids = ids.to(args.device)
    mask = torch.ones_like(ids)
    new_tokens = max(args.new_tokens, 2)

    def run_for(n):
        started = time.perf_counter()
        with autocast(args):
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
                use_cache=True,
            )
        sync(args)
        return time.perf_counter() - started

    warmup = 1 if args.warmup is None else args.warmup
    prefill, full = [], []
    for repeat in range(warmup + args.repeats):
        p, f = run_for(1), run_for(new_tokens)
        if repeat >= warmup:
            prefill.append(p)
            full.append(f)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if args.method in ("none", "full"):
        trainable = 0
    out = record(args, "infer", trainable, full, args.batch * new_tokens)
    prefill_s, full_s = statistics.median(prefill), statistics.median(full)
    out["tokens_per_s"] = args.batch * (new_tokens - 1) / max(full_s - prefill_s, 1e-9)
    out["prefill_tokens_per_s"] = args.batch * args.seq / prefill_s
    out["new_tokens"] = new_tokens
    return out


def main():
    args = parse_args()
    # scripts/profile/profile.sh: PyTorch's profiler over the whole run, as its preloaded
    # library gives peft-bench, the trace written at the end.
    trace = os.environ.get("PROFILE_TRACE")
    if trace:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        shapes = os.environ.get("PROFILE_SHAPES") == "1"
        with torch.profiler.profile(activities=activities, record_shapes=shapes) as profile:
            run(args)
        profile.export_chrome_trace(trace)
    else:
        run(args)


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "train" and args.method == "none":
        sys.exit("`--method none` trains nothing; use it with `infer`")
    model, config = build_model(args)
    model.to(args.device)
    result = bench_train(args, model, config) if args.mode == "train" else bench_infer(args, model, config)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
