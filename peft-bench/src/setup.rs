//! What every benchmark starts from: a device in the requested dtype, a GPT-2 of the requested
//! shape with random weights (timing does not depend on their values), and the adapter.

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::FloatDType;
use clap::{Args, ValueEnum};
use peft_core::PeftAdapter;
use peft_decoder::Adapted;
use peft_gpt2::{Gpt2, Gpt2Config};
use peft_runtime::args::at_least_one;
use peft_runtime::{ComputeBackend, DeviceArg, Model};
use peft_train::train::{AdapterSpec, BaseModel, Method as TrainedMethod, PromptInitArg};
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
    pub fn model(&self, config: &Gpt2Config, device: &Device) -> Result<Adapted<Model>> {
        let total = self.virtual_tokens_used() + self.seq;
        if total > config.n_positions {
            bail!(
                "{} tokens and {} virtual tokens exceed the model's {} positions",
                self.seq,
                self.virtual_tokens_used(),
                config.n_positions
            );
        }
        let base = Model::Gpt2(Gpt2::new(config, device));
        match self.adapter_spec(config) {
            Some(spec) => spec.model(self.base_model(&base, config)),
            None => Ok(Adapted::new(base, None)),
        }
    }

    /// The adapter `--method` asks for on `base`, as `peft-train` builds it (none for `full`
    /// and `none`).
    pub fn adapter(&self, base: &Model, config: &Gpt2Config) -> Result<Option<PeftAdapter>> {
        match self.adapter_spec(config) {
            Some(spec) => spec.adapter(self.base_model(base, config)),
            None => Ok(None),
        }
    }

    fn base_model<'a>(&'a self, base: &'a Model, config: &Gpt2Config) -> BaseModel<'a> {
        BaseModel {
            model: base,
            shapes: config.shape().into(),
            tokenizer: None,
            name: &self.model,
        }
    }

    /// What `peft-train train` would be asked for to build `--method`'s adapter (nothing for
    /// the frozen base).
    fn adapter_spec(&self, config: &Gpt2Config) -> Option<AdapterSpec> {
        let (method, prefix_projection) = match self.method {
            Method::None => return None,
            Method::Full => (TrainedMethod::Full, None),
            Method::Prompt => (TrainedMethod::Prompt, None),
            Method::Prefix => (
                TrainedMethod::Prefix,
                Some(self.prefix_hidden.unwrap_or(config.n_embd)),
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
