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
/// corpus, then one pass of language modelling over `texts` generated descriptions, packed
/// several to an example (as GPT-2's documents are) so that every position the tasks use is
/// trained.
pub fn pretrain(dir: &Path, texts: usize, device: &DeviceArg) -> Result<()> {
    ensure!(
        texts >= 1000,
        "pretraining needs at least 1000 texts, got {texts}"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let work = dir.join("pretraining");
    let mut rng = StdRng::seed_from_u64(11);
    let descriptions: Vec<String> = (0..texts)
        .map(|_| {
            // A quarter of the documents are lists read out twice: the plainest text in which
            // the next token is one read before, which teaches a small model to copy quickly.
            if rand::Rng::random_bool(&mut rng, 0.25) {
                return repeated_list(&mut rng);
            }
            let restaurant = Restaurant::random(&mut rng);
            let share = 0.5 + 0.5 * rand::Rng::random::<f64>(&mut rng);
            let meaning = restaurant.meaning(&mut rng, share);
            let text = meaning.varied_text(&mut rng);
            // Most restaurants are described twice, in other words: a model that predicts
            // the second description must copy what the first one said, which is the skill
            // data-to-text and the food question steer it to.
            if rand::Rng::random_bool(&mut rng, 0.8) {
                let again = meaning.restated(&mut rng).varied_text(&mut rng);
                format!("{text}\n{again}")
            } else {
                text
            }
        })
        .collect();
    let corpus = pack(&descriptions, PACKED_CHARS);
    let valid = (corpus.len() / 50).max(100);
    let (train_texts, valid_texts) = corpus.split_at(corpus.len() - valid);

    let init = work.join("init");
    let tokenizer = train_tokenizer(&descriptions, SHAPE.vocab_size)?;
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
    write_jsonl(
        &train_file,
        train_texts.iter().map(|t| json!({ "text": t })),
    )?;
    let valid_file = work.join("corpus-valid.jsonl");
    write_jsonl(
        &valid_file,
        valid_texts.iter().map(|t| json!({ "text": t })),
    )?;
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

/// "Places to try: A for Greek food, B for ... The same list again: A for Greek food, B ...".
fn repeated_list(rng: &mut StdRng) -> String {
    let len = rand::Rng::random_range(rng, 2..6);
    let items: Vec<String> = (0..len)
        .map(|_| {
            let restaurant = Restaurant::random(rng);
            format!("{} for {} food", restaurant.name, restaurant.food)
        })
        .collect();
    let list = items.join(", ");
    format!("Places to try: {list}.\nThe same list again: {list}.")
}

/// About 160 tokens of this corpus: a packed example stays well inside the 256 positions.
const PACKED_CHARS: usize = 700;

/// Descriptions joined by newlines into examples of at least `chars` characters.
fn pack(descriptions: &[String], chars: usize) -> Vec<String> {
    let mut packed = vec![String::new()];
    for description in descriptions {
        let last = packed.last_mut().expect("starts with one");
        if last.len() >= chars {
            packed.push(description.clone());
        } else {
            if !last.is_empty() {
                last.push('\n');
            }
            last.push_str(description);
        }
    }
    packed
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

/// What the report says the base model is.
pub const DESCRIPTION: &str = "the demo's GPT-2 (4 layers, width 256, 3.7M parameters, \
     1,721-token BPE vocabulary), pretrained on 36,000 generated restaurants' descriptions";

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

        let loaded = LoadedModel::load(&dir.to_string_lossy(), None, false).unwrap();
        let tokenizer = loaded.tokenizer().unwrap();
        assert!(tokenizer.vocab_size() > 1000);
        let prompt = tokenizer.encode("There is a cheap pub called").unwrap();
        let config = GenerationConfig::greedy(24, tokenizer.eos_id());
        let output = generate(&loaded.model, &[prompt], &Conditioning::none(), &config).unwrap();
        let text = tokenizer.decode(&output[0]).unwrap();
        // The pretraining corpus's phrasing: a name, then what the pub serves.
        assert!(text.starts_with(" The "), "{text}");
        assert!(text.contains(" that serves "), "{text}");
    }
}
