//! GPT-2 on Burn against Hugging Face `transformers` on the same weights and inputs
//! (fixtures made by `scripts/reference/make_fixtures.py`), on every compiled-in CPU backend.

mod common;

use burn::prelude::*;
use common::*;
use peft_core::Conditioning;
use peft_gpt2::loss::{IGNORE_INDEX, mean_loss, per_example_loss};
use peft_gpt2::{ForwardInput, GenerationConfig, Gpt2, Gpt2Tokenizer, generate, load_pretrained};

const LOGIT_TOLERANCE: f32 = 1e-4;
const LOSS_TOLERANCE: f32 = 1e-5;

/// Every way the fixtures store a model, with the reference it must reproduce.
const CHECKPOINTS: [(&str, &str); 4] = [
    ("tiny-gpt2", "tiny-gpt2"),                 // hub naming, safetensors
    ("tiny-gpt2-lmhead", "tiny-gpt2"),          // `transformer.` prefix
    ("tiny-gpt2-bin", "tiny-gpt2"),             // pytorch_model.bin
    ("tiny-gpt2-variant", "tiny-gpt2-variant"), // n_inner, epsilon, inverse-layer scaling
];

fn load(dir: &str, device: &Device) -> Gpt2 {
    let path = fixtures().join(dir);
    load_pretrained(path.to_str().unwrap(), device)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .0
}

#[test]
fn single_sequence_logits_and_loss_match() {
    for (backend, device) in devices() {
        for (dir, reference) in CHECKPOINTS {
            let reference = Reference::load(reference);
            let model = load(dir, &device);
            let ids = reference.int_tensor("single.ids", &device);
            let logits = model.forward_ids(ids.clone(), None);
            let expected = reference.get("single.logits");
            assert_eq!(logits.dims().to_vec(), expected.shape);
            let diff = max_abs_diff(&to_vec(logits.clone()), &expected.floats, None);
            println!("{backend} {dir}: single logits max |diff| {diff:.2e}");
            assert!(
                diff <= LOGIT_TOLERANCE,
                "{backend} {dir}: logits differ by {diff}"
            );

            let loss = to_vec1(mean_loss(logits, ids))[0];
            let expected = reference.get("single.loss").floats[0];
            assert!(
                (loss - expected).abs() <= LOSS_TOLERANCE,
                "{backend} {dir}: loss {loss} vs {expected}"
            );
        }
    }
}

#[test]
fn right_padded_batch_matches_logits_and_losses() {
    for (backend, device) in devices() {
        for model_name in ["tiny-gpt2", "tiny-gpt2-variant"] {
            let reference = Reference::load(model_name);
            let model = load(model_name, &device);
            let ids = reference.int_tensor("batch.ids", &device);
            let mask = reference.mask_tensor("batch.mask", &device);
            let logits = model.forward_ids(ids.clone(), Some(mask.clone()));
            let vocab = logits.dims()[2];
            let keep = per_logit(&reference.get("batch.mask").ints, vocab);
            let diff = max_abs_diff(
                &to_vec(logits.clone()),
                &reference.get("batch.logits").floats,
                Some(&keep),
            );
            println!("{backend} {model_name}: right-padded logits max |diff| {diff:.2e}");
            assert!(
                diff <= LOGIT_TOLERANCE,
                "{backend} {model_name}: logits differ by {diff}"
            );

            let labels = ids.mask_fill(mask.bool_not(), IGNORE_INDEX);
            let loss = to_vec1(mean_loss(logits.clone(), labels.clone()))[0];
            let expected = reference.get("batch.loss").floats[0];
            assert!(
                (loss - expected).abs() <= LOSS_TOLERANCE,
                "{backend} {model_name}: batch loss {loss} vs {expected}"
            );
            let (losses, _) = per_example_loss(logits, labels);
            let diff = max_abs_diff(
                &to_vec1(losses),
                &reference.get("batch.losses").floats,
                None,
            );
            println!("{backend} {model_name}: per-example loss max |diff| {diff:.2e}");
            assert!(
                diff <= LOSS_TOLERANCE,
                "{backend} {model_name}: per-example losses differ by {diff}"
            );
        }
    }
}

#[test]
fn left_padded_batch_with_generation_positions_matches() {
    for (backend, device) in devices() {
        for model_name in ["tiny-gpt2", "tiny-gpt2-variant"] {
            let reference = Reference::load(model_name);
            let model = load(model_name, &device);
            let hidden = model.forward(
                ForwardInput {
                    embeddings: model.embed_tokens(reference.int_tensor("left.ids", &device)),
                    positions: reference.int_tensor("left.positions", &device),
                    key_mask: Some(reference.mask_tensor("left.mask", &device)),
                    prefix: None,
                },
                None,
            );
            let logits = model.logits(hidden);
            let keep = per_logit(&reference.get("left.mask").ints, logits.dims()[2]);
            let diff = max_abs_diff(
                &to_vec(logits),
                &reference.get("left.logits").floats,
                Some(&keep),
            );
            assert!(
                diff <= LOGIT_TOLERANCE,
                "{backend} {model_name}: logits differ by {diff}"
            );
        }
    }
}

/// The tokens Hugging Face generated after the prompt, up to and including the first EOS.
fn expected_continuations(
    reference: &Reference,
    key: &str,
    prompt_width: usize,
    eos: i64,
) -> Vec<Vec<u32>> {
    reference
        .rows(key)
        .into_iter()
        .map(|row| {
            let mut out = Vec::new();
            for &token in &row[prompt_width..] {
                out.push(token as u32);
                if token == eos {
                    break;
                }
            }
            out
        })
        .collect()
}

#[test]
fn greedy_generation_is_token_identical_with_and_without_cache() {
    for (backend, device) in devices() {
        for model_name in ["tiny-gpt2", "tiny-gpt2-variant"] {
            let reference = Reference::load(model_name);
            let (model, config, _) =
                load_pretrained(fixtures().join(model_name).to_str().unwrap(), &device).unwrap();
            let max_new: usize = reference.metadata["max_new_tokens"].parse().unwrap();
            let eos = config.eos_token_id;
            for (prompt_key, output_key, mask_key) in [
                ("single.ids", "generate.single", None),
                ("left.ids", "generate.left", Some("left.mask")),
            ] {
                let prompt_rows = reference.rows(prompt_key);
                let width = prompt_rows[0].len();
                // Un-pad the prompts: generation pads them again itself.
                let prompts: Vec<Vec<u32>> = match mask_key {
                    Some(mask_key) => prompt_rows
                        .iter()
                        .zip(reference.rows(mask_key))
                        .map(|(row, mask)| {
                            row.iter()
                                .zip(mask)
                                .filter(|(_, m)| *m == 1)
                                .map(|(t, _)| *t as u32)
                                .collect()
                        })
                        .collect(),
                    None => prompt_rows
                        .iter()
                        .map(|r| r.iter().map(|&t| t as u32).collect())
                        .collect(),
                };
                let expected = expected_continuations(&reference, output_key, width, eos as i64);
                for use_cache in [true, false] {
                    let config = GenerationConfig {
                        use_cache,
                        ..GenerationConfig::greedy(max_new, eos)
                    };
                    let got = generate(&model, &prompts, &Conditioning::none(), &config).unwrap();
                    assert_eq!(
                        got, expected,
                        "{backend} {model_name} {output_key} (cache: {use_cache})"
                    );
                }
            }
        }
    }
}

#[test]
fn tokenizer_matches_hugging_face_from_both_file_formats() {
    let dir = fixtures().join("tokenizer");
    let probes: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let from_json = Gpt2Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let from_bpe_files =
        Gpt2Tokenizer::from_vocab_and_merges(&dir.join("vocab.json"), &dir.join("merges.txt"))
            .unwrap();
    for tokenizer in [&from_json, &from_bpe_files] {
        for probe in &probes {
            let text = probe["text"].as_str().unwrap();
            let expected: Vec<u32> = serde_json::from_value(probe["ids"].clone()).unwrap();
            let ids = tokenizer.encode(text).unwrap();
            assert_eq!(ids, expected, "encoding {text:?}");
            assert_eq!(
                tokenizer.decode(&ids).unwrap(),
                probe["decoded"].as_str().unwrap()
            );
        }
        assert_eq!(tokenizer.eos_id(), 0);
    }
}
