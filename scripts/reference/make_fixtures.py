#!/usr/bin/env python3
"""Builds the tiny GPT-2 fixtures under `fixtures/` and records Hugging Face's outputs on them.

The Rust tests load every checkpoint written here and must reproduce the recorded logits,
losses and greedy generations. Run it from anywhere (it needs the pinned packages of
`requirements.txt`), or through `cargo xtask fixtures`; CI never runs it, the outputs are
committed. Everything is seeded, so a re-run rewrites the same numbers.
"""

import argparse
import json
import pathlib
import random

import torch
from safetensors.torch import save_file
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
from peft import PeftModel, PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model

REPO = pathlib.Path(__file__).resolve().parents[2]
EOS = "<|endoftext|>"

# Two shapes: a plain one, and one that exercises every optional config key we read.
MODELS = {
    "tiny-gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64),
    "tiny-gpt2-variant": dict(
        n_embd=48,
        n_layer=3,
        n_head=3,
        n_positions=56,
        n_inner=80,
        layer_norm_epsilon=1e-6,
        scale_attn_by_inverse_layer_idx=True,
    ),
}

SINGLE = "The Eagle is a coffee shop near the river."
BATCH = [
    "Alimentum serves cheap Indian food.",
    "The Mill is a family friendly pub in the city centre near Cafe Sicilia.",
    "Zizzi is rated 5 out of 5.",
]
TOKENIZER_PROBES = [
    SINGLE,
    "  leading spaces, trailing space ",
    "newlines\nand\ttabs",
    "unicode: café, naïve, 東京, emoji 🙂",
    f"two documents{EOS}joined",
    "",
]
MAX_NEW_TOKENS = 10


def corpus(n=600, seed=0):
    """Restaurant descriptions in the style of the E2E data, to train the tiny tokenizer."""
    rng = random.Random(seed)
    names = ["The Eagle", "Alimentum", "The Mill", "Zizzi", "Cotto", "Aromi", "Browns Cambridge"]
    foods = ["Indian", "Italian", "French", "Chinese", "English", "Japanese", "fast food"]
    areas = ["the city centre", "the riverside"]
    kinds = ["coffee shop", "pub", "restaurant"]
    prices = ["cheap", "moderately priced", "expensive"]
    out = []
    for _ in range(n):
        out.append(
            f"{rng.choice(names)} is a {rng.choice(prices)} {rng.choice(kinds)} serving "
            f"{rng.choice(foods)} food in {rng.choice(areas)}. It is rated {rng.randint(1, 5)} "
            f"out of 5 and is {'not ' if rng.random() < 0.5 else ''}family friendly."
        )
    return out


def make_tokenizer(out_dir):
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(
        corpus(), vocab_size=320, min_frequency=2, special_tokens=[EOS], show_progress=False
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokenizer.save_model(str(out_dir))  # vocab.json + merges.txt
    fast = GPT2TokenizerFast(tokenizer_file=str(out_dir / "tokenizer.json"), eos_token=EOS)
    probes = [
        {"text": t, "ids": fast(t)["input_ids"], "decoded": fast.decode(fast(t)["input_ids"])}
        for t in TOKENIZER_PROBES
    ]
    (out_dir / "reference.json").write_text(json.dumps(probes, indent=1, ensure_ascii=False))
    return fast


def pad(rows, pad_id, side):
    width = max(len(r) for r in rows)
    ids, mask = [], []
    for r in rows:
        fill = width - len(r)
        if side == "right":
            ids.append(r + [pad_id] * fill)
            mask.append([1] * len(r) + [0] * fill)
        else:
            ids.append([pad_id] * fill + r)
            mask.append([0] * fill + [1] * len(r))
    return torch.tensor(ids), torch.tensor(mask)


def generation_positions(mask):
    """Position ids as `generate` derives them from a left-padded attention mask."""
    positions = mask.long().cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 1)


def greedy(model, ids, mask, eos_id):
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        pad_token_id=eos_id,
        eos_token_id=eos_id,
        output_scores=True,
        return_dict_in_generate=True,
    )
    # Greedy decoding is only a fair test where the winner is clear: report the smallest gap
    # between the two best logits over every step and row.
    margin = min(
        float((top[:, 0] - top[:, 1]).min())
        for top in (s.topk(2, dim=-1).values for s in out.scores)
    )
    return out.sequences, margin


@torch.no_grad()
def record(model, fast, eos_id):
    enc = lambda t: fast(t)["input_ids"]
    ref = {}

    single = torch.tensor([enc(SINGLE)])
    out = model(input_ids=single, labels=single)
    ref["single.ids"] = single
    ref["single.logits"] = out.logits
    ref["single.loss"] = out.loss.reshape(1)

    rows = [enc(t) for t in BATCH]
    ids, mask = pad(rows, eos_id, "right")
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    ref["batch.ids"], ref["batch.mask"] = ids, mask
    ref["batch.logits"] = out.logits
    ref["batch.loss"] = out.loss.reshape(1)
    ref["batch.losses"] = torch.stack(
        [model(input_ids=torch.tensor([r]), labels=torch.tensor([r])).loss for r in rows]
    )

    ids, mask = pad(rows, eos_id, "left")
    positions = generation_positions(mask)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions)
    ref["left.ids"], ref["left.mask"], ref["left.positions"] = ids, mask, positions
    ref["left.logits"] = out.logits

    margins = []
    seqs, m = greedy(model, single, torch.ones_like(single), eos_id)
    ref["generate.single"], margins = seqs, margins + [m]
    seqs, m = greedy(model, ids, mask, eos_id)
    ref["generate.left"], margins = seqs, margins + [m]
    return ref, min(margins)


def make_model(name, shape, fast, eos_id, seed):
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(fast),
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        # Larger than GPT-2's 0.02 so that random logits are far apart and greedy decoding
        # compares implementations rather than rounding.
        initializer_range=0.3,
        **shape,
    )
    model = GPT2LMHeadModel(config).eval()
    model.config._attn_implementation = "eager"
    return model


def save_model(model, fast, name):
    base = REPO / "fixtures" / name
    # The hub's `gpt2` names tensors without the `transformer.` prefix (a saved GPT2Model).
    model.transformer.save_pretrained(base, safe_serialization=True)
    fast.save_pretrained(base)
    if name == "tiny-gpt2":
        # `GPT2LMHeadModel.save_pretrained` keeps the prefix.
        model.save_pretrained(REPO / "fixtures" / f"{name}-lmhead", safe_serialization=True)
        # The legacy pickle format, as older hub repos ship it.
        legacy = REPO / "fixtures" / f"{name}-bin"
        legacy.mkdir(parents=True, exist_ok=True)
        model.config.to_json_file(legacy / "config.json")
        torch.save(model.transformer.state_dict(), legacy / "pytorch_model.bin")
    return base


# Adapters trained with PEFT for a few steps on the tiny model; the Rust tests load each one
# and must reproduce PEFT's losses.
ADAPTERS = {
    "prompt": lambda: PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5),
    "prompt-text": lambda: PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=7,
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text="Describe the restaurant:",
        tokenizer_name_or_path=str(REPO / "fixtures" / "tiny-gpt2"),
    ),
    "prefix": lambda: PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4),
    "prefix-projection": lambda: PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=4,
        prefix_projection=True,
        encoder_hidden_size=24,
    ),
}
TRAIN_STEPS = 5


def adapter_losses(model, fast, eos_id):
    """PEFT's losses on the fixed inputs: each text alone, and the right-padded batch."""
    enc = lambda t: fast(t)["input_ids"]
    rows = [enc(t) for t in BATCH]
    alone = [model(input_ids=torch.tensor([r]), labels=torch.tensor([r])).loss for r in rows]
    ids, mask = pad(rows, eos_id, "right")
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    return {
        "batch.ids": ids,
        "batch.mask": mask,
        "batch.losses": torch.stack(alone),
        "batch.loss": out.loss.reshape(1),
        "batch.logits": out.logits,
    }


def make_portable(out_dir):
    """PEFT records the paths it was given (absolute here) and writes a generated model card;
    the committed fixtures name paths relative to the repository root and carry no card."""
    config_path = out_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    for key in ("base_model_name_or_path", "tokenizer_name_or_path"):
        if config.get(key):
            config[key] = str(pathlib.Path(config[key]).relative_to(REPO))
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out_dir / "README.md").unlink(missing_ok=True)


def make_adapters(fast, eos_id):
    base_dir = REPO / "fixtures" / "tiny-gpt2"
    rows = [fast(t)["input_ids"] for t in BATCH]
    ids, mask = pad(rows, eos_id, "right")
    labels = ids.masked_fill(mask == 0, -100)
    for seed, (name, make_config) in enumerate(ADAPTERS.items()):
        torch.manual_seed(seed)
        base = GPT2LMHeadModel.from_pretrained(base_dir)
        model = get_peft_model(base, make_config())
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-2
        )
        model.train()
        for _ in range(TRAIN_STEPS):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        out_dir = REPO / "fixtures" / "adapters" / name
        model.save_pretrained(out_dir)
        make_portable(out_dir)
        # Reload as a user would, so the recorded numbers are those of the saved files.
        reloaded = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base_dir), out_dir).eval()
        with torch.no_grad():
            ref = adapter_losses(reloaded, fast, eos_id)
        trainable, total = model.get_nb_trainable_parameters()
        save_file({k: v.contiguous() for k, v in ref.items()}, out_dir / "reference.safetensors",
                  metadata={"trainable_params": str(trainable), "all_params": str(total)})
        print(f"adapter {name}: {trainable} trainable of {total}, losses {ref['batch.losses'].tolist()}")


def check_rust_adapters(fast, eos_id):
    """Loads every adapter the Rust side saved (`cargo xtask export-adapters`) with PEFT and
    compares PEFT's per-example losses with the ones Rust recorded."""
    base_dir = REPO / "fixtures" / "tiny-gpt2"
    root = REPO / "fixtures" / "rust-adapters"
    report, worst = [], 0.0
    # Only the GPT-2 adapters `export_adapters` saved (with `rust_losses.json`); the Llama-family
    # ones beside them are `make_llama_fixtures.py`'s to check.
    for out_dir in sorted(p for p in root.iterdir() if (p / "rust_losses.json").is_file()):
        model = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base_dir), out_dir).eval()
        with torch.no_grad():
            peft_losses = adapter_losses(model, fast, eos_id)["batch.losses"].tolist()
        rust_losses = json.loads((out_dir / "rust_losses.json").read_text())["losses"]
        diff = max(abs(a - b) for a, b in zip(peft_losses, rust_losses))
        worst = max(worst, diff)
        report.append(f"{out_dir.name}: peft {['%.6f' % x for x in peft_losses]} "
                      f"rust {['%.6f' % x for x in rust_losses]} max |diff| {diff:.2e}")
    report.append(f"worst max |diff| {worst:.2e} ({'PASS' if worst <= 1e-4 else 'FAIL'}: tolerance 1e-4)")
    report.append(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
                  f"peft {__import__('peft').__version__}")
    text = "\n".join(report) + "\n"
    (root / "peft_check.txt").write_text(text)
    print(text, end="")
    if worst > 1e-4:
        raise SystemExit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check-rust-adapters",
        action="store_true",
        help="instead of writing fixtures, load the adapters Rust saved in fixtures/rust-adapters "
        "with PEFT and compare losses",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.check_rust_adapters:
        fast = GPT2TokenizerFast(tokenizer_file=str(REPO / "fixtures" / "tokenizer" / "tokenizer.json"), eos_token=EOS)
        check_rust_adapters(fast, fast.convert_tokens_to_ids(EOS))
        return
    fast = make_tokenizer(REPO / "fixtures" / "tokenizer")
    eos_id = fast.convert_tokens_to_ids(EOS)
    for seed, (name, shape) in enumerate(MODELS.items()):
        # Retry seeds until greedy decoding has a clear winner at every step.
        for attempt in range(20):
            model = make_model(name, shape, fast, eos_id, seed=1000 * seed + attempt)
            ref, margin = record(model, fast, eos_id)
            if margin > 1e-3:
                break
        else:
            raise SystemExit(f"{name}: no seed gave greedy margins above 1e-3")
        base = save_model(model, fast, name)
        tensors = {k: v.contiguous() for k, v in ref.items()}
        save_file(tensors, base / "reference.safetensors", metadata={
            "max_new_tokens": str(MAX_NEW_TOKENS),
            "greedy_margin": f"{margin:.6f}",
            "transformers": __import__("transformers").__version__,
            "torch": torch.__version__,
        })
        print(f"{name}: {sum(p.numel() for p in model.parameters())} params, "
              f"greedy margin {margin:.4f}, written to {base.relative_to(REPO)}")
    make_adapters(fast, eos_id)


if __name__ == "__main__":
    main()
