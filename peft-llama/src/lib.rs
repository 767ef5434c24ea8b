//! Llama-family decoders on Burn — Llama 3.x, SmolLM2, Qwen2/2.5, Qwen3, Mistral — with the
//! same adapter contract as GPT-2: optional prefix keys/values at every layer (shaped by the
//! key/value heads, as PEFT shapes them under grouped-query attention), input embeddings a
//! prompt extends, a KV cache, and everything [`peft_decoder`] builds on a [`Decoder`]
//! (batches under adapters, mixed-adapter batches, generation).
//!
//! ```no_run
//! use std::path::Path;
//!
//! use peft_core::{Adapter, PeftAdapter};
//! use peft_decoder::{GenerationConfig, generate};
//! use peft_llama::load_pretrained;
//! use peft_runtime::ComputeBackend;
//!
//! # fn main() -> anyhow::Result<()> {
//! let device = ComputeBackend::Flex.device()?;
//! let (model, config) = load_pretrained(Path::new("models/SmolLM2-135M"), &device)?;
//! // A prefix adapter agrees with the key/value heads; a prompt with the embedding width.
//! let adapter = PeftAdapter::load(Path::new("runs/task/adapter"), config.adapter_shapes(), &device)?;
//! let settings = GenerationConfig::greedy(20, config.eos_token_id.unwrap_or(0));
//! let tokens = generate(&model, &[vec![1, 2, 3]], &adapter.conditioning(), &settings)?;
//! println!("{tokens:?}");
//! # Ok(())
//! # }
//! ```

pub mod checkpoint;
pub mod config;
pub mod model;
pub mod rope;

pub use checkpoint::{LoadError, load_pretrained, load_weights, save_pretrained, weight_files};
pub use config::{Family, LlamaConfig, RopeScaling};
pub use model::Llama;
pub use peft_decoder::Decoder;
