//! A Llama-family `config.json` (Llama 3.x, SmolLM2, Qwen2/2.5, Qwen3, Mistral), read as
//! `transformers` writes it — the older `rope_theta` + `rope_scaling` keys as well as 5.x's
//! `rope_parameters` — and checked before any weight is allocated.

use std::path::{Path, PathBuf};

use peft_core::{AdapterShapes, ModelShape};
use serde::Deserialize;

/// What a config can get wrong; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid model config {path}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

/// The architectures this crate implements, by `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

/// How rotary phases are spread over a head (Hugging Face's `rope_type`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    Default,
    /// Llama 3.1's: low frequencies divided by `factor`, a smooth band between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// The model's dimensions and options, from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    /// Positions the model attends over: `max_position_embeddings`, or a sliding window if
    /// that is shorter (a longer sequence is refused rather than attended differently).
    pub max_positions: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    /// Biases on the query/key/value projections (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on the output projection (Llama's and Qwen3's `attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// RMSNorm over each head's queries and keys before the rotary phases (Qwen3).
    pub qk_norm: bool,
    pub eos_token_id: Option<u32>,
    /// Standard deviation of fresh weights (`initializer_range`): a random model's only.
    pub initializer_range: f64,
}

/// `config.json` as written, before defaults and checks.
#[derive(Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    eos_token_id: Option<serde_json::Value>,
    initializer_range: Option<f64>,
}

impl LlamaConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|err| error(err.to_string()))?;
        let raw: RawConfig = serde_json::from_str(&text).map_err(|err| error(err.to_string()))?;
        Self::from_raw(raw).map_err(error)
    }

    /// Parses `config.json` text (for tests and configs held in memory).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|err| err.to_string())?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self, String> {
        let family: Family =
            serde_json::from_value(raw.model_type.clone().into()).map_err(|_| {
                format!(
                    "model_type `{}` is not a Llama-family model (llama, mistral, qwen2, qwen3)",
                    raw.model_type
                )
            })?;
        if let Some(act) = &raw.hidden_act
            && act != "silu"
        {
            return Err(format!("hidden_act `{act}` is not supported; only silu"));
        }
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(format!(
                "num_attention_heads ({heads}) must be a positive multiple of \
                 num_key_value_heads ({kv_heads})"
            ));
        }
        let head_dim = match raw.head_dim {
            Some(dim) => dim,
            None if raw.hidden_size.is_multiple_of(heads) => raw.hidden_size / heads,
            None => {
                return Err(format!(
                    "hidden_size ({}) is not a multiple of num_attention_heads ({heads})",
                    raw.hidden_size
                ));
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim {head_dim} must be even (rotary phases pair dimensions)"
            ));
        }
        for (name, value) in [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("intermediate_size", raw.intermediate_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("max_position_embeddings", raw.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        // Far beyond any released model (Llama 3.1 405B: 126 layers, width 16,384, MLP 53,248,
        // 128 heads, a 128K context): a config past these is damaged, and building it would
        // exhaust memory before any checkpoint could disagree with it.
        for (name, value, limit) in [
            ("num_hidden_layers", raw.num_hidden_layers, 1 << 10),
            ("hidden_size", raw.hidden_size, 1 << 16),
            ("intermediate_size", raw.intermediate_size, 1 << 18),
            ("num_attention_heads", heads, 1 << 10),
            ("head_dim", head_dim, 1 << 12),
            ("vocab_size", raw.vocab_size, 1 << 24),
            (
                "max_position_embeddings",
                raw.max_position_embeddings,
                1 << 24,
            ),
        ] {
            if value > limit {
                return Err(format!(
                    "{name} is {value}, beyond any Llama-family model (at most {limit} here)"
                ));
            }
        }
        if let Some(eps) = raw.rms_norm_eps
            && !(eps.is_finite() && eps > 0.0)
        {
            return Err(format!("rms_norm_eps must be a positive number, not {eps}"));
        }
        let (rope_theta, rope_scaling) = rope(&raw)?;
        // Qwen2 only slides its window when asked; Mistral always does when it has one.
        let window = match family {
            Family::Qwen2 | Family::Qwen3 => raw
                .sliding_window
                .filter(|_| raw.use_sliding_window.unwrap_or(false)),
            Family::Mistral => raw.sliding_window,
            Family::Llama => None,
        };
        let max_positions = window.map_or(raw.max_position_embeddings, |w| {
            w.min(raw.max_position_embeddings)
        });
        let attention_bias = raw.attention_bias.unwrap_or(false);
        Ok(Self {
            family,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_positions,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias: family == Family::Qwen2 || attention_bias,
            o_bias: family != Family::Qwen2 && attention_bias,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            qk_norm: family == Family::Qwen3,
            eos_token_id: eos_id(raw.eos_token_id.as_ref()),
            initializer_range: raw
                .initializer_range
                .unwrap_or(peft_decoder::init::DEFAULT_INITIALIZER_RANGE),
        })
    }

    /// Query heads per key/value head.
    pub fn groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// What a prompt-tuning adapter must agree with: the embedding width and the heads.
    pub fn prompt_shape(&self) -> ModelShape {
        ModelShape {
            d_model: self.hidden_size,
            n_layer: self.num_hidden_layers,
            n_head: self.num_attention_heads,
        }
    }

    /// What a prefix-tuning adapter must agree with: PEFT shapes the prefix by the key/value
    /// heads (`token_dim = head_dim × num_key_value_heads`, `num_attention_heads =
    /// num_key_value_heads`), so that it extends each layer's keys and values as they are.
    pub fn prefix_shape(&self) -> ModelShape {
        ModelShape {
            d_model: self.head_dim * self.num_key_value_heads,
            n_layer: self.num_hidden_layers,
            n_head: self.num_key_value_heads,
        }
    }
}

impl LlamaConfig {
    /// The shapes adapters of this model agree with: [`Self::prompt_shape`] for prompts,
    /// [`Self::prefix_shape`] for prefixes.
    pub fn adapter_shapes(&self) -> AdapterShapes {
        AdapterShapes {
            prompt: self.prompt_shape(),
            prefix: self.prefix_shape(),
        }
    }
}

/// `rope_theta` and the scaling, from 5.x's `rope_parameters` or the older keys.
fn rope(raw: &RawConfig) -> Result<(f64, RopeScaling), String> {
    let params = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .and_then(serde_json::Value::as_f64)
        .or(raw.rope_theta)
        .unwrap_or(10_000.0);
    if !(theta.is_finite() && theta > 0.0) {
        return Err(format!("rope_theta must be positive, got {theta}"));
    }
    let Some(params) = params.filter(|p| !p.is_null()) else {
        return Ok((theta, RopeScaling::Default));
    };
    let kind = params
        .get("rope_type")
        .or_else(|| params.get("type"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("default");
    let number = |key: &str| {
        params
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| format!("rope scaling `{kind}` needs `{key}`"))
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "llama3" => RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")? as usize,
        },
        other => {
            return Err(format!(
                "rope scaling `{other}` is not supported (default and llama3 are)"
            ));
        }
    };
    if let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        ..
    } = scaling
        && !(factor > 0.0 && high_freq_factor > low_freq_factor && low_freq_factor > 0.0)
    {
        return Err(
            "llama3 rope scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0"
                .into(),
        );
    }
    Ok((theta, scaling))
}

/// The end-of-text id: a number, or the first of a list (Llama 3 lists several).
fn eos_id(value: Option<&serde_json::Value>) -> Option<u32> {
    let value = value?;
    let first = value
        .as_array()
        .and_then(|ids| ids.first())
        .unwrap_or(value);
    first.as_u64().and_then(|id| u32::try_from(id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<LlamaConfig, String> {
        LlamaConfig::from_json(&format!(
            r#"{{"model_type": "llama", "vocab_size": 100, "hidden_size": 32,
                "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "max_position_embeddings": 128{extra}}}"#
        ))
    }

    #[test]
    fn older_rope_keys_and_defaults_are_read() {
        let llama = config(
            r#", "num_key_value_heads": 2, "rope_theta": 500000.0, "eos_token_id": [128001, 128009],
               "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#,
        )
        .unwrap();
        assert_eq!(llama.rope_theta, 500000.0);
        assert!(matches!(llama.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 32.0));
        assert_eq!((llama.head_dim, llama.groups()), (8, 2));
        assert_eq!(llama.eos_token_id, Some(128001));
        assert_eq!(llama.prefix_shape().d_model, 16);
        assert_eq!(llama.prompt_shape().d_model, 32);
    }

    #[test]
    fn a_sliding_window_bounds_the_positions() {
        // Llama has no window: its positions are max_position_embeddings.
        assert_eq!(
            config(r#", "sliding_window": 64"#).unwrap().max_positions,
            128
        );
        let mistral = LlamaConfig::from_json(
            r#"{"model_type": "mistral", "vocab_size": 100, "hidden_size": 32,
                "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "max_position_embeddings": 128, "sliding_window": 64}"#,
        )
        .unwrap();
        assert_eq!(mistral.max_positions, 64);
        let qwen2 = LlamaConfig::from_json(
            r#"{"model_type": "qwen2", "vocab_size": 100, "hidden_size": 32,
                "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "max_position_embeddings": 128, "sliding_window": 64, "use_sliding_window": false}"#,
        )
        .unwrap();
        assert_eq!(qwen2.max_positions, 128);
        assert!(qwen2.qkv_bias && !qwen2.o_bias);
    }

    #[test]
    fn configs_this_crate_cannot_run_are_refused_by_name() {
        for (extra, expected) in [
            (
                r#", "num_key_value_heads": 3"#,
                "multiple of num_key_value_heads",
            ),
            (r#", "head_dim": 7"#, "head_dim 7 must be even"),
            (r#", "hidden_act": "gelu""#, "hidden_act `gelu`"),
            (r#", "head_dim": 100000"#, "beyond any Llama-family model"),
            (
                r#", "rms_norm_eps": -1.0"#,
                "rms_norm_eps must be a positive number",
            ),
            (
                r#", "rope_parameters": {"rope_type": "yarn", "factor": 4.0}"#,
                "rope scaling `yarn` is not supported",
            ),
            (
                r#", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}"#,
                "needs `low_freq_factor`",
            ),
        ] {
            let message = config(extra).unwrap_err();
            assert!(message.contains(expected), "{extra}: {message}");
        }
        let gpt2 = LlamaConfig::from_json(r#"{"model_type": "gpt2"}"#).unwrap_err();
        assert!(
            gpt2.contains("missing field") || gpt2.contains("gpt2"),
            "{gpt2}"
        );
    }
}
