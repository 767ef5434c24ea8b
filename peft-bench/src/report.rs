//! One benchmark's result as a JSON line, in the schema `scripts/reference/bench_peft.py`
//! prints too, so `cargo xtask bench` can put both side by side.

use std::time::Duration;

use serde::Serialize;

use crate::setup::{Fusion, Method, Setup};
use crate::train::OptimizerKind;

#[derive(Debug, Serialize)]
pub struct Record {
    /// `peft-rs` here, `hf-peft` from the Python reference.
    pub implementation: &'static str,
    pub mode: &'static str,
    pub backend: String,
    pub model: String,
    pub method: Method,
    pub batch: usize,
    pub seq: usize,
    pub virtual_tokens: usize,
    /// The base model's float type (`--dtype`; the adapter is f32 in every case).
    pub dtype: &'static str,
    /// Fused or decomposed attention (peft-rs only; the reference always runs PyTorch's SDPA).
    pub attention: Fusion,
    /// Fused or decomposed LayerNorm and GELU (peft-rs only).
    pub layers: Fusion,
    pub threads: usize,
    pub trainable_params: usize,
    pub timed_steps: usize,
    pub step_ms_median: f64,
    pub step_ms_min: f64,
    pub step_ms_max: f64,
    /// Training: real tokens (batch × seq) per second of median step. Inference: decoded
    /// tokens per second.
    pub tokens_per_s: f64,
    /// Inference only: prompt tokens per second of the prefill pass.
    pub prefill_tokens_per_s: Option<f64>,
    pub new_tokens: Option<usize>,
    /// Peak resident memory of the whole process (Linux `VmHWM`), MiB.
    pub peak_rss_mib: f64,
    /// Peak device memory where the backend reports it (the Python reference on CUDA), MiB.
    pub device_peak_mib: Option<f64>,
    /// Training: the loss of the first step (before any update) and of the last, to check that
    /// variants of one setup (fused or decomposed, one backend or another) compute the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_loss: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_loss: Option<f32>,
    /// Training: which AdamW updated the parameters (`fused`, what `peft-train` runs, or
    /// `burn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerKind>,
    /// Training with `--time-phases`: the median time per step of the forward pass with the
    /// loss, of the backward pass and of the optimizer's update, each alone, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_ms_median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backward_ms_median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer_ms_median: Option<f64>,
    /// Mixed-adapter mode: the same batch with one adapter for every row, tokens/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub single_adapter_tokens_per_s: Option<f64>,
    /// Mixed-adapter mode: the same requests run as one batch per adapter, tokens/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_at_a_time_tokens_per_s: Option<f64>,
}

impl Record {
    pub fn new(mode: &'static str, setup: &Setup, trainable_params: usize) -> Self {
        Self {
            implementation: "peft-rs",
            mode,
            backend: setup.backend().name().to_string(),
            model: setup.model.clone(),
            method: setup.method,
            batch: setup.batch,
            seq: setup.seq,
            virtual_tokens: setup.virtual_tokens_used(),
            dtype: setup.device.dtype.name(),
            attention: setup.attention,
            layers: setup.layers,
            threads: worker_threads(),
            trainable_params,
            timed_steps: 0,
            step_ms_median: 0.0,
            step_ms_min: 0.0,
            step_ms_max: 0.0,
            tokens_per_s: 0.0,
            prefill_tokens_per_s: None,
            new_tokens: None,
            peak_rss_mib: 0.0,
            device_peak_mib: None,
            first_loss: None,
            last_loss: None,
            optimizer: None,
            forward_ms_median: None,
            backward_ms_median: None,
            optimizer_ms_median: None,
            single_adapter_tokens_per_s: None,
            one_at_a_time_tokens_per_s: None,
        }
    }

    /// Fills the step statistics from the timed steps, with `tokens` processed per step.
    pub fn set_steps(&mut self, steps: &[Duration], tokens: usize) {
        let mut ms: Vec<f64> = steps.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        self.timed_steps = ms.len();
        self.step_ms_median = median(&ms);
        self.step_ms_min = ms.first().copied().unwrap_or(0.0);
        self.step_ms_max = ms.last().copied().unwrap_or(0.0);
        self.tokens_per_s = tokens as f64 / (self.step_ms_median / 1e3);
    }

    pub fn finish(mut self) -> Self {
        self.peak_rss_mib = peak_rss_mib().unwrap_or(f64::NAN);
        self
    }
}

/// Median of sorted values.
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The CPU backends' thread pool size (rayon's: `RAYON_NUM_THREADS` or every core).
pub fn worker_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The process's peak resident set size, as the kernel counts it (the same figure as
/// Python's `resource.getrusage(...).ru_maxrss`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
