//! The model families every command runs, chosen by `config.json`'s `model_type`: GPT-2, and
//! the Llama family (Llama 3.x, SmolLM2, Qwen2/2.5, Qwen3, Mistral). Commands see one
//! [`Model`] and one [`ModelConfig`]; the family shows only where it must (saving a fully
//! fine-tuned model in its own format).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use peft_core::AdapterShapes;
use peft_decoder::{Decoder, ForwardInput, InputError, KvCache};
use peft_gpt2::{Gpt2, Gpt2Config, ModelFiles};
use peft_llama::{Llama, LlamaConfig};

/// A base model of any family.
// One value per process, never in a hot collection; boxing would hide the variant from Burn's
// Module derive.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Model {
    Gpt2(Gpt2),
    Llama(Llama),
}

/// The config a [`Model`] was built from.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    Gpt2(Gpt2Config),
    Llama(LlamaConfig),
}

/// Loads the model in `dir` (`config.json` decides the family) onto `device`.
pub fn load_model_dir(dir: &Path, device: &Device) -> Result<(Model, ModelConfig)> {
    let config = ModelConfig::from_dir(dir)?;
    let model = match &config {
        ModelConfig::Gpt2(gpt2) => {
            let files = ModelFiles::in_dir(dir)?;
            Model::Gpt2(peft_gpt2::load_weights(
                Gpt2::new(gpt2, device),
                &files.weights,
            )?)
        }
        ModelConfig::Llama(llama) => Model::Llama(peft_llama::load_weights(llama, dir, device)?),
    };
    Ok((model, config))
}

impl ModelConfig {
    /// The config in `dir`'s `config.json`, of the family its `model_type` names.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let model_type = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|json| json.get("model_type")?.as_str().map(str::to_string))
            // GPT-2 configs written by old tools have no model_type.
            .unwrap_or_else(|| "gpt2".into());
        Ok(match model_type.as_str() {
            "gpt2" => ModelConfig::Gpt2(Gpt2Config::from_file(&path)?),
            "llama" | "mistral" | "qwen2" | "qwen3" => {
                ModelConfig::Llama(LlamaConfig::from_file(&path)?)
            }
            other => bail!(
                "{}: model_type `{other}` is not supported (gpt2, llama, mistral, qwen2, qwen3 \
                 are)",
                path.display()
            ),
        })
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.vocab_size,
            ModelConfig::Llama(c) => c.vocab_size,
        }
    }

    /// Width of the token embeddings.
    pub fn hidden_size(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_embd,
            ModelConfig::Llama(c) => c.hidden_size,
        }
    }

    /// A model of this config with random weights (benchmarks time shapes, not values).
    pub fn random_model(&self, device: &Device) -> Model {
        match self {
            ModelConfig::Gpt2(c) => Model::Gpt2(Gpt2::new(c, device)),
            ModelConfig::Llama(c) => Model::Llama(Llama::new(c, device)),
        }
    }

    /// Positions the model attends over.
    pub fn n_positions(&self) -> usize {
        match self {
            ModelConfig::Gpt2(c) => c.n_positions,
            ModelConfig::Llama(c) => c.max_positions,
        }
    }

    /// The shapes adapters of this model agree with.
    pub fn adapter_shapes(&self) -> AdapterShapes {
        match self {
            ModelConfig::Gpt2(c) => c.shape().into(),
            ModelConfig::Llama(c) => c.adapter_shapes(),
        }
    }

    /// The end-of-text id the config names, if any.
    pub fn eos_token_id(&self) -> Option<u32> {
        match self {
            ModelConfig::Gpt2(c) => Some(c.eos_token_id),
            ModelConfig::Llama(c) => c.eos_token_id,
        }
    }

    /// Tokens left for an example once `virtual_tokens` take their positions.
    pub fn positions_after(&self, virtual_tokens: usize) -> Result<usize, InputError> {
        let positions = self.n_positions();
        match positions.checked_sub(virtual_tokens) {
            Some(left) if left > 0 => Ok(left),
            _ => Err(InputError(format!(
                "{virtual_tokens} virtual tokens leave no room in the model's {positions} \
                 positions; use fewer"
            ))),
        }
    }

    /// One line of what the model is, for `info`.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::Gpt2(c) => format!(
                "GPT-2: {} layers, width {}, {} heads of {}, MLP {}, {} positions, vocabulary {}",
                c.n_layer,
                c.n_embd,
                c.n_head,
                c.head_dim(),
                c.mlp_width(),
                c.n_positions,
                c.vocab_size
            ),
            ModelConfig::Llama(c) => format!(
                "{:?}: {} layers, width {}, {} query heads and {} key/value heads of {}, MLP {}, \
                 {} positions, vocabulary {}{}",
                c.family,
                c.num_hidden_layers,
                c.hidden_size,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim,
                c.intermediate_size,
                c.max_positions,
                c.vocab_size,
                if c.tie_word_embeddings {
                    ", head tied to the embedding"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Calls `$body` with `$model` bound to the family's own model.
macro_rules! each_family {
    ($self:expr, $model:ident => $body:expr) => {
        match $self {
            Model::Gpt2($model) => $body,
            Model::Llama($model) => $body,
        }
    };
}

impl Decoder for Model {
    fn n_positions(&self) -> usize {
        each_family!(self, m => m.n_positions())
    }

    fn n_layer(&self) -> usize {
        each_family!(self, m => Decoder::n_layer(m))
    }

    fn device(&self) -> Device {
        each_family!(self, m => Decoder::device(m))
    }

    fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        each_family!(self, m => Decoder::embed_tokens(m, ids))
    }

    fn forward(&self, input: ForwardInput<'_>, cache: Option<&mut KvCache>) -> Tensor<3> {
        each_family!(self, m => Decoder::forward(m, input, cache))
    }

    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        each_family!(self, m => Decoder::logits(m, hidden))
    }

    fn token_embeddings(&self) -> Tensor<2> {
        each_family!(self, m => m.token_embeddings())
    }

    fn output_embeddings(&self) -> Tensor<2> {
        each_family!(self, m => m.output_embeddings())
    }

    fn check_fits(&self, len: usize) -> Result<(), InputError> {
        each_family!(self, m => Decoder::check_fits(m, len))
    }
}
