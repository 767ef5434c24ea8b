#!/usr/bin/env python3
"""Builds tiny random Llama-family checkpoints (Llama with llama3 RoPE scaling, Qwen2, Qwen3)
under `fixtures/` with PEFT prompt, prefix and projected-prefix adapters, and records Hugging
Face's outputs on them.

What PEFT does on these models — where virtual tokens sit, which positions (rotary phases) the
real tokens after a prefix get, the prefix's shape under grouped-query attention — is taken from
these recordings, not from reasoning. Generation ground truth is greedy decoding by full
forward passes (PEFT's own `generate` with prompt/prefix adapters is not trusted). Seeded: a
re-run rewrites the same numbers. Needs the packages of `requirements.txt`; CI never runs it.
"""

import json
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import (
    GPT2TokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from peft import PeftModel, PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_fixtures import BATCH, EOS, SINGLE, generation_positions, make_portable, pad  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
MAX_NEW_TOKENS = 8
COMMON = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    # Far larger than the usual 0.02, so that random logits are well apart and greedy decoding
    # compares implementations rather than rounding.
    initializer_range=0.5,
)
FAMILIES = {
    # Llama 3's RoPE scaling, with an original context short enough that all three frequency
    # bands (kept, divided, interpolated) occur in a head of 8 dimensions.
    "tiny-llama": (
        LlamaConfig,
        LlamaForCausalLM,
        dict(
            rope_theta=10000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
            tie_word_embeddings=False,
        ),
    ),
    # Biases on q/k/v, tied embeddings, and saved in shards (model.safetensors.index.json).
    "tiny-qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(rope_theta=1e6, tie_word_embeddings=True)),
    # q/k RMSNorm, and a head_dim that is not hidden_size / heads.
    "tiny-qwen3": (
        Qwen3Config,
        Qwen3ForCausalLM,
        dict(rope_theta=1e6, head_dim=16, tie_word_embeddings=True, attention_bias=False),
    ),
}
ADAPTERS = {
    "prompt": lambda: PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5),
    "prefix": lambda: PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4),
    "prefix-projection": lambda: PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=24
    ),
}
TRAIN_STEPS = 5


def greedy_by_forward(model, rows, eos_id):
    """Greedy continuation of each row alone, by a full forward pass per new token (no cache),
    and the smallest gap between the two best logits on the way."""
    out, margin = [], float("inf")
    for row in rows:
        ids = list(row)
        new = []
        for _ in range(MAX_NEW_TOKENS):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            top = logits.topk(2).values
            margin = min(margin, float(top[0] - top[1]))
            token = int(logits.argmax())
            new.append(token)
            ids.append(token)
            if token == eos_id:
                break
        out.append(new + [-1] * (MAX_NEW_TOKENS - len(new)))
    return torch.tensor(out), margin


@torch.no_grad()
def record(model, rows, eos_id, with_left=True):
    ref = {}
    single = torch.tensor([rows[0]])
    out = model(input_ids=single, labels=single)
    ref["single.ids"], ref["single.logits"], ref["single.loss"] = single, out.logits, out.loss.reshape(1)

    ids, mask = pad(rows, eos_id, "right")
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    ref["batch.ids"], ref["batch.mask"] = ids, mask
    ref["batch.logits"], ref["batch.loss"] = out.logits, out.loss.reshape(1)
    ref["batch.losses"] = torch.stack(
        [model(input_ids=torch.tensor([r]), labels=torch.tensor([r])).loss for r in rows]
    )
    if with_left:
        ids, mask = pad(rows, eos_id, "left")
        positions = generation_positions(mask)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions)
        ref["left.ids"], ref["left.mask"], ref["left.positions"] = ids, mask, positions
        ref["left.logits"] = out.logits
    ref["generate.greedy"], margin = greedy_by_forward(model, rows, eos_id)
    return ref, margin


def save_reference(ref, path, **metadata):
    save_file({k: v.contiguous() for k, v in ref.items()}, path, metadata={k: str(v) for k, v in metadata.items()})


def make_family(name, config_class, model_class, extra, fast, eos_id, seed):
    rows = [fast(t)["input_ids"] for t in [SINGLE] + BATCH]
    for attempt in range(20):
        torch.manual_seed(1000 * seed + attempt)
        config = config_class(vocab_size=len(fast), bos_token_id=eos_id, eos_token_id=eos_id,
                              pad_token_id=eos_id, **COMMON, **extra)
        config._attn_implementation = "eager"
        model = model_class(config).eval()
        ref, margin = record(model, rows, eos_id)
        if margin > 1e-3:
            break
    else:
        raise SystemExit(f"{name}: no seed gave greedy margins above 1e-3")
    out_dir = REPO / "fixtures" / name
    shard = "20KB" if name == "tiny-qwen2" else "1GB"
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size=shard)
    fast.save_pretrained(out_dir)
    save_reference(ref, out_dir / "reference.safetensors", greedy_margin=f"{margin:.6f}",
                   max_new_tokens=MAX_NEW_TOKENS, transformers=__import__("transformers").__version__,
                   torch=torch.__version__)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, greedy margin {margin:.4f}")
    make_adapters(name, model_class, out_dir, rows, fast, eos_id)


def make_adapters(family, model_class, base_dir, rows, fast, eos_id):
    ids, mask = pad(rows[1:], eos_id, "right")
    labels = ids.masked_fill(mask == 0, -100)
    for seed, (name, make_config) in enumerate(ADAPTERS.items()):
        torch.manual_seed(seed)
        model = get_peft_model(model_class.from_pretrained(base_dir), make_config())
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model.train()
        for _ in range(TRAIN_STEPS):
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        out_dir = REPO / "fixtures" / "adapters" / f"{family}-{name}"
        model.save_pretrained(out_dir)
        make_portable(out_dir)
        reloaded = PeftModel.from_pretrained(model_class.from_pretrained(base_dir), out_dir).eval()
        ref, margin = record(reloaded, rows[1:], eos_id, with_left=False)
        save_reference(ref, out_dir / "reference.safetensors", greedy_margin=f"{margin:.6f}",
                       max_new_tokens=MAX_NEW_TOKENS)
        print(f"  adapter {out_dir.name}: losses {ref['batch.losses'].tolist()}, greedy margin {margin:.4f}")


def check_rust_adapters(fast):
    """Loads each Llama-family adapter `cargo xtask peft-check` trained with `peft-train` in
    PEFT, and compares PEFT's per-example losses on `fixtures/data/text.jsonl` with the ones
    `peft-train eval` reported."""
    texts = [json.loads(line)["text"] for line in (REPO / "fixtures/data/text.jsonl").read_text().splitlines()]
    root = REPO / "fixtures" / "rust-adapters"
    report, worst = [], 0.0
    families = tuple(f"{family}-" for family in FAMILIES)
    for out_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(families)):
        family = next(f for f in FAMILIES if out_dir.name.startswith(f"{f}-"))
        model_class = FAMILIES[family][1]
        model = PeftModel.from_pretrained(model_class.from_pretrained(REPO / "fixtures" / family), out_dir).eval()
        with torch.no_grad():
            peft_losses = [
                model(input_ids=torch.tensor([fast(t)["input_ids"]]), labels=torch.tensor([fast(t)["input_ids"]])).loss.item()
                for t in texts
            ]
        rust_losses = [e["loss"] for e in json.loads((out_dir / "rust_eval.json").read_text())["examples"]]
        diff = max(abs(a - b) for a, b in zip(peft_losses, rust_losses))
        worst = max(worst, diff)
        report.append(f"{out_dir.name}: {len(texts)} examples, mean loss peft {sum(peft_losses) / len(texts):.6f} "
                      f"rust {sum(rust_losses) / len(texts):.6f}, max |diff| {diff:.2e}")
    report.append(f"worst max |diff| {worst:.2e} ({'PASS' if worst <= 1e-4 else 'FAIL'}: tolerance 1e-4)")
    report.append(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
                  f"peft {__import__('peft').__version__}")
    text = "\n".join(report) + "\n"
    (root / "peft_check_llama.txt").write_text(text)
    print(text, end="")
    if worst > 1e-4:
        raise SystemExit(1)


def main():
    torch.set_num_threads(2)
    fast = GPT2TokenizerFast(tokenizer_file=str(REPO / "fixtures" / "tokenizer" / "tokenizer.json"), eos_token=EOS)
    eos_id = fast.convert_tokens_to_ids(EOS)
    if "--check-rust-adapters" in sys.argv[1:]:
        check_rust_adapters(fast)
        return
    for seed, (name, (config_class, model_class, extra)) in enumerate(FAMILIES.items()):
        make_family(name, config_class, model_class, extra, fast, eos_id, seed)


if __name__ == "__main__":
    main()
