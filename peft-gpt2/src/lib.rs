//! GPT-2 on Burn: the model with prefix-aware attention, Hugging Face checkpoint and tokenizer
//! loading, a causal-LM loss and generation with a KV cache.

pub mod adapted;
pub mod attention;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod generate;
pub mod loss;
pub mod mixed;
pub mod model;
pub mod tokenizer;

pub use adapted::{AdaptedGpt2, conditioned_labels};
pub use batch::{PadSide, PaddedRows};
pub use checkpoint::{ModelFiles, load_pretrained, load_weights, save_pretrained};
pub use config::Gpt2Config;
pub use error::{Error, Result};
pub use generate::{
    GenerationConfig, RowFlow, Sampling, generate, generate_mixed, generate_mixed_streaming,
};
pub use mixed::{MixedRow, forward_mixed};
pub use model::{ForwardInput, Gpt2, KvCache, positions_from};
pub use tokenizer::Gpt2Tokenizer;
