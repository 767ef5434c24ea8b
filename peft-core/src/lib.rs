//! Adapters for frozen language models: prompt tuning and prefix tuning, saved and loaded in
//! Hugging Face PEFT's format.
//!
//! This crate knows nothing about any particular model. An adapter produces a
//! [`Conditioning`] — virtual-token embeddings to prepend to the input and/or per-layer
//! [`PrefixKv`] keys and values — and a model integration (such as `peft-gpt2`) consumes it.
//! The run-time [`Backend`] choice lives here too, since every crate above needs it.

pub mod adapter;
pub mod conditioning;
pub mod config;
pub mod device;
pub mod kv;
pub mod params;
pub mod prefix_tuning;
pub mod prompt_tuning;

pub use adapter::{Adapter, AdapterError, AdapterModule, PeftAdapter};
pub use conditioning::Conditioning;
pub use config::{
    ModelShape, PeftConfig, PrefixTuningConfig, PromptLearningConfig, PromptTuningConfig,
    PromptTuningInit,
};
pub use device::{Backend, DeviceError};
pub use kv::{LayerKv, PrefixKv};
pub use params::ParameterCount;
pub use prefix_tuning::PrefixEncoder;
pub use prompt_tuning::{PromptEncoder, PromptInit};
