//! The demo's base model: a small GPT-2 pretrained on generated restaurant descriptions.
//!
//! It is pretrained once by `cargo xtask demo-base` (which runs [`pretrain`]) and shipped in
//! the repository, compiled into the binary, so that the demo needs no network and no
//! pretraining time: [`materialise`] writes it out as an ordinary Hugging Face checkpoint
//! directory that every command can load.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use peft_gpt2::tokenizer::END_OF_TEXT;
use peft_gpt2::{Gpt2, Gpt2Config, save_pretrained};
use peft_runtime::{ComputeBackend, DeviceArg};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::corpus::Restaurant;
use super::write_jsonl;
use crate::train::{Method, Schedule, TrainArgs, TrainSettings};

/// The shape of the base model.
pub struct BaseShape {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
}

pub const SHAPE: BaseShape = BaseShape {
    vocab_size: 2048,
    n_positions: 256,
    n_embd: 256,
    n_layer: 4,
    n_head: 4,
};

/// Pretrains the base model from scratch into `dir`: a byte-level BPE tokenizer trained on the
/// corpus, then one pass of language modelling over `texts` generated documents.
pub fn pretrain(dir: &Path, texts: usize, device: &DeviceArg) -> Result<()> {
    ensure!(
        texts >= 1000,
        "pretraining needs at least 1000 texts, got {texts}"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let work = dir.join("pretraining");
    let mut rng = StdRng::seed_from_u64(11);
    let documents: Vec<String> = (0..texts).map(|_| document(&mut rng)).collect();
    let valid = (documents.len() / 50).max(100);
    let (train_texts, valid_texts) = documents.split_at(documents.len() - valid);

    let init = work.join("init");
    let tokenizer = train_tokenizer(&documents, SHAPE.vocab_size)?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let mut config = Gpt2Config::new(
        vocab_size,
        SHAPE.n_positions,
        SHAPE.n_embd,
        SHAPE.n_layer,
        SHAPE.n_head,
    );
    // Plenty of generated data and one pass over it: dropout would only slow learning.
    config.resid_pdrop = 0.0;
    config.embd_pdrop = 0.0;
    config.attn_pdrop = 0.0;
    config.eos_token_id = 0;
    config.bos_token_id = 0;
    let backend = device.device.unwrap_or_else(ComputeBackend::best_available);
    let init_device = backend.device()?;
    init_device.seed(7);
    save_pretrained(&Gpt2::new(&config, &init_device), &config, &init)?;
    tokenizer
        .save(init.join("tokenizer.json"), false)
        .map_err(|err| anyhow::anyhow!("cannot save the tokenizer: {err}"))?;

    let train_file = work.join("corpus-train.jsonl");
    write_jsonl(&train_file, train_texts.iter().map(|t| ended(t)))?;
    let valid_file = work.join("corpus-valid.jsonl");
    write_jsonl(&valid_file, valid_texts.iter().map(|t| ended(t)))?;
    let run_dir = work.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let args = TrainArgs {
        model: init.to_string_lossy().into_owned(),
        data: train_file,
        valid_data: Some(valid_file),
        output_dir: run_dir,
        adapter: crate::train::AdapterSpec {
            method: Method::Full,
            ..Default::default()
        },
        settings: TrainSettings {
            epochs: 1,
            // Small batches: more steps from the same text, and copying takes steps to learn.
            batch_size: 8,
            lr: 2e-3,
            schedule: Schedule::Cosine,
            warmup_steps: 100,
            grad_clip: Some(1.0),
            overlong: crate::data::Overlong::Truncate,
            ..TrainSettings::default()
        },
        no_token_cache: true,
        resume: false,
        device: device.clone(),
    };
    let trained = super::train_to_end(&args)?;
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(trained.join(file), dir.join(file))
            .with_context(|| format!("copying {file} into {}", dir.display()))?;
    }
    println!("the demo's base model is in {}", dir.display());
    Ok(())
}

/// A pretraining example: the document and then end of text, as GPT-2 separates its
/// documents. A base that never saw end of text as a target gives it no probability
/// anywhere, and an adapter trained on completions that end with it cannot raise it from
/// there: the prefix-tuned model kept writing to the token limit.
fn ended(document: &str) -> serde_json::Value {
    json!({ "text": format!("{document}{END_OF_TEXT}") })
}

/// One document of the pretraining corpus, about one restaurant. Each part teaches the base
/// model to say again what it has read, the skill that data-to-text and the food question
/// steer it to: half start with a guide's entry listing the values, 70% of the restaurants are
/// described twice in other words, and 80% of the documents end with questions answered from
/// what the text said. With questions in 40% of the documents, three pretraining runs (with
/// and without end of text, guide entries in 30% or 50%) answered their own `Q: What food
/// does X serve?` for 92%, 12% and 33% of 40 held-out descriptions: whether copying emerged
/// in one pass was luck. With questions in 80%, runs at learning rates 2e-3 and 3e-3 both
/// answered all 40.
///
/// A document is one training example, never packed with others: with one restaurant in
/// view, "say the cuisine again" is a matter of finding the one cuisine in the context, which
/// a small model learns in a few thousand steps; with several, it must also work out which is
/// the current one, and within the same budget it learned neither.
fn document(rng: &mut StdRng) -> String {
    use rand::Rng;
    let restaurant = Restaurant::random(rng);
    let share = 0.5 + 0.5 * rng.random::<f64>();
    let meaning = restaurant.meaning(rng, share);
    let mut parts = Vec::new();
    if rng.random_bool(0.5) {
        parts.push(meaning.guide_entry(rng));
    }
    parts.push(meaning.varied_text(rng));
    if rng.random_bool(0.7) {
        parts.push(meaning.restated(rng).varied_text(rng));
    }
    if rng.random_bool(0.8) {
        let how_many = rng.random_range(1..4);
        parts.extend(meaning.questions(rng, how_many));
    }
    parts.join("\n")
}

/// A GPT-2-style byte-level BPE tokenizer (end of text is id 0) trained on `texts`.
fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<Tokenizer> {
    let end_of_text = AddedToken::from(END_OF_TEXT, true);
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![end_of_text])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    // GPT-2's settings: no space added before the text, offsets trimmed.
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        .with_pre_tokenizer(Some(byte_level))
        .with_decoder(Some(byte_level))
        .with_post_processor(Some(byte_level));
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|err| anyhow::anyhow!("training the tokenizer: {err}"))?;
    Ok(tokenizer)
}

/// Where the shipped base model is written out under the demo's output directory.
fn base_dir(out: &Path) -> PathBuf {
    out.join("base")
}

/// How many generated documents the shipped base model was pretrained on: `cargo xtask
/// demo-base` rebuilds it from this many.
pub const PRETRAIN_TEXTS: usize = 24_000;

/// What the report says the base model is.
pub fn description() -> String {
    format!(
        "the demo's GPT-2 ({} layers, width {}), pretrained on {} generated documents about restaurants",
        SHAPE.n_layer,
        SHAPE.n_embd,
        peft_core::params::thousands(PRETRAIN_TEXTS)
    )
}

/// The shipped base model's files, compiled into the binary.
const SHIPPED: [(&str, &[u8]); 3] = [
    ("config.json", include_bytes!("../../demo-base/config.json")),
    (
        "tokenizer.json",
        include_bytes!("../../demo-base/tokenizer.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../../demo-base/model.safetensors"),
    ),
];

/// Writes the shipped base model out under `out` (once: a directory whose files already hold
/// these bytes is reused) and returns its directory.
pub fn materialise(out: &Path) -> Result<PathBuf> {
    let dir = base_dir(out);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes) in SHIPPED {
        let path = dir.join(name);
        let current = std::fs::read(&path).ok();
        if current.as_deref() != Some(bytes) {
            peft_runtime::write_atomically(&path, bytes)?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peft_core::Conditioning;
    use peft_gpt2::{GenerationConfig, generate};
    use peft_runtime::LoadedModel;

    #[test]
    fn a_pretraining_example_ends_with_end_of_text() {
        let mut rng = StdRng::seed_from_u64(3);
        let documents: Vec<String> = (0..200).map(|_| document(&mut rng)).collect();
        let tokenizer = train_tokenizer(&documents, 400).unwrap();
        let example = ended(&documents[0]);
        let text = example["text"].as_str().unwrap();
        let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        let end_of_text = tokenizer.token_to_id(END_OF_TEXT).unwrap();
        assert_eq!(end_of_text, 0);
        assert_eq!(ids.last(), Some(&end_of_text));
        assert_eq!(ids.iter().filter(|&&id| id == end_of_text).count(), 1);
    }

    #[test]
    fn the_shipped_base_loads_and_writes_a_restaurant_description() {
        let out = tempfile::tempdir().unwrap();
        let dir = materialise(out.path()).unwrap();
        // A second call finds the files in place and leaves them.
        let written = std::fs::metadata(dir.join("model.safetensors"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(materialise(out.path()).unwrap(), dir);
        let again = std::fs::metadata(dir.join("model.safetensors"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(written, again);

        let loaded =
            LoadedModel::load(&dir.to_string_lossy(), &DeviceArg::default(), false).unwrap();
        let tokenizer = loaded.tokenizer().unwrap();
        assert!(tokenizer.vocab_size() > 1000);
        let prompt = tokenizer.encode("There is a cheap pub called").unwrap();
        let config = GenerationConfig::greedy(24, tokenizer.eos_id());
        let output = generate(&loaded.model, &[prompt], &Conditioning::none(), &config).unwrap();
        let text = tokenizer.decode(&output[0]).unwrap();
        // The pretraining corpus's phrasing: a name, then what the pub serves.
        assert!(text.starts_with(" The "), "{text}");
        assert!(text.contains(" that serves "), "{text}");

        // What the tasks steer it to: saying again what it has read. Asked in the corpus's
        // own words, it names the cuisine of the description, not a common one.
        for food in ["Thai", "Greek", "Japanese", "Spanish"] {
            let prompt = tokenizer
                .encode(&format!(
                    "The Quiet Heron serves {food} food. It is a pub in the riverside.\n\
                     Q: What food does The Quiet Heron serve? A:"
                ))
                .unwrap();
            let config = GenerationConfig::greedy(1, tokenizer.eos_id());
            let output =
                generate(&loaded.model, &[prompt], &Conditioning::none(), &config).unwrap();
            assert_eq!(tokenizer.decode(&output[0]).unwrap(), format!(" {food}"));
        }
        // And it ends the document it goes on writing, as GPT-2 does, with end of text.
        let document = tokenizer
            .encode(
                "The Quiet Heron serves Thai food. It is a pub in the riverside.\n\
                 Q: What food does The Quiet Heron serve? A: Thai.",
            )
            .unwrap();
        let config = GenerationConfig::greedy(64, tokenizer.eos_id());
        let output = generate(&loaded.model, &[document], &Conditioning::none(), &config).unwrap();
        let text = tokenizer.decode(&output[0]).unwrap();
        assert_eq!(output[0].last(), Some(&tokenizer.eos_id()), "{text}");
    }
}
