//! Adapters for frozen language models: prompt tuning and prefix tuning, saved and loaded in
//! Hugging Face PEFT's format.
//!
//! This crate knows nothing about any particular model. An adapter produces a
//! [`Conditioning`] — virtual-token embeddings to prepend to the input and/or per-layer
//! [`PrefixKv`] keys and values — and a model integration (such as `peft-gpt2`) consumes it.
//! Nor does it choose a compute backend: adapters run on whatever Burn `Device` they are
//! given (`peft-runtime` picks one at run time).
//!
//! ```no_run
//! use std::path::Path;
//!
//! use peft_core::{
//!     Adapter, ModelShape, PeftAdapter, PrefixReparameterisation, PromptLearningConfig,
//! };
//! use peft_runtime::ComputeBackend;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = ComputeBackend::Flex.device()?;
//! let gpt2_small = ModelShape { d_model: 768, n_layer: 12, n_head: 12 };
//! // 20 virtual tokens of prefix tuning through PEFT's projection MLP (hidden width 512).
//! let config = PromptLearningConfig::new(20, gpt2_small);
//! let mlp = PrefixReparameterisation::Mlp { hidden: 512 };
//! let adapter = PeftAdapter::prefix_tuning(config, mlp, &device);
//! // Saved in PEFT's format: Python's `PeftModel.from_pretrained` loads the directory.
//! adapter.save(Path::new("runs/task/adapter"))?;
//! let loaded = PeftAdapter::load(Path::new("runs/task/adapter"), gpt2_small, &device)?;
//! // What a model consumes: per-layer prefix keys and values for this forward pass.
//! let conditioning = loaded.conditioning();
//! # let _ = conditioning;
//! # Ok(())
//! # }
//! ```

pub mod adapter;
pub mod conditioning;
pub mod config;
pub mod kind;
pub mod kv;
pub mod params;
pub mod prefix_tuning;
pub mod prompt_tuning;
pub mod registry;

pub use adapter::{Adapter, AdapterError, PeftAdapter};
pub use conditioning::Conditioning;
pub use config::{AdapterShapes, ModelShape, PromptLearningConfig};
pub use kind::{Encoder, KindConfig};
pub use kv::{LayerKv, PrefixKv};
pub use params::ParameterCount;
pub use prefix_tuning::{
    PrefixEncoder, PrefixLayerProjection, PrefixReparameterisation, PrefixTuningConfig,
};
pub use prompt_tuning::{PromptEncoder, PromptInit, PromptTuningConfig, PromptTuningInit};
pub use registry::{AdapterModule, PeftConfig};
