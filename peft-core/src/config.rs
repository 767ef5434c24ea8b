//! What every prompt-learning `adapter_config.json` holds, in Hugging Face PEFT's format; each
//! kind's own fields live beside its encoder (`prompt_tuning.rs`, `prefix_tuning.rs`).
//!
//! Field names and values are PEFT's, so a config written here loads in Python's `peft` and
//! one written there loads here. Keys this crate does not interpret (`auto_mapping`,
//! `peft_version`, ...) are kept and written back unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only task type these adapters serve: decoder-only language models.
pub const CAUSAL_LM: &str = "CAUSAL_LM";

/// What PEFT's `PromptLearningConfig` (and its `PeftConfigMixin`) holds for every
/// prompt-learning method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptLearningConfig {
    pub task_type: String,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    /// PEFT's flag for a frozen, inference-only adapter; for a projected prefix it also means
    /// the saved table is already projected.
    #[serde(default)]
    pub inference_mode: bool,
    pub num_virtual_tokens: usize,
    /// The model width (`n_embd`).
    pub token_dim: usize,
    /// 1 for decoder-only models.
    #[serde(default = "one")]
    pub num_transformer_submodules: usize,
    pub num_attention_heads: usize,
    pub num_layers: usize,
    /// Every other key of the file, written back as it was read.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

fn one() -> usize {
    1
}

impl PromptLearningConfig {
    /// A config for a model of the given shape.
    pub fn new(num_virtual_tokens: usize, shape: ModelShape) -> Self {
        Self {
            task_type: CAUSAL_LM.into(),
            base_model_name_or_path: None,
            revision: None,
            inference_mode: false,
            num_virtual_tokens,
            token_dim: shape.d_model,
            num_transformer_submodules: 1,
            num_attention_heads: shape.n_head,
            num_layers: shape.n_layer,
            other: BTreeMap::new(),
        }
    }

    /// Records the base model's name or path, as PEFT's `base_model_name_or_path`.
    pub fn for_base_model(mut self, name: impl Into<String>) -> Self {
        self.base_model_name_or_path = Some(name.into());
        self
    }

    pub fn shape(&self) -> ModelShape {
        ModelShape {
            d_model: self.token_dim,
            n_layer: self.num_layers,
            n_head: self.num_attention_heads,
        }
    }
}

/// The dimensions of a transformer that an adapter must agree with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
}

impl std::fmt::Display for ModelShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "d_model {}, {} layers, {} heads",
            self.d_model, self.n_layer, self.n_head
        )
    }
}

/// The shapes a model offers adapters: a prompt agrees with its embedding width and attention
/// heads, a prefix with its keys and values — narrower under grouped-query attention, where
/// PEFT records `token_dim = head_dim × num_key_value_heads` and `num_attention_heads =
/// num_key_value_heads`. For GPT-2 both are the one [`ModelShape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterShapes {
    pub prompt: ModelShape,
    pub prefix: ModelShape,
}

impl From<ModelShape> for AdapterShapes {
    fn from(shape: ModelShape) -> Self {
        Self {
            prompt: shape,
            prefix: shape,
        }
    }
}
