//! The language-modelling loss alone, forward and backward, as the training step calls it
//! (`peft_decoder::loss::fused_lm_loss`): the LM head's products and the cross-entropy over the
//! vocabulary, chunk by chunk (of the device's size or `--chunk-rows`), with the fused
//! cross-entropy or Burn's tensor operations.

use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Args;
use peft_decoder::fused_cross_entropy::set_fused_cross_entropy;
use peft_decoder::loss::{LossTargets, fused_lm_loss_in_chunks, loss_chunk_rows};
use peft_runtime::DeviceArg;
use peft_runtime::args::at_least_one;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::attention::dtype_name;
use crate::report::{median, peak_rss_mib, worker_threads};
use crate::setup::Fusion;

#[derive(Args, Debug, Clone)]
pub struct LossBench {
    /// Positions that predict a label (4 × 128 for the training benchmark's default batch).
    #[arg(long, default_value_t = 512, value_parser = at_least_one)]
    pub rows: usize,
    /// The model's width (GPT-2 small: 768).
    #[arg(long, default_value_t = 768, value_parser = at_least_one)]
    pub width: usize,
    /// The vocabulary (GPT-2: 50,257).
    #[arg(long, default_value_t = 50_257, value_parser = at_least_one)]
    pub vocab: usize,
    /// The head's gradient too, as full fine-tuning trains it.
    #[arg(long)]
    pub train_head: bool,
    /// Where the backend has the fused cross-entropy (flex, ndarray, LibTorch): fused or Burn's
    /// tensor operations.
    #[arg(long, value_enum, default_value = "fused")]
    pub cross_entropy: Fusion,
    /// Rows of logits computed at once; the training step's choice for the device if not given
    /// (`peft_decoder::loss::loss_chunk_rows`).
    #[arg(long, value_parser = at_least_one)]
    pub chunk_rows: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Untimed calls first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    pub calls: usize,
}

#[derive(Debug, Serialize)]
pub struct LossRecord {
    pub implementation: &'static str,
    pub mode: &'static str,
    pub backend: String,
    pub dtype: String,
    pub cross_entropy: Fusion,
    pub chunk_rows: usize,
    pub rows: usize,
    pub width: usize,
    pub vocab: usize,
    pub train_head: bool,
    pub threads: usize,
    pub timed_calls: usize,
    /// The loss and the gradients of the hidden states (and of the head, if trained).
    pub training_ms_median: f64,
    /// The last call's loss: the same for both cross-entropies, to rounding.
    pub loss: f32,
    pub peak_rss_mib: f64,
}

pub fn run(args: &LossBench) -> Result<LossRecord> {
    set_fused_cross_entropy(args.cross_entropy == Fusion::Fused);
    let device = args.device.open(true)?;
    device.seed(args.seed);
    let sync = || {
        device
            .sync()
            .map_err(|e| anyhow::anyhow!("device error: {e:?}"))
    };
    // The activations and the head in `--dtype`, as a model in that type gives them.
    let dtype = args.device.dtype.dtype();
    let hidden = Tensor::<3>::random(
        [1, args.rows + 1, args.width],
        Distribution::Normal(0.0, 1.0),
        &device,
    )
    .cast(dtype)
    .require_grad();
    let mut head = Tensor::<2>::random(
        [args.vocab, args.width],
        Distribution::Normal(0.0, 0.1),
        &device,
    )
    .cast(dtype);
    if args.train_head {
        head = head.require_grad();
    }
    // One row of labels; the first has no position before it to predict it.
    let mut rng = StdRng::seed_from_u64(args.seed);
    let labels: Vec<i64> = (0..=args.rows)
        .map(|_| rng.random_range(0..args.vocab as i64))
        .collect();
    let targets =
        LossTargets::from_rows([labels.as_slice()]).predicted_labels(args.rows + 1, 0, &device);

    let chunk_rows = args
        .chunk_rows
        .unwrap_or_else(|| loss_chunk_rows(&device, args.vocab));
    let mut training_ms = Vec::with_capacity(args.calls);
    let mut loss = f32::NAN;
    for call in 0..args.warmup + args.calls {
        sync()?;
        let started = Instant::now();
        let value = fused_lm_loss_in_chunks(
            hidden.clone(),
            head.clone(),
            args.train_head,
            &targets,
            chunk_rows,
        );
        let grads = value.clone().backward();
        sync()?;
        let elapsed = started.elapsed();
        drop(grads);
        loss = value.into_scalar::<f32>();
        if call >= args.warmup {
            training_ms.push(elapsed.as_secs_f64() * 1e3);
        }
    }
    training_ms.sort_by(f64::total_cmp);
    Ok(LossRecord {
        implementation: "peft-rs",
        mode: "loss",
        backend: args.device.backend().name().to_string(),
        dtype: dtype_name(hidden.dtype()),
        cross_entropy: args.cross_entropy,
        chunk_rows,
        rows: args.rows,
        width: args.width,
        vocab: args.vocab,
        train_head: args.train_head,
        threads: worker_threads(),
        timed_calls: args.calls,
        training_ms_median: median(&training_ms),
        loss,
        peak_rss_mib: peak_rss_mib().unwrap_or(f64::NAN),
    })
}
