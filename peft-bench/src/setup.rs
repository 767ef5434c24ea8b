//! What every benchmark starts from: a device in the requested dtype, a GPT-2 of the requested
//! shape with random weights (timing does not depend on their values), and the adapter.

use anyhow::{Result, bail};
use burn::prelude::*;
use clap::{Args, ValueEnum};
use peft_core::PeftAdapter;
use peft_decoder::Adapted;
use peft_decoder::precision::cast_floats;
use peft_gpt2::Gpt2Config;
use peft_llama::LlamaConfig;
use peft_runtime::args::at_least_one;
use peft_runtime::{ComputeBackend, DeviceArg, Model, ModelConfig};
use peft_train::train::{AdapterSpec, BaseModel, Method as TrainedMethod, PromptInitArg};
use serde::Serialize;

/// The Llama-family shapes the PEFT reference benchmarks too.
const LLAMA_PRESETS: &str = include_str!("../../scripts/reference/llama_presets.json");

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

/// The shape of one benchmark: model, method, sizes, device.
#[derive(Args, Debug, Clone)]
pub struct Setup {
    /// A preset (`gpt2`, `gpt2-medium`, ..., `smollm2-135m`, `llama-3.2-1b`) or a directory
    /// holding a config.json of either family.
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
    #[command(flatten)]
    pub device: DeviceArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How attention runs where the backend has the fused operation (flex, ndarray, LibTorch):
    /// `decomposed` measures what Burn's own attention gives, for comparison.
    #[arg(long, value_enum, default_value = "fused")]
    pub attention: Fusion,
    /// How GPT-2's LayerNorms and GELU run where the backend has the fused operations:
    /// `decomposed` measures Burn's element-wise forms, for comparison.
    #[arg(long, value_enum, default_value = "fused")]
    pub layers: Fusion,
}

/// Whether an operation peft-decoder fuses (`fused_attention`, `fused_layers`) runs fused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// One operation with its own backward.
    Fused,
    /// Burn's separate element-wise operations and matrix products, differentiated op by op.
    Decomposed,
}

impl Setup {
    pub fn backend(&self) -> ComputeBackend {
        self.device
            .device
            .unwrap_or_else(ComputeBackend::best_available)
    }

    /// The model's shape: a GPT-2 preset, a Llama-family preset of
    /// `scripts/reference/llama_presets.json` (the PEFT reference reads the same file), or a
    /// directory's `config.json` of either family.
    pub fn config(&self) -> Result<ModelConfig> {
        if let Some(config) = Gpt2Config::preset(&self.model) {
            return Ok(ModelConfig::Gpt2(config));
        }
        let presets: serde_json::Value = serde_json::from_str(LLAMA_PRESETS)?;
        if let Some(preset) = presets.get(&self.model) {
            let config = LlamaConfig::from_json(&preset.to_string())
                .map_err(|message| anyhow::anyhow!("preset `{}`: {message}", self.model))?;
            return Ok(ModelConfig::Llama(config));
        }
        let dir = std::path::Path::new(&self.model);
        if !dir.join("config.json").is_file() {
            bail!(
                "`{}` is neither a preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, \
                 smollm2-135m, llama-3.2-1b) nor a directory with a config.json",
                self.model
            );
        }
        ModelConfig::from_dir(dir)
    }

    /// The device, with its default float type set before any tensor exists.
    pub fn device(&self, autodiff: bool) -> Result<Device> {
        peft_decoder::attention::set_fused_attention(self.attention == Fusion::Fused);
        peft_decoder::fused_layers::set_fused_layers(self.layers == Fusion::Fused);
        self.device.open(autodiff)
    }

    /// GPT-2 with random weights and the adapter `--method` asks for, as `peft-train` builds it.
    pub fn model(&self, config: &ModelConfig, device: &Device) -> Result<Adapted<Model>> {
        let total = self.virtual_tokens_used() + self.seq;
        if total > config.n_positions() {
            bail!(
                "{} tokens and {} virtual tokens exceed the model's {} positions",
                self.seq,
                self.virtual_tokens_used(),
                config.n_positions()
            );
        }
        let base = self.random_base(config, device);
        match self.adapter_spec(config) {
            Some(spec) => spec.model(self.base_model(&base, config)),
            None => Ok(Adapted::new(base, None)),
        }
    }

    /// A model of `config`'s shape with random weights, stored as `peft-train` loads one: in
    /// `--dtype`, except for full fine-tuning, which trains f32 weights under a half-precision
    /// forward pass.
    pub fn random_base(&self, config: &ModelConfig, device: &Device) -> Model {
        let weights = self.device.dtype.of_weights(self.method == Method::Full);
        cast_floats(config.random_model(device), weights.dtype())
    }

    /// The adapter `--method` asks for on `base`, as `peft-train` builds it (none for `full`
    /// and `none`).
    pub fn adapter(&self, base: &Model, config: &ModelConfig) -> Result<Option<PeftAdapter>> {
        match self.adapter_spec(config) {
            Some(spec) => spec.adapter(self.base_model(base, config)),
            None => Ok(None),
        }
    }

    fn base_model<'a>(&'a self, base: &'a Model, config: &ModelConfig) -> BaseModel<'a> {
        BaseModel {
            model: base,
            shapes: config.adapter_shapes(),
            tokenizer: None,
            name: &self.model,
            precision: self.device.dtype,
            backend: self.device.backend(),
        }
    }

    /// What `peft-train train` would be asked for to build `--method`'s adapter (nothing for
    /// the frozen base).
    fn adapter_spec(&self, config: &ModelConfig) -> Option<AdapterSpec> {
        let (method, prefix_projection) = match self.method {
            Method::None => return None,
            Method::Full => (TrainedMethod::Full, None),
            Method::Prompt => (TrainedMethod::Prompt, None),
            Method::Prefix => (
                TrainedMethod::Prefix,
                Some(self.prefix_hidden.unwrap_or(config.hidden_size())),
            ),
            Method::PrefixDirect => (TrainedMethod::Prefix, None),
        };
        Some(AdapterSpec {
            method,
            num_virtual_tokens: self.virtual_tokens,
            prompt_init: PromptInitArg::Random,
            prefix_projection,
            ..AdapterSpec::default()
        })
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
