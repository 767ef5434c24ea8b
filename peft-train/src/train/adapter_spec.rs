//! What to train: the method, its virtual tokens and how the adapter starts. `peft-train
//! train` reads it from the command line and `peft-bench` builds the same adapters from it.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::{Args, Parser, ValueEnum};
use peft_core::params::thousands;
use peft_core::{
    AdapterModule, AdapterShapes, KindConfig, PeftAdapter, PeftConfig, PrefixReparameterisation,
    PrefixTuningConfig, PromptInit, PromptLearningConfig, PromptTuningConfig, PromptTuningInit,
};
use peft_decoder::{Adapted, Decoder};
use peft_gpt2::Gpt2Tokenizer;
use peft_runtime::args::{at_least_one, dropout_probability, positive};
use peft_runtime::memory::{TRAINING_BYTES_PER_PARAMETER, ensure_host_room};
use peft_runtime::{ComputeBackend, LoadedModel, Model, Precision};
use serde::Serialize;

/// The adapter to train and how it starts.
#[derive(Args, Debug, Clone, Serialize)]
#[command(allow_negative_numbers = true)]
pub struct AdapterSpec {
    #[arg(long, value_enum, default_value = "prompt")]
    pub method: Method,
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    pub num_virtual_tokens: usize,
    /// Prompt tuning init.
    #[arg(long, value_enum, default_value = "sample-vocab")]
    pub prompt_init: PromptInitArg,
    /// Text for `--prompt-init text`.
    #[arg(long)]
    pub prompt_init_text: Option<String>,
    /// Standard deviation for `--prompt-init random`.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub prompt_init_std: f64,
    /// Start from an existing adapter's prompt (transfer).
    #[arg(long)]
    pub prompt_init_from: Option<PathBuf>,
    /// Dropout on the soft prompt during training, in [0, 1).
    #[arg(long, default_value_t = 0.0, value_parser = dropout_probability)]
    pub prompt_dropout: f64,
    /// Prefix tuning through PEFT's reparameterisation MLP of this hidden width.
    #[arg(long, value_parser = at_least_one, conflicts_with = "prefix_layer_projection")]
    pub prefix_projection: Option<usize>,
    /// Prefix tuning through peft-rs's per-layer projection: one embedding of this width, shared
    /// by every layer, mapped to each layer's keys and values by that layer's own linear layer
    /// (d -> 2d). WIDTH is at most the prefix's key/value width d (the model width, or under
    /// grouped-query attention its key/value heads' width); a narrower embedding is projected up
    /// to d first. The adapter saves as a plain PEFT prefix (the computed table, which Python's
    /// peft loads) plus the projection in peft_rs_adapter.safetensors, for resuming.
    #[arg(long, value_name = "WIDTH", value_parser = at_least_one)]
    pub prefix_layer_projection: Option<usize>,
}

impl Default for AdapterSpec {
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            spec: AdapterSpec,
        }
        Defaults::parse_from(["defaults"]).spec
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Soft prompt prepended to the input embeddings.
    Prompt,
    /// Keys and values prepended at every layer.
    Prefix,
    /// Every weight of the model (the baseline adapters are compared with).
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptInitArg {
    Random,
    SampleVocab,
    Text,
}

/// The frozen model an adapter is made for: its weights (a prompt may start from its token
/// embeddings), shape, tokenizer and name (recorded in `adapter_config.json`).
#[derive(Clone, Copy)]
pub struct BaseModel<'a> {
    pub model: &'a Model,
    /// What a prompt and what a prefix must agree with.
    pub shapes: AdapterShapes,
    pub tokenizer: Option<&'a Gpt2Tokenizer>,
    pub name: &'a str,
    /// The float type the forward pass runs in (`--dtype`). The weights are in it too, except
    /// for full fine-tuning, which trains f32 weights.
    pub precision: Precision,
    /// The backend the model runs on: whether a new adapter's memory is the host's.
    pub backend: ComputeBackend,
}

impl<'a> BaseModel<'a> {
    pub fn of(loaded: &'a LoadedModel) -> Self {
        Self {
            model: &loaded.model,
            shapes: loaded.shapes(),
            tokenizer: loaded.tokenizer.as_ref(),
            name: &loaded.name,
            precision: loaded.precision,
            backend: loaded.backend,
        }
    }
}

impl AdapterSpec {
    /// The model to train: the base frozen under a new adapter, or all of it for full
    /// fine-tuning.
    pub fn model(&self, base: BaseModel<'_>) -> Result<Adapted<Model>> {
        Ok(match self.adapter(base)? {
            Some(adapter) => Adapted::new(base.model.clone(), Some(adapter)),
            // The base's weights are f32 here (see `train`): they are what is trained.
            None => {
                let values = base.model.num_params();
                let bytes = values.checked_mul(TRAINING_BYTES_PER_PARAMETER);
                ensure_host_room(base.backend, bytes, || {
                    format!(
                        "--method full: the gradients and AdamW's moments of model `{}`'s {} \
                         parameters",
                        base.name,
                        thousands(values)
                    )
                })?;
                Adapted::full_finetune(base.model.clone()).computing_in(base.precision.dtype())
            }
        })
    }

    /// The positions the adapter takes before each example's tokens (none for full
    /// fine-tuning).
    pub fn virtual_tokens(&self) -> usize {
        match self.method {
            Method::Full => 0,
            Method::Prompt | Method::Prefix => self.num_virtual_tokens,
        }
    }

    /// A new adapter of this spec for `base` (none for full fine-tuning).
    pub fn adapter(&self, base: BaseModel<'_>) -> Result<Option<PeftAdapter>> {
        let p = self.num_virtual_tokens;
        if p == 0 {
            bail!("--num-virtual-tokens must be at least 1");
        }
        let config = |shape| PromptLearningConfig::new(p, shape).for_base_model(base.name);
        let device = base.model.device();
        Ok(match self.method {
            Method::Full => None,
            Method::Prefix => {
                let reparameterisation = self.prefix_reparameterisation();
                let flag = match reparameterisation {
                    PrefixReparameterisation::Direct => "--method prefix".to_string(),
                    PrefixReparameterisation::Mlp { hidden } => {
                        format!("--prefix-projection {hidden}")
                    }
                    PrefixReparameterisation::PerLayer { width } => {
                        format!("--prefix-layer-projection {width}")
                    }
                };
                // The widths are checked against the model here, where they come from the
                // command line, before anything is allocated or trained.
                let prefix =
                    PrefixTuningConfig::new(config(base.shapes.prefix), reparameterisation);
                prefix.check().map_err(|message| {
                    anyhow::anyhow!(
                        "{flag} does not fit model `{}` (its prefix keys and values: {}): \
                         {message}",
                        base.name,
                        base.shapes.prefix
                    )
                })?;
                let values = prefix.trainable_values();
                let bytes = values.and_then(|values| {
                    values.checked_mul(size_of::<f32>() + TRAINING_BYTES_PER_PARAMETER)
                });
                ensure_host_room(base.backend, bytes, || {
                    let values = values.map_or_else(String::new, |n| thousands(n) + " ");
                    format!(
                        "{flag}: the adapter's {values}parameters with their gradients and \
                         AdamW's moments"
                    )
                })?;
                Some(PeftAdapter::prefix_tuning(
                    config(base.shapes.prefix),
                    reparameterisation,
                    &device,
                ))
            }
            Method::Prompt => {
                let (init, config) = self.prompt_init(config(base.shapes.prompt), base)?;
                Some(PeftAdapter::prompt_tuning(
                    config,
                    init,
                    self.prompt_dropout,
                    &device,
                ))
            }
        })
    }

    /// How a prefix's table trains: `--prefix-projection`, `--prefix-layer-projection` (which
    /// clap keeps from coming together), or the table itself.
    pub fn prefix_reparameterisation(&self) -> PrefixReparameterisation {
        match (self.prefix_projection, self.prefix_layer_projection) {
            (Some(hidden), _) => PrefixReparameterisation::Mlp { hidden },
            (None, Some(width)) => PrefixReparameterisation::PerLayer { width },
            (None, None) => PrefixReparameterisation::Direct,
        }
    }

    /// How the prompt starts, and the PEFT config that records it.
    fn prompt_init(
        &self,
        base_config: PromptLearningConfig,
        base: BaseModel<'_>,
    ) -> Result<(PromptInit, PromptTuningConfig)> {
        let config = |init, text: Option<String>, tokenizer: Option<&str>| PromptTuningConfig {
            base: base_config.clone(),
            prompt_tuning_init: init,
            prompt_tuning_init_text: text,
            tokenizer_name_or_path: tokenizer.map(str::to_string),
        };
        if let Some(dir) = &self.prompt_init_from {
            return self.transferred_prompt(dir, base);
        }
        let token_table = || base.model.token_embeddings().detach();
        Ok(match self.prompt_init {
            PromptInitArg::Random => (
                PromptInit::Random {
                    std: self.prompt_init_std,
                },
                config(PromptTuningInit::Random, None, None),
            ),
            PromptInitArg::SampleVocab => (
                PromptInit::SampleVocab {
                    token_embeddings: token_table(),
                },
                config(PromptTuningInit::SampleVocab, None, None),
            ),
            PromptInitArg::Text => {
                let text = self
                    .prompt_init_text
                    .as_deref()
                    .context("--prompt-init text needs --prompt-init-text")?;
                let tokenizer = base.tokenizer.with_context(|| {
                    format!(
                        "--prompt-init text needs a tokenizer, and model `{}` has none; put \
                         tokenizer.json (or vocab.json and merges.txt) beside its weights",
                        base.name
                    )
                })?;
                let ids: Vec<i64> = tokenizer.encode(text)?.into_iter().map(i64::from).collect();
                if ids.is_empty() {
                    bail!("--prompt-init-text has no tokens");
                }
                let ids = Tensor::<1, Int>::from_data(
                    TensorData::new(ids.clone(), [ids.len()]),
                    &base.model.device(),
                );
                (
                    PromptInit::Text {
                        text_embeddings: token_table().select(0, ids),
                    },
                    config(PromptTuningInit::Text, Some(text.into()), Some(base.name)),
                )
            }
        })
    }

    /// The prompt of the adapter in `dir` (transfer from another task), with its config's
    /// record of how it started — what PEFT's `save_pretrained` writes after training a
    /// loaded adapter further.
    fn transferred_prompt(
        &self,
        dir: &std::path::Path,
        base: BaseModel<'_>,
    ) -> Result<(PromptInit, PromptTuningConfig)> {
        let from = PeftAdapter::load(dir, base.shapes, &base.model.device())
            .with_context(|| format!("loading adapter {}", dir.display()))?;
        let (AdapterModule::Prompt(prompt), PeftConfig::PromptTuning(source)) =
            (&from.module, &from.config)
        else {
            bail!(
                "--prompt-init-from {} is a prefix adapter, not a prompt",
                dir.display()
            );
        };
        let table = prompt.embedding.val().detach();
        if table.dims()[0] != self.num_virtual_tokens {
            bail!(
                "--prompt-init-from {} has {} virtual tokens, --num-virtual-tokens is {}",
                dir.display(),
                table.dims()[0],
                self.num_virtual_tokens
            );
        }
        let config = PromptTuningConfig {
            base: PromptLearningConfig::new(self.num_virtual_tokens, base.shapes.prompt)
                .for_base_model(base.name),
            ..source.clone()
        };
        Ok((PromptInit::From { prompt: table }, config))
    }
}
