//! What every benchmark starts from: a device in the requested dtype, a GPT-2 of the requested
//! shape with random weights (timing does not depend on their values), and the adapter.

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::FloatDType;
use clap::{Args, ValueEnum};
use peft_core::{
    PeftAdapter, PromptInit, PromptLearningConfig, PromptTuningConfig, PromptTuningInit,
};
use peft_gpt2::{AdaptedGpt2, Gpt2, Gpt2Config};
use peft_runtime::args::at_least_one;
use peft_runtime::{ComputeBackend, DeviceArg};
use serde::Serialize;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Prompt tuning (random init).
    Prompt,
    /// Prefix tuning with PEFT's projection MLP (`prefix_projection=True`).
    Prefix,
    /// Prefix tuning with a direct table (`prefix_projection=False`).
    PrefixDirect,
    /// Every base weight trained, no adapter.
    Full,
    /// The frozen base alone (inference only).
    None,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    Bf16,
    F16,
}

/// The shape of one benchmark: model, method, sizes, device.
#[derive(Args, Debug, Clone)]
pub struct Setup {
    /// A GPT-2 preset (`gpt2`, `gpt2-medium`, ...) or a directory holding a config.json.
    #[arg(long, default_value = "gpt2")]
    pub model: String,
    #[arg(long, value_enum, default_value = "prompt")]
    pub method: Method,
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub batch: usize,
    /// Real tokens per row (the virtual tokens come on top).
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    pub seq: usize,
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    pub virtual_tokens: usize,
    /// Hidden width of the prefix projection MLP; the model width if not given.
    #[arg(long)]
    pub prefix_hidden: Option<usize>,
    /// Float type of every tensor on the device (adapter included).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Dtype,
    #[command(flatten)]
    pub device: DeviceArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Setup {
    pub fn backend(&self) -> ComputeBackend {
        self.device
            .device
            .unwrap_or_else(ComputeBackend::best_available)
    }

    pub fn config(&self) -> Result<Gpt2Config> {
        if let Some(config) = Gpt2Config::preset(&self.model) {
            return Ok(config);
        }
        let path = std::path::Path::new(&self.model).join("config.json");
        Gpt2Config::from_file(&path).with_context(|| {
            format!(
                "`{}` is neither a GPT-2 preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl, \
                 distilgpt2) nor a directory with a config.json",
                self.model
            )
        })
    }

    /// The device, with its default float type set before any tensor exists.
    pub fn device(&self, autodiff: bool) -> Result<Device> {
        let mut device = self.backend().device()?;
        let float = match self.dtype {
            Dtype::F32 => FloatDType::F32,
            Dtype::Bf16 => FloatDType::BF16,
            Dtype::F16 => FloatDType::F16,
        };
        device.configure(float).map_err(|e| {
            anyhow::anyhow!(
                "the {} backend cannot run {:?} tensors: {e:?}",
                self.backend().name(),
                self.dtype
            )
        })?;
        Ok(if autodiff { device.autodiff() } else { device })
    }

    /// GPT-2 with random weights and the adapter `--method` asks for, as `peft-train` builds it.
    pub fn model(&self, config: &Gpt2Config, device: &Device) -> Result<AdaptedGpt2> {
        let total = self.virtual_tokens_used() + self.seq;
        if total > config.n_positions {
            bail!(
                "{} tokens and {} virtual tokens exceed the model's {} positions",
                self.seq,
                self.virtual_tokens_used(),
                config.n_positions
            );
        }
        let base = Gpt2::new(config, device);
        Ok(match self.method {
            Method::Full => AdaptedGpt2::full_finetune(base),
            _ => AdaptedGpt2::new(base, self.adapter(config, device)),
        })
    }

    /// The adapter `--method` asks for, as `peft-train` builds it (none for `full`/`none`).
    pub fn adapter(&self, config: &Gpt2Config, device: &Device) -> Option<PeftAdapter> {
        let shape = config.shape();
        let learning = PromptLearningConfig::new(self.virtual_tokens, shape);
        match self.method {
            Method::Full | Method::None => None,
            Method::Prompt => Some(PeftAdapter::prompt_tuning(
                PromptTuningConfig {
                    base: learning,
                    prompt_tuning_init: PromptTuningInit::Random,
                    prompt_tuning_init_text: None,
                    tokenizer_name_or_path: None,
                },
                PromptInit::Random { std: 1.0 },
                0.0,
                device,
            )),
            Method::Prefix => Some(PeftAdapter::prefix_tuning(
                learning,
                Some(self.prefix_hidden.unwrap_or(config.n_embd)),
                device,
            )),
            Method::PrefixDirect => Some(PeftAdapter::prefix_tuning(learning, None, device)),
        }
    }

    /// Virtual tokens that the method actually adds.
    pub fn virtual_tokens_used(&self) -> usize {
        match self.method {
            Method::Full | Method::None => 0,
            _ => self.virtual_tokens,
        }
    }

    /// `batch` rows of `seq` random token ids.
    pub fn random_rows(&self, vocab: usize) -> Vec<Vec<u32>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        (0..self.batch)
            .map(|_| {
                (0..self.seq)
                    .map(|_| rng.random_range(0..vocab as u32))
                    .collect()
            })
            .collect()
    }
}
