//! The Llama-family models against Hugging Face `transformers` + `peft` on the tiny random
//! checkpoints of `scripts/reference/make_llama_fixtures.py`: logits and losses (single,
//! right-padded, left-padded with generation positions), PEFT prompt, prefix and
//! projected-prefix adapters, and greedy generation with and without the KV cache against
//! greedy decoding by full forward passes.

#[path = "../../peft-gpt2/tests/common/mod.rs"]
mod common;

use burn::prelude::*;
use common::{Reference, devices, fixtures, max_abs_diff, to_vec, to_vec1};
use peft_core::{Adapter, AdapterError, Conditioning, PeftAdapter};
use peft_decoder::adapted::{conditioned_labels, forward_conditioned};
use peft_decoder::loss::{IGNORE_INDEX, mean_loss, per_example_loss};
use peft_decoder::{Decoder, ForwardInput, GenerationConfig, generate};
use peft_llama::{Llama, LlamaConfig, load_pretrained};

const FAMILIES: [&str; 3] = ["tiny-llama", "tiny-qwen2", "tiny-qwen3"];
const ADAPTERS: [&str; 3] = ["prompt", "prefix", "prefix-projection"];
/// f32 logits of the same weights and inputs.
const TOLERANCE: f32 = 1e-4;
/// f32 losses: means over many logits, so closer still.
const LOSS_TOLERANCE: f32 = 1e-5;

fn load(family: &str, device: &Device) -> (Llama, LlamaConfig) {
    load_pretrained(&fixtures().join(family), device).unwrap()
}

/// Per-logit mask of the real positions: `virtual_len` always-real positions, then `mask`.
fn keep(mask_rows: &[Vec<i64>], virtual_len: usize, vocab: usize) -> Vec<bool> {
    mask_rows
        .iter()
        .flat_map(|row| std::iter::repeat_n(1, virtual_len).chain(row.iter().copied()))
        .flat_map(|real| std::iter::repeat_n(real == 1, vocab))
        .collect()
}

/// The real tokens of each row of a padded batch.
fn real_rows(reference: &Reference, ids: &str, mask: &str) -> Vec<Vec<u32>> {
    reference
        .rows(ids)
        .into_iter()
        .zip(reference.rows(mask))
        .map(|(ids, mask)| {
            ids.into_iter()
                .zip(mask)
                .filter(|&(_, m)| m == 1)
                .map(|(id, _)| id as u32)
                .collect()
        })
        .collect()
}

/// Checks the right-padded batch's logits (at real positions) and each example's loss.
fn check_batch(
    name: &str,
    model: &Llama,
    conditioning: &Conditioning,
    reference: &Reference,
    device: &Device,
) {
    let ids = reference.int_tensor("batch.ids", device);
    let mask = reference.mask_tensor("batch.mask", device);
    let labels = ids.clone().mask_fill(mask.clone().bool_not(), IGNORE_INDEX);
    let logits = forward_conditioned(model, ids, Some(mask), conditioning);
    let expected = reference.get("batch.logits");
    assert_eq!(logits.dims().to_vec(), expected.shape, "{name}");
    let virtual_len = expected.shape[1] - reference.get("batch.mask").shape[1];
    let real = keep(
        &reference.rows("batch.mask"),
        virtual_len,
        expected.shape[2],
    );
    let diff = max_abs_diff(&to_vec(logits.clone()), &expected.floats, Some(&real));
    println!("{name}: padded-batch logits max |diff| {diff:.2e}");
    assert!(diff <= TOLERANCE, "{name}: logits differ by {diff}");

    let labels = conditioned_labels(labels, conditioning);
    let loss = to_vec1(mean_loss(logits.clone(), labels.clone()))[0];
    let expected_loss = reference.get("batch.loss").floats[0];
    assert!(
        (loss - expected_loss).abs() <= LOSS_TOLERANCE,
        "{name}: batch loss {loss} vs {expected_loss}"
    );
    let (losses, _) = per_example_loss(logits, labels);
    let diff = max_abs_diff(
        &to_vec1(losses),
        &reference.get("batch.losses").floats,
        None,
    );
    println!("{name}: per-example losses max |diff| {diff:.2e}");
    assert!(
        diff <= LOSS_TOLERANCE,
        "{name}: per-example losses differ by {diff}"
    );
}

/// Greedy generation of every prompt, batched, with and without the cache, against the
/// recorded greedy decoding by full forward passes (`-1` pads a row that stopped early).
fn check_generation(
    name: &str,
    model: &Llama,
    prompts: &[Vec<u32>],
    conditioning: &Conditioning,
    reference: &Reference,
) {
    let expected: Vec<Vec<u32>> = reference
        .rows("generate.greedy")
        .into_iter()
        .map(|row| {
            row.into_iter()
                .filter(|&t| t >= 0)
                .map(|t| t as u32)
                .collect()
        })
        .collect();
    let max_new_tokens = reference.get("generate.greedy").shape[1];
    for use_cache in [true, false] {
        let settings = GenerationConfig {
            use_cache,
            ..GenerationConfig::greedy(max_new_tokens, 0)
        };
        let together = generate(model, prompts, conditioning, &settings).unwrap();
        assert_eq!(together, expected, "{name}: batched, cache {use_cache}");
        for (prompt, expected) in prompts.iter().zip(&expected) {
            let alone =
                generate(model, std::slice::from_ref(prompt), conditioning, &settings).unwrap();
            assert_eq!(&alone[0], expected, "{name}: alone, cache {use_cache}");
        }
    }
}

#[test]
fn base_models_match_transformers() {
    for (backend, device) in devices() {
        for family in FAMILIES {
            let name = format!("{backend} {family}");
            let reference = Reference::load(family);
            let (model, _) = load(family, &device);
            let none = Conditioning::none();

            let ids = reference.int_tensor("single.ids", &device);
            let logits = forward_conditioned(&model, ids.clone(), None, &none);
            let diff = max_abs_diff(
                &to_vec(logits.clone()),
                &reference.get("single.logits").floats,
                None,
            );
            println!("{name}: single logits max |diff| {diff:.2e}");
            assert!(diff <= TOLERANCE, "{name}: single logits differ by {diff}");
            let loss = to_vec1(mean_loss(logits, ids))[0];
            let expected = reference.get("single.loss").floats[0];
            assert!(
                (loss - expected).abs() <= LOSS_TOLERANCE,
                "{name}: {loss} vs {expected}"
            );

            check_batch(&name, &model, &none, &reference, &device);

            // Left padding with the positions `generate` derives from the mask.
            let mask = reference.mask_tensor("left.mask", &device);
            let hidden = model.forward(
                ForwardInput {
                    embeddings: model.embed_tokens(reference.int_tensor("left.ids", &device)),
                    positions: reference.int_tensor("left.positions", &device),
                    key_mask: Some(mask),
                    prefix: None,
                },
                None,
            );
            let expected = reference.get("left.logits");
            let real = keep(&reference.rows("left.mask"), 0, expected.shape[2]);
            let diff = max_abs_diff(&to_vec(model.logits(hidden)), &expected.floats, Some(&real));
            println!("{name}: left-padded logits max |diff| {diff:.2e}");
            assert!(
                diff <= TOLERANCE,
                "{name}: left-padded logits differ by {diff}"
            );

            // The batch's first row is the single sequence: greedy covers all of them.
            let prompts = real_rows(&reference, "batch.ids", "batch.mask");
            check_generation(&name, &model, &prompts, &none, &reference);
        }
    }
}

#[test]
fn peft_adapters_match_peft() {
    for (backend, device) in devices() {
        for family in FAMILIES {
            let (model, config) = load(family, &device);
            for kind in ADAPTERS {
                let name = format!("{backend} {family}-{kind}");
                let dir = fixtures().join("adapters").join(format!("{family}-{kind}"));
                let reference = Reference::load_path(&dir.join("reference.safetensors"));
                let adapter = PeftAdapter::load(&dir, config.adapter_shapes(), &device)
                    .unwrap_or_else(|err| panic!("{name}: {err}"));
                let conditioning = adapter.conditioning();
                check_batch(&name, &model, &conditioning, &reference, &device);
                let prompts = real_rows(&reference, "batch.ids", "batch.mask");
                check_generation(&name, &model, &prompts, &conditioning, &reference);
            }
        }
    }
}

#[test]
fn prefix_adapters_are_shaped_by_the_key_value_heads() {
    let device = &devices()[0].1;
    let qwen3 = LlamaConfig::from_file(&fixtures().join("tiny-qwen3/config.json")).unwrap();
    // 2 key/value heads of 16 dimensions: PEFT's `token_dim` 32 and `num_attention_heads` 2.
    let prefix = qwen3.prefix_shape();
    assert_eq!((prefix.d_model, prefix.n_head), (32, 2));
    // A Llama prefix (heads of 8 dimensions) is refused on Qwen3, naming both shapes.
    let llama_prefix = fixtures().join("adapters/tiny-llama-prefix");
    let err = PeftAdapter::load(&llama_prefix, qwen3.adapter_shapes(), device).unwrap_err();
    assert!(matches!(err, AdapterError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("use the base model"), "{err}");
}
