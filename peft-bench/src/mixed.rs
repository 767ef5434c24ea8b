//! Serving many adapters from one frozen model: the same requests — one per adapter, every
//! adapter different — generated three ways:
//!
//! - **mixed**: one batch, each row with its own adapter (`generate_mixed`);
//! - **single adapter**: one batch of the same size where every row uses the same adapter
//!   (what a batch costs when adapters do not differ: the upper bound for mixed);
//! - **one at a time**: one batch per adapter, as a server without mixed batches must run them.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use peft_core::Conditioning;
use peft_gpt2::{GenerationConfig, MixedRow, generate, generate_mixed};
use peft_runtime::args::at_least_one;

use crate::report::{Record, median};
use crate::setup::{Method, Setup};

#[derive(Args, Debug, Clone)]
pub struct MixedBench {
    #[command(flatten)]
    pub setup: Setup,
    /// Tokens generated per request (EOS does not stop it early).
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub new_tokens: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub repeats: usize,
}

pub fn run(args: &MixedBench) -> Result<Record> {
    let setup = &args.setup;
    let config = setup.config()?;
    let device = setup.device(false)?;
    device.seed(setup.seed);
    // One adapter per row, alternating prompt and prefix tuning (projected, as trained), with
    // virtual-token counts spread around --virtual-tokens so rows need real alignment.
    let base = setup.random_base(&config, &device);
    let conditionings = (0..setup.batch)
        .map(|row| {
            let mut one = setup.clone();
            one.method = if row % 2 == 0 {
                Method::Prompt
            } else {
                Method::Prefix
            };
            one.virtual_tokens = setup.virtual_tokens + (row % 4) * 2;
            Ok(Conditioning::of(one.adapter(&base, &config)?.as_ref()))
        })
        .collect::<Result<Vec<Conditioning>>>()?;
    let prompts = setup.random_rows(config.vocab_size());
    let generation = GenerationConfig {
        max_new_tokens: args.new_tokens,
        eos_id: None,
        ..GenerationConfig::greedy(args.new_tokens, 0)
    };

    let mixed_rows: Vec<MixedRow<'_>> = prompts
        .iter()
        .zip(&conditionings)
        .map(|(tokens, conditioning)| MixedRow {
            tokens,
            conditioning,
        })
        .collect();
    let mixed = || -> Result<()> {
        generate_mixed(&base, &mixed_rows, &generation)?;
        Ok(())
    };
    let single = || -> Result<()> {
        generate(&base, &prompts, &conditionings[0], &generation)?;
        Ok(())
    };
    let one_at_a_time = || -> Result<()> {
        for (tokens, conditioning) in prompts.iter().zip(&conditionings) {
            generate(
                &base,
                std::slice::from_ref(tokens),
                conditioning,
                &generation,
            )?;
        }
        Ok(())
    };

    let mut seconds: [Vec<f64>; 3] = Default::default();
    for repeat in 0..args.warmup + args.repeats {
        for (i, way) in [&mixed as &dyn Fn() -> Result<()>, &single, &one_at_a_time]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            way()?;
            if repeat >= args.warmup {
                seconds[i].push(started.elapsed().as_secs_f64());
            }
        }
    }
    let tokens = (setup.batch * args.new_tokens) as f64;
    let rate = |s: &mut Vec<f64>| {
        s.sort_by(f64::total_cmp);
        tokens / median(s)
    };
    let steps: Vec<std::time::Duration> = seconds[0]
        .iter()
        .map(|&s| std::time::Duration::from_secs_f64(s))
        .collect();
    let mut record = Record::new("mixed", setup, 0);
    record.set_steps(&steps, setup.batch * args.new_tokens);
    record.new_tokens = Some(args.new_tokens);
    record.single_adapter_tokens_per_s = Some(rate(&mut seconds[1]));
    record.one_at_a_time_tokens_per_s = Some(rate(&mut seconds[2]));
    Ok(record.finish())
}
