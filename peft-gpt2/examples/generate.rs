//! Greedy generation from a GPT-2 checkpoint: a local directory or a hub id.
//!
//! `cargo run --release -p peft-gpt2 --example generate -- [MODEL] [PROMPT] [MAX_NEW_TOKENS]`
//!
//! MODEL defaults to the tiny random GPT-2 in `fixtures/tiny-gpt2`, so this runs offline; its
//! text is gibberish by design (random weights). With `gpt2` (cached or online) it is real.

use anyhow::{Context, Result};
use peft_core::Conditioning;
use peft_gpt2::{GenerationConfig, Gpt2Tokenizer, generate, load_pretrained};
use peft_runtime::ComputeBackend;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let default_model = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-gpt2");
    let model_name = args.next().unwrap_or_else(|| default_model.to_string());
    let prompt = args
        .next()
        .unwrap_or_else(|| "The Eagle is a coffee shop".to_string());
    let max_new_tokens: usize = match args.next() {
        Some(n) => n.parse().context("MAX_NEW_TOKENS must be a number")?,
        None => 20,
    };

    let backend = ComputeBackend::best_available();
    let device = backend.device()?;
    let (model, config, files) = load_pretrained(&model_name, &device)?;
    let tokenizer = Gpt2Tokenizer::from_dir(&files.dir)?;
    let prompt_ids = tokenizer.encode(&prompt)?;
    let generation = GenerationConfig::greedy(max_new_tokens, config.eos_token_id);
    let started = std::time::Instant::now();
    let output = generate(&model, &[prompt_ids], &Conditioning::none(), &generation)?;
    println!("{prompt}{}", tokenizer.decode(&output[0])?);
    eprintln!(
        "{} new tokens in {:.2?} on {backend} ({} parameters, from {})",
        output[0].len(),
        started.elapsed(),
        config.num_params(),
        files.dir.display()
    );
    Ok(())
}
