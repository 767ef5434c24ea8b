//! The attention operation alone, forward and backward, as the models call it
//! (`peft_decoder::attention::attend`): how the kernels compare without the rest of a training
//! step around them, which on a CPU is mostly matrix products of the linear layers.

use std::time::Instant;

use anyhow::Result;
use burn::nn::DropoutConfig;
use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use clap::{Args, ValueEnum};
use peft_core::LayerKv;
use peft_decoder::attention::{AttentionMask, attend};
use peft_decoder::fused_attention::Masking;
use peft_runtime::DeviceArg;
use peft_runtime::args::{at_least_one, dropout_probability};
use serde::Serialize;

use crate::report::{median, peak_rss_mib, worker_threads};
use crate::setup::Fusion;

#[derive(Args, Debug, Clone)]
pub struct AttentionBench {
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub batch: usize,
    #[arg(long, default_value_t = 12, value_parser = at_least_one)]
    pub heads: usize,
    /// Queries per row (for prompt tuning: the virtual tokens and the real ones).
    #[arg(long, default_value_t = 532, value_parser = at_least_one)]
    pub seq: usize,
    /// Prefix keys and values every query sees before its own (prefix tuning's virtual tokens).
    #[arg(long, default_value_t = 0)]
    pub prefix: usize,
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub head_dim: usize,
    /// What the call is told of its mask (the bias's values are the same in every case).
    #[arg(long, value_enum, default_value = "causal")]
    pub masking: MaskingArg,
    /// Dropout on the attention probabilities (GPT-2 trains with 0.1).
    #[arg(long, default_value_t = 0.0, value_parser = dropout_probability)]
    pub dropout: f64,
    /// Where the backend has the fused operation (flex, ndarray, LibTorch): fused or Burn's
    /// decomposed attention.
    #[arg(long, value_enum, default_value = "fused")]
    pub attention: Fusion,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Untimed calls first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    pub calls: usize,
}

/// How the mask reaches the kernels.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskingArg {
    /// Causal alone, as a batch without padding (or right-padded) gives it: no mask operand on
    /// LibTorch, the hidden keys skipped on the CPU.
    Causal,
    /// Causal and a padding mask that hides nothing more, as a left-padded batch gives it: the
    /// bias is read; the CPU kernel still skips what causality hides.
    Padded,
    /// The bias alone, without structure: every key of every query computed.
    Bias,
}

#[derive(Debug, Serialize)]
pub struct AttentionRecord {
    pub implementation: &'static str,
    pub mode: &'static str,
    pub backend: String,
    /// The operands' float type, read from them.
    pub dtype: String,
    pub attention: Fusion,
    pub masking: MaskingArg,
    pub batch: usize,
    pub heads: usize,
    pub queries: usize,
    pub keys: usize,
    pub head_dim: usize,
    pub dropout: f64,
    pub threads: usize,
    pub timed_calls: usize,
    /// The forward alone, on tensors that track no gradient (inference).
    pub forward_ms_median: f64,
    /// Forward and backward (the gradients of query, keys and values).
    pub training_ms_median: f64,
    pub peak_rss_mib: f64,
}

pub fn run(args: &AttentionBench) -> Result<AttentionRecord> {
    peft_decoder::attention::set_fused_attention(args.attention == Fusion::Fused);
    let device = args.device.open(true)?;
    let sync = || {
        device
            .sync()
            .map_err(|e| anyhow::anyhow!("device error: {e:?}"))
    };
    let (batch, heads, queries, head_dim) = (args.batch, args.heads, args.seq, args.head_dim);
    // Random tensors come in f32: the operands are cast to `--dtype` as the model's activations
    // are.
    let dtype = args.device.dtype.dtype();
    let random = |rows: usize, len: usize| {
        Tensor::<4>::random(
            [rows, heads, len, head_dim],
            Distribution::Normal(0.0, 1.0),
            &device,
        )
        .cast(dtype)
    };
    let tracked = |rows: usize, len: usize| random(rows, len).require_grad();
    let query = tracked(batch, queries);
    let keys = LayerKv::new(tracked(batch, queries), tracked(batch, queries));
    let prefix =
        (args.prefix > 0).then(|| LayerKv::new(tracked(1, args.prefix), tracked(1, args.prefix)));
    let key_mask = || Tensor::<2, Bool>::full([batch, args.prefix + queries], true, &device);
    let mask = match args.masking {
        MaskingArg::Causal => AttentionMask::new(args.prefix, 0, queries, None, &device),
        MaskingArg::Padded => {
            AttentionMask::new(args.prefix, 0, queries, Some(key_mask()), &device)
        }
        MaskingArg::Bias => AttentionMask {
            bias: AttentionMask::new(args.prefix, 0, queries, None, &device).full_bias(queries),
            masking: Masking::Bias,
        },
    };
    let mask = mask.cast(dtype);
    let weights = random(batch, queries);
    let dropout = DropoutConfig::new(args.dropout).init();
    let scale = 1.0 / (head_dim as f64).sqrt();

    let inference = || {
        let inner = |t: &Tensor<4>| t.clone().inner();
        let prefix = prefix
            .as_ref()
            .map(|p| LayerKv::new(inner(&p.key), inner(&p.value)));
        let keys = LayerKv::new(inner(&keys.key), inner(&keys.value));
        let mask = AttentionMask {
            bias: mask.bias.clone().inner(),
            masking: mask.masking,
        };
        attend(
            inner(&query),
            prefix.as_ref(),
            &keys,
            &mask,
            scale,
            &dropout,
        )
    };
    let training = || {
        let output = attend(
            query.clone(),
            prefix.as_ref(),
            &keys,
            &mask,
            scale,
            &dropout,
        );
        (output * weights.clone()).sum().backward()
    };
    let mut forward_ms = Vec::with_capacity(args.calls);
    let mut training_ms = Vec::with_capacity(args.calls);
    for call in 0..args.warmup + args.calls {
        sync()?;
        let started = Instant::now();
        let output = inference();
        sync()?;
        let forward = started.elapsed();
        drop(output);
        let started = Instant::now();
        let grads = training();
        sync()?;
        let both = started.elapsed();
        drop(grads);
        if call >= args.warmup {
            forward_ms.push(forward.as_secs_f64() * 1e3);
            training_ms.push(both.as_secs_f64() * 1e3);
        }
    }
    forward_ms.sort_by(f64::total_cmp);
    training_ms.sort_by(f64::total_cmp);
    Ok(AttentionRecord {
        implementation: "peft-rs",
        mode: "attention",
        backend: args.device.backend().name().to_string(),
        dtype: dtype_name(query.dtype()),
        attention: args.attention,
        masking: args.masking,
        batch,
        heads,
        queries,
        keys: args.prefix + queries,
        head_dim,
        dropout: args.dropout,
        threads: worker_threads(),
        timed_calls: args.calls,
        forward_ms_median: median(&forward_ms),
        training_ms_median: median(&training_ms),
        peak_rss_mib: peak_rss_mib().unwrap_or(f64::NAN),
    })
}

/// A float type as `--dtype` names it.
pub(crate) fn dtype_name(dtype: DType) -> String {
    match dtype {
        DType::F32 => "f32".into(),
        DType::BF16 => "bf16".into(),
        DType::F16 => "f16".into(),
        other => format!("{other:?}"),
    }
}
