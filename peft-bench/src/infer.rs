//! Timed batched generation with an adapter: prefill (the prompt in one pass) and decode
//! (one token per step with the KV cache), through `peft-gpt2`'s `generate`.

use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use clap::Args;
use peft_core::Conditioning;
use peft_gpt2::{GenerationConfig, Sampling, generate};
use peft_runtime::args::at_least_one;

use crate::report::{Record, median};
use crate::setup::Setup;

#[derive(Args, Debug, Clone)]
pub struct InferBench {
    #[command(flatten)]
    pub setup: Setup,
    /// Tokens generated per row (EOS does not stop it early).
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub new_tokens: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub repeats: usize,
}

pub fn run(args: &InferBench) -> Result<Record> {
    let setup = &args.setup;
    let config = setup.config()?;
    let device = setup.device(false)?;
    device.seed(setup.seed);
    let model = setup.model(&config, &device)?;
    let trainable = model.adapter.as_ref().map_or(0, |a| a.num_params());
    let conditioning = Conditioning::of(model.adapter.as_ref());
    let prompts = setup.random_rows(config.vocab_size());
    let run_for = |new_tokens: usize| -> Result<f64> {
        let generation = GenerationConfig {
            max_new_tokens: new_tokens,
            sampling: Sampling::Greedy,
            seed: setup.seed,
            eos_id: None,
            pad_id: 0,
            use_cache: true,
        };
        let started = Instant::now();
        generate(&model.base, &prompts, &conditioning, &generation)?;
        Ok(started.elapsed().as_secs_f64())
    };
    let (mut prefill, mut full) = (Vec::new(), Vec::new());
    for repeat in 0..args.warmup + args.repeats {
        let (p, f) = (run_for(1)?, run_for(args.new_tokens.max(2))?);
        if repeat >= args.warmup {
            prefill.push(p);
            full.push(f);
        }
    }
    prefill.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    let (prefill_s, full_s) = (median(&prefill), median(&full));
    let new_tokens = args.new_tokens.max(2);
    let steps: Vec<std::time::Duration> = full
        .iter()
        .map(|&s| std::time::Duration::from_secs_f64(s))
        .collect();
    let mut record = Record::new("infer", setup, trainable);
    record.set_steps(&steps, setup.batch * new_tokens);
    // Decode rate: the tokens after the first, over the time after the prefill.
    record.tokens_per_s =
        (setup.batch * (new_tokens - 1)) as f64 / (full_s - prefill_s).max(f64::EPSILON);
    record.prefill_tokens_per_s = Some((setup.batch * setup.seq) as f64 / prefill_s);
    record.new_tokens = Some(new_tokens);
    Ok(record.finish())
}
