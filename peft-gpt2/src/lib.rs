//! GPT-2 on Burn: the model with prefix-aware attention, Hugging Face checkpoint and tokenizer
//! loading, a causal-LM loss and generation with a KV cache.
//!
//! ```no_run
//! use std::path::Path;
//!
//! use peft_core::{Adapter, PeftAdapter};
//! use peft_runtime::ComputeBackend;
//! use peft_gpt2::{GenerationConfig, Gpt2Tokenizer, generate, load_pretrained};
//!
//! # fn main() -> anyhow::Result<()> {
//! let device = ComputeBackend::Flex.device()?;
//! // A hub id (from the Hugging Face cache, offline once cached) or a local directory.
//! let (model, config, files) = load_pretrained("gpt2", &device)?;
//! let tokenizer = Gpt2Tokenizer::from_dir(&files.dir)?;
//! let adapter = PeftAdapter::load(Path::new("runs/task/adapter"), config.shape(), &device)?;
//! let prompt = tokenizer.encode("name[The Mill], eatType[pub] =>")?;
//! let settings = GenerationConfig::greedy(40, tokenizer.eos_id());
//! let continuation = generate(&model, &[prompt], &adapter.conditioning(), &settings)?;
//! println!("{}", tokenizer.decode(&continuation[0])?);
//! # Ok(())
//! # }
//! ```

pub mod adapted;
pub mod attention;
pub mod checkpoint;
pub mod config;
pub mod error;
mod init;
pub mod model;
pub mod tokenizer;

pub use adapted::AdaptedGpt2;
pub use checkpoint::{
    ModelFiles, has_tokenizer_files, load_pretrained, load_weights, resolve_dir, save_pretrained,
};
pub use config::Gpt2Config;
pub use error::{Error, Result};
pub use model::Gpt2;
pub use peft_decoder::Adapted;
pub use peft_decoder::adapted::conditioned_labels;
pub use peft_decoder::loss;
// What every decoder family shares, re-exported so that GPT-2 users need one crate.
pub use peft_decoder::{
    AdaptedInput, Decoder, ForwardInput, GenerationConfig, KvCache, MixedRow, PadSide, PaddedRows,
    RowFlow, Sampling, forward_mixed, generate, generate_mixed, generate_mixed_streaming,
};
pub use tokenizer::Gpt2Tokenizer;
