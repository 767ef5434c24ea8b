//! GPT-2 hyper-parameters, read from a Hugging Face `config.json` or taken from a preset.

use std::path::Path;

use peft_core::ModelShape;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The subset of Hugging Face's `GPT2Config` that shapes the network.
///
/// Field names follow `config.json`, so a hub config deserialises as it is; keys this
/// implementation does not need are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    /// Maximum sequence length (learned position embeddings).
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// MLP width; `None` means `4 * n_embd`, as in Hugging Face.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default = "default_epsilon")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_dropout")]
    pub resid_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub embd_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub attn_pdrop: f64,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "default_eos")]
    pub bos_token_id: u32,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
}

fn default_activation() -> String {
    "gelu_new".into()
}
fn default_epsilon() -> f64 {
    1e-5
}
fn default_dropout() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}
fn default_eos() -> u32 {
    50256
}

impl Gpt2Config {
    /// A GPT-2 family shape by its hub name: `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`,
    /// `distilgpt2` (an `openai-community/` or `distilbert/` owner prefix is accepted).
    pub fn preset(name: &str) -> Option<Self> {
        let short = name.rsplit('/').next().unwrap_or(name);
        let (n_layer, n_embd, n_head) = match short {
            "gpt2" => (12, 768, 12),
            "gpt2-medium" => (24, 1024, 16),
            "gpt2-large" => (36, 1280, 20),
            "gpt2-xl" => (48, 1600, 25),
            "distilgpt2" => (6, 768, 12),
            _ => return None,
        };
        Some(Self::new(50257, 1024, n_embd, n_layer, n_head))
    }

    /// A config with Hugging Face's defaults for everything but the shape.
    pub fn new(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
    ) -> Self {
        Self {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            activation_function: default_activation(),
            layer_norm_epsilon: default_epsilon(),
            resid_pdrop: default_dropout(),
            embd_pdrop: default_dropout(),
            attn_pdrop: default_dropout(),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            bos_token_id: default_eos(),
            eos_token_id: default_eos(),
        }
    }

    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            error: source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|source| Error::Config {
            path: path.to_path_buf(),
            message: source.to_string(),
        })?;
        config.validate().map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Checks that the shape is one this implementation can run.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd ({}) must be a positive multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.n_layer == 0 || self.vocab_size == 0 || self.n_positions == 0 {
            return Err("n_layer, vocab_size and n_positions must be positive".into());
        }
        // Far beyond any GPT-2 (the largest has 48 layers, width 1600, 50257 tokens, 1024
        // positions): a config past these is damaged, and building it would exhaust memory
        // before any checkpoint could disagree with it.
        for (name, value, limit) in [
            ("n_layer", self.n_layer, 1 << 10),
            ("n_embd", self.n_embd, 1 << 16),
            ("vocab_size", self.vocab_size, 1 << 24),
            ("n_positions", self.n_positions, 1 << 20),
            ("n_inner", self.mlp_width(), 1 << 18),
        ] {
            if value > limit {
                return Err(format!(
                    "{name} is {value}, beyond any GPT-2 (at most {limit} here)"
                ));
            }
        }
        if self.n_inner == Some(0) {
            return Err("n_inner must be positive (or absent, for 4 * n_embd)".into());
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return Err(format!(
                "layer_norm_epsilon must be a positive number, not {}",
                self.layer_norm_epsilon
            ));
        }
        for (name, p) in [
            ("resid_pdrop", self.resid_pdrop),
            ("embd_pdrop", self.embd_pdrop),
            ("attn_pdrop", self.attn_pdrop),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} must be at least 0 and below 1, not {p}"));
            }
        }
        if self.activation_function != "gelu_new" {
            return Err(format!(
                "activation_function `{}` is not supported; GPT-2 uses `gelu_new`",
                self.activation_function
            ));
        }
        Ok(())
    }

    /// What an adapter must match: width, layers, heads.
    pub fn shape(&self) -> ModelShape {
        ModelShape {
            d_model: self.n_embd,
            n_layer: self.n_layer,
            n_head: self.n_head,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn mlp_width(&self) -> usize {
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }

    /// Number of parameters (the LM head is tied to the token embedding, so not counted twice).
    pub fn num_params(&self) -> usize {
        let d = self.n_embd;
        let m = self.mlp_width();
        let per_layer = 2 * 2 * d // two LayerNorms
            + d * 3 * d + 3 * d // c_attn
            + d * d + d // attn c_proj
            + d * m + m // c_fc
            + m * d + d; // mlp c_proj
        self.vocab_size * d + self.n_positions * d + self.n_layer * per_layer + 2 * d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_124m_parameters() {
        assert_eq!(
            Gpt2Config::preset("gpt2").unwrap().num_params(),
            124_439_808
        );
        assert_eq!(
            Gpt2Config::preset("openai-community/gpt2-medium")
                .unwrap()
                .num_params(),
            354_823_168
        );
    }

    #[test]
    fn reads_hub_config_and_ignores_unknown_keys() {
        let json = r#"{"activation_function":"gelu_new","architectures":["GPT2LMHeadModel"],
            "n_ctx":1024,"n_embd":768,"n_head":12,"n_layer":12,"n_positions":1024,
            "vocab_size":50257,"task_specific_params":{"text-generation":{"do_sample":true}}}"#;
        let config: Gpt2Config = serde_json::from_str(json).unwrap();
        assert_eq!(config, Gpt2Config::preset("gpt2").unwrap());
    }

    #[test]
    fn rejects_heads_that_do_not_divide_width() {
        let mut config = Gpt2Config::new(10, 8, 30, 1, 4);
        assert!(config.validate().unwrap_err().contains("n_head"));
        config.n_head = 3;
        assert!(config.validate().is_ok());
    }
}
